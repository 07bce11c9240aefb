//! Everything the coordinator and the agent share, with no knowledge of the wire (that lives in
//! `bandsync-proto`).
//!
//! - [`plan`]: the plan file, parsed into a raw type then validated into the checked [`plan::Plan`];
//! - [`metrics`]: HDR histograms, counters and gauges in a [`metrics::MetricSet`] that merges exactly;
//! - [`names`]: the metric names each workload records and the report reads;
//! - [`clock`]: NTP-style clock-offset estimation with its error bound;
//! - [`datagen`]: the document's `TestDataGenerator`;
//! - [`report`]: the report model, computed from merged metrics, and its text and JUnit renderers
//!   (JSON by serde, schema in `schema/report.schema.json`);
//! - [`html`]: the self-contained HTML report.
#![forbid(unsafe_code)]

pub mod clock;
pub mod datagen;
pub mod html;
pub mod metrics;
pub mod names;
pub mod plan;
pub mod report;
