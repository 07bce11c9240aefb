//! Every step kind, one module each (see [`crate::workload::Workload`]), and the registry that
//! turns them into the closed sets the rest of the code matches on: [`StepSpec`] (a plan step's
//! checked parameters) and [`Figures`] (its report figures), with one-line delegations.
//!
//! Adding a kind: a module here implementing `Workload`, one line in `registry!` below, and its
//! agent side in `agent/src/workloads/` (the agent's `match` on `StepSpec` then insists on it).

pub mod arrival;
pub mod band;

use std::fmt;

use schemars::JsonSchema;
use serde::Serialize;
use toml::Spanned;
use toml::de::DeTable;

use crate::metrics::MetricSet;
use crate::plan::{PlanError, StepCx};
use crate::workload::{Chart, CriterionDef, FigureCx, Hooks, Measure, Score, Section, Workload};

/// Declares the kinds: `Variant => module,` — the module defines the params struct `Variant`.
macro_rules! registry {
    ($($variant:ident => $module:ident,)*) => {
        $(pub mod $module;)*
        $(pub use self::$module::$variant;)*

        /// Every step kind this version knows, in the order the document runs them.
        pub const KINDS: &[&str] = &[$(<$variant as Workload>::KIND,)*];

        /// What a step does, with its checked parameters.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum StepSpec {
            $($variant($variant),)*
        }

        // A step's figures, computed from its merged metrics (no doc comment: it would enter the
        // JSON schema).
        #[derive(Clone, Debug, Serialize, JsonSchema)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum Figures {
            $($variant(Box<<$variant as Workload>::Figures>),)*
        }

        /// Parses step parameters of `kind`; `None` for a kind this version does not know.
        pub(crate) fn parse_step(
            kind: &str,
            params: Spanned<DeTable<'_>>,
            cx: &StepCx<'_>,
        ) -> Option<Result<StepSpec, PlanError>> {
            match kind {
                $(<$variant as Workload>::KIND => {
                    Some(crate::plan::step::parse_kind::<$variant>(params, cx).map(StepSpec::$variant))
                })*
                _ => None,
            }
        }

        /// The steps a plan runs on its own before its first Socket.IO step (see
        /// [`Workload::auto`]).
        pub fn auto_steps() -> Vec<StepSpec> {
            let mut all = Vec::new();
            $(all.extend(<$variant as Workload>::auto().map(StepSpec::$variant));)*
            all
        }

        /// The text report's section of `kind`.
        pub fn section_of(kind: &str) -> Option<Section> {
            match kind {
                $(<$variant as Workload>::KIND => Some(<$variant as Workload>::SECTION),)*
                _ => None,
            }
        }

        /// Every criterion every kind declares, in the report's order.
        pub fn criteria() -> Vec<&'static CriterionDef> {
            let mut all: Vec<&'static CriterionDef> = Vec::new();
            $(all.extend(<$variant as Workload>::criteria());)*
            all.sort_by_key(|d| d.rank);
            all
        }

        /// The criteria `kind` declares (none for an unknown kind).
        pub fn criteria_of(kind: &str) -> &'static [CriterionDef] {
            match kind {
                $(<$variant as Workload>::KIND => <$variant as Workload>::criteria(),)*
                _ => &[],
            }
        }

        impl StepSpec {
            pub fn kind(&self) -> &'static str {
                match self { $(StepSpec::$variant(_) => <$variant as Workload>::KIND,)* }
            }
            pub fn section(&self) -> Section {
                match self { $(StepSpec::$variant(_) => <$variant as Workload>::SECTION,)* }
            }
            pub fn uses_redis(&self) -> bool {
                match self { $(StepSpec::$variant(p) => p.uses_redis(),)* }
            }
            pub fn uses_servers(&self) -> bool {
                match self { $(StepSpec::$variant(p) => p.uses_servers(),)* }
            }
            pub fn single_agent(&self) -> bool {
                match self { $(StepSpec::$variant(p) => p.single_agent(),)* }
            }
            pub fn hooks(&self) -> Hooks {
                match self { $(StepSpec::$variant(p) => p.hooks(),)* }
            }
            pub fn requires(&self, d: &crate::dialect::Dialect) -> Result<(), String> {
                match self { $(StepSpec::$variant(p) => p.requires(d),)* }
            }
            pub fn agent_bytes(&self, agents: u32) -> u64 {
                match self { $(StepSpec::$variant(p) => p.agent_bytes(agents),)* }
            }
            pub fn redis_bytes(&self, agents: u32) -> u64 {
                match self { $(StepSpec::$variant(p) => p.redis_bytes(agents),)* }
            }
            pub fn fits(&self, agents: u32) -> Result<(), String> {
                match self { $(StepSpec::$variant(p) => p.fits(agents),)* }
            }
            pub fn concluded(&self, m: &MetricSet) -> Option<crate::dialect::Dialect> {
                match self { $(StepSpec::$variant(p) => p.concluded(m),)* }
            }
            pub fn figures(&self, m: &MetricSet, cx: &FigureCx<'_>) -> Figures {
                match self { $(StepSpec::$variant(p) => Figures::$variant(Box::new(p.figures(m, cx))),)* }
            }
            /// The parameters as JSON, for the wire.
            pub fn params_json(&self) -> Vec<u8> {
                match self {
                    $(StepSpec::$variant(p) => serde_json::to_vec(p).expect("params serialize"),)*
                }
            }
            /// Parameters of `kind` from the wire's JSON.
            pub fn from_json(kind: &str, params: &[u8]) -> Result<StepSpec, WireError> {
                match kind {
                    $(<$variant as Workload>::KIND => serde_json::from_slice::<$variant>(params)
                        .map(|p| StepSpec::$variant(p.clamped()))
                        .map_err(|e| WireError::Params { kind: kind.to_owned(), reason: e.to_string() }),)*
                    _ => Err(WireError::UnknownKind(kind.to_owned())),
                }
            }
        }

        impl Figures {
            pub fn kind(&self) -> &'static str {
                match self { $(Figures::$variant(_) => <$variant as Workload>::KIND,)* }
            }
            /// The criteria of this step's kind.
            pub fn criteria(&self) -> &'static [CriterionDef] {
                match self { $(Figures::$variant(_) => <$variant as Workload>::criteria(),)* }
            }
            pub fn measure(&self, id: &str) -> Option<Measure> {
                match self { $(Figures::$variant(f) => <$variant as Workload>::measure(f, id),)* }
            }
            pub fn score(&self) -> Score {
                match self { $(Figures::$variant(f) => <$variant as Workload>::score(f),)* }
            }
            pub fn notes(&self) -> Vec<String> {
                match self { $(Figures::$variant(f) => <$variant as Workload>::notes(f),)* }
            }
            pub fn recommendations(&self, step: &str) -> Vec<String> {
                match self {
                    $(Figures::$variant(f) => <$variant as Workload>::recommendations(f, step),)*
                }
            }
            pub fn render_text(&self, step: &str, w: &mut dyn fmt::Write) -> fmt::Result {
                match self {
                    $(Figures::$variant(f) => <$variant as Workload>::render_text(f, step, w),)*
                }
            }
            pub fn charts(&self) -> Vec<Chart> {
                match self { $(Figures::$variant(f) => <$variant as Workload>::charts(f),)* }
            }
            pub fn rates(&self) -> Vec<arrival::RatePoint> {
                match self { $(Figures::$variant(f) => <$variant as Workload>::rates(f),)* }
            }
        }
    };
}

registry! {
    ProtocolConformance => protocol_conformance,
    TimestampGeneration => timestamp_generation,
    TimestampPrecision => timestamp_precision,
    RedisBasicOps => redis_basic_ops,
    RedisConcurrent => redis_concurrent,
    RedisMemory => redis_memory,
    SessionIntegrity => session_integrity,
    SessionConcurrentUpdates => session_concurrent_updates,
    RedisPool => redis_pool,
    EventConsistency => event_consistency,
    SessionSync => session_sync,
    RedisFailover => redis_failover,
}

/// A step that cannot be read off the wire.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("unknown step kind `{0}`")]
    UnknownKind(String),
    #[error("parameters of `{kind}`: {reason}")]
    Params { kind: String, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criteria_ids_keys_and_ranks_are_unique() {
        let all = criteria();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.id, b.id);
                assert_ne!(a.rank, b.rank, "{} and {}", a.id, b.id);
                assert!(a.key.is_none() || a.key != b.key, "{}", a.id);
            }
        }
    }

    #[test]
    fn kinds_are_unique_snake_case() {
        for (i, k) in KINDS.iter().enumerate() {
            assert!(k.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{k}");
            assert!(!KINDS[i + 1..].contains(k), "{k}");
        }
    }
}
