//! The HTML report: one self-contained file (inline CSS and SVG, no scripts, no fetches) with the
//! run's summary, the success criteria, latency percentile curves per operation, the steps, the
//! agents and the notes.

use std::fmt::{self, Write};

use super::{CriterionStatus, Report, RunStatus, TimelinePoint};
use crate::fmt::group;
use crate::metrics::HistSummary;

const PALETTE: [&str; 8] = [
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Percentile points of a summary as (x = "nines" of the percentile, y = value): min, p50, p90,
/// p99, p99.9, max. x = −log10(1 − p), so p90 is 1, p99 is 2, p99.9 is 3; max is drawn at 4.
fn points(h: &HistSummary) -> [(f64, f64); 6] {
    [
        (0.0, h.min as f64),
        (0.5f64.log10().abs(), h.p50 as f64),
        (1.0, h.p90 as f64),
        (2.0, h.p99 as f64),
        (3.0, h.p999 as f64),
        (4.0, h.max as f64),
    ]
}

/// A latency percentile chart: one line per series, log-scaled latency in ms.
fn percentile_chart(o: &mut dyn Write, title: &str, series: &[(String, HistSummary)], unit_to_ms: f64) -> fmt::Result {
    let series: Vec<_> = series.iter().filter(|(_, h)| h.count > 0).collect();
    if series.is_empty() {
        return Ok(());
    }
    let (w, h, left, right, top, bottom) = (600.0, 310.0, 64.0, 190.0, 48.0, 44.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let ms = |v: f64| (v * unit_to_ms).max(1e-4);
    let lo = series
        .iter()
        .map(|(_, s)| ms(s.min as f64))
        .fold(f64::INFINITY, f64::min)
        .log10()
        .floor();
    let hi = series
        .iter()
        .map(|(_, s)| ms(s.max as f64))
        .fold(0.0, f64::max)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let x = |n: f64| left + n / 4.0 * pw;
    let y = |v: f64| top + ph - (ms(v).log10() - lo) / (hi - lo) * ph;
    write!(
        o,
        r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    )?;
    let (what, which) = title.split_once(" — ").unwrap_or((title, ""));
    write!(
        o,
        r#"<text x="8" y="18" class="ct">{}</text><text x="8" y="34" class="tick">{}</text>"#,
        esc(what),
        esc(which)
    )?;
    let mut d = lo;
    while d <= hi {
        let yy = top + ph - (d - lo) / (hi - lo) * ph;
        let label = if d < 0.0 {
            format!("{}", 10f64.powf(d))
        } else {
            group(10f64.powf(d))
        };
        write!(
            o,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" class="grid"/><text x="{}" y="{:.1}" class="tick" text-anchor="end">{label} ms</text>"##,
            left + pw,
            left - 6.0,
            yy + 4.0
        )?;
        d += 1.0;
    }
    for (n, label) in [
        (0.0, "min"),
        (0.5f64.log10().abs(), "p50"),
        (1.0, "p90"),
        (2.0, "p99"),
        (3.0, "p99.9"),
        (4.0, "max"),
    ] {
        let xx = x(n);
        write!(
            o,
            r#"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{}" class="grid"/><text x="{xx:.1}" y="{}" class="tick" text-anchor="middle">{label}</text>"#,
            top + ph,
            top + ph + 18.0
        )?;
    }
    for (i, (name, s)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = points(s)
            .iter()
            .map(|(n, v)| format!("{:.1},{:.1}", x(*n), y(*v)))
            .collect();
        write!(
            o,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            path.join(" ")
        )?;
        for (n, v) in points(s) {
            write!(
                o,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{}: {:.3} ms</title></circle>"#,
                x(n),
                y(v),
                esc(name),
                ms(v)
            )?;
        }
        let ly = top + 14.0 + i as f64 * 20.0;
        write!(
            o,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{ly:.1}" class="legend">{} (n={})</text>"#,
            left + pw + 16.0,
            ly - 10.0,
            left + pw + 34.0,
            esc(name),
            group(s.count as f64)
        )?;
    }
    o.write_str("</svg>")?;
    Ok(())
}

/// Operations and errors per second over a step: ops/s on the left scale, errors/s on the right.
fn timeline_chart(o: &mut dyn Write, title: &str, points: &[TimelinePoint]) -> fmt::Result {
    if points.len() < 2 {
        return Ok(());
    }
    let (w, h, left, right, top, bottom) = (600.0, 310.0, 64.0, 190.0, 48.0, 44.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let max_ops = points.iter().map(|p| p.ops).max().unwrap_or(0).max(1) as f64;
    let max_err = points.iter().map(|p| p.errors).max().unwrap_or(0).max(1) as f64;
    let n = points.len() as f64;
    let x = |s: f64| left + (s + 0.5) / n * pw;
    let (what, which) = title.split_once(" — ").unwrap_or((title, ""));
    write!(
        o,
        r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    )?;
    write!(
        o,
        r#"<text x="8" y="18" class="ct">{}</text><text x="8" y="34" class="tick">{}</text>"#,
        esc(what),
        esc(which)
    )?;
    for k in 0..=4 {
        let f = f64::from(k) / 4.0;
        let yy = top + ph - f * ph;
        write!(
            o,
            r#"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" class="grid"/><text x="{}" y="{:.1}" class="tick" text-anchor="end">{}</text><text x="{}" y="{:.1}" class="tick err">{}</text>"#,
            left + pw,
            left - 6.0,
            yy + 4.0,
            group(max_ops * f),
            left + pw + 6.0,
            yy + 4.0,
            group(max_err * f)
        )?;
    }
    let every = (points.len() / 10).max(1);
    for p in points.iter().step_by(every) {
        write!(
            o,
            r#"<text x="{:.1}" y="{}" class="tick" text-anchor="middle">{}s</text>"#,
            x(f64::from(p.second)),
            top + ph + 18.0,
            p.second
        )?;
    }
    let ops: Vec<String> = points
        .iter()
        .map(|p| {
            format!(
                "{:.1},{:.1}",
                x(f64::from(p.second)),
                top + ph - p.ops as f64 / max_ops * ph
            )
        })
        .collect();
    let errs: Vec<String> = points
        .iter()
        .map(|p| {
            format!(
                "{:.1},{:.1}",
                x(f64::from(p.second)),
                top + ph - p.errors as f64 / max_err * ph
            )
        })
        .collect();
    write!(
        o,
        r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
        ops.join(" "),
        PALETTE[0]
    )?;
    write!(
        o,
        r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2" stroke-dasharray="4 3"/>"#,
        errs.join(" "),
        PALETTE[1]
    )?;
    let lx = left + pw + 60.0;
    write!(
        o,
        r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}" class="legend">ops/s (left)</text><rect x="{lx}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}" class="legend">errors/s (right)</text>"#,
        top + 4.0,
        PALETTE[0],
        lx + 18.0,
        top + 14.0,
        top + 24.0,
        PALETTE[1],
        lx + 18.0,
        top + 34.0
    )?;
    o.write_str("</svg>")?;
    Ok(())
}

/// Intended, achieved and dropped rates of an open-model step over time, on one axis.
fn rate_chart(o: &mut dyn Write, title: &str, points: &[crate::workloads::arrival::RatePoint]) -> fmt::Result {
    if points.is_empty() {
        return Ok(());
    }
    let (w, h, left, right, top, bottom) = (600.0, 310.0, 64.0, 150.0, 48.0, 44.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let max = points
        .iter()
        .flat_map(|p| [p.intended, p.achieved, p.dropped])
        .fold(1.0, f64::max);
    let n = points.len() as f64;
    let x = |i: usize| left + (i as f64 + 0.5) / n * pw;
    let (what, which) = title.split_once(" — ").unwrap_or((title, ""));
    write!(
        o,
        r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><title>{t}</title><text x="8" y="18" class="ct">{}</text><text x="8" y="34" class="tick">{}</text>"#,
        esc(what),
        esc(which),
        t = esc(title)
    )?;
    for k in 0..=4 {
        let f = f64::from(k) / 4.0;
        let yy = top + ph - f * ph;
        write!(
            o,
            r#"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" class="grid"/><text x="{}" y="{:.1}" class="tick" text-anchor="end">{}</text>"#,
            left + pw,
            left - 6.0,
            yy + 4.0,
            group(max * f)
        )?;
    }
    let every = (points.len() / 10).max(1);
    for (i, p) in points.iter().enumerate().step_by(every) {
        write!(
            o,
            r#"<text x="{:.1}" y="{}" class="tick" text-anchor="middle">{:.0}s</text>"#,
            x(i),
            top + ph + 18.0,
            p.second
        )?;
    }
    let series = [("intended/s", "4 3"), ("achieved/s", "none"), ("dropped/s", "2 2")];
    for (i, (name, dash)) in series.iter().enumerate() {
        let line: Vec<String> = points
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let v = [p.intended, p.achieved, p.dropped][i];
                format!("{:.1},{:.1}", x(j), top + ph - v / max * ph)
            })
            .collect();
        write!(
            o,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2" stroke-dasharray="{dash}"/><rect x="{}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}" class="legend">{name}</text>"#,
            line.join(" "),
            PALETTE[i],
            left + pw + 20.0,
            top + 4.0 + 20.0 * i as f64,
            PALETTE[i],
            left + pw + 38.0,
            top + 14.0 + 20.0 * i as f64
        )?;
    }
    o.write_str("</svg>")
}

