//! `event_consistency` — document 1.2: `clients` (divided over agents), each in its own session,
//! send the document's event sequence `interval` apart, then listen for `settle`; snapshot and
//! tick timestamps are checked for order and against an estimated server clock offset.

use crate::workload::Rating;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::fmt::{pct, ratio};
use crate::metrics::MetricSet;
use crate::plan::{PlanError, StepCx};
use crate::workload::{Cmp, Combine, CriterionDef, FigureCx, Measure, Score, Section, Source, Unit, Workload};

/// Metric names: the agent records under these, the report reads them.
pub mod names {
    /// Counter: clients that ran the sequence.
    pub const CLIENTS: &str = "clients";
    /// Counter: clients that could not connect (counted, not fatal).
    pub const CLIENTS_FAILED: &str = "clients_failed";
    /// Counter: commands sent (the document's `client_sent` events).
    pub const COMMANDS_SENT: &str = "commands_sent";
    /// Counter: `snapshot` events received.
    pub const SNAPSHOTS: &str = "snapshots";
    /// Counter: `scroll_tick` events received.
    pub const TICKS: &str = "ticks";
    /// Counter: received events carrying `serverTimestamp`.
    pub const SERVER_TS_EVENTS: &str = "server_ts_events";
    /// Counter: received events without `serverTimestamp` (absent, never given the client clock).
    pub const MISSING_SERVER_TS: &str = "missing_server_ts";
    /// Counter: consecutive pairs of timestamped events compared, per client.
    pub const ORDER_PAIRS: &str = "order_pairs";
    /// Counter: pairs where the later-arriving event has the earlier serverTimestamp.
    pub const OUT_OF_ORDER: &str = "out_of_order";
    /// Gauges (sum, min, max): arrival − serverTimestamp, µs (the document's figure).
    pub const RAW_DIFF_SUM_US: &str = "raw_diff_sum_us";
    pub const RAW_DIFF_MIN_US: &str = "raw_diff_min_us";
    pub const RAW_DIFF_MAX_US: &str = "raw_diff_max_us";
    /// Counter: events with a corrected one-way delay (their client has an offset estimate).
    pub const CORRECTED_EVENTS: &str = "corrected_events";
    /// Gauges (sum, min, max): arrival − (serverTimestamp − estimated offset), µs.
    pub const CORRECTED_SUM_US: &str = "corrected_sum_us";
    pub const CORRECTED_MIN_US: &str = "corrected_min_us";
    pub const CORRECTED_MAX_US: &str = "corrected_max_us";
    /// Counter: clients with a server clock offset estimate.
    pub const OFFSET_CLIENTS: &str = "offset_clients";
    /// Gauges (sum, min, max): server clock − agent clock, µs; (max) the largest bound.
    pub const OFFSET_SUM_US: &str = "offset_sum_us";
    pub const OFFSET_MIN_US: &str = "offset_min_us";
    pub const OFFSET_MAX_US: &str = "offset_max_us";
    pub const OFFSET_BOUND_MAX_US: &str = "offset_bound_max_us";
}
use names as n;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventConsistency {
    /// Clients in all, divided over the agents.
    pub clients: u64,
    pub interval: Duration,
    pub settle: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    clients: Option<Spanned<i64>>,
    interval: Option<Spanned<String>>,
    settle: Option<Spanned<String>>,
}

/// Document 1.2, cross-event timestamp consistency, all clients together.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct EventConsistencyFigures {
    pub clients: u64,
    /// Clients that could not connect (counted, not fatal).
    pub clients_failed: u64,
    /// The document's `totalEvents`: snapshots + ticks + commands sent.
    pub total_events: u64,
    pub snapshots: u64,
    pub ticks: u64,
    /// Events carrying `serverTimestamp` (the document's `serverTimestampEvents`, without its
    /// substitution of the client clock for a missing one).
    pub server_timestamp_events: u64,
    pub client_timestamp_events: u64,
    /// Events without `serverTimestamp`: reported absent, never replaced by the client clock.
    pub missing_server_timestamp: u64,
    pub out_of_order_events: u64,
    /// 1 − out of order / pairs compared; None when no two events carried a timestamp.
    pub timestamp_ordering_rate: Option<f64>,
    /// The document's client–server difference (arrival − serverTimestamp), ms: one-way latency
    /// and clock offset together.
    pub avg_client_server_diff_ms: Option<f64>,
    pub min_client_server_diff_ms: Option<f64>,
    pub max_client_server_diff_ms: Option<f64>,
    /// Estimated server clock − agent clock, ms (mean, min, max over clients), and the largest
    /// bound of one estimate.
    pub server_offset_ms: Option<f64>,
    pub server_offset_min_ms: Option<f64>,
    pub server_offset_max_ms: Option<f64>,
    pub server_offset_bound_ms: Option<f64>,
    /// One-way delay with the offset removed, ms.
    pub corrected_avg_ms: Option<f64>,
    pub corrected_min_ms: Option<f64>,
    pub corrected_max_ms: Option<f64>,
    /// The document's rating (Excellent / Good / Poor), or why it could not be given.
    pub consistency_rating: Rating,
}

