//! Golden test of the text report: a fixed run record (every step kind, fixed histograms, times
//! and agents) renders to exactly `golden/report.txt`. After an intended change, review the diff
//! and regenerate with `UPDATE_GOLDEN=1 cargo test -p bandsync-common --test report_golden`.

use std::time::Duration;

use bandsync_common::clock::ClockEstimate;
use bandsync_common::metrics::{GaugeMerge, MetricSet};
use bandsync_common::names::{basic_ops, concurrent, integrity, memory, pool, ts_gen, ts_precision, updates};
use bandsync_common::plan::{Connections, Criteria, Locking, Step, StepSpec};
use bandsync_common::report::{AgentRow, Report, RunRecord, RunStatus, StepRecord, render_junit, render_text};

fn step(name: &str, spec: StepSpec, merged: MetricSet, agents: usize) -> StepRecord {
    let ids: Vec<String> = (0..agents).map(|i| format!("agent-{i}")).collect();
    StepRecord {
        step: Step {
            name: name.into(),
            timeout: Duration::from_secs(60),
            spec,
        },
        agents_sent: ids.clone(),
        agents_reported: ids.clone(),
        failures: Vec::new(),
        duration_s: 1.25,
        merged,
        scheduled_start_unix_ns: 1_000_000_000,
        agent_starts_unix_ns: ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), 1_000_000_000 + i as i64 * 250_000))
            .collect(),
    }
}

fn latencies(m: &mut MetricSet, name: &str, values: impl IntoIterator<Item = u64>) {
    for v in values {
        m.histogram_mut(name).record(v).unwrap();
    }
}

