//! The text report, in the document's shape, followed by what the document lacks. Each step's
//! part of its section comes from its kind ([`crate::workload::Workload::render_text`]).

use std::fmt::{self, Write};

use super::{CriterionStatus, Report, RunStatus, StepReport};
use crate::fmt::{group, truncate};
use crate::workload::{Rating, Section};

/// The report as the document prints it, followed by what the document lacks.
pub fn render_text(r: &Report) -> String {
    let mut o = String::new();
    write_text(r, &mut o).expect("writing to a String cannot fail");
    o
}

/// [`render_text`] into any writer.
pub fn write_text(r: &Report, w: &mut dyn Write) -> fmt::Result {
    header(r, w)?;
    sections(r, w)?;
    verdict(r, w)?;
    steps_table(r, w)?;
    agents_table(r, w)?;
    cleanup(r, w)?;
    notes(r, w)?;

    Ok(())
}

/// The title, the run, the target and its status.
fn header(r: &Report, w: &mut dyn Write) -> fmt::Result {
    writeln!(w, "\n📊 Redis & Timestamp Performance Report")?;
    writeln!(w, "{}", "=".repeat(80))?;
    writeln!(w, "\nPlan: {}   Run: {}   Agents: {}", r.plan, r.run_id, r.agents.len())?;
    writeln!(w, "Execution Time: {:.1} seconds", r.execution_time_s)?;
    if !r.target.servers.is_empty() {
        writeln!(w, "BandSync servers: {}", r.target.servers.join(", "))?;
    }
    match &r.status {
        RunStatus::Complete => {}
        RunStatus::Incomplete { reason } => {
            writeln!(w, "⚠️ RUN INCOMPLETE: {reason}")?;
        }
        RunStatus::Interrupted => {
            writeln!(w, "⚠️ RUN INTERRUPTED: partial report")?;
        }
    }
    Ok(())
}

/// Each section of the document with the steps that belong to it.
fn sections(r: &Report, w: &mut dyn Write) -> fmt::Result {
    for section in Section::ALL {
        let steps: Vec<&StepReport> = r.steps.iter().filter(|s| s.section() == Some(section)).collect();
        if steps.is_empty() && !section.always_shown() {
            continue;
        }
        writeln!(w, "\n{}", section.heading())?;
        for s in steps {
            match &s.figures {
                Some(f) => f.render_text(&s.name, w)?,
                None => no_result(w, s)?,
            }
            if let Some(d) = &s.dialect {
                writeln!(w, "    Servers' dialect: {d}")?;
            }
            match &s.generator {
                Some(g) if g.limited() => writeln!(w, "    Load generator: {}", g.verdict)?,
                Some(g) => writeln!(
                    w,
                    "    Load generator: ok (lag p99 {}, CPU max {})",
                    g.lag_p99_ms.map_or_else(|| "n/a".to_owned(), |l| format!("{l:.1} ms")),
                    g.cpu_percent_max
                        .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.0} %"))
                )?,
                None => {}
            }
        }
    }
    Ok(())
}

/// Recommendations, the overall rating and the success criteria.
fn verdict(r: &Report, w: &mut dyn Write) -> fmt::Result {
    writeln!(w, "\n💡 PERFORMANCE RECOMMENDATIONS:")?;
    if r.recommendations.is_empty() {
        writeln!(w, "   • None")?;
    }
    for rec in &r.recommendations {
        writeln!(w, "   • {rec}")?;
    }

    let o = &r.overall;
    writeln!(w, "\n🏆 OVERALL PERFORMANCE RATING: {}", o.rating)?;
    writeln!(
        w,
        "   {}",
        match o.rating {
            Rating::Excellent => "System is ready for production deployment with high performance".to_owned(),
            Rating::Good => "System performance is adequate with minor optimization opportunities".to_owned(),
            Rating::NotRated => format!("No verdict: {}", o.reason.as_deref().unwrap_or("nothing was measured")),
            _ if !o.failed_criteria.is_empty() =>
                format!("Not ready for production: failed {}", o.failed_criteria.join(", ")),
            _ => "System needs performance improvements before production deployment".to_owned(),
        }
    )?;
    if o.max_score == 0 {
        writeln!(
            w,
            "   (document scoring: no test of the document ran; the verdict is {} because {})",
            o.rating,
            o.reason.as_deref().unwrap_or("of the criteria")
        )?;
    } else {
        document_scoring(o, w)?;
    }

    writeln!(w, "\n✅ SUCCESS CRITERIA:")?;
    let width = r
        .criteria
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(40);
    for c in &r.criteria {
        let mark = match c.status {
            CriterionStatus::Pass => "PASS",
            CriterionStatus::Fail => "FAIL",
            CriterionStatus::NotMeasured => "n/a ",
        };
        writeln!(
            w,
            "   {mark}  {:<width$} target {:<52} measured {}",
            c.name,
            c.target,
            c.measured.as_deref().unwrap_or("not measured by this plan")
        )?;
    }
    Ok(())
}

/// One row per step: agents, duration, start spread.
fn steps_table(r: &Report, w: &mut dyn Write) -> fmt::Result {
    writeln!(w, "\n🧭 STEPS:")?;
    writeln!(
        w,
        "   {:<28} {:<26} {:>7} {:>10} {:>14}",
        "step", "kind", "agents", "duration", "start spread"
    )?;
    for s in &r.steps {
        writeln!(
            w,
            "   {:<28} {:<26} {:>7} {:>10} {:>14}",
            truncate(&s.name, 28),
            s.kind,
            format!("{}/{}", s.agents_reported.len(), s.agents_sent.len()),
            format!("{:.2} s", s.duration_s),
            s.start_spread_ms.map_or_else(|| "-".into(), |m| format!("{m:.2} ms"))
        )?;
    }
    Ok(())
}

