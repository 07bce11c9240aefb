//! The open workload model, shared by the Redis kinds that offer it: operations arrive on a
//! schedule (`rate` for a `duration`, or `stages` ramping linearly, k6's constant- and
//! ramping-arrival-rate), whatever the system under test does. Each operation's latency is
//! measured from its **intended** start as well as from its send, so the gap between the two
//! (coordinated omission) is visible; an arrival that finds `max_in_flight` operations of its
//! agent outstanding is not started and is counted as dropped.
//!
//! Plan keys, in the step's own table: `rate` + `duration`, or `stages = [{ target, duration }]`
//! with an optional `start_rate`; `max_in_flight` (per agent, default 1,000). Rates are for the
//! whole run, split evenly over the agents.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::fmt::group;
use crate::metrics::{Hist, HistSummary, MetricSet};
use crate::plan::{PlanError, StepCx};

/// Highest rate a plan may ask for, operations per second for the whole run.
pub const MAX_RATE: f64 = 10_000_000.0;
/// Most arrivals one step may schedule, all agents together.
pub const MAX_ARRIVALS: f64 = 1e9;
/// Most buckets of the intended/achieved series (their width grows with the schedule).
const MAX_BUCKETS: u64 = 120;

/// Metric names the open executor records (labels are the workload's operation names).
pub mod names {
    /// Histogram per label: end minus the intended start, µs.
    pub fn intended_us(label: &str) -> String {
        format!("{label}.intended_us")
    }
    /// Counter: arrivals whose intended start came during the step.
    pub const DUE: &str = "open.due";
    /// Counter: arrivals started (a slot under `max_in_flight` was free).
    pub const STARTED: &str = "open.started";
    /// Counter: arrivals not started because `max_in_flight` were outstanding.
    pub const DROPPED: &str = "open.dropped";
    /// Counter: arrivals dropped by agent `i`.
    pub fn dropped_by(agent: u32) -> String {
        format!("open.dropped.agent{agent}")
    }
    pub const DROPPED_BY_PREFIX: &str = "open.dropped.agent";
    /// Gauge (max): the series' bucket width, ms.
    pub const BUCKET_MS: &str = "open.bucket_ms";
    /// Counters per bucket `b` (by intended start for due and dropped, by end for done).
    pub fn due_in(b: u64) -> String {
        format!("open.b{b}.due")
    }
    pub fn done_in(b: u64) -> String {
        format!("open.b{b}.done")
    }
    pub fn dropped_in(b: u64) -> String {
        format!("open.b{b}.dropped")
    }
    /// Histogram: the scheduler's own lateness, actual dispatch minus intended start, µs.
    pub const TIMER_LAG_US: &str = "generator.timer_lag_us";
}

/// A checked arrival schedule: `start_rate`, then each stage ramps linearly to its target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Arrival {
    pub start_rate: f64,
    pub stages: Vec<Stage>,
    /// Outstanding operations (queued for a connection or awaiting a reply) per agent.
    pub max_in_flight: u32,
    /// `rate` for a `duration` (one flat stage) rather than `stages`.
    pub constant: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// Operations per second reached at the stage's end.
    pub target: f64,
    pub duration: Duration,
}

/// One `stages` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    target: Spanned<f64>,
    duration: Spanned<String>,
}

/// The open-model keys of a kind's raw table `$raw` (fields `rate`, `start_rate`, `stages`,
/// `duration`, `max_in_flight`), checked by [`validate`] together with the closed model's count
/// field `$count`, which the open model refuses: `open_model!(raw, cx, operations)`.
#[macro_export]
macro_rules! open_model {
    ($raw:expr, $cx:expr, $count:ident) => {
        $crate::workloads::arrival::validate_with(
            &$crate::workloads::arrival::RawOpen {
                rate: $raw.rate.as_ref(),
                start_rate: $raw.start_rate.as_ref(),
                stages: $raw.stages.as_ref(),
                duration: $raw.duration.as_ref(),
                max_in_flight: $raw.max_in_flight.as_ref(),
            },
            ($raw.$count.as_ref(), stringify!($count)),
            $cx,
        )
    };
}

