//! Document 1.1: timestamp generation performance and timestamp precision.
//!
//! "Timestamp" means what the server's `Date.now()` returns: wall-clock milliseconds since the
//! epoch. Precision also reads the clock in nanoseconds to show its real resolution.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bandsync_common::clock::now_unix_ns;
use bandsync_common::metrics::{GaugeMerge, MetricSet};
use bandsync_common::workloads::timestamp_generation::names as ts_gen;
use bandsync_common::workloads::timestamp_precision::names as ts_precision;
use tokio_util::sync::CancellationToken;

use super::{Live, WorkloadError};
use super::{Run, StepContext, date_now_ms};
use bandsync_common::workloads::{TimestampGeneration, TimestampPrecision};

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

/// Takes three timestamps in a row, then waits 1 ms, for `duration` (at most `max_samples` times),
/// as the document does; also records the gap between two nanosecond clock reads.
pub async fn precision(
    duration: Duration,
    max_samples: u64,
    cancel: &CancellationToken,
    live: &Live,
) -> Result<MetricSet, WorkloadError> {
    let mut m = MetricSet::new();
    let (mut n, mut zero, mut small, mut large, mut diff_sum) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let deadline = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < deadline && n < max_samples {
        let t1 = date_now_ms();
        let t2 = date_now_ms();
        let t3 = date_now_ms();
        let (d12, d23) = (t2 - t1, t3 - t2);
        n += 1;
        zero += u64::from(d12 == 0 || d23 == 0);
        small += u64::from(d12 <= 1 && d23 <= 1);
        large += u64::from(d12 > 10 || d23 > 10);
        diff_sum += (d12 + d23).max(0) as u64;
        let a = now_unix_ns();
        let b = now_unix_ns();
        let _ = m.histogram_mut(ts_precision::READ_GAP_NS).record((b - a).max(0) as u64);
        live.add_ops(1);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(1)) => {}
            () = cancel.cancelled() => return Err(WorkloadError::Cancelled),
        }
    }
    m.add_counter(ts_precision::MEASUREMENTS, n);
    m.add_counter(ts_precision::ZERO_DIFFS, zero);
    m.add_counter(ts_precision::SMALL_DIFFS, small);
    m.add_counter(ts_precision::LARGE_DIFFS, large);
    m.add_counter(ts_precision::DIFF_SUM_MS, diff_sum);
    Ok(m)
}

impl Run for TimestampGeneration {
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
        let (cancel, live) = (ctx.cancel.clone(), ctx.live.clone());
        let (iterations, batch_size) = (self.iterations, self.batch_size);
        tokio::task::spawn_blocking(move || generation(iterations, batch_size, &cancel, &live))
            .await
            .map_err(|e| WorkloadError::Internal(format!("timestamp generation panicked: {e}")))?
    }
}

impl Run for TimestampPrecision {
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
        precision(self.duration, self.max_samples, &ctx.cancel, &ctx.live).await
    }
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

    #[tokio::test]
    async fn precision_is_bounded_by_max_samples() {
        let live = Live::default();
        let m = precision(Duration::from_secs(10), 5, &CancellationToken::new(), &live)
            .await
            .unwrap();
        assert_eq!(m.counter(ts_precision::MEASUREMENTS), 5);
        assert_eq!(m.histogram(ts_precision::READ_GAP_NS).unwrap().len(), 5);
    }
}
