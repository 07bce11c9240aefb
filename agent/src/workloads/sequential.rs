//! A Redis connection used one command at a time by the task that owns it, for the sequential
//! clients of `redis_basic_ops` (redis-benchmark's clients, the document's awaited ioredis calls):
//! the command is written and its reply read in the caller's task. The `redis` crate's
//! multiplexed connection puts a driver task and two channels between them, which costs a
//! sequential client about a sixth of its rate at one connection.
//!
//! Commands are packed and replies parsed by the `redis` crate (`Cmd::write_packed_command`,
//! `parse_redis_value`); this module only frames replies (finds where one ends) and owns the
//! socket. It speaks RESP2 over TCP or a Unix socket with AUTH and SELECT; for other URLs (TLS,
//! RESP3) [`Client::connect`] falls back to the multiplexed connection. After a timeout or an I/O
//! error the connection is reopened before the next command, so a late reply is never read as the
//! answer to another command.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, Pipeline, ProtocolVersion, RedisError, RedisFuture, RedisResult,
    Value,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::redis::{RESPONSE_TIMEOUT, connect};
use super::{StepContext, WorkloadError};

/// A connection for one sequential client: ours where the URL allows, else the crate's.
pub enum Client {
    Sequential(Sequential),
    Multiplexed(MultiplexedConnection),
}

impl Client {
    pub async fn connect(ctx: &StepContext) -> Result<Client, WorkloadError> {
        let unreachable = |reason: String| WorkloadError::Unreachable {
            url: bandsync_common::report::redact_url(&ctx.redis_url),
            reason,
        };
        let info = redis::Client::open(ctx.redis_url.as_str())
            .map_err(|e| unreachable(e.to_string()))?
            .get_connection_info()
            .clone();
        if Sequential::supports(&info) {
            let io = Sequential::open(&info).await.map_err(|e| unreachable(e.to_string()))?;
            return Ok(Client::Sequential(Sequential {
                info,
                io: Some(io),
                out: Vec::with_capacity(4096),
                buf: Vec::with_capacity(4096),
            }));
        }
        Ok(Client::Multiplexed(connect(ctx).await?))
    }
}

impl ConnectionLike for Client {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Client::Sequential(s) => s.req_packed_command(cmd),
            Client::Multiplexed(m) => m.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        p: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Client::Sequential(s) => s.req_packed_commands(p, offset, count),
            Client::Multiplexed(m) => m.req_packed_commands(p, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Client::Sequential(s) => s.get_db(),
            Client::Multiplexed(m) => m.get_db(),
        }
    }
}

enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Io {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Io::Tcp(s) => s.write_all(bytes).await,
            Io::Unix(s) => s.write_all(bytes).await,
        }
    }

    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Io::Tcp(s) => s.read_buf(buf).await,
            Io::Unix(s) => s.read_buf(buf).await,
        }
    }
}

pub struct Sequential {
    info: ConnectionInfo,
    /// `None` after a failure: reopened before the next command.
    io: Option<Io>,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl Sequential {
    fn supports(info: &ConnectionInfo) -> bool {
        matches!(info.addr(), ConnectionAddr::Tcp(..) | ConnectionAddr::Unix(_))
            && info.redis_settings().protocol() == ProtocolVersion::RESP2
    }

    /// Connects and authenticates, within the connect timeout.
    async fn open(info: &ConnectionInfo) -> RedisResult<Io> {
        let work = async {
            let mut io = match info.addr() {
                ConnectionAddr::Tcp(host, port) => {
                    let s = TcpStream::connect((host.as_str(), *port)).await?;
                    s.set_nodelay(true)?;
                    Io::Tcp(s)
                }
                ConnectionAddr::Unix(path) => Io::Unix(UnixStream::connect(path).await?),
                _ => {
                    return Err(RedisError::from((
                        ErrorKind::InvalidClientConfig,
                        "not a TCP or Unix address",
                    )));
                }
            };
            let r = info.redis_settings();
            let mut handshake = Vec::new();
            if let Some(password) = r.password() {
                let mut auth = redis::cmd("AUTH");
                if let Some(user) = r.username() {
                    auth.arg(user);
                }
                handshake.push(auth.arg(password).clone());
            }
            if r.db() != 0 {
                handshake.push(redis::cmd("SELECT").arg(r.db()).clone());
            }
            let (mut out, mut buf) = (Vec::new(), Vec::new());
            for cmd in &handshake {
                out.clear();
                cmd.write_packed_command(&mut out);
                io.write_all(&out).await?;
                read_frame(&mut io, &mut buf).await?.extract_error()?;
            }
            Ok(io)
        };
        tokio::time::timeout(Duration::from_secs(5), work)
            .await
            .map_err(|_| RedisError::from((ErrorKind::Io, "connect timed out after 5 s")))?
    }

    /// Writes `out` and reads `replies` frames; the connection is dropped on any failure.
    async fn round_trip(&mut self, replies: usize) -> RedisResult<Vec<Value>> {
        if self.io.is_none() {
            self.io = Some(Self::open(&self.info).await?);
        }
        let Some(io) = self.io.as_mut() else { unreachable!() };
        let (out, buf) = (&self.out, &mut self.buf);
        let work = async {
            io.write_all(out).await?;
            let mut values = Vec::with_capacity(replies);
            for _ in 0..replies {
                values.push(read_frame(io, buf).await?);
            }
            Ok::<_, RedisError>(values)
        };
        let result = match tokio::time::timeout(RESPONSE_TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::from((
                ErrorKind::Io,
                "no reply",
                format!("timed out after {} s", RESPONSE_TIMEOUT.as_secs()),
            ))),
        };
        if result.is_err() {
            self.io = None;
            self.buf.clear();
        }
        result
    }
}