/// [`validate`], refusing the closed model's count (`count`, with its name) with a schedule.
pub fn validate_with(
    raw: &RawOpen<'_>,
    (count, name): (Option<&Spanned<i64>>, &str),
    cx: &StepCx<'_>,
) -> Result<Option<Arrival>, PlanError> {
    let open = validate(raw, cx)?;
    if let (Some(_), Some(c)) = (&open, count) {
        return Err(cx.err(
            c.span(),
            name,
            "is for the closed model; with `rate` or `stages` the schedule decides how many operations run",
        ));
    }
    Ok(open)
}

/// The open-model keys of a kind's raw table.
#[derive(Debug, Default)]
pub struct RawOpen<'a> {
    pub rate: Option<&'a Spanned<f64>>,
    pub start_rate: Option<&'a Spanned<f64>>,
    pub stages: Option<&'a Spanned<Vec<RawStage>>>,
    /// The step's `duration` (with `rate`).
    pub duration: Option<&'a Spanned<String>>,
    pub max_in_flight: Option<&'a Spanned<i64>>,
}

impl RawOpen<'_> {
    /// Whether the plan asked for the open model.
    pub fn is_open(&self) -> bool {
        self.rate.is_some() || self.stages.is_some()
    }
}

fn check_rate(cx: &StepCx<'_>, v: &Spanned<f64>, name: &str, zero_ok: bool) -> Result<f64, PlanError> {
    let r = *v.get_ref();
    let low_ok = if zero_ok { r >= 0.0 } else { r > 0.0 };
    if !(r.is_finite() && low_ok && r <= MAX_RATE) {
        let low = if zero_ok { "at least 0" } else { "above 0" };
        return Err(cx.err(
            v.span(),
            name,
            format!(
                "must be {low} and at most {} operations per second, got {r}",
                group(MAX_RATE)
            ),
        ));
    }
    Ok(r)
}

/// Checks the open-model keys: `None` when the step is closed-loop (then none of them may be
/// given), the schedule otherwise. The schedule must end within the step's timeout.
pub fn validate(raw: &RawOpen<'_>, cx: &StepCx<'_>) -> Result<Option<Arrival>, PlanError> {
    if !raw.is_open() {
        let stray = [
            ("start_rate", raw.start_rate.map(Spanned::span)),
            ("max_in_flight", raw.max_in_flight.map(Spanned::span)),
            ("duration", raw.duration.map(Spanned::span)),
        ];
        if let Some((name, Some(span))) = stray.into_iter().find(|(_, s)| s.is_some()) {
            let why = if name == "duration" {
                "goes with `rate` (the open model: operations arrive at `rate` per second for `duration`); give `rate` too, or count operations instead"
            } else {
                "is a key of the open model: give `rate` (with `duration`) or `stages` too"
            };
            return Err(cx.err(span, name, why));
        }
        return Ok(None);
    }
    let max_in_flight = match raw.max_in_flight {
        Some(v) => cx.count(&Some(v.clone()), "max_in_flight", 1_000, 1, 1_000_000)? as u32,
        None => 1_000,
    };
    let (start_rate, stages, constant) = match (raw.rate, raw.stages) {
        (Some(_), Some(stages)) => {
            return Err(cx.err(
                stages.span(),
                "stages",
                "give either `rate` (with `duration`) or `stages`, not both",
            ));
        }
        (Some(rate), None) => {
            let r = check_rate(cx, rate, "rate", false)?;
            if let Some(s) = raw.start_rate {
                return Err(cx.err(s.span(), "start_rate", "belongs with `stages`; `rate` is constant"));
            }
            let Some(d) = raw.duration else {
                return Err(cx.err(
                    rate.span(),
                    "rate",
                    "needs `duration`, how long to hold the rate (e.g. duration = \"30s\")",
                ));
            };
            let duration = cx.duration(&Some(d.clone()), "duration", Duration::ZERO)?;
            (r, vec![Stage { target: r, duration }], true)
        }
        (None, Some(raw_stages)) => {
            if let Some(d) = raw.duration {
                return Err(cx.err(
                    d.span(),
                    "duration",
                    "is given by the stages' durations; remove it or use `rate`",
                ));
            }
            let list = raw_stages.get_ref();
            if list.is_empty() || list.len() > 100 {
                return Err(cx.err(
                    raw_stages.span(),
                    "stages",
                    format!("must have 1 to 100 stages, got {}", list.len()),
                ));
            }
            let mut stages = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                let target = check_rate(cx, &s.target, &format!("stages[{i}].target"), true)?;
                let duration = cx.duration(
                    &Some(s.duration.clone()),
                    &format!("stages[{i}].duration"),
                    Duration::ZERO,
                )?;
                stages.push(Stage { target, duration });
            }
            let start = match raw.start_rate {
                Some(v) => check_rate(cx, v, "start_rate", true)?,
                None => 0.0,
            };
            if start == 0.0 && stages.iter().all(|s| s.target == 0.0) {
                return Err(cx.err(raw_stages.span(), "stages", "every target is 0: nothing would arrive"));
            }
            (start, stages, false)
        }
        (None, None) => unreachable!("is_open"),
    };
    let a = Arrival {
        start_rate,
        stages,
        max_in_flight,
        constant,
    };
    let span = raw
        .stages
        .map(Spanned::span)
        .or(raw.duration.map(Spanned::span))
        .unwrap_or_else(|| cx.span());
    cx.shorter_than_timeout(a.total(), span.clone(), if a.constant { "duration" } else { "stages" })?;
    if a.expected() > MAX_ARRIVALS {
        return Err(cx.err(
            span,
            if a.constant { "duration" } else { "stages" },
            format!(
                "schedules {} operations; at most {} per step",
                group(a.expected()),
                group(MAX_ARRIVALS)
            ),
        ));
    }
    Ok(Some(a))
}

