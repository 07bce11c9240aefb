//! Document 1.2, cross-event timestamp consistency: each client joins its own session on one of
//! the target's servers (round-robin), sends the document's sequence (join, set_role leader,
//! set_tempo 120, play, set_tempo 140, pause, set_tempo 100, play) `interval` apart, then listens
//! for `settle`, capturing every `snapshot` and `scroll_tick`.
//!
//! Done right where the document is not: an event without `serverTimestamp` is counted as absent,
//! never given the client's clock; ordering is checked only between events that carry one. The
//! client–server difference is reported raw (arrival − serverTimestamp, as the document computes
//! it, which mixes one-way latency with the clock offset) and corrected by an estimate of the
//! server's clock offset (NTP-style, minimum-RTT sample of `sync_request` → `sync_response` and
//! command → `snapshot` round trips; `serverTimestamp` is in whole ms, so ±0.5 ms is added to the
//! bound).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bandsync_common::clock::now_unix_ns;
use bandsync_common::metrics::{GaugeMerge, MetricSet};
use bandsync_common::plan::shard_of;
use bandsync_common::workloads::event_consistency::names as n;
use serde_json::{Value, json};

use super::Run;
use super::sio;
use super::{StepContext, WorkloadError};
use bandsync_common::workloads::EventConsistency;

/// Round trips probed with `sync_request` after the sequence.
const SYNC_PROBES: usize = 5;

#[derive(Default)]
struct Capture {
    /// (event, serverTimestamp, arrival agent ns) in arrival order.
    events: Vec<(String, Option<i64>, i64)>,
}

/// One client's figures, folded into the step's metric set.
#[derive(Debug, Default, PartialEq)]
pub struct ClientFigures {
    pub snapshots: u64,
    pub ticks: u64,
    pub with_ts: u64,
    pub missing_ts: u64,
    pub order_pairs: u64,
    pub out_of_order: u64,
    /// arrival − serverTimestamp, µs, per event with a timestamp.
    pub raw_diffs_us: Vec<f64>,
    /// Server clock − agent clock, µs, and its bound.
    pub offset: Option<(f64, f64)>,
}

/// Offset estimate from round trips (t1 send, t4 arrival, agent ns; ts server ms): the sample
/// with the smallest round trip; offset = ts + 0.5 ms − (t1 + t4)/2, bound = RTT/2 + 0.5 ms.
pub fn offset_from_round_trips(samples: &[(i64, i64, i64)]) -> Option<(f64, f64)> {
    let (t1, t4, ts) = samples
        .iter()
        .filter(|(t1, t4, _)| t4 >= t1)
        .min_by_key(|(t1, t4, _)| t4 - t1)?;
    let mid_us = (*t1 as f64 + *t4 as f64) / 2.0 / 1000.0;
    let offset_us = *ts as f64 * 1000.0 + 500.0 - mid_us;
    let bound_us = (*t4 - *t1) as f64 / 2.0 / 1000.0 + 500.0;
    Some((offset_us, bound_us))
}

/// The document's analysis of one client's events, done on the events that carry a timestamp.
pub fn analyse(events: &[(String, Option<i64>, i64)], round_trips: &[(i64, i64, i64)]) -> ClientFigures {
    let mut f = ClientFigures::default();
    let mut last: Option<i64> = None;
    for (name, ts, at) in events {
        match name.as_str() {
            "snapshot" => f.snapshots += 1,
            "scroll_tick" => f.ticks += 1,
            _ => {}
        }
        match ts {
            Some(ts) => {
                f.with_ts += 1;
                if let Some(prev) = last {
                    f.order_pairs += 1;
                    if *ts < prev {
                        f.out_of_order += 1;
                    }
                }
                last = Some(*ts);
                f.raw_diffs_us.push(*at as f64 / 1000.0 - *ts as f64 * 1000.0);
            }
            None => f.missing_ts += 1,
        }
    }
    f.offset = offset_from_round_trips(round_trips);
    f
}

