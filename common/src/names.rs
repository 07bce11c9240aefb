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

/// `event_consistency` (document 1.2).
pub mod event {
    /// Counter: clients that ran the sequence.
    pub const CLIENTS: &str = "clients";
    /// Counter: clients that could not connect (counted, not fatal).
    pub const CLIENTS_FAILED: &str = "clients_failed";
    /// Counter: commands sent (the document's `client_sent` events).
    pub const COMMANDS_SENT: &str = "commands_sent";
    /// Counter: `snapshot` events received.
    pub const SNAPSHOTS: &str = "snapshots";
    /// Counter: `scroll_tick` events received.
    pub const TICKS: &str = "ticks";
    /// Counter: received events carrying `serverTimestamp`.
    pub const SERVER_TS_EVENTS: &str = "server_ts_events";
    /// Counter: received events without `serverTimestamp` (absent, never given the client clock).
    pub const MISSING_SERVER_TS: &str = "missing_server_ts";
    /// Counter: consecutive pairs of timestamped events compared, per client.
    pub const ORDER_PAIRS: &str = "order_pairs";
    /// Counter: pairs where the later-arriving event has the earlier serverTimestamp.
    pub const OUT_OF_ORDER: &str = "out_of_order";
    /// Gauges (sum, min, max): arrival − serverTimestamp, µs (the document's figure).
    pub const RAW_DIFF_SUM_US: &str = "raw_diff_sum_us";
    pub const RAW_DIFF_MIN_US: &str = "raw_diff_min_us";
    pub const RAW_DIFF_MAX_US: &str = "raw_diff_max_us";
    /// Counter: events with a corrected one-way delay (their client has an offset estimate).
    pub const CORRECTED_EVENTS: &str = "corrected_events";
    /// Gauges (sum, min, max): arrival − (serverTimestamp − estimated offset), µs.
    pub const CORRECTED_SUM_US: &str = "corrected_sum_us";
    pub const CORRECTED_MIN_US: &str = "corrected_min_us";
    pub const CORRECTED_MAX_US: &str = "corrected_max_us";
    /// Counter: clients with a server clock offset estimate.
    pub const OFFSET_CLIENTS: &str = "offset_clients";
    /// Gauges (sum, min, max): server clock − agent clock, µs; (max) the largest bound.
    pub const OFFSET_SUM_US: &str = "offset_sum_us";
    pub const OFFSET_MIN_US: &str = "offset_min_us";
    pub const OFFSET_MAX_US: &str = "offset_max_us";
    pub const OFFSET_BOUND_MAX_US: &str = "offset_bound_max_us";
}

/// `session_sync` (beyond the document).
pub mod sync {
    /// Counters: members this run placed, connected, could not connect, reconnections.
    pub const MEMBERS_PLANNED: &str = "members_planned";
    pub const MEMBERS_CONNECTED: &str = "members_connected";
    pub const CONNECT_FAILURES: &str = "connect_failures";
    pub const RECONNECTS: &str = "reconnects";
    /// Counters: sessions' leaders; changes scheduled and emitted by them.
    pub const LEADERS: &str = "leaders";
    pub const CHANGES_SCHEDULED: &str = "changes_scheduled";
    pub const CHANGES_EMITTED: &str = "changes_emitted";
    /// Counters: member × change pairs expected, recognised in a snapshot, never seen.
    pub const EXPECTED_DELIVERIES: &str = "expected_deliveries";
    pub const DELIVERED: &str = "delivered";
    pub const MISSED: &str = "missed";
    /// Counter: members whose last state is the script's last.
    pub const CONVERGED: &str = "converged";
    /// Counters: snapshots repeating / older than the last `version`; without `version`,
    /// without `serverTimestamp`; in a state the script never produces; all snapshots.
    pub const DUPLICATES: &str = "duplicates";
    pub const OUT_OF_ORDER: &str = "out_of_order";
    pub const WITHOUT_VERSION: &str = "without_version";
    pub const WITHOUT_SERVER_TS: &str = "without_server_ts";
    pub const UNEXPECTED_STATES: &str = "unexpected_states";
    pub const SNAPSHOTS: &str = "snapshots";
    /// Counters: ticks received, ticks missing from positionMs gaps.
    pub const TICKS: &str = "ticks";
    pub const TICKS_MISSED: &str = "ticks_missed";
    /// Histograms, µs: change's scheduled instant → snapshot, for members on the leader's
    /// instance, on another instance, and the leader itself (its command round trip).
    pub const PROPAGATION_SAME_US: &str = "propagation_same_us";
    pub const PROPAGATION_CROSS_US: &str = "propagation_cross_us";
    pub const PROPAGATION_LEADER_US: &str = "propagation_leader_us";
    /// Histogram, µs: how late the leader emitted against the schedule.
    pub const EMIT_LAG_US: &str = "emit_lag_us";
    /// Histogram, µs: |tick interval − 100 ms| between consecutive ticks.
    pub const TICK_JITTER_US: &str = "tick_jitter_us";
    /// Gauge (max): server instances of the target.
    pub const INSTANCES: &str = "instances";
    /// Gauge (max): the most members one agent held, and its (peak RSS − RSS before) / members.
    pub const MEMBERS_PER_AGENT: &str = "members_per_agent";
    pub const RSS_PER_MEMBER_BYTES: &str = "rss_per_member_bytes";
    /// Gauge (max): the largest clock-offset uncertainty of the agents, µs.
    pub const CLOCK_BOUND_US: &str = "clock_bound_us";
    /// Gauge prefix for the beat phase: `phase.s{session}.b{segment}.i{instance}.min|max`, the
    /// earliest and latest member estimate (coordinator µs) of the instant the position was 0.
    pub const PHASE_PREFIX: &str = "phase.";

