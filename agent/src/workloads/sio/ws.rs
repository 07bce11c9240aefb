//! The WebSocket client under our Socket.IO client (RFC 6455, client side): the opening
//! handshake over TCP or TLS, then frames. Written here rather than taken from tungstenite so
//! that a member's memory stays bounded: tungstenite's read buffer grows to the largest frame a
//! connection ever received and keeps that size (a 330 KB snapshot in a 3,000-member session
//! made every member hold 330 KB), while here a frame larger than the small read buffer gets an
//! allocation of its own that is freed as soon as it has been handled.

use std::io;
use std::time::Duration;

use base64::Engine as _;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes a connection keeps for reading: a `scroll_tick` frame is ~150 bytes.
const READ_BUF: usize = 2048;
/// Largest message accepted (a 3,000-member snapshot is ~330 KB).
const MAX_MESSAGE: usize = 64 << 20;
/// Largest handshake response accepted.
const MAX_HEAD: usize = 16 << 10;

pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Where to dial: from an `http(s)://` or `ws(s)://` URL, the Socket.IO path and query added.
#[derive(Clone, Debug)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query of the upgrade request.
    pub resource: String,
}

impl Target {
    /// `url` is a BandSync server base URL; a bare path gets `/socket.io/`, as Socket.IO
    /// clients do.
    pub fn socket_io(url: &str) -> Result<Target, String> {
        let u = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        let tls = match u.scheme() {
            "http" | "ws" => false,
            "https" | "wss" => true,
            s => return Err(format!("{url}: scheme {s} is not http, https, ws or wss")),
        };
        let host = u
            .host_str()
            .ok_or_else(|| format!("{url}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = u.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
        let path = match u.path() {
            "" | "/" => "/socket.io/".to_owned(),
            p if p.ends_with('/') => p.to_owned(),
            p => format!("{p}/"),
        };
        let extra = u.query().map(|q| format!("&{q}")).unwrap_or_default();
        Ok(Target {
            tls,
            host,
            port,
            resource: format!("{path}?EIO=4&transport=websocket{extra}"),
        })
    }

    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.tls, self.port) {
            (false, 80) | (true, 443) => host,
            (_, p) => format!("{host}:{p}"),
        }
    }
}

/// Opens the connection and completes the WebSocket handshake.
pub async fn connect(t: &Target) -> Result<(Reader, WriteHalf), String> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", t.host, t.port))?;
    let _ = tcp.set_nodelay(true);
    let (mut rd, mut wr): (ReadHalf, WriteHalf) = if t.tls {
        let cx = native_tls::TlsConnector::new().map_err(|e| format!("TLS: {e}"))?;
        let tls = tokio_native_tls::TlsConnector::from(cx)
            .connect(&t.host, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", t.host))?;
        let (r, w) = tokio::io::split(tls);
        (Box::new(r), Box::new(w))
    } else {
        let (r, w) = tcp.into_split();
        (Box::new(r), Box::new(w))
    };
    let key = base64::engine::general_purpose::STANDARD.encode(fastrand::u128(..).to_le_bytes());
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        t.resource,
        t.authority()
    );
    wr.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // The response head, and whatever frames came with it.
    let mut buf = Vec::with_capacity(READ_BUF);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err("handshake: response head over 16 KiB".into());
        }
        let mut chunk = [0u8; 1024];
        let n = rd.read(&mut chunk).await.map_err(|e| format!("handshake: {e}"))?;
        if n == 0 {
            return Err("handshake: the server closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    check_response(&buf[..end], &key)?;
    buf.drain(..end);
    Ok((Reader::new(rd, buf), wr))
}

fn check_response(head: &[u8], key: &str) -> Result<(), String> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("101") {
        return Err(format!("handshake: the server answered {status:?}, not 101"));
    }
    let mut hasher = Sha1::new();
    hasher.update(key.as_bytes());
    hasher.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let expected = base64::engine::general_purpose::STANDARD.encode(hasher.finalize());
    let accept = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-accept")
            .then(|| value.trim())
    });
    match accept {
        Some(a) if a == expected => Ok(()),
        Some(a) => Err(format!("handshake: Sec-WebSocket-Accept {a:?} does not match the key")),
        None => Err("handshake: no Sec-WebSocket-Accept".into()),
    }
}

