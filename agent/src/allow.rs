//! The agent's target allow-list: a step whose target is not on it is refused before any traffic.
//!
//! Entries: a host name (`redis.internal`), a host and port (`10.0.0.5:6379`, `[::1]:6379`), a
//! CIDR block (`10.0.0.0/8`), or `*` (anything). The default is loopback only: an agent pointed at
//! the wrong system sends nothing until someone on the agent's own host allows that target.
//! A host name target is allowed when the name itself is listed, or when every address it
//! resolves to lies in a listed block.

use std::fmt;
use std::net::IpAddr;

/// The default list: this machine only.
pub const DEFAULT: &[&str] = &["127.0.0.0/8", "::1/128", "localhost"];

/// Why a list or a target was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllowError {
    #[error("--allow-target `{item}`: {why}")]
    Entry { item: String, why: String },
    #[error("--allow-target: the list is empty; give at least one host, host:port or CIDR (or `*`)")]
    Empty,
    #[error("{what} `{url}` is not a URL: {reason}")]
    NotUrl {
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error(
        "refused by this agent's allow-list {list}: {why}; to allow it, start the agent with --allow-target (or BANDSYNC_ALLOW_TARGET)"
    )]
    Refused { list: String, why: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Any,
    Host { host: String, port: Option<u16> },
    Block { net: IpAddr, prefix: u8 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
    text: Vec<String>,
}

impl Default for AllowList {
    fn default() -> Self {
        Self::parse(DEFAULT.iter().copied()).expect("the default list parses")
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.text.join(", "))
    }
}

impl AllowList {
    /// Parses entries; an error names the entry and says what is wrong.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, AllowError> {
        let mut entries = Vec::new();
        let mut text = Vec::new();
        for raw in items {
            let item = raw.trim();
            if item.is_empty() {
                continue;
            }
            entries.push(parse_entry(item).map_err(|why| AllowError::Entry {
                item: item.to_owned(),
                why,
            })?);
            text.push(item.to_owned());
        }
        if entries.is_empty() {
            return Err(AllowError::Empty);
        }
        Ok(Self { entries, text })
    }

    /// Is `host:port` allowed? `resolved` are the addresses `host` resolves to (for a name).
    pub fn allows(&self, host: &str, port: u16, resolved: &[IpAddr]) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let literal: Option<IpAddr> = host.parse().ok();
        self.entries.iter().any(|e| match e {
            Entry::Any => true,
            Entry::Host { host: h, port: p } => {
                let same = match (literal, h.parse::<IpAddr>()) {
                    (Some(a), Ok(b)) => a == b,
                    _ => h.eq_ignore_ascii_case(host),
                };
                same && p.is_none_or(|p| p == port)
            }
            Entry::Block { .. } => false,
        }) || {
            // Blocks: the literal address, or every resolved address, must fall inside one.
            let addrs: Vec<IpAddr> = literal.map_or_else(|| resolved.to_vec(), |a| vec![a]);
            !addrs.is_empty()
                && addrs.iter().all(|a| {
                    self.entries
                        .iter()
                        .any(|e| matches!(e, Entry::Block { net, prefix } if in_block(*a, *net, *prefix)))
                })
        }
    }
}

fn parse_entry(item: &str) -> Result<Entry, String> {
    if item == "*" {
        return Ok(Entry::Any);
    }
    if let Some((net, prefix)) = item.split_once('/') {
        let net: IpAddr = net.parse().map_err(|_| format!("`{net}` is not an IP address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("prefix must be 0 to {max}"))?;
        return Ok(Entry::Block { net, prefix });
    }
    if let Ok(ip) = item.parse::<IpAddr>() {
        return Ok(Entry::Host {
            host: ip.to_string(),
            port: None,
        });
    }
    // host:port or [v6]:port
    let (host, port) = match item.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']'),
            Some(p.parse::<u16>().map_err(|_| format!("`{p}` is not a port"))?),
        ),
        _ => (item, None),
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
    {
        return Err("not a host name, host:port, IP address or CIDR block".into());
    }
    Ok(Entry::Host {
        host: host.to_owned(),
        port,
    })
}

fn in_block(addr: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a
            .to_ipv4_mapped()
            .is_some_and(|a4| in_block(IpAddr::V4(a4), net, prefix)),
        _ => false,
    }
}

/// Checks a Redis URL against the list, resolving a host name first. `Err` says why it is refused.
pub async fn check_redis_url(list: &AllowList, url: &str) -> Result<(), AllowError> {
    let shown = bandsync_common::fmt::redact_url(url);
    let parsed = url::Url::parse(url).map_err(|e| AllowError::NotUrl {
        what: "target",
        url: shown.clone(),
        reason: e.to_string(),
    })?;
    let refuse = |why: String| {
        Err(AllowError::Refused {
            list: list.to_string(),
            why,
        })
    };
    match parsed.scheme() {
        // A unix socket is on this machine: allowed exactly when loopback is.
        "unix" | "redis+unix" => {
            if list.allows("127.0.0.1", 6379, &[]) {
                Ok(())
            } else {
                refuse(format!("target {shown} is a local socket and loopback is not allowed"))
            }
        }
        _ => check_host(list, &parsed, 6379).await.or_else(refuse),
    }
}

