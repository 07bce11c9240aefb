//! Golden test of the text report: a fixed run record (every step kind, fixed histograms, times
//! and agents) renders to exactly `golden/report.txt`. After an intended change, review the diff
//! and regenerate with `UPDATE_GOLDEN=1 cargo test -p bandsync-common --test report_golden`.

mod fixture;

use bandsync_common::report::{Report, render_junit, render_text};
use fixture::record;

fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{} differs from the rendering at line {}:\n  golden: {:?}\n  actual: {:?}\n(review, then UPDATE_GOLDEN=1 to accept)",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

#[test]
fn the_text_report_matches_the_golden_file() {
    golden("report.txt", &render_text(&Report::build(record())));
}

#[test]
fn the_junit_report_matches_the_golden_file() {
    golden("report.xml", &render_junit(&Report::build(record())));
}