pub async fn run(
    clients: u64,
    interval: Duration,
    settle: Duration,
    ctx: &StepContext,
) -> Result<MetricSet, WorkloadError> {
    if ctx.servers.is_empty() {
        return Err(WorkloadError::Internal("no BandSync server in the target".into()));
    }
    let mine = shard_of(clients, ctx.shard_index, ctx.shard_count);
    let first = (0..ctx.shard_index)
        .map(|i| shard_of(clients, i, ctx.shard_count))
        .sum::<u64>();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..mine {
        let global = first + k;
        let url = sio::base_url(&ctx.servers[(global % ctx.servers.len() as u64) as usize]);
        let session = format!("{}ec-{global}", ctx.run_base);
        let (cancel, live) = (ctx.cancel.clone(), ctx.live.clone());
        let fields = (
            ctx.dialect.timestamp_field.clone(),
            ctx.dialect.sync_timestamp_field.clone(),
        );
        tasks.spawn(async move { one_client(&url, &session, (interval, settle), fields, &cancel, &live).await });
    }
    let mut m = MetricSet::new();
    for name in [n::CLIENTS, n::CLIENTS_FAILED, n::OFFSET_CLIENTS] {
        m.add_counter(name, 0);
    }
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok((figures, commands))) => fold(&mut m, &figures, commands),
            Ok(Err(ClientError::Cancelled)) => return Err(WorkloadError::Cancelled),
            Ok(Err(ClientError::Connect(e))) => {
                tracing::warn!("event_consistency client: {e}");
                ctx.live.add_error();
                m.add_counter(n::CLIENTS_FAILED, 1);
            }
            Err(e) => {
                return Err(WorkloadError::Internal(format!(
                    "event_consistency client panicked: {e}"
                )));
            }
        }
    }
    Ok(m)
}

fn fold(m: &mut MetricSet, f: &ClientFigures, commands: u64) {
    m.add_counter(n::CLIENTS, 1);
    m.add_counter(n::COMMANDS_SENT, commands);
    m.add_counter(n::SNAPSHOTS, f.snapshots);
    m.add_counter(n::TICKS, f.ticks);
    m.add_counter(n::SERVER_TS_EVENTS, f.with_ts);
    m.add_counter(n::MISSING_SERVER_TS, f.missing_ts);
    m.add_counter(n::ORDER_PAIRS, f.order_pairs);
    m.add_counter(n::OUT_OF_ORDER, f.out_of_order);
    for d in &f.raw_diffs_us {
        m.set_gauge(n::RAW_DIFF_SUM_US, *d, GaugeMerge::Sum);
        m.set_gauge(n::RAW_DIFF_MIN_US, *d, GaugeMerge::Min);
        m.set_gauge(n::RAW_DIFF_MAX_US, *d, GaugeMerge::Max);
    }
    if let Some((offset, bound)) = f.offset {
        m.add_counter(n::OFFSET_CLIENTS, 1);
        m.set_gauge(n::OFFSET_SUM_US, offset, GaugeMerge::Sum);
        m.set_gauge(n::OFFSET_MIN_US, offset, GaugeMerge::Min);
        m.set_gauge(n::OFFSET_MAX_US, offset, GaugeMerge::Max);
        m.set_gauge(n::OFFSET_BOUND_MAX_US, bound, GaugeMerge::Max);
        for d in &f.raw_diffs_us {
            // One-way delay = arrival − (serverTimestamp − offset) = raw + offset.
            let one_way = d + offset;
            m.add_counter(n::CORRECTED_EVENTS, 1);
            m.set_gauge(n::CORRECTED_SUM_US, one_way, GaugeMerge::Sum);
            m.set_gauge(n::CORRECTED_MIN_US, one_way, GaugeMerge::Min);
            m.set_gauge(n::CORRECTED_MAX_US, one_way, GaugeMerge::Max);
        }
    }
}

enum ClientError {
    Connect(String),
    Cancelled,
}

