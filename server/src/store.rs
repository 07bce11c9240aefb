//! Session persistence in Redis: the protocol's hash `{prefix}:session:{id}` (`data`, `version`,
//! `lastUpdate`), written by one Lua script that compares `version` before it writes, so two
//! instances never lose each other's updates. A refused or dropped connection fails at once; a
//! call that gets no answer gives up after 1 s. The caller then serves from memory (`lib.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use crate::session::Session;

/// How long a session hash lives after its last write: a crashed instance's sessions expire.
const SESSION_TTL_MS: u64 = 24 * 3600 * 1000;

/// Compare-and-set: writes (or deletes, when ARGV[2] is empty) only if `version` is ARGV[1]
/// (a missing hash counts as version 0). Returns {1, new version, ""} or {0, stored version, data}.
const CAS_SCRIPT: &str = r#"
local v = redis.call('HGET', KEYS[1], 'version')
if not v then v = '0' end
if v ~= ARGV[1] then
  return {0, v, redis.call('HGET', KEYS[1], 'data') or ''}
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'data', ARGV[2], 'version', ARGV[3], 'lastUpdate', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return {1, ARGV[3], ''}
"#;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// What Redis holds for a session: its state (None if missing or unreadable) and version.
#[derive(Debug, Clone)]
pub struct Stored {
    pub session: Option<Session>,
    pub version: u64,
}

#[derive(Debug)]
pub enum Cas {
    Written,
    Conflict(Stored),
}

/// A change relayed to the other instances over pub/sub.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Relay {
    pub origin: String,
    pub session_id: String,
    pub version: u64,
    pub session: Option<Session>,
}

pub struct Store {
    pub client: redis::Client,
    con: ConnectionManager,
    prefix: String,
    script: Script,
    up: AtomicBool,
    pub outages: AtomicU64,
    pub errors: AtomicU64,
}

impl Store {
    pub fn new(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)));
        let con = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Store {
            client,
            con,
            prefix: prefix.to_owned(),
            script: Script::new(CAS_SCRIPT),
            up: AtomicBool::new(false),
            outages: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    pub fn key(&self, session_id: &str) -> String {
        format!("{}:session:{session_id}", self.prefix)
    }

    pub fn relay_channel(&self) -> String {
        format!("{}:relay", self.prefix)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Outages seen so far (each up → down transition).
    pub fn outage_count(&self) -> u64 {
        self.outages.load(Ordering::Acquire)
    }

    /// Records that Redis answered; true if it was down before (time to write back).
    pub fn mark_up(&self) -> bool {
        !self.up.swap(true, Ordering::AcqRel)
    }

    /// True for a failure that says Redis is gone (refused, dropped, I/O), not merely slow.
    pub fn is_outage(e: &StoreError) -> bool {
        let StoreError::Redis(e) = e;
        !e.is_timeout()
            && (e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error())
    }

    /// Records a failed call; true if Redis was up before (an outage starts).
    pub fn mark_down(&self) -> bool {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let was = self.up.swap(false, Ordering::AcqRel);
        if was {
            self.outages.fetch_add(1, Ordering::Relaxed);
        }
        was
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        redis::cmd("PING").query_async::<String>(&mut con).await?;
        Ok(())
    }

    pub async fn load(&self, session_id: &str) -> Result<Stored, StoreError> {
        let mut con = self.con.clone();
        let (data, version): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.key(session_id))
            .arg("data")
            .arg("version")
            .query_async(&mut con)
            .await?;
        Ok(Stored {
            session: data.and_then(|d| decode(session_id, &d)),
            version: version.unwrap_or(0),
        })
    }

    /// The stored `version` of each session (0: missing), in one round trip.
    pub async fn versions(&self, session_ids: &[String]) -> Result<Vec<u64>, StoreError> {
        let mut pipe = redis::pipe();
        for id in session_ids {
            pipe.hget(self.key(id), "version");
        }
        let mut con = self.con.clone();
        let v: Vec<Option<u64>> = pipe.query_async(&mut con).await?;
        Ok(v.into_iter().map(|v| v.unwrap_or(0)).collect())
    }

    /// Writes `next` (or deletes the hash, for None) as `new_version` if Redis holds `expected`.
    pub async fn cas(
        &self,
        session_id: &str,
        expected: u64,
        next: Option<&Session>,
        new_version: u64,
        now_ms: i64,
    ) -> Result<Cas, StoreError> {
        let data = match next {
            Some(s) => serde_json::to_string(s).expect("a session serialises"),
            None => String::new(),
        };
        let mut con = self.con.clone();
        let (ok, version, stored): (i64, String, String) = self
            .script
            .key(self.key(session_id))
            .arg(expected)
            .arg(data)
            .arg(new_version)
            .arg(now_ms)
            .arg(SESSION_TTL_MS)
            .invoke_async(&mut con)
            .await?;
        if ok == 1 {
            return Ok(Cas::Written);
        }
        Ok(Cas::Conflict(Stored {
            session: if stored.is_empty() {
                None
            } else {
                decode(session_id, &stored)
            },
            version: version.parse().unwrap_or(0),
        }))
    }

    pub async fn publish(&self, relay: &Relay) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let payload = serde_json::to_string(relay).expect("a relay message serialises");
        let _: i64 = con.publish(self.relay_channel(), payload).await?;
        Ok(())
    }
}

/// A stored session that does not parse (written by something else) is treated as missing; the
/// next write replaces it, still compare-and-set on its version.
fn decode(session_id: &str, data: &str) -> Option<Session> {
    match serde_json::from_str::<Session>(data) {
        Ok(s) if s.session_id == session_id => Some(s),
        Ok(_) | Err(_) => {
            tracing::warn!(
                session = session_id,
                "stored session data is not ours or not readable; it will be replaced"
            );
            None
        }
    }
}
