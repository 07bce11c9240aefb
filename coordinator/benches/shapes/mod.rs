//! What a simulated agent sends at the end of a step, for the coordinator benchmarks: 10 HDR
//! histograms of 100,000 samples and 20 counters, in one of two latency shapes:
//! - typical: log-normal around 250 µs (σ = 0.8), as a Redis or Socket.IO step produces;
//! - worst case: log-uniform from 20 µs to 2 s, which fills about 17,000 HDR buckets per histogram.

#![allow(dead_code)] // each benchmark uses part of it

use bandsync_common::metrics::MetricSet;
use bandsync_proto::pb;

pub const HISTOGRAMS: usize = 10;
pub const COUNTERS: usize = 20;
pub const SAMPLES_PER_HISTOGRAM: usize = 100_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn latency_us(&mut self, shape: Shape) -> u64 {
        match shape {
            // Box-Muller normal, exponentiated.
            Shape::Typical => {
                let z = (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos();
                (250.0 * (0.8 * z).exp()) as u64
            }
            Shape::WorstCase => (20.0 * (1e5f64).powf(self.unit())) as u64,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Shape {
    Typical,
    WorstCase,
}

/// Agent `agent`'s metrics for one step (seeded by the agent: every agent's differ).
pub fn agent_metrics(agent: usize, shape: Shape) -> pb::MetricSet {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (agent as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut m = MetricSet::new();
    for h in 0..HISTOGRAMS {
        let hist = m.histogram_mut(&format!("op{h}.latency_us"));
        for _ in 0..SAMPLES_PER_HISTOGRAM {
            hist.record(rng.latency_us(shape)).unwrap();
        }
    }
    for c in 0..COUNTERS {
        m.add_counter(&format!("counter{c}"), rng.next() % 1_000_000);
    }
    pb::MetricSet::try_from(&m).unwrap()
}
