//! The HTML report: self-contained (no scripts, no external resources), and it renders in a
//! real headless Chromium without console errors. The Chromium part is skipped, with a message,
//! only where Chromium is not installed (`scripts/test` installs it).

mod fixture;

use bandsync_common::html::render_html;
use bandsync_common::report::Report;

#[test]
fn the_html_report_is_self_contained() {
    let html = render_html(&Report::build(fixture::record()));
    assert!(html.starts_with("<!DOCTYPE html>"));
    for forbidden in ["<script", " src=", "href=", "@import", "url("] {
        assert!(
            !html.contains(forbidden),
            "the page must not load anything: found `{forbidden}`"
        );
    }
    // Every figure the charts need is there: one chart per latency histogram of the fixture.
    assert_eq!(
        html.matches(r#"<svg class="chart""#).count(),
        5 + 2 + 1 + 1,
        "charts: 5 latency, 2 session sync, 1 timeline, 1 intended vs achieved rate"
    );
    assert!(html.contains("Intended vs achieved rate — step redis_concurrent"));
    assert!(
        html.contains("LIMITED: agent 1 lag p99 25.0 ms &gt; 10 ms"),
        "the steps table shows the generator"
    );
    assert!(html.contains("Throughput and errors over time"));
    for name in [
        "SET (n=2,000)",
        "composite (n=5,000)",
        "from schedule (n=400)",
        "cross instance (n=144)",
        "Success criteria",
        "agent-1",
    ] {
        assert!(html.contains(name), "missing {name}");
    }
    // The password in the target URL is not in the page.
    assert!(!html.contains("secret"));
}

#[test]
fn the_html_report_renders_in_headless_chromium() {
    if std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium); scripts/test installs it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (html, png) = (dir.path().join("report.html"), dir.path().join("report.png"));
    std::fs::write(&html, render_html(&Report::build(fixture::record()))).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/screenshot-report");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(&html)
        .arg(&png)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    assert!(
        bytes.len() > 50_000,
        "a page with content, not a blank: {} bytes",
        bytes.len()
    );
}