impl ConnectionLike for Sequential {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.out.clear();
            cmd.write_packed_command(&mut self.out);
            let mut v = self.round_trip(1).await?;
            v.pop().expect("one reply read").extract_error()
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        p: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.out = p.get_packed_pipeline();
            let values = self.round_trip(offset + count).await?;
            values.into_iter().skip(offset).map(Value::extract_error).collect()
        })
    }

    fn get_db(&self) -> i64 {
        self.info.redis_settings().db()
    }
}

/// Reads until `buf` holds one whole reply, parses it and removes it from `buf`.
async fn read_frame(io: &mut Io, buf: &mut Vec<u8>) -> RedisResult<Value> {
    loop {
        if let Some(n) = frame_len(buf)? {
            let value = redis::parse_redis_value(&buf[..n]);
            buf.drain(..n);
            return value;
        }
        if io.read_buf(buf).await? == 0 {
            return Err(RedisError::from((ErrorKind::Io, "Redis closed the connection")));
        }
    }
}

/// The length of the RESP value at the start of `buf` when it is all there (`None`: read more).
fn frame_len(buf: &[u8]) -> RedisResult<Option<usize>> {
    let Some(&kind) = buf.first() else { return Ok(None) };
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = eol + 2;
    let number = || -> RedisResult<i64> {
        std::str::from_utf8(&buf[1..eol])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| RedisError::from((ErrorKind::Parse, "bad length in reply")))
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(Some(line)),
        b'$' | b'!' | b'=' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some(line));
            }
            let end = line + n as usize + 2;
            Ok((buf.len() >= end).then_some(end))
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n = number()?;
            let elements = if kind == b'%' { n * 2 } else { n };
            let mut at = line;
            for _ in 0..elements.max(0) {
                match frame_len(&buf[at..])? {
                    Some(len) => at += len,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        _ => Err(RedisError::from((ErrorKind::Parse, "unknown reply type"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_framed_whole_or_not_at_all() {
        let whole: &[(&[u8], usize)] = &[
            (b"+OK\r\n", 5),
            (b":3\r\n", 4),
            (b"$-1\r\n", 5),
            (b"$5\r\nhello\r\n", 11),
            (b"*2\r\n$1\r\na\r\n:1\r\n", 15),
            (b"*-1\r\n", 5),
            (b"-ERR wrong\r\n", 12),
        ];
        for (bytes, len) in whole {
            assert_eq!(
                frame_len(bytes).unwrap(),
                Some(*len),
                "{}",
                String::from_utf8_lossy(bytes)
            );
            // Any prefix is incomplete; anything after is the next reply's.
            for cut in 0..*len {
                assert_eq!(frame_len(&bytes[..cut]).unwrap(), None, "{cut}");
            }
            let mut more = bytes.to_vec();
            more.extend_from_slice(b"+OK\r\n");
            assert_eq!(frame_len(&more).unwrap(), Some(*len));
        }
        assert!(frame_len(b"$x\r\n").is_err());
        assert!(frame_len(b"?\r\n").is_err());
        assert_eq!(redis::parse_redis_value(b":42\r\n").unwrap(), Value::Int(42));
    }
}
