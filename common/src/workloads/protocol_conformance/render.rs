//! The probe's text section: the table of commands, then one line per trait, then the dialect
//! concluded.

use std::fmt;

use super::{Fields, ProtocolConformanceFigures};
use crate::dialect::{LeaderClaim, TickPosition};

fn of(k: u64, n: u64) -> String {
    if n == 0 { "—".to_owned() } else { format!("{k}/{n}") }
}

pub(super) fn render(f: &ProtocolConformanceFigures, step: &str, w: &mut dyn fmt::Write) -> fmt::Result {
    writeln!(
        w,
        "\n  Protocol Conformance ({step}: {} clients on {} instance{}{}):",
        f.clients,
        f.instances,
        if f.instances == 1 { "" } else { "s" },
        if f.clients_failed > 0 {
            format!(", {} failed to connect", f.clients_failed)
        } else {
            String::new()
        }
    )?;
    for (why, k) in &f.connect_errors {
        writeln!(w, "    connect error ×{k}: {why}")?;
    }
    writeln!(
        w,
        "    {:<13} {:>5} {:>6} {:>8} {:>8} {:>7} {:>14} {:>15}",
        "command", "sent", "acked", "refused", "applied", "sender", "same instance", "other instance"
    )?;
    for r in &f.commands {
        writeln!(
            w,
            "    {:<13} {:>5} {:>6} {:>8} {:>8} {:>7} {:>14} {:>15}{}",
            r.command,
            r.sent,
            r.acked,
            r.refused,
            r.applied,
            r.to_sender,
            of(r.to_same_instance, r.same_instance_expected),
            of(r.to_other_instance, r.other_instance_expected),
            match (r.sent > 0 && !r.answered(), r.command.as_str(), f.leader_rule) {
                (true, "set_role", Some(LeaderClaim::FirstJoiner)) => "  ignored: the seat was taken",
                (true, _, _) => "  never answered",
                _ => "",
            }
        )?;
    }
    let ts = |x: &Fields| match (&x.timestamp_field, x.count) {
        (_, 0) => "none received".to_owned(),
        (Some(t), _) => t.clone(),
        (None, _) => "none".to_owned(),
    };
    let yes = |b: bool| if b { "yes" } else { "no" };
    let snapshot_fields = |x: &Fields| {
        format!(
            "timestamp {}, version {}, sessionId {}, members {}",
            ts(x),
            yes(x.version),
            yes(x.session_id),
            x.members.as_deref().unwrap_or("—")
        )
    };
    writeln!(
        w,
        "    Join snapshot: to {}; {}",
        f.join_snapshot_target,
        snapshot_fields(&f.join_snapshot)
    )?;
    writeln!(
        w,
        "    Snapshots ({}): {}",
        f.snapshots.count,
        snapshot_fields(&f.snapshots)
    )?;
    writeln!(
        w,
        "    Ticks ({}): timestamp {}, tempoBpm {}; position {}",
        f.ticks.count,
        ts(&f.ticks),
        yes(f.ticks_carry_tempo_bpm),
        match f.tick_position {
            Some(TickPosition::Aligned) => format!("aligned to the play start ({} play/pause cycles)", f.tick_cycles),
            Some(TickPosition::Counter) => format!("a +100-per-tick counter ({} play/pause cycles)", f.tick_cycles),
            None => "not observed (no play/pause cycle completed)".to_owned(),
        }
    )?;
    writeln!(w, "    sync_response: timestamp {}", ts(&f.sync_response))?;
    writeln!(
        w,
        "    Leader: {}; default tempo {}",
        f.leader_observed,
        f.default_tempo.map_or_else(|| "not observed".to_owned(), |t| t.to_string())
    )?;
    writeln!(
        w,
        "    Refused command (a follower's set_tempo): {}; set_tempo 1000: {}",
        if f.refusal_channels.is_empty() {
            "not observed".to_owned()
        } else {
            f.refusal_channels.join(" + ")
        },
        match f.tempo_range_checked {
            Some(true) => "refused (range checked)",
            Some(false) => "applied (no range check)",
            None => "not observable",
        }
    )?;
    let refusals: Vec<String> = f.cap_refusals.iter().map(|(r, _)| format!("\"{r}\"")).collect();
    writeln!(
        w,
        "    Member cap: {}",
        match f.member_cap {
            Some(c) => format!("{c} (member {} refused: {})", c + 1, refusals.join(", ")),
            None if f.cap_unanswered > 0 => format!(
                "none found; {} of {} joins unanswered",
                f.cap_unanswered, f.cap_tried
            ),
            None => format!("none up to {} members", f.cap_tried),
        }
    )?;
    writeln!(
        w,
        "    Cross-instance rooms: {}",
        match f.cross_instance {
            Some(true) => "yes (changes reached the other instance)",
            Some(false) => "NO (changes never reached the other instance)",
            None => "not observable (one instance)",
        }
    )?;
    if !f.extra_events.is_empty() {
        let names: Vec<String> = f.extra_events.iter().map(|(e, k)| format!("{e} ×{k}")).collect();
        writeln!(w, "    Events outside the protocol: {}", names.join(", "))?;
    }
    match &f.dialect {
        Some(d) => writeln!(
            w,
            "    Concluded: {}{}",
            d.describe(),
            if f.differences.is_empty() {
                " (exactly as that dialect is documented)".to_owned()
            } else {
                format!(" (closest known dialect; differs in {})", f.differences.join("; "))
            }
        )?,
        None => writeln!(w, "    Concluded: nothing (no join was answered)")?,
    }
    Ok(())
}

