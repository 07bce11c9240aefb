//! Socket.IO packets (protocol 5, inside Engine.IO 4 message packets): only what a member
//! reads. An event is parsed in one pass to its name and first argument (the outer array is
//! never built, further arguments are skipped unparsed). A large event — a snapshot carries the
//! whole member list, ~330 KB at 3,000 members, and the server sends the same bytes to every
//! member of the session — is parsed once per agent: the last few large payloads and their
//! parsed value are kept, and a member that receives the same bytes shares the value.

use std::fmt;
use std::sync::{Arc, Mutex};

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::Value;

/// A packet addressed to the default namespace.
#[derive(Debug)]
pub enum Packet {
    /// The server accepted the namespace.
    Connect,
    /// The server closed the namespace.
    Disconnect,
    Event {
        name: String,
        arg: Arc<Value>,
    },
    Ack {
        id: u64,
        arg: Value,
    },
    /// The server refused the namespace: its payload.
    ConnectError(Value),
    /// Binary packets, or another namespace: nothing a JSON-only member reads.
    Ignored,
}

/// Parses a Socket.IO packet (the Engine.IO message's text after its `4`).
pub fn packet(p: &[u8]) -> Result<Packet, String> {
    let Some((&kind, mut rest)) = p.split_first() else {
        return Err("an empty Socket.IO packet".into());
    };
    if matches!(kind, b'5' | b'6') {
        return Ok(Packet::Ignored);
    }
    if rest.first() == Some(&b'/') {
        let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
        if &rest[..end] != b"/" {
            return Ok(Packet::Ignored);
        }
        rest = rest.get(end + 1..).unwrap_or_default();
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let id = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|d| d.parse::<u64>().ok());
    let json = &rest[digits..];
    let bad = |e: serde_json::Error| format!("a malformed Socket.IO packet ({e})");
    Ok(match kind {
        b'0' => Packet::Connect,
        b'1' => Packet::Disconnect,
        b'2' => {
            let (name, arg) = event(p, json).map_err(bad)?;
            Packet::Event { name, arg }
        }
        b'3' => {
            let (_, arg) = serde_json::Deserializer::from_slice(json)
                .deserialize_seq(FirstArgs { named: false })
                .map_err(bad)?;
            Packet::Ack {
                id: id.ok_or("an ack without an id")?,
                arg,
            }
        }
        b'4' => Packet::ConnectError(serde_json::from_slice(json).unwrap_or(Value::Null)),
        k => return Err(format!("unknown Socket.IO packet type {:?}", k as char)),
    })
}

/// Payloads this large are worth sharing between members.
const SHARED_MIN: usize = 4096;
/// Large payloads kept.
const SHARED_KEPT: usize = 4;

type Shared = (Arc<[u8]>, String, Arc<Value>);
static SHARED: Mutex<Vec<Shared>> = Mutex::new(Vec::new());

fn event(whole: &[u8], json: &[u8]) -> Result<(String, Arc<Value>), serde_json::Error> {
    let parse = || {
        serde_json::Deserializer::from_slice(json)
            .deserialize_seq(FirstArgs { named: true })
            .map(|(name, arg)| (name, Arc::new(arg)))
    };
    if whole.len() < SHARED_MIN {
        return parse();
    }
    // Compare outside the lock: the candidates' bytes are shared.
    let candidates: Vec<Shared> = SHARED
        .lock()
        .unwrap()
        .iter()
        .filter(|(b, _, _)| b.len() == whole.len())
        .cloned()
        .collect();
    if let Some((_, name, v)) = candidates.into_iter().find(|(b, _, _)| **b == *whole) {
        return Ok((name, v));
    }
    let (name, v) = parse()?;
    let mut kept = SHARED.lock().unwrap();
    if kept.len() == SHARED_KEPT {
        kept.remove(0);
    }
    kept.push((Arc::from(whole), name.clone(), v.clone()));
    Ok((name, v))
}

/// `[name?, first, ...]` → (name, first argument or null); the rest skipped unparsed.
struct FirstArgs {
    named: bool,
}

impl<'de> DeserializeSeed<'de> for FirstArgs {
    type Value = (String, Value);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FirstArgs {
    type Value = (String, Value);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Socket.IO argument array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let name = if self.named {
            let n: std::borrow::Cow<'de, str> = seq
                .next_element()?
                .ok_or_else(|| serde::de::Error::custom("an event without a name"))?;
            n.into_owned()
        } else {
            String::new()
        };
        let arg = seq.next_element::<Value>()?.unwrap_or(Value::Null);
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok((name, arg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn packets_of_every_kind_parse_to_what_a_member_reads() {
        let Packet::Event { name, arg } = packet(br#"2["snapshot",{"tempo":120},"extra",[1]]"#).unwrap() else {
            panic!()
        };
        assert_eq!((name.as_str(), &*arg), ("snapshot", &json!({"tempo": 120})));
        let Packet::Event { name, arg } = packet(br#"2["ping"]"#).unwrap() else {
            panic!()
        };
        assert_eq!((name.as_str(), &*arg), ("ping", &Value::Null));
        let Packet::Event { name, .. } = packet(br#"2/,17["a\"b",1]"#).unwrap() else {
            panic!()
        };
        assert_eq!(name, "a\"b");
        let Packet::Ack { id, arg } = packet(br#"312[{"ok":false},2]"#).unwrap() else {
            panic!()
        };
        assert_eq!((id, arg), (12, json!({"ok": false})));
        assert!(matches!(packet(br#"0{"sid":"x"}"#).unwrap(), Packet::Connect));
        assert!(matches!(packet(b"1").unwrap(), Packet::Disconnect));
        assert!(matches!(packet(br#"4{"message":"no"}"#).unwrap(), Packet::ConnectError(v) if v["message"] == "no"));
        assert!(matches!(packet(br#"2/admin,["x"]"#).unwrap(), Packet::Ignored));
        assert!(matches!(
            packet(br#"51-["x",{"_placeholder":true,"num":0}]"#).unwrap(),
            Packet::Ignored
        ));
        assert!(packet(br#"2["x",{"#).unwrap_err().contains("malformed"));
        assert!(packet(br#"2[1]"#).is_err());
        assert!(packet(b"3[1]").unwrap_err().contains("without an id"));
        assert!(packet(b"9").is_err());
    }

    #[test]
    fn a_large_payload_received_twice_is_parsed_once_and_shared() {
        let members: Vec<Value> = (0..200)
            .map(|i| json!({"name": format!("m{i}-{}", fastrand::u64(..))}))
            .collect();
        let text = format!("2[\"snapshot\",{}]", json!({ "members": members }));
        let (Packet::Event { arg: a, .. }, Packet::Event { arg: b, .. }) =
            (packet(text.as_bytes()).unwrap(), packet(text.as_bytes()).unwrap())
        else {
            panic!()
        };
        assert!(Arc::ptr_eq(&a, &b));
        let other = text.replacen("m0-", "n0-", 1);
        let Packet::Event { arg: c, .. } = packet(other.as_bytes()).unwrap() else {
            panic!()
        };
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c["members"][0]["name"].as_str().unwrap().chars().next(), Some('n'));
    }
}
