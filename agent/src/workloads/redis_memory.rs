//! Document 2.1, memory usage: `sessions` large sessions (8 members by default) written as
//! hashes, with `INFO memory` used_memory read before, at the peak, after deleting half and after
//! deleting all. The coordinator runs this on one agent while the others wait, since any other
//! writer would change used_memory. To show how noisy the INFO figure is, `MEMORY USAGE` of a
//! sample of the keys gives the per-key bytes directly.

use bandsync_common::datagen::large_session_data;
use bandsync_common::metrics::{GaugeMerge, MetricSet};
use bandsync_common::workloads::redis_memory::names as n;
use redis::aio::MultiplexedConnection;

use super::Run;
use super::date_now_ms;
use super::redis::{connect, delete_keys};
use super::{StepContext, WorkloadError};
use bandsync_common::workloads::RedisMemory;

pub async fn run(sessions: u64, members: u32, sample: u64, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
    let mut con = connect(ctx).await?;
    let mut m = MetricSet::new();
    let key = |i: u64| format!("{}memory:{i}", ctx.key_base);
    let initial = used_memory(&mut con).await?;

    let mut written = 0u64;
    let mut errors = 0u64;
    let mut payload = 0usize;
    let mut cancelled = false;
    for i in 0..sessions {
        if ctx.cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        let session = large_session_data(members, date_now_ms());
        let data = serde_json::to_string(&session).map_err(|e| WorkloadError::Internal(e.to_string()))?;
        let metadata = serde_json::to_string(&session.metadata).map_err(|e| WorkloadError::Internal(e.to_string()))?;
        let created = date_now_ms().to_string();
        let member_count = session.members.len().to_string();
        payload = payload.max(data.len() + metadata.len() + created.len() + member_count.len());
        written = i + 1;
        let r = redis::cmd("HSET")
            .arg(key(i))
            .arg("data")
            .arg(&data)
            .arg("created")
            .arg(&created)
            .arg("memberCount")
            .arg(&member_count)
            .arg("metadata")
            .arg(&metadata)
            .query_async::<()>(&mut con)
            .await;
        if r.is_err() {
            errors += 1;
            ctx.live.add_error();
        }
        ctx.live.add_ops(1);
    }
    if cancelled {
        delete_keys(&mut con, ctx, (0..written).map(key)).await;
        return Err(WorkloadError::Cancelled);
    }
    let peak = used_memory(&mut con).await?;

    // MEMORY USAGE (all nested values counted: SAMPLES 0) of every `step`-th key.
    let step = (sessions / sample.max(1)).max(1);
    let (mut sample_bytes, mut sample_keys) = (0u64, 0u64);
    for i in (0..sessions).step_by(step as usize).take(sample as usize) {
        let usage: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key(i))
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut con)
            .await
            .unwrap_or(None);
        if let Some(b) = usage {
            sample_bytes += b;
            sample_keys += 1;
        }
    }

    // Delete one by one, as the document does: half, then the rest.
    let half = sessions / 2;
    for i in 0..half {
        if redis::cmd("DEL").arg(key(i)).query_async::<()>(&mut con).await.is_err() {
            errors += 1;
        }
    }
    let after_half = used_memory(&mut con).await?;
    for i in half..sessions {
        if redis::cmd("DEL").arg(key(i)).query_async::<()>(&mut con).await.is_err() {
            errors += 1;
        }
    }
    let final_ = used_memory(&mut con).await?;
    // Whatever a failed DEL left.
    if errors > 0 {
        delete_keys(&mut con, ctx, (0..sessions).map(key)).await;
    }

    m.add_counter(n::SESSIONS, written);
    m.add_counter(n::ERRORS, errors);
    m.add_counter(n::SAMPLE_BYTES, sample_bytes);
    m.add_counter(n::SAMPLE_KEYS, sample_keys);
    m.set_gauge(n::USED_INITIAL, initial as f64, GaugeMerge::Max);
    m.set_gauge(n::USED_PEAK, peak as f64, GaugeMerge::Max);
    m.set_gauge(n::USED_HALF, after_half as f64, GaugeMerge::Max);
    m.set_gauge(n::USED_FINAL, final_ as f64, GaugeMerge::Max);
    m.set_gauge(n::PAYLOAD_BYTES, payload as f64, GaugeMerge::Max);
    Ok(m)
}

/// `used_memory` from `INFO memory`, in bytes.
async fn used_memory(con: &mut MultiplexedConnection) -> Result<u64, WorkloadError> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(con)
        .await
        .map_err(|e| WorkloadError::Internal(format!("INFO memory: {e}")))?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| WorkloadError::Internal("INFO memory has no used_memory line".into()))
}
impl Run for RedisMemory {
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
        run(self.sessions, self.members, self.sample, ctx).await
    }
}