impl Arrival {
    /// The schedule's whole length.
    pub fn total(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// Arrivals the schedule makes, all agents together (∫ rate dt).
    pub fn expected(&self) -> f64 {
        let mut from = self.start_rate;
        let mut n = 0.0;
        for s in &self.stages {
            n += (from + s.target) / 2.0 * s.duration.as_secs_f64();
            from = s.target;
        }
        n
    }

    /// The intended rate at `t` seconds from the start (0 after the end).
    pub fn rate_at(&self, t: f64) -> f64 {
        let (mut from, mut at) = (self.start_rate, 0.0);
        for s in &self.stages {
            let d = s.duration.as_secs_f64();
            if t < at + d {
                return from + (s.target - from) * (t - at) / d;
            }
            at += d;
            from = s.target;
        }
        0.0
    }

    /// One agent's share: every rate divided by `count`.
    pub fn share(&self, count: u32) -> Arrival {
        let k = f64::from(count.max(1));
        Arrival {
            start_rate: self.start_rate / k,
            stages: self
                .stages
                .iter()
                .map(|s| Stage {
                    target: s.target / k,
                    duration: s.duration,
                })
                .collect(),
            ..self.clone()
        }
    }

    /// The series' bucket width: 1 s, or wider so a schedule has at most 120 buckets.
    pub fn bucket(&self) -> Duration {
        let secs = self.total().as_secs().div_ceil(MAX_BUCKETS).max(1);
        Duration::from_secs(secs)
    }

    /// The intended starts, ns from the schedule's start: arrival `k` comes when the integral of
    /// the rate reaches `k + phase` (`phase` in [0, 1) staggers agents sharing a schedule).
    pub fn schedule(&self, phase: f64) -> Schedule {
        Schedule {
            stages: self.stages.clone(),
            stage: 0,
            from: self.start_rate,
            stage_start_s: 0.0,
            stage_start_n: 0.0,
            next: phase.clamp(0.0, 0.999),
        }
    }

    /// "rate 2,000/s for 30s" or "stages 0 → 1,000/s over 10s, → 1,000/s over 30s".
    pub fn describe(&self) -> String {
        let d = crate::plan::fmt_duration;
        if self.constant {
            format!("rate {}/s for {}", group(self.start_rate), d(self.total()))
        } else {
            let stages: Vec<String> = self
                .stages
                .iter()
                .map(|s| format!("→ {}/s over {}", group(s.target), d(s.duration)))
                .collect();
            format!("stages from {}/s {}", group(self.start_rate), stages.join(", "))
        }
    }
}

/// Iterator over intended starts (ns since the schedule's start).
#[derive(Clone, Debug)]
pub struct Schedule {
    stages: Vec<Stage>,
    stage: usize,
    /// The rate at the current stage's start.
    from: f64,
    stage_start_s: f64,
    /// Arrivals (integral of the rate) before the current stage.
    stage_start_n: f64,
    /// The integral value of the next arrival.
    next: f64,
}

impl Iterator for Schedule {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        loop {
            let s = self.stages.get(self.stage)?;
            let d = s.duration.as_secs_f64();
            let in_stage = (self.from + s.target) / 2.0 * d;
            let want = self.next - self.stage_start_n;
            if want < in_stage {
                // n(τ) = from·τ + (target − from)·τ²/(2d): the root of n(τ) = want, in the
                // form that stays exact when the ramp is flat or falling.
                let a = (s.target - self.from) / (2.0 * d);
                let b = self.from;
                let disc = (b * b + 4.0 * a * want).max(0.0);
                let tau = if b + disc.sqrt() > 0.0 {
                    2.0 * want / (b + disc.sqrt())
                } else {
                    0.0
                };
                self.next += 1.0;
                let t = self.stage_start_s + tau.clamp(0.0, d);
                return Some((t * 1e9) as u64);
            }
            self.stage += 1;
            self.stage_start_s += d;
            self.stage_start_n += in_stage;
            self.from = s.target;
        }
    }
}

