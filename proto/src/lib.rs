//! The coordinator ↔ agent gRPC contract (`proto/loadtest.proto`), compiled by `build.rs` with
//! protox, and the conversions between its messages and `bandsync-common` types.
//!
//! The wire stays here: `common` knows nothing of prost or tonic, the coordinator and the agent
//! convert at their edges with the `From`/`TryFrom` impls below.
#![forbid(unsafe_code)]

use std::time::Duration;

use bandsync_common::clock::ClockEstimate;
use bandsync_common::metrics::{self, GaugeMerge, MetricSet, MetricsError};
use bandsync_common::plan::{Connections, FaultMode, Locking, StepSpec};

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("bandsync.loadtest.v1");
}

/// The coordinator refuses an agent whose `Hello.protocol_version` differs.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("message has no `{0}`")]
    Missing(&'static str),
    #[error("gauge `{0}` has no merge rule")]
    GaugeRule(String),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
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
        use pb::step_spec::Kind;
        let kind = match *s {
            StepSpec::TimestampGeneration { iterations, batch_size } => {
                Kind::TimestampGeneration(pb::TimestampGeneration { iterations, batch_size })
            }
            StepSpec::TimestampPrecision { duration, max_samples } => {
                Kind::TimestampPrecision(pb::TimestampPrecision {
                    duration_ms: millis(duration),
                    max_samples,
                })
            }
            StepSpec::RedisBasicOps {
                iterations,
                members,
                clients,
            } => Kind::RedisBasicOps(pb::RedisBasicOps {
                iterations,
                members,
                clients,
            }),
            StepSpec::RedisConcurrent {
                clients,
                operations,
                members,
                connections,
            } => Kind::RedisConcurrent(pb::RedisConcurrent {
                clients,
                operations,
                members,
                connections: match connections {
                    Connections::Shared => pb::Connections::Shared,
                    Connections::PerClient => pb::Connections::PerClient,
                } as i32,
            }),
            StepSpec::RedisMemory {
                sessions,
                members,
                sample,
            } => Kind::RedisMemory(pb::RedisMemory {
                sessions,
                members,
                sample,
            }),
            StepSpec::SessionIntegrity { sessions } => Kind::SessionIntegrity(pb::SessionIntegrity { sessions }),
            StepSpec::SessionConcurrentUpdates {
                updaters,
                updates,
                members,
                locking,
                max_retries,
            } => Kind::SessionConcurrentUpdates(pb::SessionConcurrentUpdates {
                updaters,
                updates,
                members,
                locking: match locking {
                    Locking::Watch => pb::Locking::Watch,
                    Locking::None => pb::Locking::None,
                } as i32,
                max_retries,
            }),
            StepSpec::RedisPool {
                pool_size,
                interval,
                duration,
            } => Kind::RedisPool(pb::RedisPool {
                pool_size,
                interval_ms: millis(interval),
                duration_ms: millis(duration),
            }),
            StepSpec::EventConsistency {
                clients,
                interval,
                settle,
            } => Kind::EventConsistency(pb::EventConsistency {
                clients,
                interval_ms: millis(interval),
                settle_ms: millis(settle),
            }),
            StepSpec::SessionSync {
                sessions,
                members,
                changes,
                interval,
                ramp_up,
                settle,
            } => Kind::SessionSync(pb::SessionSync {
                sessions,
                members,
                changes,
                interval_ms: millis(interval),
                ramp_up_ms: millis(ramp_up),
                settle_ms: millis(settle),
            }),
            StepSpec::RedisFailover {
                mode,
                warmup,
                duration,
                recovery,
                clients,
                keys,
                persist,
                sessions,
                members,
            } => Kind::RedisFailover(pb::RedisFailover {
                mode: match mode {
                    FaultMode::Pause => pb::FaultMode::Pause,
                    FaultMode::KillClients => pb::FaultMode::KillClients,
                    FaultMode::Restart => pb::FaultMode::Restart,
                } as i32,
                warmup_ms: millis(warmup),
                duration_ms: millis(duration),
                recovery_ms: millis(recovery),
                clients,
                keys,
                persist,
                sessions,
                members,
            }),
        };
        pb::StepSpec { kind: Some(kind) }
    }
}

impl TryFrom<&pb::StepSpec> for StepSpec {
    type Error = ConvertError;

