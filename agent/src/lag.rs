//! The agent's own lateness while a step runs (generator honesty, see
//! `bandsync_common::report::generator`): a task that asks to wake every 10 ms on the runtime the
//! workload runs on records how late it woke, µs, corrected for the wakes a stall swallowed (a
//! 300 ms stall counts as the 30 wakes it held up, as HdrHistogram's `record_correct` does).

use std::time::Duration;

use bandsync_common::metrics::{GaugeMerge, Hist, MetricSet, new_histogram};
use bandsync_common::report::generator::names;
use tokio_util::sync::CancellationToken;

const PERIOD: Duration = Duration::from_millis(10);

/// Runs until `done`; returns what it measured.
pub async fn probe(done: CancellationToken) -> Hist {
    let mut h = new_histogram();
    let mut next = tokio::time::Instant::now() + PERIOD;
    loop {
        tokio::select! {
            () = done.cancelled() => break,
            () = tokio::time::sleep_until(next) => {}
        }
        let now = tokio::time::Instant::now();
        let late = now.saturating_duration_since(next).as_micros() as u64;
        let _ = h.record_correct(late, PERIOD.as_micros() as u64);
        next = now + PERIOD;
    }
    h
}

/// Puts `lag` into a step's metrics as agent `agent`'s, unless the workload already recorded
/// the lag of a runtime of its own (which is where its load ran).
pub fn record(m: &mut MetricSet, lag: &Hist, agent: u32) {
    if lag.is_empty() || m.histogram(names::LAG_US).is_some() {
        return;
    }
    m.set_gauge(
        &names::agent_lag_p99_us(agent),
        lag.value_at_quantile(0.99) as f64,
        GaugeMerge::Max,
    );
    // Same precision on both sides: adding cannot fail.
    let _ = m.histogram_mut(names::LAG_US).add(lag);
}