/// The report as one self-contained HTML page.
pub fn render_html(r: &Report) -> String {
    let mut o = String::new();
    write_html(r, &mut o).expect("writing to a String cannot fail");
    o
}

/// [`render_html`] into any writer.
pub fn write_html(r: &Report, o: &mut dyn Write) -> fmt::Result {
    head(r, o)?;
    overview(r, o)?;
    criteria(r, o)?;
    charts(r, o)?;
    steps(r, o)?;
    agents(r, o)?;
    notes(r, o)?;
    Ok(())
}

/// The page head (style) and the header line.
fn head(r: &Report, o: &mut dyn Write) -> fmt::Result {
    let status = match &r.status {
        RunStatus::Complete => ("complete", "ok".to_owned()),
        RunStatus::Incomplete { reason } => ("incomplete", format!("incomplete: {}", esc(reason))),
        RunStatus::Interrupted => ("interrupted", "interrupted: partial report".to_owned()),
    };
    write!(
        o,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>BandSync load test: {plan}</title><style>
body{{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1f2937}}
header{{background:#111827;color:#f9fafb;padding:20px 32px}}header h1{{margin:0 0 6px;font-size:22px}}header .meta{{color:#cbd5e1}}
main{{padding:20px 32px;max-width:1280px}}section{{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:16px 20px;margin:0 0 18px}}
h2{{font-size:17px;margin:0 0 12px}}table{{border-collapse:collapse;width:100%}}th,td{{text-align:left;padding:6px 10px;border-bottom:1px solid #eef0f3;vertical-align:top}}
th{{color:#6b7280;font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.03em}}td.num{{text-align:right;font-variant-numeric:tabular-nums}}
.badge{{display:inline-block;padding:2px 8px;border-radius:999px;font-size:12px;font-weight:700}}.pass{{background:#dcfce7;color:#166534}}.fail{{background:#fee2e2;color:#991b1b}}.na{{background:#e5e7eb;color:#374151}}
.kpis{{display:flex;gap:14px;flex-wrap:wrap}}.kpi{{flex:1 1 160px;background:#f9fafb;border:1px solid #eef0f3;border-radius:8px;padding:10px 14px}}.kpi b{{display:block;font-size:20px}}
.status-complete{{color:#86efac}}.status-incomplete,.status-interrupted{{color:#fca5a5}}
.charts{{display:flex;flex-wrap:wrap;gap:12px}}svg.chart{{width:570px;max-width:100%;height:auto;background:#fff;border:1px solid #f1f3f5;border-radius:6px}}
.grid{{stroke:#e5e7eb;stroke-width:1}}.err{{fill:#dc2626}}.tick{{font-size:11px;fill:#6b7280}}.legend{{font-size:12px;fill:#374151}}.ct{{font-size:14px;font-weight:600;fill:#111827}}
ul.notes li{{margin:4px 0}}
</style></head><body>"#,
        plan = esc(&r.plan)
    )?;
    write!(
        o,
        r#"<header><h1>Redis &amp; Timestamp Performance Report — {plan}</h1><div class="meta">run {run} · {agents} agent(s) · {secs:.1} s · <span class="status-{cls}">{status}</span></div></header><main>"#,
        plan = esc(&r.plan),
        run = esc(&r.run_id),
        agents = r.agents.len(),
        secs = r.execution_time_s,
        cls = status.0,
        status = status.1
    )?;
    Ok(())
}

/// The overview tiles: rating, criteria, keys left.
fn overview(r: &Report, o: &mut dyn Write) -> fmt::Result {
    let passed = r.criteria.iter().filter(|c| c.status == CriterionStatus::Pass).count();
    let failed = r.criteria.iter().filter(|c| c.status == CriterionStatus::Fail).count();
    write!(
        o,
        r#"<section><h2>Overview</h2><div class="kpis"><div class="kpi">Overall rating<b>{}</b>document's scoring: {} of {} points, {:.0}% → {}</div><div class="kpi">Success criteria<b>{passed} pass · {failed} fail</b>{} not measured by this plan</div><div class="kpi">Keys left under the run prefix<b>{}</b>{}</div></div></section>"#,
        esc(r.overall.rating.as_str()),
        r.overall.score,
        r.overall.max_score,
        r.overall.percentage,
        esc(r.overall.document_rating.as_str()),
        r.criteria.len() - passed - failed,
        r.leftover_keys.map_or_else(|| "unknown".into(), |n| n.to_string()),
        esc(&r.target.run_prefix)
    )?;
    Ok(())
}

/// The success criteria table.
fn criteria(r: &Report, o: &mut dyn Write) -> fmt::Result {
    o.write_str(r#"<section><h2>Success criteria</h2><table><tr><th>status</th><th>criterion</th><th>target</th><th>measured</th><th>source</th></tr>"#)?;
    for c in &r.criteria {
        let (cls, label) = match c.status {
            CriterionStatus::Pass => ("pass", "PASS"),
            CriterionStatus::Fail => ("fail", "FAIL"),
            CriterionStatus::NotMeasured => ("na", "n/a"),
        };
        write!(
            o,
            r#"<tr><td><span class="badge {cls}">{label}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&c.name),
            esc(&c.target),
            esc(c.measured.as_deref().unwrap_or("not measured by this plan")),
            esc(&c.source)
        )?;
    }
    o.write_str("</table></section>")?;
    Ok(())
}

/// Throughput timelines and latency percentile charts.
fn charts(r: &Report, o: &mut dyn Write) -> fmt::Result {
    let mut charts = Vec::new();
    for s in &r.steps {
        for c in s.figures.iter().flat_map(|f| f.charts()) {
            let mut svg = String::new();
            percentile_chart(
                &mut svg,
                &format!("{} — step {}", c.title, s.name),
                &c.series,
                c.unit_to_ms,
            )?;
            charts.push(svg);
        }
    }
    let mut timelines = Vec::new();
    for s in &r.steps {
        let mut svg = String::new();
        timeline_chart(
            &mut svg,
            &format!("Throughput and errors over time — step {}", s.name),
            &s.timeline,
        )?;
        timelines.push(svg);
    }
    let mut rates = Vec::new();
    for s in &r.steps {
        let mut svg = String::new();
        if let Some(f) = &s.figures {
            rate_chart(
                &mut svg,
                &format!("Intended vs achieved rate — step {}", s.name),
                &f.rates(),
            )?;
        }
        rates.push(svg);
    }
    for (heading, svgs) in [
        ("Throughput and errors over time", timelines),
        ("Open model: intended vs achieved rate", rates),
        ("Latency percentiles", charts),
    ] {
        let svgs: Vec<String> = svgs.into_iter().filter(|c| !c.is_empty()).collect();
        if svgs.is_empty() {
            continue;
        }
        write!(o, r#"<section><h2>{heading}</h2><div class="charts">"#)?;
        for c in svgs {
            o.write_str(&c)?;
        }
        o.write_str("</div></section>")?;
    }
    Ok(())
}

/// One row per step.
fn steps(r: &Report, o: &mut dyn Write) -> fmt::Result {
    o.write_str(r#"<section><h2>Steps</h2><table><tr><th>step</th><th>kind</th><th>agents</th><th>duration</th><th>start spread</th><th>load generator</th><th>failures</th></tr>"#)?;
    for s in &r.steps {
        let failures: Vec<String> = s
            .failures
            .iter()
            .map(|f| format!("{}: {}", esc(&f.agent), esc(&f.message)))
            .collect();
        write!(
            o,
            r#"<tr><td>{}</td><td>{}</td><td class="num">{}/{}</td><td class="num">{:.2} s</td><td class="num">{}</td><td{}>{}</td><td>{}</td></tr>"#,
            esc(&s.name),
            esc(&s.kind),
            s.agents_reported.len(),
            s.agents_sent.len(),
            s.duration_s,
            s.start_spread_ms.map_or_else(|| "-".into(), |m| format!("{m:.2} ms")),
            if s.generator.as_ref().is_some_and(|g| g.limited()) {
                r#" class="fail""#
            } else {
                ""
            },
            s.generator.as_ref().map_or_else(
                || "not measured".to_owned(),
                |g| if g.limited() {
                    esc(&format!("LIMITED: {}", g.limits.join("; ")))
                } else {
                    format!(
                        "ok (lag p99 {}, CPU max {})",
                        g.lag_p99_ms.map_or_else(|| "n/a".into(), |l| format!("{l:.1} ms")),
                        g.cpu_percent_max.map_or_else(|| "n/a".into(), |c| format!("{c:.0} %"))
                    )
                }
            ),
            failures.join("<br>")
        )?;
    }
    o.write_str("</table></section>")?;
    Ok(())
}

/// One row per agent.
fn agents(r: &Report, o: &mut dyn Write) -> fmt::Result {
    o.write_str(r#"<section><h2>Agents</h2><table><tr><th>#</th><th>agent</th><th>host</th><th>address</th><th>cores</th><th>clock offset ± bound</th><th>drift</th><th>steps</th><th>errors</th><th>max CPU</th><th>RSS MiB</th><th>lost</th></tr>"#)?;
    for a in &r.agents {
        write!(
            o,
            r#"<tr><td class="num">{}</td><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{}</td></tr>"#,
            a.index,
            esc(&a.agent_id),
            esc(&a.hostname),
            esc(&a.address),
            a.cores,
            a.clock.map_or_else(
                || "not measured".into(),
                |c| format!(
                    "{:+.3} ± {:.3} ms",
                    c.offset_ns as f64 / 1e6,
                    c.uncertainty_ns as f64 / 1e6
                )
            ),
            a.clock_drift_ns
                .map_or_else(|| "-".into(), |d| format!("{:+.3} ms", d as f64 / 1e6)),
            a.steps_completed,
            a.errors,
            a.max_cpu_percent.map_or_else(|| "-".into(), |c| format!("{c:.0}%")),
            a.max_rss_mb.map_or_else(|| "-".into(), |m| format!("{m:.1}")),
            a.lost.as_deref().map(esc).unwrap_or_default()
        )?;
    }
    o.write_str("</table></section>")?;
    Ok(())
}

/// Recommendations, notes and the full text report.
fn notes(r: &Report, o: &mut dyn Write) -> fmt::Result {
    if !r.recommendations.is_empty() || !r.notes.is_empty() {
        o.write_str(r#"<section><h2>Recommendations and notes</h2><ul class="notes">"#)?;
        for rec in &r.recommendations {
            write!(o, "<li><b>Recommendation:</b> {}</li>", esc(rec))?;
        }
        for n in &r.notes {
            write!(o, "<li>{}</li>", esc(n))?;
        }
        o.write_str("</ul></section>")?;
    }
    write!(
        o,
        r#"<section><h2>The full text report</h2><pre>{}</pre></section>"#,
        esc(&crate::report::render_text(r))
    )?;
    o.write_str("</main></body></html>\n")?;
    Ok(())
}
