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
    /// Gauge (sum): this process's CPU time (user + system) during the operation's phase, µs.
    pub fn cpu_us(op: &str) -> String {
        format!("{op}.cpu_us")
    }
    /// Gauge (max): bytes of the session JSON written.
    pub const PAYLOAD_BYTES: &str = "payload_bytes";
    /// Counter: concurrent clients (one connection each), all agents together.
    pub const CLIENTS: &str = "clients";
    /// Counter: keys the step deleted while cleaning up after itself.
    pub const CLEANUP_DELETED: &str = "cleanup.deleted";
}

/// `redis_concurrent`: one composite operation = HSET, HGET + parse, update, HSET.
pub mod concurrent {
    /// Histogram: composite operation latency, µs.
    pub const LATENCY_US: &str = "op.latency_us";
    pub const OK: &str = "op.ok";
    pub const ERRORS: &str = "op.errors";
    /// Counter: clients this agent ran.
    pub const CLIENTS: &str = "clients";
    /// Counter: Redis connections this agent opened for its clients.
    pub const CONNECTIONS: &str = "connections";
    /// Gauges (min / max): first start and last end, coordinator time, µs since the epoch.
    pub const START_US: &str = "start_us";
    pub const END_US: &str = "end_us";
    pub const CLEANUP_DELETED: &str = "cleanup.deleted";
}

/// `redis_memory` (one agent): `INFO memory` used_memory at each stage, bytes.
pub mod memory {
    pub const USED_INITIAL: &str = "used_memory.initial";
    pub const USED_PEAK: &str = "used_memory.peak";
    pub const USED_HALF: &str = "used_memory.after_half";
    pub const USED_FINAL: &str = "used_memory.final";
    /// Counter: sessions written.
    pub const SESSIONS: &str = "sessions";
    pub const ERRORS: &str = "errors";
    /// Counters: `MEMORY USAGE` summed over a sample of keys, and the sample's size.
    pub const SAMPLE_BYTES: &str = "sample.memory_usage_bytes";
    pub const SAMPLE_KEYS: &str = "sample.keys";
    /// Gauge (max): bytes of field values written per session.
    pub const PAYLOAD_BYTES: &str = "payload_bytes";
}

/// `session_integrity`.
pub mod integrity {
    pub const SESSIONS: &str = "sessions";
    pub const WRITTEN: &str = "written";
    pub const READ: &str = "read";
    pub const MATCHES: &str = "matches";
    pub const MISMATCHES: &str = "checksum_mismatches";
    pub const WRITE_ERRORS: &str = "write_errors";
    pub const READ_ERRORS: &str = "read_errors";
}

/// `session_concurrent_updates`.
pub mod updates {
    pub const UPDATERS: &str = "updaters";
    /// Counter: updates attempted (each may take several tries).
    pub const ATTEMPTED: &str = "attempted";
    /// Counter: updates whose EXEC succeeded.
    pub const SUCCEEDED: &str = "succeeded";
    /// Counter: updates that failed with an error or ran out of retries.
    pub const FAILED: &str = "failed";
    /// Counter: EXEC returned nil (another writer got in first) and the update was retried.
    pub const RETRIES: &str = "retries";
    /// Histogram: one update, all its tries included, µs.
    pub const LATENCY_US: &str = "update.latency_us";
    /// Gauges the coordinator adds after the step, from the shared key: final position and version.
    pub const FINAL_POSITION: &str = "final.position";
    pub const FINAL_VERSION: &str = "final.version";
    /// Gauge (max): the position the key started at.
    pub const INITIAL_POSITION: &str = "initial.position";

    /// The session key every agent's updaters share, under the run prefix `{prefix}:{run_id}:`.
    pub fn shared_key(run_base: &str) -> String {
        format!("{run_base}concurrent-update")
    }
}

/// `redis_pool`.
pub mod pool {
    pub const OPS: &str = "ops";
    pub const OK: &str = "ok";
    pub const FAILED: &str = "failed";
    /// Histogram: from the operation's scheduled instant to its end (pool wait included), µs.
    pub const LATENCY_US: &str = "latency_us";
    /// Histogram: time waiting for a pooled connection, µs.
    pub const POOL_WAIT_US: &str = "pool_wait_us";
    /// Gauge (max): pool size per agent.
    pub const POOL_SIZE: &str = "pool_size";
    /// Counter: agents that ran the step (pool size × agents = connections in all).
    pub const AGENTS: &str = "agents";
    /// Gauge (max): configured duration, µs.
    pub const DURATION_US: &str = "duration_us";
    /// Counter: connections the pool opened.
    pub const CONNECTIONS_OPENED: &str = "connections_opened";
}
