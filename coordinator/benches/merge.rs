//! The coordinator's merge, at scale: 100 simulated agents each send a step result of 10 HDR
//! histograms and 20 counters; the coordinator decodes every message and merges it exactly
//! (`controller::merge_result`, the function the run uses). Prints the merge time and the bytes
//! each agent sends per step. Targets: < 100 ms and < 64 KB.
//!
//! Two shapes of latency, both with 100,000 samples per histogram:
//! - typical: log-normal around 250 µs (σ = 0.8), as a Redis or Socket.IO step produces;
//! - worst case: log-uniform from 20 µs to 2 s, which fills about 17,000 HDR buckets per histogram.
//!
//! Run: `scripts/bench-merge` (release build).

use std::time::Instant;

use bandsync_common::metrics::MetricSet;
use bandsync_coordinator::controller::merge_result;
use bandsync_proto::pb;
use prost::Message;

const AGENTS: usize = 100;
const ROUNDS: usize = 7;

mod shapes;
use shapes::{COUNTERS, HISTOGRAMS, SAMPLES_PER_HISTOGRAM, Shape, agent_metrics};

fn agent_result(agent: usize, shape: Shape) -> Vec<u8> {
    pb::StepResult {
        step_index: 0,
        outcome: Some(pb::step_result::Outcome::Metrics(agent_metrics(agent, shape))),
        ops: 1,
        errors: 0,
        coord_started_unix_ns: 1,
        ..Default::default()
    }
    .encode_to_vec()
}

fn main() {
    println!(
        "bench-merge: {AGENTS} agents x ({HISTOGRAMS} histograms of {SAMPLES_PER_HISTOGRAM} samples + {COUNTERS} counters), targets < 100 ms and < 64 KB"
    );
    for shape in [Shape::Typical, Shape::WorstCase] {
        bench(shape);
    }
}

fn bench(shape: Shape) {
    let wire: Vec<Vec<u8>> = (0..AGENTS).map(|a| agent_result(a, shape)).collect();
    let sizes: Vec<usize> = wire.iter().map(Vec::len).collect();
    let avg = sizes.iter().sum::<usize>() as f64 / AGENTS as f64;
    let max = *sizes.iter().max().unwrap();

    let mut times = Vec::with_capacity(ROUNDS);
    let mut merged = MetricSet::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        merged = MetricSet::new();
        for bytes in &wire {
            let msg = pb::StepResult::decode(bytes.as_slice()).unwrap();
            let Some(pb::step_result::Outcome::Metrics(m)) = msg.outcome else {
                unreachable!()
            };
            merge_result(&mut merged, &m).unwrap();
        }
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = times[ROUNDS / 2];

    // The merge is exact: every sample of every agent is in the merged histograms.
    for h in merged.histograms.values() {
        assert_eq!(h.len(), (AGENTS * SAMPLES_PER_HISTOGRAM) as u64);
    }
    assert_eq!(merged.counters.len(), COUNTERS);
    let buckets = merged
        .histograms
        .values()
        .next()
        .map_or(0, |h| h.iter_recorded().count());

    println!("  {shape:?} latency ({buckets} non-empty buckets per merged histogram):");
    println!(
        "    merge time (decode + exact merge), median of {ROUNDS}: {median:.1} ms [min {:.1}, max {:.1}]  {}",
        times[0],
        times[ROUNDS - 1],
        if median < 100.0 { "PASS" } else { "FAIL" }
    );
    println!(
        "    bytes per agent per step: avg {:.1} KB, max {:.1} KB  {}",
        avg / 1024.0,
        max as f64 / 1024.0,
        if max < 64 * 1024 { "PASS" } else { "FAIL" }
    );
}
