//! Document 2.2, session persistence accuracy: sessions with nested, unicode and numeric data
//! are written with the MD5 of their JSON, read back, and counted as matching only when the
//! original, stored and re-computed checksums agree.

use std::collections::HashMap;

use bandsync_common::datagen::session_data;
use bandsync_common::metrics::MetricSet;
use bandsync_common::plan::shard_of;
use bandsync_common::workloads::session_integrity::names as ni;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use tracing::warn;

use super::Run;
use super::date_now_ms;
use super::redis::{connect, delete_keys};
use super::{StepContext, WorkloadError};
use bandsync_common::workloads::SessionIntegrity;

impl Run for SessionIntegrity {
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
        integrity(self.sessions, ctx).await
    }
}

/// The document's `calculateChecksum`: MD5 of the JSON text, hex.
pub fn checksum(v: &Value) -> String {
    let digest = Md5::digest(v.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The document's integrity session: 2–10 members plus `testId` and `complexData`.
pub fn integrity_session(test_id: u64, now_ms: i64) -> Value {
    let mut v = serde_json::to_value(session_data(fastrand::u32(2..=10), now_ms)).expect("session serializes");
    v["testId"] = json!(test_id);
    v["complexData"] = json!({
        "nestedObject": {
            "arrays": [1, 2, 3, {"nested": true}],
            "strings": "test string with unicode: 🎵🎶",
            "numbers": [std::f64::consts::PI, std::f64::consts::E, 42.5],
            "booleans": [true, false, null]
        },
        "timestamp": now_ms,
        "uuid": format!("test-uuid-{test_id}-{now_ms}")
    });
    v
}

pub async fn integrity(total: u64, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
    let mine = shard_of(total, ctx.shard_index, ctx.shard_count);
    let first = (0..ctx.shard_index)
        .map(|i| shard_of(total, i, ctx.shard_count))
        .sum::<u64>();
    let mut con = connect(ctx).await?;
    let key = |i: u64| format!("{}integrity:{i}", ctx.key_base);
    let sessions: Vec<Value> = (0..mine).map(|i| integrity_session(first + i, date_now_ms())).collect();
    let (mut written, mut read, mut matches, mut mismatches, mut write_errors, mut read_errors) = (0u64, 0, 0, 0, 0, 0);
    let mut attempted = 0;

    for (i, s) in sessions.iter().enumerate() {
        if ctx.cancel.is_cancelled() {
            break;
        }
        attempted = i as u64 + 1;
        let r = redis::cmd("HSET")
            .arg(key(i as u64))
            .arg("data")
            .arg(s.to_string())
            .arg("checksum")
            .arg(checksum(s))
            .arg("created")
            .arg(date_now_ms())
            .query_async::<()>(&mut con)
            .await;
        match r {
            Ok(()) => written += 1,
            Err(e) => {
                write_errors += 1;
                ctx.live.add_error();
                warn!(session = i, error = %e, "integrity write failed");
            }
        }
        ctx.live.add_ops(1);
    }
    for (i, original) in sessions.iter().enumerate().take(attempted as usize) {
        if ctx.cancel.is_cancelled() {
            break;
        }
        match redis::cmd("HGETALL")
            .arg(key(i as u64))
            .query_async::<HashMap<String, String>>(&mut con)
            .await
        {
            Ok(stored) => {
                let Some(data) = stored.get("data") else { continue };
                read += 1;
                let expected = checksum(original);
                let parsed = serde_json::from_str::<Value>(data).map(|p| checksum(&p)).ok();
                if stored.get("checksum") == Some(&expected) && parsed.as_ref() == Some(&expected) {
                    matches += 1;
                } else {
                    mismatches += 1;
                    warn!(session = i, expected, stored = ?stored.get("checksum"), parsed = ?parsed, "checksum mismatch");
                }
            }
            Err(e) => {
                read_errors += 1;
                ctx.live.add_error();
                warn!(session = i, error = %e, "integrity read failed");
            }
        }
        ctx.live.add_ops(1);
    }
    delete_keys(&mut con, ctx, (0..attempted).map(key)).await;
    if ctx.cancel.is_cancelled() {
        return Err(WorkloadError::Cancelled);
    }
    let mut m = MetricSet::new();
    m.add_counter(ni::SESSIONS, mine);
    m.add_counter(ni::WRITTEN, written);
    m.add_counter(ni::READ, read);
    m.add_counter(ni::MATCHES, matches);
    m.add_counter(ni::MISMATCHES, mismatches);
    m.add_counter(ni::WRITE_ERRORS, write_errors);
    m.add_counter(ni::READ_ERRORS, read_errors);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_survive_a_json_round_trip() {
        let s = integrity_session(7, 1_700_000_000_000);
        let text = s.to_string();
        assert!(text.contains("🎵🎶"));
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(checksum(&back), checksum(&s));
        assert_eq!(checksum(&json!({"a": 1})), "bb6cb5c68df4652941caf652a366f2d8");
        // Any change shows.
        let mut changed = back.clone();
        changed["complexData"]["nestedObject"]["numbers"][0] = json!(2.5);
        assert_ne!(checksum(&changed), checksum(&s));
    }
}
