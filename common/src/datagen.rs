//! The document's `TestDataGenerator`: session data as BandSync stores it, field for field and in
//! the document's order, so payload sizes match what the document measured.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub socket_id: String,
    pub display_name: String,
    pub role: String,
    pub joined_at: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomSettings {
    pub visual_metronome: bool,
    pub haptic_feedback: bool,
    pub auto_sync: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Analytics {
    pub total_beats: u64,
    pub tempo_changes: u64,
    pub reconnections: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub created_at: i64,
    pub song_title: String,
    pub genre: String,
    pub custom_settings: CustomSettings,
    pub analytics: Analytics,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionData {
    pub session_id: String,
    pub members: Vec<Member>,
    pub tempo: u32,
    pub tempo_bpm: u32,
    pub position: i64,
    pub is_playing: bool,
    pub leader_socket_id: String,
    pub last_update: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub metadata: Option<Metadata>,
}

/// `TestDataGenerator.generateSessionData(memberCount)`, with `now_ms` standing for `Date.now()`.
pub fn session_data(member_count: u32, now_ms: i64) -> SessionData {
    SessionData {
        session_id: format!("test-session-{now_ms}"),
        members: (0..member_count)
            .map(|i| Member {
                socket_id: format!("socket-{i}-{now_ms}"),
                display_name: format!("Test User {}", i + 1),
                role: if i == 0 { "leader" } else { "follower" }.to_owned(),
                joined_at: now_ms - i64::from(i) * 1000,
            })
            .collect(),
        tempo: 120,
        tempo_bpm: 120,
        position: 0,
        is_playing: false,
        leader_socket_id: format!("socket-0-{now_ms}"),
        last_update: now_ms,
        metadata: None,
    }
}

/// `TestDataGenerator.generateLargeSessionData(memberCount)` (the document's default is 50).
pub fn large_session_data(member_count: u32, now_ms: i64) -> SessionData {
    let mut s = session_data(member_count, now_ms);
    s.metadata = Some(Metadata {
        created_at: now_ms,
        song_title: "Test Song".into(),
        genre: "Test Genre".into(),
        custom_settings: CustomSettings {
            visual_metronome: true,
            haptic_feedback: true,
            auto_sync: true,
        },
        analytics: Analytics {
            total_beats: 0,
            tempo_changes: 0,
            reconnections: 0,
        },
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_matches_the_document_shape() {
        let s = session_data(4, 1_700_000_000_000);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["sessionId"], "test-session-1700000000000");
        assert_eq!(v["members"].as_array().unwrap().len(), 4);
        assert_eq!(v["members"][0]["role"], "leader");
        assert_eq!(v["members"][1]["role"], "follower");
        assert_eq!(v["members"][3]["joinedAt"], 1_700_000_000_000i64 - 3000);
        assert_eq!(v["tempoBpm"], 120);
        assert_eq!(v["isPlaying"], false);
        assert!(v.get("metadata").is_none());
        // Field order is the document's, so the JSON is byte-for-byte what ioredis would store.
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.starts_with(r#"{"sessionId":"test-session-1700000000000","members":[{"socketId":"socket-0-1700000000000","displayName":"Test User 1","role":"leader","joinedAt":1700000000000}"#));
        let back: SessionData = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn large_session_has_metadata() {
        let s = large_session_data(50, 1);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["members"].as_array().unwrap().len(), 50);
        assert_eq!(v["metadata"]["customSettings"]["hapticFeedback"], true);
        assert_eq!(v["metadata"]["songTitle"], "Test Song");
    }
}
