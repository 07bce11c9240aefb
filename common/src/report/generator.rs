//! Generator honesty: whether the agents themselves were late while a step ran. Every agent
//! measures its own lateness (a task that asks to wake every 10 ms records how late it woke,
//! corrected for the wakes a stall swallowed; the open model's scheduler records how late it
//! released each arrival) and its CPU. A step whose generator was limited cannot PASS a
//! criterion: its figures may show the agent's delay, not the system's.

use schemars::JsonSchema;
use serde::Serialize;

use crate::metrics::{HistSummary, MetricSet};
use crate::workloads::arrival;

/// Metric names the agents record for every step.
pub mod names {
    /// Histogram: how late the 10 ms probe woke, µs (all agents).
    pub const LAG_US: &str = "generator.lag_us";
    /// Gauge (max): agent `i`'s probe lag p99, µs.
    pub fn agent_lag_p99_us(agent: u32) -> String {
        format!("generator.agent{agent}.lag_p99_us")
    }
    pub const AGENT_PREFIX: &str = "generator.agent";
}

/// An agent whose lag p99 exceeds this (ms) is a limited generator (`[criteria]
/// generator_lag_p99_ms` sets it); so is one above [`super::CPU_BOUND_PERCENT`] of its cores.
pub const DEFAULT_LAG_LIMIT_MS: f64 = 10.0;
use super::CPU_BOUND_PERCENT as CPU_LIMIT_PERCENT;

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Generator {
    /// "ok" or "limited".
    pub status: GeneratorStatus,
    /// The worst agent's probe lag p99, ms, and which agent.
    pub lag_p99_ms: Option<f64>,
    pub lag_worst_agent: Option<u32>,
    /// All agents' probe lag, ms.
    pub lag_max_ms: Option<f64>,
    /// The open model's scheduler: release minus intended start, p99, ms.
    pub timer_lag_p99_ms: Option<f64>,
    /// The highest agent CPU over the step, percent of its cores.
    pub cpu_percent_max: Option<f64>,
    pub lag_limit_ms: f64,
    /// What limited it (empty when ok).
    pub limits: Vec<String>,
    /// Which side was late, in words.
    pub verdict: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GeneratorStatus {
    Ok,
    Limited,
}

impl Generator {
    pub fn limited(&self) -> bool {
        self.status == GeneratorStatus::Limited
    }
}

/// The verdict from a step's merged metrics and its agents' CPU (percent of their cores);
/// `None` when the agents measured nothing (older agents, or no agent returned a result).
pub fn judge(m: &MetricSet, cpu_percent: &[f64], lag_limit_ms: f64) -> Option<Generator> {
    let ms = |us: u64| us as f64 / 1000.0;
    let probe = m
        .histogram(names::LAG_US)
        .filter(|h| !h.is_empty())
        .map(HistSummary::of);
    let timer = m
        .histogram(arrival::names::TIMER_LAG_US)
        .filter(|h| !h.is_empty())
        .map(HistSummary::of);
    let worst = m
        .gauges
        .keys()
        .filter_map(|k| {
            let agent: u32 = k
                .strip_prefix(names::AGENT_PREFIX)?
                .strip_suffix(".lag_p99_us")?
                .parse()
                .ok()?;
            Some((agent, m.gauge(k)?))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if probe.is_none() && timer.is_none() {
        return None;
    }
    let lag_p99_ms = worst.map(|(_, us)| us / 1000.0).or(probe.map(|p| ms(p.p99)));
    let timer_lag_p99_ms = timer.map(|t| ms(t.p99));
    let cpu_percent_max = cpu_percent.iter().copied().reduce(f64::max);
    let mut why = Vec::new();
    if let Some(l) = lag_p99_ms.filter(|l| *l > lag_limit_ms) {
        why.push(format!(
            "{}lag p99 {l:.1} ms > {lag_limit_ms} ms",
            worst.map_or(String::new(), |(a, _)| format!("agent {a} "))
        ));
    }
    if let Some(t) = timer_lag_p99_ms.filter(|t| *t > lag_limit_ms) {
        why.push(format!(
            "scheduler released arrivals late: p99 {t:.1} ms > {lag_limit_ms} ms"
        ));
    }
    if let Some(c) = cpu_percent_max.filter(|c| *c >= CPU_LIMIT_PERCENT) {
        why.push(format!("an agent used {c:.0} % of its cores (≥ {CPU_LIMIT_PERCENT} %)"));
    }
    let shown = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} ms"));
    let (status, verdict) = if why.is_empty() {
        (
            GeneratorStatus::Ok,
            format!(
                "ok: the agents were on time (lag p99 {}, CPU max {}), so delays in these figures come from the servers, Redis or the network",
                shown(lag_p99_ms),
                cpu_percent_max.map_or_else(|| "n/a".to_owned(), |c| format!("{c:.0} %"))
            ),
        )
    } else {
        (
            GeneratorStatus::Limited,
            format!(
                "LIMITED: {} — the agents themselves were late, so these figures may show the load generator's delay, not the system's; no criterion passes on them (add agents or lower the load)",
                why.join("; ")
            ),
        )
    };
    Some(Generator {
        status,
        lag_p99_ms,
        lag_worst_agent: worst.map(|(a, _)| a),
        lag_max_ms: probe.map(|p| ms(p.max)),
        timer_lag_p99_ms,
        cpu_percent_max,
        lag_limit_ms,
        limits: why,
        verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::GaugeMerge;

    fn with_lag(p99_us: f64) -> MetricSet {
        let mut m = MetricSet::new();
        for _ in 0..100 {
            m.histogram_mut(names::LAG_US).record(300).unwrap();
        }
        m.set_gauge(&names::agent_lag_p99_us(0), 300.0, GaugeMerge::Max);
        m.set_gauge(&names::agent_lag_p99_us(1), p99_us, GaugeMerge::Max);
        m
    }

    #[test]
    fn an_agent_on_time_is_ok_and_a_late_one_limits_the_step() {
        let ok = judge(&with_lag(900.0), &[40.0, 35.0], 10.0).unwrap();
        assert_eq!(ok.status, GeneratorStatus::Ok);
        assert_eq!((ok.lag_p99_ms, ok.lag_worst_agent), (Some(0.9), Some(1)));
        assert!(
            ok.verdict.contains("come from the servers, Redis or the network"),
            "{}",
            ok.verdict
        );
        let late = judge(&with_lag(45_000.0), &[40.0], 10.0).unwrap();
        assert!(late.limited());
        assert!(
            late.verdict.contains("agent 1 lag p99 45.0 ms > 10 ms"),
            "{}",
            late.verdict
        );
        let busy = judge(&with_lag(900.0), &[95.0], 10.0).unwrap();
        assert!(busy.limited());
        assert!(busy.verdict.contains("95 % of its cores"), "{}", busy.verdict);
        assert_eq!(judge(&MetricSet::new(), &[95.0], 10.0), None);
    }
}
