//! Document 1.1: timestamp precision.
//!
//! "Timestamp" means what the server's `Date.now()` returns: wall-clock milliseconds since the
//! epoch. Precision also reads the clock in nanoseconds to show its real resolution.

use std::time::Duration;

use bandsync_common::clock::now_unix_ns;
use bandsync_common::metrics::MetricSet;
use bandsync_common::workloads::TimestampPrecision;
use bandsync_common::workloads::timestamp_precision::names as ts_precision;
use tokio_util::sync::CancellationToken;

use super::{Live, Run, StepContext, WorkloadError, date_now_ms};

impl Run for TimestampPrecision {
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
        precision(self.duration, self.max_samples, &ctx.cancel, &ctx.live).await
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