/// One message from the server.
#[derive(Debug)]
pub enum Message {
    /// A text message, in an allocation of its own.
    Text(Vec<u8>),
    Ping(Vec<u8>),
    /// Binary, pong: nothing for Socket.IO's JSON protocol.
    Other,
    Close,
}

/// The reading side: a small buffer that does not grow with the frames.
pub struct Reader {
    rd: ReadHalf,
    buf: Vec<u8>,
    start: usize,
    /// A fragmented message being joined (a ping may come between its fragments).
    partial: Option<(u8, Vec<u8>)>,
}

impl Reader {
    fn new(rd: ReadHalf, mut rest: Vec<u8>) -> Reader {
        rest.reserve(READ_BUF.saturating_sub(rest.len()));
        Reader {
            rd,
            buf: rest,
            start: 0,
            partial: None,
        }
    }

    /// Buffered bytes not consumed yet.
    fn avail(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Reads until at least `n` bytes are buffered (n ≤ READ_BUF).
    async fn fill(&mut self, n: usize) -> io::Result<()> {
        while self.buf.len() - self.start < n {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            if self.buf.capacity() > READ_BUF && self.buf.len() <= READ_BUF {
                self.buf.shrink_to(READ_BUF);
            }
            self.buf.reserve(READ_BUF - self.buf.len());
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// The next message; fragments are joined; `idle` bounds the wait for its first byte.
    pub async fn next(&mut self, idle: Duration) -> io::Result<Message> {
        loop {
            tokio::time::timeout(idle, self.fill(2))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no frame from the server"))??;
            let (b0, b1) = (self.avail()[0], self.avail()[1]);
            let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
            let masked = b1 & 0x80 != 0;
            let (head, len) = match b1 & 0x7f {
                126 => {
                    self.fill(4).await?;
                    (4, u16::from_be_bytes([self.avail()[2], self.avail()[3]]) as u64)
                }
                127 => {
                    self.fill(10).await?;
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&self.avail()[2..10]);
                    (10, u64::from_be_bytes(b))
                }
                l => (2, l as u64),
            };
            let mask_len = if masked { 4 } else { 0 };
            let have = self.partial.as_ref().map_or(0, |(_, m)| m.len());
            if len as usize > MAX_MESSAGE - have {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a frame of {len} bytes"),
                ));
            }
            self.fill(head + mask_len).await?;
            let mask = masked.then(|| {
                let a = &self.avail()[head..head + 4];
                [a[0], a[1], a[2], a[3]]
            });
            self.start += head + mask_len;
            let mut payload = self.payload(len as usize).await?;
            if let Some(m) = mask {
                payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= m[i % 4]);
            }
            match opcode {
                0x8 => return Ok(Message::Close),
                0x9 => return Ok(Message::Ping(payload)),
                0xA => continue,
                0x0 => match &mut self.partial {
                    Some((_, m)) => m.extend_from_slice(&payload),
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "continuation without a start",
                        ));
                    }
                },
                op => self.partial = Some((op, payload)),
            }
            if fin {
                let (op, m) = self.partial.take().unwrap_or((0x2, Vec::new()));
                return Ok(if op == 0x1 { Message::Text(m) } else { Message::Other });
            }
        }
    }

    /// `len` payload bytes: a small payload is copied out of the buffer, a large one read into
    /// an allocation of exactly its size.
    async fn payload(&mut self, len: usize) -> io::Result<Vec<u8>> {
        if len <= READ_BUF {
            self.fill(len).await?;
            let p = self.avail()[..len].to_vec();
            self.start += len;
            return Ok(p);
        }
        let mut p = Vec::with_capacity(len);
        let buffered = self.avail().len().min(len);
        p.extend_from_slice(&self.avail()[..buffered]);
        self.start += buffered;
        while p.len() < len {
            let want = len - p.len();
            if (&mut self.rd).take(want as u64).read_buf(&mut p).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(p)
    }
}