/// What the report shows of an open-model step.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct OpenFigures {
    /// The schedule as written ("rate 2,000/s for 30s").
    pub schedule: String,
    pub max_in_flight_per_agent: u32,
    /// Arrivals whose intended start came during the step, all agents.
    pub intended: u64,
    pub started: u64,
    /// Not started: `max_in_flight` operations of that agent were outstanding.
    pub dropped: u64,
    /// Arrivals dropped, by agent index (agents that dropped none are left out).
    pub dropped_by_agent: Vec<AgentDropped>,
    /// Arrivals the schedule makes over its length / that length.
    pub intended_rate: f64,
    /// Operations completed / the schedule's length.
    pub achieved_rate: f64,
    /// From the intended start to the reply, every operation, µs.
    pub latency_from_intended_us: HistSummary,
    /// From the send to the reply, µs: what a closed-loop tool reports.
    pub latency_send_to_reply_us: HistSummary,
    /// Intended, achieved and dropped per second, by bucket.
    pub series: Vec<RatePoint>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, JsonSchema)]
pub struct AgentDropped {
    pub agent: u32,
    pub dropped: u64,
}

/// One bucket of the series: rates in operations per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, JsonSchema)]
pub struct RatePoint {
    /// The bucket's start, s since the schedule's start.
    pub second: f64,
    pub intended: f64,
    pub achieved: f64,
    pub dropped: f64,
}

