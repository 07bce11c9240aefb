//! The URLs a plan names: a BandSync server's and the Redis target's, checked when the plan is
//! read (every error shows the URL with any password redacted).

/// A BandSync server URL: `http://host:port` or `https://host:port` (Socket.IO's path is implied).
pub fn check_server_url(v: &str) -> Result<(), String> {
    let shown = crate::fmt::redact_url(v);
    let v = shown.as_str();
    let u = url::Url::parse(v).map_err(|e| format!("`{v}` is not a URL ({e}): use http://HOST:PORT"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "`{v}`: scheme must be http or https (Socket.IO over WebSocket)"
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{v}` has no host"));
    }
    if !matches!(u.path(), "" | "/") || u.query().is_some() {
        return Err(format!(
            "`{v}`: give only scheme, host and port; the Socket.IO path is /socket.io/"
        ));
    }
    Ok(())
}

/// Checks that `v` is a Redis URL the agents can use: `redis://`, `rediss://` with a host, or a
/// unix socket URL with a path.
pub fn check_redis_url(v: &str) -> Result<(), String> {
    let bad = |why: String| format!("`{}` is not a Redis URL: {why}", crate::fmt::redact_url(v));
    let parsed = url::Url::parse(v).map_err(|e| bad(e.to_string()))?;
    match parsed.scheme() {
        "redis" | "rediss" if parsed.host_str().is_none_or(str::is_empty) => Err(bad("it has no host".into())),
        "redis" | "rediss" => match parsed.path().trim_start_matches('/') {
            "" => Ok(()),
            db if db.parse::<u32>().is_ok() => Ok(()),
            db => Err(bad(format!(
                "the database `/{db}` is not a number (redis://HOST:PORT/0)"
            ))),
        },
        "redis+unix" | "unix" if parsed.path().is_empty() => Err(bad("it has no socket path".into())),
        "redis+unix" | "unix" => Ok(()),
        other => Err(bad(format!(
            "scheme `{other}` is not one of redis, rediss, redis+unix, unix"
        ))),
    }
}
