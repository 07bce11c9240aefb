//! What the Socket.IO workloads may rely on from the BandSync servers under test: the protocol
//! document's dialect, the older public server's (`bandsync-legacy`), or what the conformance
//! probe found, with the plan's per-field overrides on top. The agents receive it with every
//! step ([`Dialect`] as JSON in the step's target) and the report names it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The dialects this version knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// BANDSYNC_PROTOCOL.md.
    #[default]
    Bandsync,
    /// BandSync's older public server.
    BandsyncLegacy,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Bandsync => "bandsync",
            Protocol::BandsyncLegacy => "bandsync-legacy",
        }
    }
}

/// How a member becomes the session's leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaderClaim {
    /// `set_role {role: "leader"}` takes over.
    SetRole,
    /// The session's first joiner leads (`set_role` cannot take a taken seat).
    FirstJoiner,
}

/// What `scroll_tick`'s `positionMs` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TickPosition {
    /// Aligned to the play start: every instance agrees on it at the same instant.
    Aligned,
    /// A counter, +100 per tick of the instance's own timer.
    Counter,
}

/// The leader commands the scripts use.
pub const SCRIPT_COMMANDS: [&str; 4] = ["set_tempo", "seek", "play", "pause"];

/// What the workloads may rely on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Dialect {
    pub protocol: Protocol,
    /// The field carrying the server's clock (Unix ms) in snapshots and ticks; `None`: the
    /// server sends none there.
    pub timestamp_field: Option<String>,
    /// The same in `sync_response`.
    pub sync_timestamp_field: Option<String>,
    /// Whether the server acks commands.
    pub acks: bool,
    pub leader_claim: LeaderClaim,
    /// A new session's tempo.
    pub default_tempo: f64,
    /// Most members a session takes; `None`: no cap the workloads must respect.
    pub member_cap: Option<u32>,
    pub tick_position: TickPosition,
    /// Whether a session's room spans the server instances (a change on one reaches members
    /// on the others).
    pub cross_instance: bool,
    /// Leader commands a script may use.
    pub commands: Vec<String>,
}

impl Default for Dialect {
    fn default() -> Self {
        Dialect::of(Protocol::Bandsync)
    }
}

impl Dialect {
    /// The dialect as its document (or the observed facts, for legacy) describes it.
    pub fn of(protocol: Protocol) -> Dialect {
        let commands = SCRIPT_COMMANDS.iter().map(|c| (*c).to_owned()).collect();
        match protocol {
            Protocol::Bandsync => Dialect {
                protocol,
                timestamp_field: Some("serverTimestamp".into()),
                sync_timestamp_field: Some("serverTimestamp".into()),
                acks: true,
                leader_claim: LeaderClaim::SetRole,
                default_tempo: 100.0,
                member_cap: None,
                tick_position: TickPosition::Aligned,
                cross_instance: true,
                commands,
            },
            Protocol::BandsyncLegacy => Dialect {
                protocol,
                timestamp_field: None,
                sync_timestamp_field: Some("serverTime".into()),
                acks: false,
                leader_claim: LeaderClaim::FirstJoiner,
                default_tempo: 120.0,
                member_cap: Some(8),
                tick_position: TickPosition::Counter,
                cross_instance: false,
                commands,
            },
        }
    }

    /// This dialect with the plan's overrides applied.
    pub fn with(mut self, o: &Overrides) -> Dialect {
        if let Some(f) = &o.timestamp_field {
            self.timestamp_field = (!f.is_empty()).then(|| f.clone());
        }
        if let Some(f) = &o.sync_timestamp_field {
            self.sync_timestamp_field = (!f.is_empty()).then(|| f.clone());
        }
        if let Some(v) = o.acks {
            self.acks = v;
        }
        if let Some(v) = o.leader_claim {
            self.leader_claim = v;
        }
        if let Some(v) = o.default_tempo {
            self.default_tempo = v;
        }
        if let Some(v) = o.member_cap {
            self.member_cap = (v > 0).then_some(v);
        }
        if let Some(v) = o.tick_position {
            self.tick_position = v;
        }
        if let Some(v) = o.cross_instance {
            self.cross_instance = v;
        }
        if let Some(v) = &o.commands {
            self.commands = v.clone();
        }
        self
    }

    /// The first script command this dialect does not support.
    pub fn missing_command(&self) -> Option<&'static str> {
        SCRIPT_COMMANDS
            .iter()
            .copied()
            .find(|c| !self.commands.iter().any(|k| k == c))
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        format!(
            "{}: timestamps {}, sync_response {}, acks {}, leader by {}, default tempo {}, member cap {}, tick position {}, rooms {}",
            self.protocol.as_str(),
            self.timestamp_field.as_deref().unwrap_or("none"),
            self.sync_timestamp_field.as_deref().unwrap_or("none"),
            if self.acks { "yes" } else { "no" },
            match self.leader_claim {
                LeaderClaim::SetRole => "set_role",
                LeaderClaim::FirstJoiner => "first joiner",
            },
            self.default_tempo,
            self.member_cap.map_or_else(|| "none".to_owned(), |c| c.to_string()),
            match self.tick_position {
                TickPosition::Aligned => "aligned",
                TickPosition::Counter => "counter",
            },
            if self.cross_instance {
                "shared across instances"
            } else {
                "per instance"
            },
        )
    }
}

/// The plan's `[target.dialect]` overrides, each optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// "" for none.
    pub timestamp_field: Option<String>,
    pub sync_timestamp_field: Option<String>,
    pub acks: Option<bool>,
    pub leader_claim: Option<LeaderClaim>,
    pub default_tempo: Option<f64>,
    /// 0 for none.
    pub member_cap: Option<u32>,
    pub tick_position: Option<TickPosition>,
    pub cross_instance: Option<bool>,
    pub commands: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_name() {
        let d = Dialect::of(Protocol::BandsyncLegacy).with(&Overrides {
            member_cap: Some(0),
            timestamp_field: Some("ts".into()),
            commands: Some(vec!["set_tempo".into(), "play".into(), "pause".into()]),
            ..Overrides::default()
        });
        assert_eq!(d.member_cap, None);
        assert_eq!(d.timestamp_field.as_deref(), Some("ts"));
        assert_eq!(d.leader_claim, LeaderClaim::FirstJoiner);
        assert_eq!(d.missing_command(), Some("seek"));
        assert_eq!(Dialect::default().missing_command(), None);
    }
}