/// The open-model figures of `m` for a step whose operations are `labels` (service latency
/// in `{label}.latency_us`, intended in `{label}.intended_us`).
pub fn figures(a: &Arrival, m: &MetricSet, labels: &[&str]) -> OpenFigures {
    let merged = |name: &dyn Fn(&str) -> String| -> HistSummary {
        let mut all: Option<Hist> = None;
        for l in labels {
            if let Some(h) = m.histogram(&name(l)) {
                match &mut all {
                    None => all = Some(h.clone()),
                    Some(acc) => {
                        let _ = acc.add(h);
                    }
                }
            }
        }
        all.as_ref().map(HistSummary::of).unwrap_or_default()
    };
    let total_s = a.total().as_secs_f64().max(1e-9);
    let done: u64 = labels
        .iter()
        .map(|l| m.counter(&format!("{l}.ok")) + m.counter(&format!("{l}.errors")))
        .sum();
    let bucket_ms = m.gauge(names::BUCKET_MS).unwrap_or(1000.0).max(1.0);
    let width = bucket_ms / 1000.0;
    let buckets = (total_s / width).ceil() as u64;
    let series = (0..buckets)
        .map(|b| {
            let start = b as f64 * width;
            // The last bucket may be shorter than the others.
            let w = (total_s - start).clamp(1e-9, width);
            RatePoint {
                second: start,
                intended: m.counter(&names::due_in(b)) as f64 / w,
                achieved: m.counter(&names::done_in(b)) as f64 / w,
                dropped: m.counter(&names::dropped_in(b)) as f64 / w,
            }
        })
        .collect();
    let mut dropped_by_agent: Vec<AgentDropped> = m
        .counters
        .iter()
        .filter_map(|(k, v)| {
            let agent = k.strip_prefix(names::DROPPED_BY_PREFIX)?.parse().ok()?;
            (*v > 0).then_some(AgentDropped { agent, dropped: *v })
        })
        .collect();
    dropped_by_agent.sort_by_key(|d| d.agent);
    OpenFigures {
        schedule: a.describe(),
        max_in_flight_per_agent: a.max_in_flight,
        intended: m.counter(names::DUE),
        started: m.counter(names::STARTED),
        dropped: m.counter(names::DROPPED),
        dropped_by_agent,
        intended_rate: a.expected() / total_s,
        achieved_rate: done as f64 / total_s,
        latency_from_intended_us: merged(&|l| names::intended_us(l)),
        latency_send_to_reply_us: merged(&|l| format!("{l}.latency_us")),
        series,
    }
}

impl OpenFigures {
    /// Why the figures cannot pass a criterion: arrivals were dropped (the rate was not held).
    pub fn not_held(&self) -> Option<String> {
        (self.dropped > 0).then(|| {
            format!(
                "{} of {} intended operations dropped (max_in_flight {} per agent reached): the intended rate was not held",
                group(self.dropped as f64),
                group(self.intended as f64),
                group(f64::from(self.max_in_flight_per_agent))
            )
        })
    }

