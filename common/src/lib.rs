//! Everything the coordinator and the agent share, with no knowledge of the wire (that lives in
//! `bandsync-proto`).
//!
//! - [`workload`]: what a step kind is (the `Workload` trait); [`workloads`]: every kind, one
//!   module each, owning its parameters, metric names, figures, criteria and text section;
//! - [`plan`]: the plan file, parsed into raw types then validated into the checked [`plan::Plan`];
//! - [`metrics`]: HDR histograms, counters and gauges in a [`metrics::MetricSet`] that merges exactly;
//! - [`dialect`]: what the Socket.IO workloads may rely on from the servers (protocol dialects);
//! - [`clock`]: NTP-style clock-offset estimation with its error bound;
//! - [`datagen`]: the document's `TestDataGenerator`;
//! - [`report`]: the report model, computed from merged metrics, and its text, JUnit and HTML
//!   renderers (JSON by serde, schema in `schema/report.schema.json`);
//! - [`fmt`]: small formatting helpers (`group`, `redact_url`).
#![forbid(unsafe_code)]

#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
pub mod datagen;
pub mod dialect;
pub mod files;
pub mod fmt;
pub mod metrics;
pub mod plan;
pub mod report;
pub mod workload;
pub mod workloads;

/// The HTML report (kept at its old path for the binaries and tests).
pub use report::html;