fn record() -> RunRecord {
    let mut generation = MetricSet::new();
    generation.add_counter(ts_gen::TIMESTAMPS, 200_000);
    generation.add_counter(ts_gen::BATCHES, 200);
    generation.add_counter(ts_gen::COMPARISONS, 199_800);
    generation.set_gauge(ts_gen::RATE_SUM, 200.0 * 20_000_000.0, GaugeMerge::Sum);
    generation.set_gauge(ts_gen::RATE_MIN, 1_000_000.0, GaugeMerge::Min);
    generation.set_gauge(ts_gen::RATE_MAX, 25_000_000.0, GaugeMerge::Max);
    latencies(&mut generation, ts_gen::BATCH_NS, (0..200).map(|i| 40_000 + i * 10));

    let mut prec = MetricSet::new();
    prec.add_counter(ts_precision::MEASUREMENTS, 1000);
    prec.add_counter(ts_precision::ZERO_DIFFS, 990);
    prec.add_counter(ts_precision::SMALL_DIFFS, 1000);
    prec.add_counter(ts_precision::DIFF_SUM_MS, 10);
    latencies(&mut prec, ts_precision::READ_GAP_NS, (0..1000).map(|i| 50 + i % 20));

    let mut basic = MetricSet::new();
    basic.set_gauge(basic_ops::PAYLOAD_BYTES, 1270.0, GaugeMerge::Max);
    basic.add_counter(basic_ops::CLIENTS, 2);
    for (k, op) in basic_ops::OPS.iter().enumerate() {
        latencies(
            &mut basic,
            &basic_ops::latency_us(op),
            (0..2000).map(|i| 60 + (i % 50) + k as u64 * 5),
        );
        basic.add_counter(&basic_ops::ok(op), 2000);
        basic.add_counter(&basic_ops::errors(op), 0);
        basic.set_gauge(&basic_ops::start_us(op), 1.0e12, GaugeMerge::Min);
        basic.set_gauge(&basic_ops::end_us(op), 1.0e12 + 100_000.0, GaugeMerge::Max);
        basic.set_gauge(&basic_ops::cpu_us(op), 60_000.0, GaugeMerge::Sum);
    }

    let mut conc = MetricSet::new();
    latencies(&mut conc, concurrent::LATENCY_US, (0..5000).map(|i| 500 + i % 1500));
    conc.add_counter(concurrent::OK, 4990);
    conc.add_counter(concurrent::ERRORS, 10);
    conc.add_counter(concurrent::CLIENTS, 50);
    conc.add_counter(concurrent::CONNECTIONS, 2);
    conc.set_gauge(concurrent::START_US, 1.0e12, GaugeMerge::Min);
    conc.set_gauge(concurrent::END_US, 1.0e12 + 250_000.0, GaugeMerge::Max);

    let mut mem = MetricSet::new();
    mem.set_gauge(memory::USED_INITIAL, 1_000_000.0, GaugeMerge::Max);
    mem.set_gauge(memory::USED_PEAK, 3_200_000.0, GaugeMerge::Max);
    mem.set_gauge(memory::USED_HALF, 2_100_000.0, GaugeMerge::Max);
    mem.set_gauge(memory::USED_FINAL, 1_040_000.0, GaugeMerge::Max);
    mem.set_gauge(memory::PAYLOAD_BYTES, 1700.0, GaugeMerge::Max);
    mem.add_counter(memory::SESSIONS, 1000);
    mem.add_counter(memory::SAMPLE_BYTES, 50 * 2100);
    mem.add_counter(memory::SAMPLE_KEYS, 50);

    let mut integ = MetricSet::new();
    for (k, v) in [
        (integrity::SESSIONS, 100),
        (integrity::WRITTEN, 100),
        (integrity::READ, 100),
        (integrity::MATCHES, 100),
    ] {
        integ.add_counter(k, v);
    }

    let mut upd = MetricSet::new();
    upd.add_counter(updates::UPDATERS, 50);
    upd.add_counter(updates::ATTEMPTED, 50);
    upd.add_counter(updates::SUCCEEDED, 50);
    upd.add_counter(updates::RETRIES, 321);
    upd.set_gauge(updates::INITIAL_POSITION, 0.0, GaugeMerge::Max);
    upd.set_gauge(updates::FINAL_POSITION, 5000.0, GaugeMerge::Max);
    upd.set_gauge(updates::FINAL_VERSION, 50.0, GaugeMerge::Max);
    latencies(&mut upd, updates::LATENCY_US, (0..50).map(|i| 1000 + i * 100));

    let mut pl = MetricSet::new();
    pl.add_counter(pool::OPS, 400);
    pl.add_counter(pool::OK, 400);
    pl.add_counter(pool::AGENTS, 2);
    pl.add_counter(pool::CONNECTIONS_OPENED, 2);
    pl.set_gauge(pool::POOL_SIZE, 20.0, GaugeMerge::Max);
    pl.set_gauge(pool::DURATION_US, 10_000_000.0, GaugeMerge::Max);
    latencies(&mut pl, pool::LATENCY_US, (0..400).map(|i| 1500 + i * 3));
    latencies(&mut pl, pool::POOL_WAIT_US, (0..400).map(|i| 200 + i));

    let agent = |i: u32| AgentRow {
        index: i,
        agent_id: format!("agent-{i}"),
        hostname: format!("load-{i}"),
        address: format!("10.0.0.{}:40000", 10 + i),
        cores: 8,
        version: "0.1.0".into(),
        clock: Some(ClockEstimate {
            offset_ns: 150_000 * i64::from(i),
            uncertainty_ns: 80_000,
            rtt_ns: 160_000,
            samples: 16,
        }),
        clock_drift_ns: Some(12_000),
        steps_completed: 8,
        errors: 10,
        lost: None,
        lost_in_step: None,
        lost_after_s: None,
    };
    RunRecord {
        plan_name: "golden".into(),
        plan_hash: "0123456789abcdef".into(),
        run_id: "r1700000000-abcdef".into(),
        started_unix_ms: 1_700_000_000_000,
        execution_time_s: 42.5,
        status: RunStatus::Complete,
        redis_url: Some("redis://:secret@redis.internal:6379".into()),
        key_prefix: "bandsync-test".into(),
        criteria: Criteria::default(),
        agents: vec![agent(0), agent(1)],
        steps: vec![
            step(
                "timestamp_generation",
                StepSpec::TimestampGeneration {
                    iterations: 100_000,
                    batch_size: 1000,
                },
                generation,
                2,
            ),
            step(
                "timestamp_precision",
                StepSpec::TimestampPrecision {
                    duration: Duration::from_secs(10),
                    max_samples: 1_000_000,
                },
                prec,
                2,
            ),
            step(
                "redis_basic_ops",
                StepSpec::RedisBasicOps {
                    iterations: 1000,
                    members: 10,
                    clients: 1,
                },
                basic,
                2,
            ),
            step(
                "redis_concurrent",
                StepSpec::RedisConcurrent {
                    clients: 50,
                    operations: 100,
                    members: 4,
                    connections: Connections::Shared,
                },
                conc,
                2,
            ),
            step(
                "redis_memory",
                StepSpec::RedisMemory {
                    sessions: 1000,
                    members: 8,
                    sample: 50,
                },
                mem,
                1,
            ),
            step(
                "session_integrity",
                StepSpec::SessionIntegrity { sessions: 100 },
                integ,
                2,
            ),
            step(
                "concurrent_updates",
                StepSpec::SessionConcurrentUpdates {
                    updaters: 50,
                    updates: 1,
                    members: 4,
                    locking: Locking::Watch,
                    max_retries: 1000,
                },
                upd,
                2,
            ),
            step(
                "redis_pool",
                StepSpec::RedisPool {
                    pool_size: 20,
                    interval: Duration::from_millis(50),
                    duration: Duration::from_secs(10),
                },
                pl,
                2,
            ),
        ],
        leftover_keys: Some(0),
    }
}

fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{} differs from the rendering at line {}:\n  golden: {:?}\n  actual: {:?}\n(review, then UPDATE_GOLDEN=1 to accept)",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

#[test]
fn the_text_report_matches_the_golden_file() {
    golden("report.txt", &render_text(&Report::build(record())));
}

#[test]
fn the_junit_report_matches_the_golden_file() {
    golden("report.xml", &render_junit(&Report::build(record())));
}
