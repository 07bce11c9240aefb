//! Success criteria: one generic loop over the criteria the kinds declare
//! ([`crate::workload::CriterionDef`]), and the document's overall rating.

use schemars::JsonSchema;
use serde::Serialize;

use super::StepReport;
use crate::plan::Criteria;
use crate::workload::{Combine, CriterionDef, Measure, Rating, Score};

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct CriterionResult {
    pub id: String,
    pub name: String,
    /// The step judged (each step is judged on its own); `None` for the run's own criteria and
    /// for a criterion no step of the plan measures.
    pub step: Option<String>,
    pub target: String,
    pub measured: Option<String>,
    pub status: CriterionStatus,
    /// "document" for the document's Success Criteria, "suite" for the tool's own.
    pub source: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CriterionStatus {
    Pass,
    Fail,
    NotMeasured,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Overall {
    /// The document's `calculateOverallRating` points (kept as a note: it scores throughput
    /// bands and fixed points, not the success criteria).
    pub score: u32,
    pub max_score: u32,
    pub percentage: f64,
    /// The document's rating from those points: ≥ 85 % Excellent, ≥ 70 % Good, else Needs Improvement.
    pub document_rating: Rating,
    /// The verdict: never better than the criteria say. A FAILed criterion caps it at
    /// "Needs Improvement"; every measured criterion passing lifts it to at least "Good"; an
    /// incomplete or interrupted run, or one with no measured criterion, is "Not rated".
    pub rating: Rating,
    /// Criteria that failed, as "name" (the text says which).
    pub failed_criteria: Vec<String>,
    /// Why the rating differs from the document's, when it does.
    pub reason: Option<String>,
}

/// Every declared criterion, in the report's order, judged on each step of its kind on its own
/// (a step that produced no result FAILs with "no data"); a criterion no step of the plan
/// measures is one "not measured" row. Then the run's own: keys left under the run prefix.
pub fn evaluate(steps: &[StepReport], thresholds: &Criteria, checks: &RunChecks<'_>) -> Vec<CriterionResult> {
    let mut out = Vec::new();
    for def in crate::workloads::criteria() {
        let threshold = thresholds.threshold(def);
        let target = def.target(threshold);
        let judged: Vec<(&StepReport, Option<(String, bool)>)> = steps
            .iter()
            .filter(|s| crate::workloads::criteria_of(&s.kind).iter().any(|d| d.id == def.id))
            .filter_map(|s| match &s.figures {
                None => Some((s, Some((no_data(s), false)))),
                Some(f) => f
                    .measure(def.id)
                    .map(|m| (s, combine(def, threshold, std::slice::from_ref(&m)))),
            })
            .collect();
        if judged.is_empty() {
            out.push(result(def.id, def.name, None, target, None, def.source.as_str()));
            continue;
        }
        let several = judged.len() > 1;
        for (s, measured) in judged {
            // Figures from a late generator never pass: the delay may be the agent's.
            let measured = match (measured, &s.generator) {
                (Some((shown, true)), Some(g)) if g.limited() => Some((
                    format!(
                        "{shown} — not a pass: the load generator was limited ({})",
                        g.limits.join("; ")
                    ),
                    false,
                )),
                (m, _) => m,
            };
            let name = if several {
                format!("{} · {}", def.name, s.name)
            } else {
                def.name.to_owned()
            };
            out.push(result(
                def.id,
                &name,
                Some(&s.name),
                target.clone(),
                measured,
                def.source.as_str(),
            ));
        }
    }
    out.push(result(
        "leftover_keys",
        "Keys left under the run prefix",
        None,
        "= 0".to_owned(),
        match (checks.leftover, checks.sweep_error) {
            (Some(n), _) => Some((n.to_string(), n == 0)),
            // Keys were written and nobody could count what is left: not a pass.
            (None, Some(why)) => Some((format!("unknown: the sweep failed because {why}"), false)),
            (None, None) if checks.redis_used => Some(("unknown: the sweep did not run".to_owned(), false)),
            (None, None) => None,
        },
        "suite",
    ));
    if let Some(e) = checks.evictions {
        out.push(result(
            "no_evictions",
            "Keys evicted by Redis during the run",
            None,
            "= 0".to_owned(),
            Some(eviction_verdict(e)),
            "suite",
        ));
    }
    out
}

/// What the run checks besides the steps' criteria.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunChecks<'a> {
    /// Keys found under the run prefix after the run.
    pub leftover: Option<u64>,
    /// Why they could not be counted.
    pub sweep_error: Option<&'a str>,
    pub evictions: Option<&'a super::Evictions>,
    pub redis_used: bool,
}

/// "0", or the count with the steps that evicted; a step whose counter could not be read fails
/// the criterion as unchecked.
fn eviction_verdict(e: &super::Evictions) -> (String, bool) {
    let evicting: Vec<String> = e
        .by_step
        .iter()
        .filter_map(|s| {
            s.evicted_keys
                .filter(|n| *n > 0)
                .map(|n| format!("{n} during `{}`", s.step))
        })
        .collect();
    let unchecked: Vec<String> = e
        .by_step
        .iter()
        .filter_map(|s| s.unchecked.as_ref().map(|why| format!("`{}`: {why}", s.step)))
        .collect();
    let total = e.total();
    if total > 0 {
        (
            format!(
                "{total} (maxmemory-policy {}: {}) — keys outside the run may be gone",
                e.policy,
                evicting.join(", ")
            ),
            false,
        )
    } else if !unchecked.is_empty() {
        (format!("not checked for {}", unchecked.join("; ")), false)
    } else {
        ("0".to_owned(), true)
    }
}

/// A step that produced no result, as the measured text of its criteria.
fn no_data(s: &StepReport) -> String {
    match s.failures.first() {
        Some(f) => format!("no data: {}", f.message),
        None => "no data: no agent returned a result".to_owned(),
    }
}

/// The verdict of several steps' measurements: what the report shows, and whether it passed.
fn combine(def: &CriterionDef, threshold: f64, measures: &[Measure]) -> Option<(String, bool)> {
    if measures.is_empty() {
        return None;
    }
    match def.combine {
        Combine::AllOf(what) => {
            let ok = measures.iter().filter(|m| matches!(m, Measure::Check(true))).count();
            Some((format!("{ok} of {} {what}", measures.len()), ok == measures.len()))
        }
        Combine::Worst => {
            if let Some(why) = measures.iter().find_map(|m| match m {
                Measure::Failed(why) => Some(why.clone()),
                _ => None,
            }) {
                return Some((why, false));
            }
            let mut worst: Option<(f64, &str)> = None;
            for m in measures {
                if let Measure::Value { value, shown } = m
                    && worst.is_none_or(|(w, _)| def.cmp.worse(*value, w, threshold))
                {
                    worst = Some((*value, shown));
                }
            }
            worst.map(|(v, shown)| (shown.to_owned(), def.cmp.holds(v, threshold)))
        }
    }
}

fn result(
    id: &str,
    name: &str,
    step: Option<&str>,
    target: String,
    measured: Option<(String, bool)>,
    source: &str,
) -> CriterionResult {
    let (measured, status) = match measured {
        Some((m, true)) => (Some(m), CriterionStatus::Pass),
        Some((m, false)) => (Some(m), CriterionStatus::Fail),
        None => (None, CriterionStatus::NotMeasured),
    };
    CriterionResult {
        id: id.into(),
        name: name.into(),
        step: step.map(str::to_owned),
        target,
        measured,
        status,
        source: source.into(),
    }
}

/// The verdict: the document's `calculateOverallRating` (every test 3 points at most), bounded
/// by the criteria and the run's completeness so that rating, criteria and exit code agree.
pub fn overall_rating(steps: &[StepReport], criteria: &[CriterionResult], complete: bool) -> (Overall, Option<String>) {
    let mut score = 0;
    let mut max_score = 0;
    let mut fixed: Vec<String> = Vec::new();
    for s in steps {
        match s.figures.as_ref().map(|f| f.score()) {
            Some(Score::Points(p)) => {
                score += p;
                max_score += 3;
            }
            Some(Score::Fixed { test, measured }) => {
                fixed.push(format!("{test} (measured: {measured})"));
                score += 2;
                max_score += 3;
            }
            Some(Score::Outside) => {}
            None => max_score += 3,
        }
    }
    let note = (!fixed.is_empty()).then(|| {
        format!(
            "The document scores these tests a fixed 2 of 3 whatever was measured; the overall rating keeps that rule so it compares with the document: {}.",
            fixed.join("; ")
        )
    });
    let percentage = if max_score == 0 {
        0.0
    } else {
        f64::from(score) * 100.0 / f64::from(max_score)
    };
    let document_rating = if max_score == 0 {
        // No test of the document ran: its scoring has nothing to say.
        Rating::NotRated
    } else if percentage >= 85.0 {
        Rating::Excellent
    } else if percentage >= 70.0 {
        Rating::Good
    } else {
        Rating::NeedsImprovement
    };
    let failed_criteria: Vec<String> = criteria
        .iter()
        .filter(|c| c.status == CriterionStatus::Fail)
        .map(|c| c.name.clone())
        .collect();
    let passed = criteria.iter().filter(|c| c.status == CriterionStatus::Pass).count();
    let (rating, reason) = if !complete {
        (Rating::NotRated, Some("the run is incomplete".to_owned()))
    } else if !failed_criteria.is_empty() {
        let n = failed_criteria.len();
        (
            Rating::NeedsImprovement,
            Some(format!("{n} success criteri{} failed", if n == 1 { "on" } else { "a" })),
        )
    } else if passed == 0 {
        (Rating::NotRated, Some("no success criterion was measured".to_owned()))
    } else if matches!(document_rating, Rating::NeedsImprovement | Rating::NotRated) {
        (Rating::Good, Some("every measured success criterion passed".to_owned()))
    } else {
        (document_rating, None)
    };
    (
        Overall {
            score,
            max_score,
            percentage,
            document_rating,
            rating,
            failed_criteria,
            reason,
        },
        note,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Cmp, Source, Unit};

    const DEF: CriterionDef = CriterionDef {
        id: "x",
        name: "X",
        key: None,
        default: 50.0,
        cmp: Cmp::Lt,
        unit: Unit::Plain,
        suffix: " ms",
        target_text: None,
        source: Source::Suite,
        rank: 0,
        combine: Combine::Worst,
    };

    #[test]
    fn the_worst_step_decides_and_a_failed_one_fails() {
        let v = |x: f64| Measure::value(x, format!("{x} ms"));
        assert_eq!(combine(&DEF, 50.0, &[]), None);
        assert_eq!(
            combine(&DEF, 50.0, &[v(10.0), v(60.0), v(20.0)]),
            Some(("60 ms".into(), false))
        );
        assert_eq!(combine(&DEF, 50.0, &[v(10.0), v(20.0)]), Some(("20 ms".into(), true)));
        assert_eq!(
            combine(&DEF, 50.0, &[v(10.0), Measure::Failed("nothing".into())]),
            Some(("nothing".into(), false))
        );
        assert_eq!(DEF.target(50.0), "< 50 ms");
    }

    #[test]
    fn all_of_counts_the_passing_steps() {
        let def = CriterionDef {
            combine: Combine::AllOf("scenarios"),
            target_text: Some("in all scenarios"),
            ..DEF
        };
        let got = combine(&def, 1.0, &[Measure::Check(true), Measure::Check(false)]);
        assert_eq!(got, Some(("1 of 2 scenarios".into(), false)));
        assert_eq!(def.target(1.0), "in all scenarios");
    }

    pub(super) fn passing_step() -> StepReport {
        step("good", Some(sync_figures()), None)
    }

    fn step(name: &str, figures: Option<crate::workloads::Figures>, failure: Option<&str>) -> StepReport {
        StepReport {
            name: name.into(),
            kind: "session_sync".into(),
            agents_sent: vec!["a1".into()],
            agents_reported: Vec::new(),
            failures: failure
                .map(|m| super::super::StepFailure {
                    agent: "a1".into(),
                    message: m.into(),
                })
                .into_iter()
                .collect(),
            duration_s: 1.0,
            start_spread_ms: None,
            timeline: Vec::new(),
            per_agent: Vec::new(),
            start_delay_ms: Vec::new(),
            dialect: None,
            figures,
            generator: None,
        }
    }

    fn sync_figures() -> crate::workloads::Figures {
        use crate::workloads::band::{self, Band};
        let mut m = crate::metrics::MetricSet::new();
        m.add_counter(band::MEMBERS_PLANNED, 2);
        m.add_counter(band::CONVERGED, 2);
        m.histogram_mut(band::PROPAGATION_SAME_US).record(4_000).unwrap();
        let key = band::phase_key(0, 1, 0);
        m.set_gauge(&format!("{key}.min"), 1_000.0, crate::metrics::GaugeMerge::Min);
        m.set_gauge(&format!("{key}.max"), 3_000.0, crate::metrics::GaugeMerge::Max);
        let spec = crate::workloads::StepSpec::SessionSync(crate::workloads::SessionSync(Band {
            sessions: 1,
            members: 2,
            changes: 1,
            interval: std::time::Duration::from_millis(100),
            ramp_up: std::time::Duration::from_millis(100),
            settle: std::time::Duration::from_millis(100),
        }));
        let criteria = Criteria::default();
        spec.figures(
            &m,
            &crate::workload::FigureCx {
                criteria: &criteria,
                agents: 1,
            },
        )
    }

    #[test]
    fn evictions_and_an_unknown_sweep_fail() {
        let mut e = super::super::Evictions {
            policy: "allkeys-lru".into(),
            maxmemory_bytes: 1 << 20,
            allowed: true,
            by_step: vec![super::super::StepEvictions {
                step: "mem".into(),
                evicted_keys: Some(0),
                unchecked: None,
            }],
        };
        assert!(e.can_evict());
        assert_eq!(eviction_verdict(&e), ("0".to_owned(), true));
        e.by_step[0].evicted_keys = Some(15_556);
        let (shown, ok) = eviction_verdict(&e);
        assert!(
            !ok && shown.starts_with("15556 (maxmemory-policy allkeys-lru: 15556 during `mem`)"),
            "{shown}"
        );
        e.by_step[0] = super::super::StepEvictions {
            step: "mem".into(),
            evicted_keys: None,
            unchecked: Some("INFO failed".into()),
        };
        assert_eq!(
            eviction_verdict(&e),
            ("not checked for `mem`: INFO failed".to_owned(), false)
        );
        let checks = RunChecks {
            sweep_error: Some("Redis did not answer within 5 s"),
            redis_used: true,
            ..RunChecks::default()
        };
        let got = evaluate(&[], &Criteria::default(), &checks);
        let left = got.iter().find(|c| c.id == "leftover_keys").unwrap();
        assert_eq!(left.status, CriterionStatus::Fail);
        assert_eq!(
            left.measured.as_deref(),
            Some("unknown: the sweep failed because Redis did not answer within 5 s")
        );
    }

    #[test]
    fn each_step_is_judged_on_its_own_and_a_step_without_data_fails() {
        let checks = RunChecks {
            leftover: Some(0),
            ..RunChecks::default()
        };
        let steps = [
            step("good", Some(sync_figures()), None),
            step("dead", None, Some("server unreachable")),
        ];
        let got = evaluate(&steps, &Criteria::default(), &checks);
        let conv: Vec<_> = got.iter().filter(|c| c.id == "sync_convergence").collect();
        assert_eq!(conv.len(), 2);
        assert_eq!(conv[0].name, "Session sync: convergence · good");
        assert_eq!(conv[0].status, CriterionStatus::Pass);
        assert_eq!(conv[1].step.as_deref(), Some("dead"));
        assert_eq!(conv[1].status, CriterionStatus::Fail);
        assert_eq!(conv[1].measured.as_deref(), Some("no data: server unreachable"));
        // A kind the plan does not run is one "not measured" row, with no step.
        let other = got
            .iter()
            .find(|c| c.id == "connection_stability")
            .map(|c| (c.status, c.step.clone()));
        assert!(matches!(other, Some((CriterionStatus::NotMeasured, None))), "{other:?}");

        let (overall, _) = overall_rating(&steps, &got, true);
        assert_eq!(overall.rating, Rating::NeedsImprovement);
        assert_eq!(overall.failed_criteria.len(), 3, "{:?}", overall.failed_criteria);
        let (overall, _) = overall_rating(&steps[..1], &evaluate(&steps[..1], &Criteria::default(), &checks), true);
        assert!(overall.failed_criteria.is_empty(), "{:?}", overall.failed_criteria);
        // No test of the document ran: its scoring rates nothing; the criteria decide.
        assert_eq!((overall.max_score, overall.document_rating), (0, Rating::NotRated));
        assert_eq!(overall.rating, Rating::Good);
        let (overall, _) = overall_rating(&steps[..1], &[], false);
        assert_eq!(overall.rating, Rating::NotRated);
    }
}

#[cfg(test)]
mod generator_tests {
    use super::*;
    use crate::metrics::{GaugeMerge, MetricSet};
    use crate::report::generator::{judge, names};

    #[test]
    fn a_passing_figure_from_a_limited_generator_is_not_a_pass() {
        let checks = RunChecks {
            leftover: Some(0),
            ..RunChecks::default()
        };
        let good = super::tests::passing_step();
        let passed = evaluate(std::slice::from_ref(&good), &Criteria::default(), &checks);
        let conv = passed.iter().find(|c| c.id == "sync_convergence").unwrap();
        assert_eq!(conv.status, CriterionStatus::Pass);

        let mut m = MetricSet::new();
        m.histogram_mut(names::LAG_US).record_correct(60_000, 10_000).unwrap();
        m.set_gauge(&names::agent_lag_p99_us(3), 60_000.0, GaugeMerge::Max);
        let late = StepReport {
            generator: judge(&m, &[], 10.0),
            ..good
        };
        let got = evaluate(&[late], &Criteria::default(), &checks);
        let conv = got.iter().find(|c| c.id == "sync_convergence").unwrap();
        assert_eq!(conv.status, CriterionStatus::Fail);
        let shown = conv.measured.as_deref().unwrap();
        assert!(
            shown.contains("not a pass: the load generator was limited (agent 3 lag p99 60.0 ms > 10 ms)"),
            "{shown}"
        );
    }
}
