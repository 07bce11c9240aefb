//! The diagnosis of a band: where the chain from connection to every member's snapshot broke,
//! derived from the counts (no fixed advice).

use super::{CommandChain, Reason, SessionSyncFigures};
use crate::fmt::group;

/// The most frequent reason, quoted with its count.
pub(super) fn top(r: &[Reason]) -> String {
    match r.first() {
        Some(r) if r.count > 1 => format!("\"{}\" (×{})", r.reason, r.count),
        Some(r) => format!("\"{}\"", r.reason),
        None => "no reason given".to_owned(),
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 { 1.0 } else { part as f64 / whole as f64 }
}

/// Where the chain from connection to every member's snapshot broke, from the counts: one
/// line per break, in the chain's order (connect, join, command, leader, room, other
/// instances, ticks, end state). Nothing when every link held.
pub(super) fn diagnose(f: &SessionSyncFigures) -> Vec<String> {
    let mut out = Vec::new();
    if f.connect_failures > 0 {
        out.push(format!(
            "{} of {} members could not connect: {}",
            group(f.connect_failures as f64),
            group(f.members_planned as f64),
            top(&f.connect_errors)
        ));
    }
    if f.members_refused > 0 {
        out.push(format!(
            "the server refused {} of {} joins: {}",
            group(f.members_refused as f64),
            group(f.members_connected as f64),
            top(&f.refusals)
        ));
    }
    if f.joins_unanswered > 0 {
        out.push(format!(
            "the server never answered {} of {} joins (no snapshot, no error)",
            group(f.joins_unanswered as f64),
            group(f.members_connected as f64)
        ));
    }
    if f.changes_emitted < f.changes_scheduled {
        out.push(format!(
            "leaders emitted {} of {} scheduled changes (the connection failed under them)",
            group(f.changes_emitted as f64),
            group(f.changes_scheduled as f64)
        ));
    }
    let mut broken_command = false;
    for c in f.commands.iter().filter(|c| c.emitted > 0) {
        if c.refused > 0 {
            broken_command = true;
            let prefix = format!("{}:", c.command);
            let why: Vec<Reason> = f
                .command_errors
                .iter()
                .filter_map(|r| {
                    r.reason.strip_prefix(&prefix).map(|m| Reason {
                        reason: m.to_owned(),
                        count: r.count,
                    })
                })
                .collect();
            out.push(format!(
                "the server refused `{}` {} of {} times: {}",
                c.command,
                group(c.refused as f64),
                group(c.emitted as f64),
                top(&why)
            ));
        } else if c.answered == 0 {
            broken_command = true;
            out.push(format!(
                "the server never answered `{}`: no snapshot and no error reached the leader for 0 of {} emitted",
                c.command,
                group(c.emitted as f64)
            ));
        }
    }
    let sum = |g: fn(&CommandChain) -> u64| f.commands.iter().map(g).sum::<u64>();
    let (emitted, leader) = (sum(|c| c.emitted), sum(|c| c.leader_seen));
    let (same_exp, same) = (sum(|c| c.same_expected), sum(|c| c.same_seen));
    let (cross_exp, cross) = (sum(|c| c.cross_expected), sum(|c| c.cross_seen));
    if !broken_command && leader < emitted {
        out.push(format!(
            "the leaders' own snapshots showed {} of {} commanded states ({} snapshots in a state the script never produces)",
            group(leader as f64),
            group(emitted as f64),
            group(f.unexpected_states as f64)
        ));
    }
    if same_exp > 0 && leader > 0 && share(same, same_exp) < share(leader, emitted) {
        out.push(if same == 0 {
            format!(
                "members on the leader's instance received none of {} changes the leaders' own snapshots showed: the server does not broadcast snapshots to the room",
                group(same_exp as f64)
            )
        } else {
            format!(
                "members on the leader's instance missed {} of {} changes ({:.1}%) while the leaders saw {:.1}% of theirs",
                group((same_exp - same) as f64),
                group(same_exp as f64),
                (1.0 - share(same, same_exp)) * 100.0,
                share(leader, emitted) * 100.0
            )
        });
    }
    if cross_exp > 0 && cross == 0 && same > 0 {
        out.push(format!(
            "cross-instance members received 0 of {} changes that same-instance members received ({} of {}): the instances do not share rooms",
            group(cross_exp as f64),
            group(same as f64),
            group(same_exp as f64)
        ));
    } else if cross_exp > 0 && cross < cross_exp && share(cross, cross_exp) < share(same, same_exp) {
        out.push(format!(
            "cross-instance members received {} of {} changes ({:.1}%) against {:.1}% on the leader's instance: the relay between instances loses changes",
            group(cross as f64),
            group(cross_exp as f64),
            share(cross, cross_exp) * 100.0,
            share(same, same_exp) * 100.0
        ));
    }
    let played = f.commands.iter().any(|c| c.command == "play" && c.leader_seen > 0);
    if played && f.ticks == 0 {
        out.push("no scroll_tick arrived although the leaders' sessions played".to_owned());
    }
    if f.ticks_stalled > 0 {
        out.push(format!(
            "{} of {} ticks repeated the previous positionMs while playing: the server's position does not advance",
            group(f.ticks_stalled as f64),
            group(f.ticks as f64)
        ));
    }
    if f.out_of_order_snapshots > 0 {
        out.push(format!(
            "{} snapshots arrived older than one already seen (by version): ordering across instances is broken",
            group(f.out_of_order_snapshots as f64)
        ));
    }
    if out.is_empty() && f.converged_members < f.members_planned {
        out.push(format!(
            "{} of {} members did not end in the leader's final state",
            group((f.members_planned - f.converged_members) as f64),
            group(f.members_planned as f64)
        ));
    }
    out
}
