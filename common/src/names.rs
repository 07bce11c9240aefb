//! Metric names: the agent records under these, the report reads them. One place, so the two
//! cannot drift apart.

/// `timestamp_generation`.
pub mod ts_gen {
    /// Counter: timestamps generated.
    pub const TIMESTAMPS: &str = "timestamps";
    /// Counter: batches timed.
    pub const BATCHES: &str = "batches";
    /// Counter: consecutive pairs compared (every pair, not the document's first five per batch).
    pub const COMPARISONS: &str = "comparisons";
    /// Counter: a timestamp smaller than the one before.
    pub const BACKWARDS: &str = "backwards";
    /// Counter: more than 1,000 ms between consecutive calls.
    pub const JUMPS: &str = "jumps_over_1s";
    /// Gauge (sum): sum over batches of the batch's timestamps/s (average = sum / batches).
    pub const RATE_SUM: &str = "rate_sum";
    /// Gauge (min): slowest batch's timestamps/s.
    pub const RATE_MIN: &str = "rate_min";
    /// Gauge (max): fastest batch's timestamps/s.
    pub const RATE_MAX: &str = "rate_max";
    /// Histogram: one batch's duration, in ns.
    pub const BATCH_NS: &str = "batch_duration_ns";
}

/// `timestamp_precision`.
pub mod ts_precision {
    /// Counter: triples of timestamps taken.
    pub const MEASUREMENTS: &str = "measurements";
    /// Counter: triples where diff12 or diff23 is 0 ms.
    pub const ZERO_DIFFS: &str = "zero_diffs";
    /// Counter: triples where both diffs are <= 1 ms.
    pub const SMALL_DIFFS: &str = "small_diffs";
    /// Counter: triples where a diff is > 10 ms.
    pub const LARGE_DIFFS: &str = "large_diffs";
    /// Counter: sum of diff12 + diff23, in ms.
    pub const DIFF_SUM_MS: &str = "diff_sum_ms";
    /// Histogram: gap between two consecutive nanosecond wall-clock reads, in ns.
    pub const READ_GAP_NS: &str = "read_gap_ns";
}

/// `redis_basic_ops`, per operation `op` in [`OPS`].
pub mod basic_ops {
    pub const OPS: [&str; 5] = ["set", "get", "hset", "hget", "del"];

    /// Histogram: latency of one operation, in µs.
    pub fn latency_us(op: &str) -> String {
        format!("{op}.latency_us")
    }
    /// Counter: operations answered without error.
    pub fn ok(op: &str) -> String {
        format!("{op}.ok")
    }
    /// Counter: operations that failed or timed out.
    pub fn errors(op: &str) -> String {
        format!("{op}.errors")
    }
    /// Gauge (min): first operation's start, coordinator time, µs since the epoch.
    pub fn start_us(op: &str) -> String {
        format!("{op}.start_us")
    }
    /// Gauge (max): last operation's end, coordinator time, µs since the epoch.
    pub fn end_us(op: &str) -> String {
        format!("{op}.end_us")
    }
    /// Gauge (max): bytes of the session JSON written.
    pub const PAYLOAD_BYTES: &str = "payload_bytes";
    /// Counter: keys the step deleted while cleaning up after itself.
    pub const CLEANUP_DELETED: &str = "cleanup.deleted";
}