/// One row per agent: host, clock, errors, resources, loss.
fn agents_table(r: &Report, w: &mut dyn Write) -> fmt::Result {
    writeln!(w, "\n🖥️ AGENTS:")?;
    writeln!(
        w,
        "   {:<3} {:<20} {:<16} {:<22} {:>5} {:>24} {:>11} {:>6} {:>7} {:>8} {:>8}",
        "#",
        "agent",
        "host",
        "address",
        "cores",
        "clock offset ± bound",
        "drift",
        "steps",
        "errors",
        "max CPU",
        "RSS MiB"
    )?;
    for a in &r.agents {
        let clock = a
            .clock
            .map(|c| {
                format!(
                    "{:+.3} ± {:.3} ms",
                    c.offset_ns as f64 / 1e6,
                    c.uncertainty_ns as f64 / 1e6
                )
            })
            .unwrap_or_else(|| "not measured".into());
        let drift = a
            .clock_drift_ns
            .map(|d| format!("{:+.3} ms", d as f64 / 1e6))
            .unwrap_or_else(|| "-".into());
        writeln!(
            w,
            "   {:<3} {:<20} {:<16} {:<22} {:>5} {:>24} {:>11} {:>6} {:>7} {:>8} {:>8}{}",
            a.index,
            truncate(&a.agent_id, 20),
            truncate(&a.hostname, 16),
            truncate(&a.address, 22),
            a.cores,
            clock,
            drift,
            a.steps_completed,
            a.errors,
            a.max_cpu_percent.map_or_else(|| "-".into(), |c| format!("{c:.0}%")),
            a.max_rss_mb.map_or_else(|| "-".into(), |m| format!("{m:.1}")),
            a.lost
                .as_ref()
                .map(|l| format!(
                    "  LOST{}{}: {l}",
                    a.lost_in_step
                        .as_ref()
                        .map(|s| format!(" in step `{s}`"))
                        .unwrap_or_default(),
                    a.lost_after_s.map(|t| format!(" at {t:.1} s")).unwrap_or_default()
                ))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

/// What was left under the run prefix.
fn cleanup(r: &Report, w: &mut dyn Write) -> fmt::Result {
    writeln!(w, "\n🧹 CLEANUP:")?;
    match r.leftover_keys {
        Some(n) => {
            writeln!(
                w,
                "   Keys left under {}*: {n}{}",
                r.target.run_prefix,
                if n > 0 { " (swept by the coordinator)" } else { "" }
            )?;
        }
        None if !r.target.redis_used => {
            writeln!(w, "   No step of this plan used Redis: nothing to clean up")?;
        }
        None => {
            writeln!(
                w,
                "   ❌ Keys left under {}*: unknown: the sweep failed because {}",
                r.target.run_prefix,
                r.sweep_error.as_deref().unwrap_or("it did not run")
            )?;
        }
    }
    if let Some(e) = &r.evictions {
        let setting = if e.maxmemory_bytes == 0 {
            format!("maxmemory-policy {}, no maxmemory: nothing can be evicted", e.policy)
        } else {
            format!(
                "maxmemory-policy {} at maxmemory {} bytes{}",
                e.policy,
                group(e.maxmemory_bytes as f64),
                if e.allowed && e.can_evict() {
                    " (accepted by [target] allow_eviction)"
                } else {
                    ""
                }
            )
        };
        let total = e.total();
        let unchecked = e.by_step.iter().filter(|s| s.unchecked.is_some()).count();
        writeln!(
            w,
            "   {}Keys evicted by Redis during the run: {total}{} ({setting})",
            if total > 0 || unchecked > 0 { "❌ " } else { "" },
            if unchecked > 0 {
                format!(", {unchecked} step(s) not checked")
            } else {
                String::new()
            }
        )?;
    }
    Ok(())
}

/// Where this suite measures differently from the document.
fn notes(r: &Report, w: &mut dyn Write) -> fmt::Result {
    if !r.notes.is_empty() {
        writeln!(
            w,
            "\n📝 NOTES (where this suite measures differently from the document):"
        )?;
        for n in &r.notes {
            writeln!(w, "   • {n}")?;
        }
    }
    Ok(())
}

fn no_result(w: &mut dyn Write, s: &StepReport) -> fmt::Result {
    writeln!(w, "\n  {} ({}): no result", s.name, s.kind)?;
    for f in &s.failures {
        writeln!(w, "    agent {}: {}", f.agent, f.message)?;
    }
    Ok(())
}

/// "(document scoring: s of m points, p% → rating[; the verdict is … because …])".
fn document_scoring(o: &super::Overall, w: &mut dyn Write) -> fmt::Result {
    writeln!(
        w,
        "   (document scoring: {} of {} points, {:.0}% → {}{})",
        o.score,
        o.max_score,
        o.percentage,
        o.document_rating,
        if o.rating == o.document_rating {
            String::new()
        } else {
            format!(
                "; the verdict is {} because {}",
                o.rating,
                o.reason.as_deref().unwrap_or("of the criteria")
            )
        }
    )?;
    Ok(())
}
