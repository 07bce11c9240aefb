//! The coordinator ↔ agent gRPC contract (`proto/loadtest.proto`), compiled by `build.rs` with
//! protox, and the conversions between its messages and `bandsync-common` types.
//!
//! The wire stays here: `common` knows nothing of prost or tonic, the coordinator and the agent
//! convert at their edges with the `From`/`TryFrom` impls below.
#![forbid(unsafe_code)]

use bandsync_common::clock::ClockEstimate;
use bandsync_common::metrics::{self, GaugeMerge, MetricSet, MetricsError};
use bandsync_common::plan::StepSpec;
use bandsync_common::workloads::WireError;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("bandsync.loadtest.v1");
}

/// The coordinator refuses an agent whose `Hello.protocol_version` differs.
/// 2: a step travels as kind + JSON parameters (`StepSpec`), not one message per kind.
pub const PROTOCOL_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("message has no `{0}`")]
    Missing(&'static str),
    #[error("gauge `{0}` has no merge rule")]
    GaugeRule(String),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Step(#[from] WireError),
}

impl TryFrom<&MetricSet> for pb::MetricSet {
    type Error = MetricsError;

    fn try_from(m: &MetricSet) -> Result<Self, Self::Error> {
        let histograms = m
            .histograms
            .iter()
            .map(|(k, h)| Ok((k.clone(), metrics::encode_histogram(k, h)?)))
            .collect::<Result<_, MetricsError>>()?;
        Ok(pb::MetricSet {
            histograms,
            counters: m.counters.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            gauges: m
                .gauges
                .iter()
                .map(|(k, g)| {
                    let merge = match g.merge {
                        GaugeMerge::Sum => pb::GaugeMerge::Sum,
                        GaugeMerge::Min => pb::GaugeMerge::Min,
                        GaugeMerge::Max => pb::GaugeMerge::Max,
                    };
                    (
                        k.clone(),
                        pb::Gauge {
                            value: g.value,
                            merge: merge as i32,
                        },
                    )
                })
                .collect(),
        })
    }
}

impl TryFrom<&pb::MetricSet> for MetricSet {
    type Error = ConvertError;

    fn try_from(m: &pb::MetricSet) -> Result<Self, Self::Error> {
        let mut out = MetricSet::new();
        for (k, bytes) in &m.histograms {
            out.histograms.insert(k.clone(), metrics::decode_histogram(k, bytes)?);
        }
        for (k, v) in &m.counters {
            out.counters.insert(k.clone(), *v);
        }
        for (k, g) in &m.gauges {
            let merge = match pb::GaugeMerge::try_from(g.merge) {
                Ok(pb::GaugeMerge::Sum) => GaugeMerge::Sum,
                Ok(pb::GaugeMerge::Min) => GaugeMerge::Min,
                Ok(pb::GaugeMerge::Max) => GaugeMerge::Max,
                _ => return Err(ConvertError::GaugeRule(k.clone())),
            };
            out.set_gauge(k, g.value, merge);
        }
        Ok(out)
    }
}

impl From<&StepSpec> for pb::StepSpec {
    fn from(s: &StepSpec) -> Self {
        pb::StepSpec {
            kind: s.kind().to_owned(),
            params: s.params_json(),
        }
    }
}

impl TryFrom<&pb::StepSpec> for StepSpec {
    type Error = ConvertError;

    fn try_from(s: &pb::StepSpec) -> Result<Self, Self::Error> {
        if s.kind.is_empty() {
            return Err(ConvertError::Missing("StepSpec.kind"));
        }
        Ok(StepSpec::from_json(&s.kind, &s.params)?)
    }
}

impl From<ClockEstimate> for pb::ClockEstimate {
    fn from(c: ClockEstimate) -> Self {
        pb::ClockEstimate {
            offset_ns: c.offset_ns,
            uncertainty_ns: c.uncertainty_ns,
        }
    }
}

impl From<&pb::ClockEstimate> for ClockEstimate {
    fn from(c: &pb::ClockEstimate) -> Self {
        ClockEstimate {
            offset_ns: c.offset_ns,
            uncertainty_ns: c.uncertainty_ns,
            rtt_ns: c.uncertainty_ns * 2,
            samples: 0,
        }
    }
}

/// Shorthand constructors for the `oneof` wrappers.
impl pb::AgentMessage {
    pub fn of(kind: pb::agent_message::Kind) -> Self {
        Self { kind: Some(kind) }
    }
}

impl pb::CoordinatorMessage {
    pub fn of(kind: pb::coordinator_message::Kind) -> Self {
        Self { kind: Some(kind) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sets_survive_the_wire() {
        let mut m = MetricSet::new();
        for v in [10u64, 20, 30, 4000] {
            m.histogram_mut("set.latency_us").record(v).unwrap();
        }
        m.add_counter("set.ok", 4);
        m.set_gauge("set.start_us", 5.0, GaugeMerge::Min);
        let wire = pb::MetricSet::try_from(&m).unwrap();
        let back = MetricSet::try_from(&wire).unwrap();
        assert_eq!(back.counters, m.counters);
        assert_eq!(back.gauges, m.gauges);
        assert_eq!(back.histograms["set.latency_us"], m.histograms["set.latency_us"]);
    }

    #[test]
    fn a_gauge_without_a_rule_is_refused() {
        let mut wire = pb::MetricSet::default();
        wire.gauges.insert("g".into(), pb::Gauge { value: 1.0, merge: 0 });
        assert!(matches!(MetricSet::try_from(&wire), Err(ConvertError::GaugeRule(_))));
    }
}