    pub fn phase_key(session: u64, segment: i64, instance: usize) -> String {
        format!("{PHASE_PREFIX}s{session}.b{segment}.i{instance}")
    }
}

/// `redis_failover` (document 3.1, with a real fault). The Socket.IO members record under
/// [`sync`]'s names in the same metric set.
pub mod failover {
    /// Gauges (set by the coordinator, coordinator µs): when the fault began and ended.
    pub const FAULT_BEGIN_US: &str = "fault_begin_us";
    pub const FAULT_END_US: &str = "fault_end_us";
    /// Counters: Redis operations that succeeded, failed, of which timed out.
    pub const OPS_OK: &str = "ops_ok";
    pub const OPS_FAILED: &str = "ops_failed";
    pub const OPS_TIMED_OUT: &str = "ops_timed_out";
    /// Gauges (min): the first failed operation (coordinator µs); (max) the last one.
    pub const FIRST_FAILURE_US: &str = "first_failure_us";
    pub const LAST_FAILURE_US: &str = "last_failure_us";
    /// Gauge (max over agents): the first success after an agent's last failure (coordinator µs):
    /// the slowest agent's recovery.
    pub const RECOVERED_AT_US: &str = "recovered_at_us";
    /// Counter: agents whose clients never succeeded again after failing.
    pub const AGENTS_NOT_RECOVERED: &str = "agents_not_recovered";
    /// Counter: agents that saw no failure at all.
    pub const AGENTS_UNAFFECTED: &str = "agents_unaffected";
    /// Counters: keys written before the fault; read back intact after it; missing or changed.
    pub const KEYS_WRITTEN: &str = "keys_written";
    pub const KEYS_KEPT: &str = "keys_kept";
    pub const KEYS_LOST: &str = "keys_lost";
    /// Counters: pooled operations that succeeded / failed; histogram of their pool wait, µs.
    pub const POOL_OK: &str = "pool_ok";
    pub const POOL_FAILED: &str = "pool_failed";
    /// Counter: connections the pool opened after the fault began (reconnections).
    pub const POOL_RECONNECTS: &str = "pool_reconnects";
    pub const POOL_WAIT_US: &str = "pool_wait_us";
    /// Histogram: Redis operation latency, µs (failures included, at their timeout).
    pub const LATENCY_US: &str = "latency_us";
    /// Counters per server instance i: members whose session was playing during the fault, and
    /// of them the ones that kept receiving ticks during it (graceful degradation).
    pub fn outage_members(instance: usize) -> String {
        format!("outage_members.i{instance}")
    }
    pub fn outage_ticking(instance: usize) -> String {
        format!("outage_ticking.i{instance}")
    }
    /// Counters: members on another instance than their leader, with a change made during the
    /// fault; and those that reached that change's state (or a later one) after it.
    pub const OUTAGE_CROSS_EXPECTED: &str = "outage_cross_expected";
    pub const OUTAGE_CROSS_SEEN: &str = "outage_cross_seen";
}