const CRITERIA: &[CriterionDef] = &[CriterionDef {
    id: "timestamp_ordering",
    name: "Timestamp consistency (event ordering)",
    key: Some("timestamp_ordering_rate"),
    default: 0.99,
    cmp: Cmp::Gt,
    unit: Unit::Fraction,
    suffix: " ordering accuracy",
    target_text: None,
    source: Source::Document,
    rank: 7,
    combine: Combine::Worst,
}];

impl Workload for EventConsistency {
    const KIND: &'static str = "event_consistency";
    const SECTION: Section = Section::Timestamps;
    type Raw = Raw;
    type Figures = EventConsistencyFigures;

    fn validate(raw: Raw, cx: &StepCx<'_>) -> Result<Self, PlanError> {
        Ok(EventConsistency {
            clients: cx.count(&raw.clients, "clients", 1, 1, 100_000)?,
            interval: cx.duration(&raw.interval, "interval", Duration::from_millis(100))?,
            settle: cx.duration(&raw.settle, "settle", Duration::from_secs(2))?,
        })
    }

    fn uses_redis(&self) -> bool {
        false
    }

    fn uses_servers(&self) -> bool {
        true
    }

    fn figures(&self, m: &MetricSet, _cx: &FigureCx<'_>) -> EventConsistencyFigures {
        let with_ts = m.counter(n::SERVER_TS_EVENTS);
        let pairs = m.counter(n::ORDER_PAIRS);
        let ooo = m.counter(n::OUT_OF_ORDER);
        let ms = |name: &str| m.gauge(name).map(|v| v / 1000.0);
        let avg = |sum: &str, count: u64| (count > 0).then(|| m.gauge(sum).unwrap_or(0.0) / count as f64 / 1000.0);
        let raw_avg = avg(n::RAW_DIFF_SUM_US, with_ts);
        let offset_clients = m.counter(n::OFFSET_CLIENTS);
        let corrected_n = m.counter(n::CORRECTED_EVENTS);
        let snapshots = m.counter(n::SNAPSHOTS);
        let ticks = m.counter(n::TICKS);
        let commands = m.counter(n::COMMANDS_SENT);
        let rating = match raw_avg {
            None => Rating::NotRated,
            Some(a) if ooo == 0 && a.abs() < 100.0 => Rating::Excellent,
            Some(a) if ooo < 2 && a.abs() < 500.0 => Rating::Good,
            Some(_) => Rating::Poor,
        };
        EventConsistencyFigures {
            clients: m.counter(n::CLIENTS),
            clients_failed: m.counter(n::CLIENTS_FAILED),
            total_events: snapshots + ticks + commands,
            snapshots,
            ticks,
            server_timestamp_events: with_ts,
            client_timestamp_events: commands,
            missing_server_timestamp: m.counter(n::MISSING_SERVER_TS),
            out_of_order_events: ooo,
            timestamp_ordering_rate: (pairs > 0).then(|| 1.0 - ratio(ooo, pairs)),
            avg_client_server_diff_ms: raw_avg,
            min_client_server_diff_ms: ms(n::RAW_DIFF_MIN_US).filter(|_| with_ts > 0),
            max_client_server_diff_ms: ms(n::RAW_DIFF_MAX_US).filter(|_| with_ts > 0),
            server_offset_ms: avg(n::OFFSET_SUM_US, offset_clients),
            server_offset_min_ms: ms(n::OFFSET_MIN_US),
            server_offset_max_ms: ms(n::OFFSET_MAX_US),
            server_offset_bound_ms: ms(n::OFFSET_BOUND_MAX_US),
            corrected_avg_ms: avg(n::CORRECTED_SUM_US, corrected_n),
            corrected_min_ms: ms(n::CORRECTED_MIN_US),
            corrected_max_ms: ms(n::CORRECTED_MAX_US),
            consistency_rating: rating,
        }
    }