    fn try_from(s: &pb::StepSpec) -> Result<Self, Self::Error> {
        use pb::step_spec::Kind;
        Ok(match s.kind.as_ref().ok_or(ConvertError::Missing("StepSpec.kind"))? {
            Kind::TimestampGeneration(t) => StepSpec::TimestampGeneration {
                iterations: t.iterations,
                batch_size: t.batch_size.max(1),
            },
            Kind::TimestampPrecision(t) => StepSpec::TimestampPrecision {
                duration: Duration::from_millis(t.duration_ms),
                max_samples: t.max_samples,
            },
            Kind::RedisBasicOps(r) => StepSpec::RedisBasicOps {
                iterations: r.iterations,
                members: r.members,
                clients: r.clients.max(1),
            },
            Kind::RedisConcurrent(r) => StepSpec::RedisConcurrent {
                clients: r.clients,
                operations: r.operations,
                members: r.members,
                connections: match pb::Connections::try_from(r.connections) {
                    Ok(pb::Connections::Shared) => Connections::Shared,
                    Ok(pb::Connections::PerClient) => Connections::PerClient,
                    _ => return Err(ConvertError::Missing("RedisConcurrent.connections")),
                },
            },
            Kind::RedisMemory(r) => StepSpec::RedisMemory {
                sessions: r.sessions,
                members: r.members,
                sample: r.sample,
            },
            Kind::SessionIntegrity(r) => StepSpec::SessionIntegrity { sessions: r.sessions },
            Kind::SessionConcurrentUpdates(r) => StepSpec::SessionConcurrentUpdates {
                updaters: r.updaters,
                updates: r.updates,
                members: r.members,
                locking: match pb::Locking::try_from(r.locking) {
                    Ok(pb::Locking::Watch) => Locking::Watch,
                    Ok(pb::Locking::None) => Locking::None,
                    _ => return Err(ConvertError::Missing("SessionConcurrentUpdates.locking")),
                },
                max_retries: r.max_retries,
            },
            Kind::RedisPool(r) => StepSpec::RedisPool {
                pool_size: r.pool_size,
                interval: Duration::from_millis(r.interval_ms),
                duration: Duration::from_millis(r.duration_ms),
            },
            Kind::EventConsistency(e) => StepSpec::EventConsistency {
                clients: e.clients,
                interval: Duration::from_millis(e.interval_ms),
                settle: Duration::from_millis(e.settle_ms),
            },
            Kind::SessionSync(e) => StepSpec::SessionSync {
                sessions: e.sessions,
                members: e.members.max(2),
                changes: e.changes,
                interval: Duration::from_millis(e.interval_ms.max(1)),
                ramp_up: Duration::from_millis(e.ramp_up_ms),
                settle: Duration::from_millis(e.settle_ms),
            },
            Kind::RedisFailover(f) => StepSpec::RedisFailover {
                mode: match pb::FaultMode::try_from(f.mode) {
                    Ok(pb::FaultMode::Pause) => FaultMode::Pause,
                    Ok(pb::FaultMode::KillClients) => FaultMode::KillClients,
                    Ok(pb::FaultMode::Restart) => FaultMode::Restart,
                    Err(_) => return Err(ConvertError::Missing("RedisFailover.mode")),
                },
                warmup: Duration::from_millis(f.warmup_ms),
                duration: Duration::from_millis(f.duration_ms),
                recovery: Duration::from_millis(f.recovery_ms),
                clients: f.clients.max(1),
                keys: f.keys,
                persist: f.persist,
                sessions: f.sessions,
                members: f.members.max(2),
            },
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
    fn step_specs_survive_the_wire() {
        for s in [
            StepSpec::TimestampGeneration {
                iterations: 1000,
                batch_size: 100,
            },
            StepSpec::TimestampPrecision {
                duration: Duration::from_millis(1500),
                max_samples: 7,
            },
            StepSpec::RedisBasicOps {
                iterations: 3,
                members: 10,
                clients: 4,
            },
            StepSpec::RedisConcurrent {
                clients: 50,
                operations: 100,
                members: 4,
                connections: Connections::PerClient,
            },
            StepSpec::RedisMemory {
                sessions: 1000,
                members: 8,
                sample: 50,
            },
            StepSpec::SessionIntegrity { sessions: 100 },
            StepSpec::SessionConcurrentUpdates {
                updaters: 50,
                updates: 2,
                members: 4,
                locking: Locking::None,
                max_retries: 9,
            },
            StepSpec::RedisPool {
                pool_size: 20,
                interval: Duration::from_millis(50),
                duration: Duration::from_secs(10),
            },
            StepSpec::EventConsistency {
                clients: 3,
                interval: Duration::from_millis(100),
                settle: Duration::from_secs(2),
            },
            StepSpec::SessionSync {
                sessions: 4,
                members: 6,
                changes: 12,
                interval: Duration::from_millis(500),
                ramp_up: Duration::from_secs(2),
                settle: Duration::from_secs(2),
            },
            StepSpec::RedisFailover {
                mode: FaultMode::Restart,
                warmup: Duration::from_secs(2),
                duration: Duration::from_secs(3),
                recovery: Duration::from_secs(8),
                clients: 4,
                keys: 100,
                persist: true,
                sessions: 2,
                members: 4,
            },
        ] {
            let wire = pb::StepSpec::from(&s);
            assert_eq!(StepSpec::try_from(&wire).unwrap(), s);
        }
        assert!(StepSpec::try_from(&pb::StepSpec { kind: None }).is_err());
    }

    #[test]
    fn a_gauge_without_a_rule_is_refused() {
        let mut wire = pb::MetricSet::default();
        wire.gauges.insert("g".into(), pb::Gauge { value: 1.0, merge: 0 });
        assert!(matches!(MetricSet::try_from(&wire), Err(ConvertError::GaugeRule(_))));
    }
}
