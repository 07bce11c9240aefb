//! Document 1.1: timestamp generation performance.
//!
//! "Timestamp" means what the server's `Date.now()` returns: wall-clock milliseconds since the
//! epoch.

use std::hint::black_box;
use std::time::Instant;

use bandsync_common::metrics::{GaugeMerge, MetricSet};
use bandsync_common::workloads::TimestampGeneration;
use bandsync_common::workloads::timestamp_generation::names as ts_gen;
use tokio_util::sync::CancellationToken;

use super::{Live, Run, StepContext, WorkloadError, date_now_ms};

impl Run for TimestampGeneration {
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
        let (cancel, live) = (ctx.cancel.clone(), ctx.live.clone());
        let (iterations, batch_size) = (self.iterations, self.batch_size);
        tokio::task::spawn_blocking(move || generation(iterations, batch_size, &cancel, &live))
            .await
            .map_err(|e| WorkloadError::Internal(format!("timestamp generation panicked: {e}")))?
    }
}

/// Generates `iterations` timestamps in batches of `batch_size`, timing each batch, and checks
/// every consecutive pair within a batch for going backwards or jumping more than 1 s.
/// Blocking: run it on a blocking thread.
pub fn generation(
    iterations: u64,
    batch_size: u64,
    cancel: &CancellationToken,
    live: &Live,
) -> Result<MetricSet, WorkloadError> {
    let batch_size = batch_size.max(1);
    let batches = iterations / batch_size;
    let mut m = MetricSet::new();
    let mut buf: Vec<i64> = Vec::with_capacity(batch_size as usize);
    let (mut rate_sum, mut rate_min, mut rate_max) = (0.0f64, f64::INFINITY, 0.0f64);
    let (mut comparisons, mut backwards, mut jumps) = (0u64, 0u64, 0u64);
    for _ in 0..batches {
        if cancel.is_cancelled() {
            return Err(WorkloadError::Cancelled);
        }
        buf.clear();
        let start = Instant::now();
        for _ in 0..batch_size {
            buf.push(date_now_ms());
        }
        let elapsed = start.elapsed();
        black_box(&buf);
        let secs = elapsed.as_secs_f64().max(1e-9);
        let rate = batch_size as f64 / secs;
        rate_sum += rate;
        rate_min = rate_min.min(rate);
        rate_max = rate_max.max(rate);
        let _ = m.histogram_mut(ts_gen::BATCH_NS).record(elapsed.as_nanos() as u64);
        for w in buf.windows(2) {
            comparisons += 1;
            if w[1] < w[0] {
                backwards += 1;
            }
            if w[1] - w[0] > 1000 {
                jumps += 1;
            }
        }
        live.add_ops(batch_size);
    }
    m.add_counter(ts_gen::TIMESTAMPS, batches * batch_size);
    m.add_counter(ts_gen::BATCHES, batches);
    m.add_counter(ts_gen::COMPARISONS, comparisons);
    m.add_counter(ts_gen::BACKWARDS, backwards);
    m.add_counter(ts_gen::JUMPS, jumps);
    m.set_gauge(ts_gen::RATE_SUM, rate_sum, GaugeMerge::Sum);
    if batches > 0 {
        m.set_gauge(ts_gen::RATE_MIN, rate_min, GaugeMerge::Min);
        m.set_gauge(ts_gen::RATE_MAX, rate_max, GaugeMerge::Max);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_counts_what_it_did() {
        let live = Live::default();
        let m = generation(10_000, 1_000, &CancellationToken::new(), &live).unwrap();
        assert_eq!(m.counter(ts_gen::TIMESTAMPS), 10_000);
        assert_eq!(m.counter(ts_gen::BATCHES), 10);
        assert_eq!(m.counter(ts_gen::COMPARISONS), 10 * 999);
        assert_eq!(m.histogram(ts_gen::BATCH_NS).unwrap().len(), 10);
        assert!(m.gauge(ts_gen::RATE_MIN).unwrap() <= m.gauge(ts_gen::RATE_MAX).unwrap());
        assert_eq!(live.snapshot().0, 10_000);
    }

    #[test]
    fn generation_stops_when_cancelled() {
        let c = CancellationToken::new();
        c.cancel();
        assert!(matches!(
            generation(1_000, 10, &c, &Live::default()),
            Err(WorkloadError::Cancelled)
        ));
    }
}
