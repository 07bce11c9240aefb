//! The JSON report's schema: `common/schema/report.schema.json` is generated from the report types
//! (their doc comments are its descriptions) and checked in, so a change to the JSON shows in
//! review; every report must validate against it. After an intended change:
//! `UPDATE_GOLDEN=1 cargo test -p bandsync-common --test report_schema`, and bump
//! `SCHEMA_VERSION` if a field changed meaning or disappeared.

mod fixture;

use bandsync_common::report::{Report, SCHEMA_VERSION};

fn schema_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/report.schema.json")
}

#[test]
fn the_checked_in_schema_is_the_one_the_types_generate() {
    let generated = serde_json::to_string_pretty(&schemars::schema_for!(Report)).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(schema_path(), &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(schema_path()).unwrap();
    assert!(
        checked_in == generated,
        "{} is stale: regenerate it with UPDATE_GOLDEN=1 and review the diff",
        schema_path().display()
    );
}

#[test]
fn a_report_validates_against_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(schema_path()).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let report = serde_json::to_value(Report::build(fixture::record())).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&report)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(report["schema_version"], SCHEMA_VERSION);
    // And it can fail: a figure of the wrong type is refused.
    let mut broken = report.clone();
    let generation = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s["kind"] == "timestamp_generation")
        .unwrap();
    broken["steps"][generation]["figures"]["total_iterations"] = serde_json::json!("many");
    assert!(!validator.is_valid(&broken));
}