    pub fn render_text(&self, w: &mut dyn fmt::Write) -> fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        writeln!(
            w,
            "\n  Open model: {}, at most {} in flight per agent",
            self.schedule,
            group(f64::from(self.max_in_flight_per_agent))
        )?;
        let by_agent: Vec<String> = self
            .dropped_by_agent
            .iter()
            .map(|d| format!("agent {}: {}", d.agent, group(d.dropped as f64)))
            .collect();
        writeln!(
            w,
            "    intended {} · started {} · dropped {}{} · achieved {}/s of {}/s intended",
            group(self.intended as f64),
            group(self.started as f64),
            group(self.dropped as f64),
            if by_agent.is_empty() {
                String::new()
            } else {
                format!(" ({})", by_agent.join(", "))
            },
            group(self.achieved_rate),
            group(self.intended_rate)
        )?;
        for (what, h) in [
            ("from intended start", &self.latency_from_intended_us),
            ("send to reply      ", &self.latency_send_to_reply_us),
        ] {
            writeln!(
                w,
                "    latency {what}: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
                ms(h.p50),
                ms(h.p99),
                ms(h.p999),
                ms(h.max)
            )?;
        }
        writeln!(
            w,
            "    (the gap between the two is coordinated omission made visible: time operations waited to start)"
        )?;
        writeln!(
            w,
            "    {:>8} {:>12} {:>12} {:>10}",
            "second", "intended/s", "achieved/s", "dropped/s"
        )?;
        let every = self.series.len().div_ceil(20).max(1);
        for p in self.series.iter().step_by(every) {
            writeln!(
                w,
                "    {:>8} {:>12} {:>12} {:>10}",
                format!("{:.0}", p.second),
                group(p.intended),
                group(p.achieved),
                group(p.dropped)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(rate: f64, secs: u64) -> Arrival {
        Arrival {
            start_rate: rate,
            stages: vec![Stage {
                target: rate,
                duration: Duration::from_secs(secs),
            }],
            max_in_flight: 10,
            constant: true,
        }
    }

    #[test]
    fn a_constant_rate_schedules_evenly_spaced_arrivals() {
        let starts: Vec<u64> = flat(4.0, 2).schedule(0.0).collect();
        assert_eq!(
            starts,
            [
                0,
                250_000_000,
                500_000_000,
                750_000_000,
                1_000_000_000,
                1_250_000_000,
                1_500_000_000,
                1_750_000_000
            ]
        );
        // Two agents sharing it interleave.
        let half = flat(4.0, 2).share(2);
        let a: Vec<u64> = half.schedule(0.0).collect();
        let b: Vec<u64> = half.schedule(0.5).collect();
        assert_eq!(a.len() + b.len(), 8);
        assert_eq!(b[0], 250_000_000);
    }

    #[test]
    fn a_ramp_schedules_the_integral_of_its_rate() {
        // 0 → 100/s over 10 s: 500 arrivals, the density growing linearly.
        let a = Arrival {
            start_rate: 0.0,
            stages: vec![
                Stage {
                    target: 100.0,
                    duration: Duration::from_secs(10),
                },
                Stage {
                    target: 100.0,
                    duration: Duration::from_secs(5),
                },
                Stage {
                    target: 0.0,
                    duration: Duration::from_secs(2),
                },
            ],
            max_in_flight: 10,
            constant: false,
        };
        assert_eq!(a.expected(), 500.0 + 500.0 + 100.0);
        let starts: Vec<u64> = a.schedule(0.0).collect();
        assert_eq!(starts.len(), 1100);
        // Half the first stage's arrivals come in its last 30 % (n(t) = 5 t²).
        let first_half = starts.iter().filter(|&&t| t < 7_071_000_000).count();
        assert!((249..=251).contains(&first_half), "{first_half}");
        assert!(starts.windows(2).all(|w| w[0] <= w[1]));
        assert!(*starts.last().unwrap() <= 17_000_000_000);
        assert_eq!(a.rate_at(5.0), 50.0);
        assert_eq!(a.rate_at(16.0), 50.0);
        assert_eq!(a.rate_at(20.0), 0.0);
    }

    #[test]
    fn the_series_reads_rates_per_bucket_and_dropped_fail_the_rate() {
        let a = flat(10.0, 2);
        let mut m = MetricSet::new();
        m.set_gauge(names::BUCKET_MS, 1000.0, crate::metrics::GaugeMerge::Max);
        m.add_counter(names::DUE, 20);
        m.add_counter(names::STARTED, 17);
        m.add_counter(names::DROPPED, 3);
        m.add_counter(&names::dropped_by(1), 3);
        m.add_counter(&names::due_in(0), 10);
        m.add_counter(&names::due_in(1), 10);
        m.add_counter(&names::done_in(0), 9);
        m.add_counter(&names::done_in(1), 8);
        m.add_counter(&names::dropped_in(1), 3);
        m.add_counter("op.ok", 17);
        let f = figures(&a, &m, &["op"]);
        assert_eq!(f.series.len(), 2);
        assert_eq!(
            f.series[1],
            RatePoint {
                second: 1.0,
                intended: 10.0,
                achieved: 8.0,
                dropped: 3.0
            }
        );
        assert_eq!(f.dropped_by_agent, [AgentDropped { agent: 1, dropped: 3 }]);
        assert_eq!((f.intended_rate, f.achieved_rate), (10.0, 8.5));
        assert!(f.not_held().unwrap().starts_with("3 of 20 intended operations dropped"));
        let mut text = String::new();
        f.render_text(&mut text).unwrap();
        assert!(text.contains("dropped 3 (agent 1: 3)"), "{text}");
    }
}
