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
    pub score: u32,
    pub max_score: u32,
    pub percentage: f64,
    /// The document's `calculateOverallRating`: ≥ 85 % Excellent, ≥ 70 % Good, else Needs Improvement.
    pub rating: Rating,
}

/// Every declared criterion, in the report's order, measured over the steps of its kind; then
/// the run's own: keys left under the run prefix.
pub fn evaluate(steps: &[StepReport], thresholds: &Criteria, leftover: Option<u64>) -> Vec<CriterionResult> {
    let mut out: Vec<CriterionResult> = crate::workloads::criteria()
        .into_iter()
        .map(|def| {
            let measures: Vec<Measure> = steps
                .iter()
                .filter_map(|s| s.figures.as_ref())
                .filter(|f| f.criteria().iter().any(|d| d.id == def.id))
                .filter_map(|f| f.measure(def.id))
                .collect();
            let threshold = thresholds.threshold(def);
            let measured = combine(def, threshold, &measures);
            result(def.id, def.name, def.target(threshold), measured, def.source.as_str())
        })
        .collect();
    out.push(result(
        "leftover_keys",
        "Keys left under the run prefix",
        "= 0".to_owned(),
        leftover.map(|n| (n.to_string(), n == 0)),
        "suite",
    ));
    out
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

fn result(id: &str, name: &str, target: String, measured: Option<(String, bool)>, source: &str) -> CriterionResult {
    let (measured, status) = match measured {
        Some((m, true)) => (Some(m), CriterionStatus::Pass),
        Some((m, false)) => (Some(m), CriterionStatus::Fail),
        None => (None, CriterionStatus::NotMeasured),
    };
    CriterionResult {
        id: id.into(),
        name: name.into(),
        target,
        measured,
        status,
        source: source.into(),
    }
}

/// The document's `calculateOverallRating`: every test 3 points at most.
pub fn overall_rating(steps: &[StepReport]) -> (Overall, Option<String>) {
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
    let rating = if percentage >= 85.0 {
        Rating::Excellent
    } else if percentage >= 70.0 {
        Rating::Good
    } else {
        Rating::NeedsImprovement
    };
    (
        Overall {
            score,
            max_score,
            percentage,
            rating,
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
}