/// One masked client frame (FIN set).
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | opcode);
    match payload.len() {
        l if l < 126 => f.push(0x80 | l as u8),
        l if l <= u16::MAX as usize => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(l as u16).to_be_bytes());
        }
        l => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(l as u64).to_be_bytes());
        }
    }
    let mask = fastrand::u32(..).to_ne_bytes();
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

pub const TEXT: u8 = 0x1;
pub const CLOSE: u8 = 0x8;
pub const PONG: u8 = 0xA;

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            l if l < 126 => f.push(l as u8),
            l if l <= 65535 => {
                f.push(126);
                f.extend_from_slice(&(l as u16).to_be_bytes());
            }
            l => {
                f.push(127);
                f.extend_from_slice(&(l as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test]
    async fn frames_of_every_length_and_fragments_are_read_and_the_buffer_stays_small() {
        let big = vec![b'x'; 330_000];
        let mid = vec![b'y'; 5_000];
        let mut wire = server_frame(0x1, true, b"42[\"a\"]");
        wire.extend(server_frame(0x9, true, b"p"));
        wire.extend(server_frame(0x1, true, &big));
        wire.extend(server_frame(0x1, false, b"4"));
        wire.extend(server_frame(0x9, true, b"q"));
        wire.extend(server_frame(0x0, true, &mid));
        wire.extend(server_frame(0x8, true, b""));
        let (a, mut b) = tokio::io::duplex(4096);
        tokio::spawn(async move { b.write_all(&wire).await });
        let mut r = Reader::new(Box::new(a), Vec::new());
        let t = Duration::from_secs(5);
        assert!(matches!(r.next(t).await.unwrap(), Message::Text(m) if m == b"42[\"a\"]"));
        assert!(matches!(r.next(t).await.unwrap(), Message::Ping(p) if p == b"p"));
        assert!(matches!(r.next(t).await.unwrap(), Message::Text(m) if m == big));
        assert!(matches!(r.next(t).await.unwrap(), Message::Ping(p) if p == b"q"));
        let Message::Text(m) = r.next(t).await.unwrap() else {
            panic!()
        };
        assert_eq!((m.len(), m[0], m[1]), (5_001, b'4', b'y'));
        assert!(matches!(r.next(t).await.unwrap(), Message::Close));
        assert!(
            r.buf.capacity() <= 2 * READ_BUF,
            "read buffer grew to {}",
            r.buf.capacity()
        );
    }

    #[test]
    fn client_frames_are_masked_and_unmask_to_the_payload() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let p: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let f = frame(TEXT, &p);
            let (head, l) = match f[1] & 0x7f {
                126 => (4, u16::from_be_bytes([f[2], f[3]]) as usize),
                127 => (10, u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize),
                l => (2, l as usize),
            };
            assert_eq!((f[0], f[1] & 0x80, l), (0x81, 0x80, len));
            let m = &f[head..head + 4];
            let out: Vec<u8> = f[head + 4..].iter().enumerate().map(|(i, b)| b ^ m[i % 4]).collect();
            assert_eq!(out, p);
        }
    }

    #[test]
    fn targets_add_the_socket_io_path() {
        let t = Target::socket_io("http://127.0.0.1:3000").unwrap();
        assert_eq!(
            (t.tls, t.port, t.resource.as_str()),
            (false, 3000, "/socket.io/?EIO=4&transport=websocket")
        );
        assert_eq!(t.authority(), "127.0.0.1:3000");
        let t = Target::socket_io("https://band.example/custom/path?token=x").unwrap();
        assert_eq!((t.tls, t.port), (true, 443));
        assert_eq!(t.resource, "/custom/path/?EIO=4&transport=websocket&token=x");
        assert!(Target::socket_io("ftp://x").unwrap_err().contains("scheme ftp"));
    }
}
