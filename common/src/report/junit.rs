//! The success criteria as JUnit XML: one testcase per criterion (failure = FAIL, skipped = not
//! measured by this plan), so CI systems show them natively.

use std::fmt::{self, Write};

use super::{CriterionStatus, Report};

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The success criteria as JUnit XML.
pub fn render_junit(r: &Report) -> String {
    let mut o = String::new();
    write_junit(r, &mut o).expect("writing to a String cannot fail");
    o
}

/// [`render_junit`] into any writer.
pub fn write_junit(r: &Report, o: &mut dyn Write) -> fmt::Result {
    let failures = r.criteria.iter().filter(|c| c.status == CriterionStatus::Fail).count();
    let skipped = r
        .criteria
        .iter()
        .filter(|c| c.status == CriterionStatus::NotMeasured)
        .count();
    writeln!(o, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        o,
        r#"<testsuites name="bandsync {}" tests="{}" failures="{failures}" skipped="{skipped}" time="{:.3}">"#,
        xml_escape(&r.plan),
        r.criteria.len(),
        r.execution_time_s
    )?;
    writeln!(
        o,
        r#"  <testsuite name="success criteria" tests="{}" failures="{failures}" skipped="{skipped}" errors="0" time="{:.3}">"#,
        r.criteria.len(),
        r.execution_time_s
    )?;
    writeln!(o, "    <properties>")?;
    for (k, v) in [
        ("run_id", r.run_id.as_str()),
        ("plan_hash", r.plan_hash.as_str()),
        ("overall_rating", r.overall.rating.as_str()),
    ] {
        writeln!(o, r#"      <property name="{k}" value="{}"/>"#, xml_escape(v))?;
    }
    writeln!(o, "    </properties>")?;
    for c in &r.criteria {
        let measured = c.measured.as_deref().unwrap_or("not measured by this plan");
        write!(
            o,
            r#"    <testcase classname="bandsync.criteria.{}" name="{}" time="0">"#,
            xml_escape(&c.source),
            xml_escape(&c.name)
        )?;
        let detail = format!("measured {measured}, target {}", c.target);
        match c.status {
            CriterionStatus::Pass => {}
            CriterionStatus::Fail => {
                write!(o, r#"<failure type="criterion" message="{}"/>"#, xml_escape(&detail))?;
            }
            CriterionStatus::NotMeasured => {
                write!(o, r#"<skipped message="{}"/>"#, xml_escape(&detail))?;
            }
        }
        writeln!(o, "<system-out>{}</system-out></testcase>", xml_escape(&detail))?;
    }
    writeln!(o, "  </testsuite>")?;
    writeln!(o, "</testsuites>")?;
    Ok(())
}
