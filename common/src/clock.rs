//! NTP-style clock-offset estimation between the coordinator and an agent.
//!
//! The coordinator stamps `t1` when it sends a probe, the agent stamps `t2` on receipt and `t3`
//! when it replies, the coordinator stamps `t4` on receipt. With one-way delays `d1`, `d2` and a
//! true offset `θ` (agent clock − coordinator clock):
//! `t2 = t1 + d1 + θ` and `t4 = t3 + d2 − θ`, so the estimate `((t2 − t1) + (t3 − t4)) / 2`
//! equals `θ + (d1 − d2) / 2`. Since both delays are non-negative, its error is at most
//! `(d1 + d2) / 2` = RTT/2, where RTT = `(t4 − t1) − (t3 − t2)`. Keeping the sample with the
//! smallest RTT gives the tightest bound; that bound is the estimate's stated uncertainty.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Wall-clock nanoseconds since the Unix epoch.
pub fn now_unix_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// One four-timestamp exchange, all in nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    /// Coordinator clock, probe sent.
    pub t1: i64,
    /// Agent clock, probe received.
    pub t2: i64,
    /// Agent clock, reply sent.
    pub t3: i64,
    /// Coordinator clock, reply received.
    pub t4: i64,
}

impl ClockSample {
    /// Round-trip network time, excluding the agent's processing time.
    pub fn rtt_ns(&self) -> i64 {
        (self.t4 - self.t1) - (self.t3 - self.t2)
    }

    /// Estimated agent clock − coordinator clock.
    pub fn offset_ns(&self) -> i64 {
        // Halve each part before adding, so the sum cannot overflow with epoch-sized values.
        let a = self.t2 - self.t1;
        let b = self.t3 - self.t4;
        a / 2 + b / 2 + (a % 2 + b % 2) / 2
    }
}

/// The estimate kept for an agent: the true offset lies within `offset_ns ± uncertainty_ns`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ClockEstimate {
    pub offset_ns: i64,
    pub uncertainty_ns: i64,
    pub rtt_ns: i64,
    pub samples: u32,
}

impl ClockEstimate {
    /// Converts an instant of this agent's clock to coordinator time.
    pub fn to_coordinator(&self, agent_unix_ns: i64) -> i64 {
        agent_unix_ns - self.offset_ns
    }

    /// Converts an instant of coordinator time to this agent's clock.
    pub fn to_agent(&self, coordinator_unix_ns: i64) -> i64 {
        coordinator_unix_ns + self.offset_ns
    }

    /// Is `true_offset_ns` within the stated bound (used by tests and self-checks)?
    pub fn contains(&self, true_offset_ns: i64) -> bool {
        (self.offset_ns - true_offset_ns).abs() <= self.uncertainty_ns
    }
}

/// Keeps the minimum-RTT sample. Samples with a negative RTT (impossible unless a clock stepped
/// during the exchange) are discarded. `None` when no usable sample remains.
pub fn estimate(samples: &[ClockSample]) -> Option<ClockEstimate> {
    let usable = samples.iter().filter(|s| s.rtt_ns() >= 0);
    let count = u32::try_from(usable.clone().count()).unwrap_or(u32::MAX);
    let best = usable.min_by_key(|s| s.rtt_ns())?;
    let rtt = best.rtt_ns();
    Some(ClockEstimate {
        offset_ns: best.offset_ns(),
        // Round up, so the bound is never understated by integer division.
        uncertainty_ns: (rtt + 1) / 2,
        rtt_ns: rtt,
        samples: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(t1: i64, offset: i64, d1: i64, processing: i64, d2: i64) -> ClockSample {
        let t2 = t1 + d1 + offset;
        let t3 = t2 + processing;
        let t4 = t3 - offset + d2;
        ClockSample { t1, t2, t3, t4 }
    }

    #[test]
    fn symmetric_delays_recover_the_offset_exactly() {
        let s = exchange(1_700_000_000_000_000_000, 12_345_678, 500_000, 20_000, 500_000);
        assert_eq!(s.rtt_ns(), 1_000_000);
        assert_eq!(s.offset_ns(), 12_345_678);
    }

    #[test]
    fn asymmetric_delays_stay_within_the_stated_bound() {
        let true_offsets = [-3_000_000_000i64, -1, 0, 7, 250_000_000, 42_000_000_000];
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |m: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % m) as i64
        };
        for &theta in &true_offsets {
            let samples: Vec<_> = (0..16)
                .map(|i| {
                    // Very asymmetric paths: one direction up to 50x slower than the other.
                    let d1 = 10_000 + next(5_000_000);
                    let d2 = 10_000 + next(100_000);
                    let (d1, d2) = if i % 2 == 0 { (d1, d2) } else { (d2, d1) };
                    exchange(1_764_000_000_000_000_000 + i * 1_000_000, theta, d1, next(50_000), d2)
                })
                .collect();
            let est = estimate(&samples).unwrap();
            assert!(est.contains(theta), "theta={theta} est={est:?}");
            let min_rtt = samples.iter().map(|s| s.rtt_ns()).min().unwrap();
            assert_eq!(est.rtt_ns, min_rtt, "keeps the minimum-RTT sample");
            assert_eq!(est.samples, 16);
            // Conversions are inverse of each other.
            assert_eq!(est.to_coordinator(est.to_agent(123)), 123);
        }
    }

    #[test]
    fn worst_case_asymmetry_hits_but_does_not_exceed_the_bound() {
        // All the delay on one leg: error is exactly RTT/2.
        let s = exchange(1_000_000_000, 5_000, 2_000_000, 0, 0);
        let est = estimate(&[s]).unwrap();
        assert_eq!((est.offset_ns - 5_000).abs(), 1_000_000);
        assert!(est.contains(5_000));
    }

    #[test]
    fn negative_rtt_samples_are_discarded() {
        let bad = ClockSample {
            t1: 100,
            t2: 100,
            t3: 1_000,
            t4: 200,
        };
        assert!(bad.rtt_ns() < 0);
        assert_eq!(estimate(&[bad]), None);
        let good = exchange(1_000, 0, 10, 1, 10);
        assert_eq!(estimate(&[bad, good]).unwrap().samples, 1);
    }
}