async fn one_client(
    url: &str,
    session: &str,
    (interval, settle): (Duration, Duration),
    (ts_field, sync_field): (Option<String>, Option<String>),
    cancel: &tokio_util::sync::CancellationToken,
    live: &super::Live,
) -> Result<(ClientFigures, u64), ClientError> {
    let capture = Arc::new(Mutex::new(Capture::default()));
    // sync_response arrivals: (serverTimestamp, arrival) for the probes.
    let (sync_tx, mut sync_rx) = tokio::sync::mpsc::unbounded_channel::<(Option<i64>, i64)>();
    let cap = capture.clone();
    let handler: sio::Handler = Arc::new(move |event: &str, payload: &Value, at: i64| match event {
        "snapshot" | "scroll_tick" => {
            cap.lock()
                .unwrap()
                .events
                .push((event.to_owned(), sio::server_ts(payload, ts_field.as_deref()), at))
        }
        "sync_response" => {
            let _ = sync_tx.send((sio::server_ts(payload, sync_field.as_deref()), at));
        }
        _ => {}
    });
    let client = tokio::select! {
        r = sio::connect(url, handler, None, Duration::from_secs(10)) => r.map_err(|e| ClientError::Connect(e.0))?,
        () = cancel.cancelled() => return Err(ClientError::Cancelled),
    };
    let sequence: [(&str, Value); 8] = [
        (
            "join_session",
            json!({"sessionId": session, "displayName": "Timestamp Test Device"}),
        ),
        ("set_role", json!({"sessionId": session, "role": "leader"})),
        ("set_tempo", json!({"sessionId": session, "tempo": 120})),
        ("play", json!({"sessionId": session})),
        ("set_tempo", json!({"sessionId": session, "tempo": 140})),
        ("pause", json!({"sessionId": session})),
        ("set_tempo", json!({"sessionId": session, "tempo": 100})),
        ("play", json!({"sessionId": session})),
    ];
    let mut round_trips = Vec::new();
    let mut commands = 0;
    let result = async {
        for (event, payload) in sequence {
            let t1 = now_unix_ns();
            let seen = capture.lock().unwrap().events.len();
            if client.emit(event, payload).await.is_err() {
                live.add_error();
                continue;
            }
            commands += 1;
            live.add_ops(1);
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = cancel.cancelled() => return Err(ClientError::Cancelled),
            }
            // The command's round trip: the first snapshot that arrived after it was sent.
            if let Some((_, Some(ts), t4)) = capture.lock().unwrap().events[seen..]
                .iter()
                .find(|(e, _, _)| e == "snapshot")
                .cloned()
            {
                round_trips.push((t1, t4, ts));
            }
        }
        for _ in 0..SYNC_PROBES {
            let t1 = now_unix_ns();
            if client
                .emit("sync_request", json!({"sessionId": session}))
                .await
                .is_err()
            {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(1), sync_rx.recv()).await {
                Ok(Some((Some(ts), t4))) => round_trips.push((t1, t4, ts)),
                Ok(Some((None, _))) => {}
                _ => break, // a server that does not answer sync_request
            }
        }
        tokio::select! {
            () = tokio::time::sleep(settle) => Ok(()),
            () = cancel.cancelled() => Err(ClientError::Cancelled),
        }
    }
    .await;
    let _ = client.emit("leave_session", json!({"sessionId": session})).await;
    let _ = client.disconnect().await;
    result?;
    let events = std::mem::take(&mut capture.lock().unwrap().events);
    Ok((analyse(&events, &round_trips), commands))
}

impl Run for EventConsistency {
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
        run(self.clients, self.interval, self.settle, ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_and_absent_timestamps() {
        let ev = |name: &str, ts: Option<i64>, at_ms: i64| (name.to_owned(), ts, at_ms * 1_000_000);
        let events = vec![
            ev("snapshot", Some(1_000), 1_002),
            ev("scroll_tick", Some(1_100), 1_101),
            ev("snapshot", Some(1_050), 1_103), // older than the tick before it
            ev("snapshot", None, 1_104),        // absent: counted, never given the client clock
        ];
        let f = analyse(&events, &[]);
        assert_eq!((f.snapshots, f.ticks, f.with_ts, f.missing_ts), (3, 1, 3, 1));
        assert_eq!((f.order_pairs, f.out_of_order), (2, 1));
        assert_eq!(f.raw_diffs_us, vec![2_000.0, 1_000.0, 53_000.0]);
        assert_eq!(f.offset, None);
    }

    #[test]
    fn offset_takes_the_fastest_round_trip_and_states_its_bound() {
        // Server 40 ms ahead. Sample A: 10 ms round trip; sample B: 2 ms round trip.
        let ms = 1_000_000;
        let a = (1_000 * ms, 1_010 * ms, 1_045);
        let b = (2_000 * ms, 2_002 * ms, 2_041);
        let (offset, bound) = offset_from_round_trips(&[a, b]).unwrap();
        assert_eq!(offset, 40_500.0);
        assert_eq!(bound, 1_500.0);
        assert!((offset - 40_000.0).abs() <= bound);
    }
}