/// Checks a BandSync server URL (`http://host:port`, default port 80/443) against the list.
pub async fn check_server_url(list: &AllowList, url: &str) -> Result<(), AllowError> {
    let parsed = url::Url::parse(url).map_err(|e| AllowError::NotUrl {
        what: "server",
        url: bandsync_common::fmt::redact_url(url),
        reason: e.to_string(),
    })?;
    let default_port = if parsed.scheme() == "https" { 443 } else { 80 };
    check_host(list, &parsed, default_port)
        .await
        .map_err(|why| AllowError::Refused {
            list: list.to_string(),
            why,
        })
}

/// Host and port of `parsed` (its names resolved) against the list; Err says what is refused.
async fn check_host(list: &AllowList, parsed: &url::Url, default_port: u16) -> Result<(), String> {
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let port = parsed.port().unwrap_or(default_port);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let resolved: Vec<IpAddr> = if bare.parse::<IpAddr>().is_ok() {
        Vec::new()
    } else {
        tokio::net::lookup_host((bare, port))
            .await
            .map(|it| it.map(|a| a.ip()).collect())
            .unwrap_or_default()
    };
    if list.allows(&host, port, &resolved) {
        Ok(())
    } else {
        Err(format!("target {host}:{port} is not on it"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_allows_this_machine_only() {
        let d = AllowList::default();
        assert!(d.allows("127.0.0.1", 6379, &[]));
        assert!(d.allows("127.3.2.1", 1, &[]));
        assert!(d.allows("[::1]", 6379, &[]));
        assert!(d.allows("localhost", 6379, &[]));
        assert!(d.allows("LOCALHOST", 7000, &[]));
        assert!(!d.allows("10.0.0.5", 6379, &[]));
        assert!(!d.allows("192.168.1.10", 6379, &[]));
        // A name that resolves to loopback only is allowed; one that resolves elsewhere is not.
        assert!(d.allows("redis-local", 6379, &[ip("127.0.0.1")]));
        assert!(!d.allows("redis.prod", 6379, &[ip("127.0.0.1"), ip("10.1.1.1")]));
        assert!(!d.allows("unresolvable", 6379, &[]));
    }

    #[test]
    fn entries_match_hosts_ports_and_blocks() {
        let l = AllowList::parse(["redis.internal", "10.0.0.5:6380", "172.16.0.0/12", "[fd00::1]:6379"]).unwrap();
        assert!(l.allows("redis.internal", 1234, &[]));
        assert!(l.allows("10.0.0.5", 6380, &[]));
        assert!(!l.allows("10.0.0.5", 6379, &[]));
        assert!(l.allows("172.31.255.255", 6379, &[]));
        assert!(!l.allows("172.32.0.1", 6379, &[]));
        assert!(l.allows("[fd00::1]", 6379, &[]));
        assert!(!l.allows("127.0.0.1", 6379, &[]));
        assert!(AllowList::parse(["*"]).unwrap().allows("anything", 1, &[]));
        assert!(AllowList::parse(["0.0.0.0/0"]).unwrap().allows("8.8.8.8", 1, &[]));
    }

    #[test]
    fn bad_entries_are_named() {
        assert_eq!(
            AllowList::parse(["10.0.0.0/33"]).unwrap_err().to_string(),
            "--allow-target `10.0.0.0/33`: prefix must be 0 to 32"
        );
        assert_eq!(
            AllowList::parse(["host:http"]).unwrap_err().to_string(),
            "--allow-target `host:http`: `http` is not a port"
        );
        assert!(
            AllowList::parse(["bad host!"])
                .unwrap_err()
                .to_string()
                .contains("not a host name")
        );
        assert_eq!(AllowList::parse([""]).unwrap_err(), AllowError::Empty);
    }

    #[tokio::test]
    async fn urls_are_checked_before_any_traffic() {
        let d = AllowList::default();
        assert!(check_redis_url(&d, "redis://127.0.0.1:6379").await.is_ok());
        assert!(check_redis_url(&d, "redis+unix:///tmp/redis.sock").await.is_ok());
        let e = check_redis_url(&d, "redis://10.0.0.5:6379/0").await.unwrap_err();
        assert!(matches!(e, AllowError::Refused { .. }));
        let e = e.to_string();
        assert!(e.contains("target 10.0.0.5:6379 is not on it"), "{e}");
        assert!(e.contains("--allow-target"), "{e}");
    }
}