    fn criteria() -> &'static [CriterionDef] {
        CRITERIA
    }

    fn measure(f: &EventConsistencyFigures, _id: &str) -> Option<Measure> {
        f.timestamp_ordering_rate.map(|v| Measure::value(v, pct(v)))
    }

    fn score(f: &EventConsistencyFigures) -> Score {
        Score::Points(f.consistency_rating.points())
    }

    fn notes(f: &EventConsistencyFigures) -> Vec<String> {
        vec![format!(
            "Cross-event consistency: events without serverTimestamp are counted as absent ({} here), never given the client clock as the document's `data.serverTimestamp || Date.now()` does; the document's client–server difference mixes one-way latency with the clock offset, so the offset is also estimated (minimum-RTT sync_request and command round trips, ±{} ms) and removed.",
            f.missing_server_timestamp,
            f.server_offset_bound_ms.map_or_else(|| "n/a".to_owned(), |b| format!("{b:.1}"))
        )]
    }

    fn recommendations(f: &EventConsistencyFigures, _step: &str) -> Vec<String> {
        if f.missing_server_timestamp > 0 {
            vec![format!(
                "The server sent {} events without serverTimestamp: send it with every snapshot and tick, or clients cannot align to the server's clock",
                f.missing_server_timestamp
            )]
        } else {
            Vec::new()
        }
    }

    fn render_text(f: &EventConsistencyFigures, _step: &str, w: &mut dyn fmt::Write) -> fmt::Result {
                let opt =
                    |v: Option<f64>, unit: &str| v.map_or_else(|| "absent".to_owned(), |v| format!("{v:.1}{unit}"));
                writeln!(w, "\n  Cross-Event Timestamp Consistency:")?;
                match f.consistency_rating {
                    Rating::NotRated => writeln!(w, "    Consistency Rating: Not rated: the server sent no serverTimestamp")?,
                    r => writeln!(w, "    Consistency Rating: {r}")?,
                }
                writeln!(
                    w,
                    "    Timestamp Ordering Rate: {}",
                    f.timestamp_ordering_rate.map_or_else(
                        || "absent (no serverTimestamp)".to_owned(),
                        |v| format!("{:.1}%", v * 100.0)
                    )
                )?;
                writeln!(
                    w,
                    "    Avg Client-Server Diff: {}",
                    opt(f.avg_client_server_diff_ms, "ms")
                )?;
                writeln!(
                    w,
                    "    Server clock offset (estimated): {}{}",
                    opt(f.server_offset_ms, " ms"),
                    f.server_offset_bound_ms
                        .map(|b| format!(" ± {b:.1} ms"))
                        .unwrap_or_default()
                )?;
                writeln!(
                    w,
                    "    One-way delay, offset removed: avg {} (min {}, max {})",
                    opt(f.corrected_avg_ms, " ms"),
                    opt(f.corrected_min_ms, " ms"),
                    opt(f.corrected_max_ms, " ms")
                )?;
                writeln!(
                    w,
                    "    ({} clients{}, {} events: {} snapshots, {} ticks, {} sent; {} with serverTimestamp, {} without; {} out of order)",
                    f.clients,
                    if f.clients_failed > 0 {
                        format!(" + {} failed to connect", f.clients_failed)
                    } else {
                        String::new()
                    },
                    f.total_events,
                    f.snapshots,
                    f.ticks,
                    f.client_timestamp_events,
                    f.server_timestamp_events,
                    f.missing_server_timestamp,
                    f.out_of_order_events
                )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::GaugeMerge;
    use crate::plan::Criteria;

    #[test]
    fn absent_timestamps_are_not_rated_and_ordering_needs_pairs() {
        let p = EventConsistency { clients: 1, interval: Duration::from_millis(100), settle: Duration::from_secs(1) };
        let criteria = Criteria::default();
        let cx = FigureCx { criteria: &criteria, agents: 1 };
        let mut m = MetricSet::new();
        m.add_counter(n::SNAPSHOTS, 5);
        m.add_counter(n::MISSING_SERVER_TS, 5);
        let f = p.figures(&m, &cx);
        assert_eq!(f.timestamp_ordering_rate, None);
        assert_eq!(EventConsistency::measure(&f, "timestamp_ordering"), None);
        assert_eq!(f.consistency_rating, Rating::NotRated);

        m.add_counter(n::SERVER_TS_EVENTS, 4);
        m.add_counter(n::ORDER_PAIRS, 4);
        m.add_counter(n::OUT_OF_ORDER, 1);
        m.set_gauge(n::RAW_DIFF_SUM_US, 8_000.0, GaugeMerge::Sum);
        let f = p.figures(&m, &cx);
        assert_eq!(f.timestamp_ordering_rate, Some(0.75));
        assert_eq!(f.avg_client_server_diff_ms, Some(2.0));
        assert_eq!(f.consistency_rating, Rating::Good);
    }
}
