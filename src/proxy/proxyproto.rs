//! The PROXY protocol (HAProxy's spec, v1 text and v2 binary) on connections from trusted
//! proxies (`proxyprotocol: true`): the header that opens such a connection, before TLS or
//! HTTP, names the real client, whose address then keys rate limits, freebies, the blocklist and
//! logs.
//!
//! Owns the header parser (pure: bytes in, verdict out; it never panics on network input and
//! bounds what it accepts) and the read of exactly the header's bytes off the socket: it peeks,
//! then consumes only bytes that belong to the header, so the TLS handshake or the HTTP parser
//! starts at the first byte after it. Must not guess: a trusted peer's connection without a
//! valid header is refused (the spec forbids auto-detection), and an untrusted peer's bytes are
//! never read as a header.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::net::TcpStream;

/// The v2 signature (12 bytes).
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (spec §2.1).
pub const V1_MAX: usize = 107;
/// The longest v2 header we accept (16-byte fixed part + addresses + TLVs); the spec allows
/// 64 KiB of TLVs, load balancers send well under 1 KiB.
pub const V2_MAX: usize = 4096;
/// How long a trusted peer may take to send its header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes the header takes on the wire.
    pub len: usize,
    /// The client, or `None` for `LOCAL` / `UNKNOWN` / unsupported families (then the TCP
    /// peer stays the client, as the spec says).
    pub source: Option<SocketAddr>,
}

/// Why a connection's opening bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
    #[error("PROXY header longer than allowed")]
    TooLong,
    #[error("connection closed inside the PROXY header")]
    Closed,
    #[error("no complete PROXY header in time")]
    Timeout,
    #[error("reading the PROXY header: {0:?}")]
    Io(io::ErrorKind),
}

/// Parses the start of a connection: `Ok(None)` when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<Header>, ProxyError> {
    if buf.first() == Some(&b'P') {
        return parse_v1(buf);
    }
    if buf.first() == Some(&b'\r') {
        return parse_v2(buf);
    }
    if buf.is_empty() {
        return Ok(None);
    }
    Err(ProxyError::NotProxy)
}

fn parse_v1(buf: &[u8]) -> Result<Option<Header>, ProxyError> {
    let prefix = b"PROXY ";
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        return Err(ProxyError::NotProxy);
    }
    let Some(lf) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::TooLong)
        } else {
            Ok(None)
        };
    };
    let line = buf[..lf]
        .strip_suffix(b"\r")
        .ok_or(ProxyError::V1("no CR before LF"))?;
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::V1("not ASCII"))?;
    let mut parts = line.split(' ').skip(1);
    let source = match parts.next() {
        Some("UNKNOWN") => None,
        Some(proto @ ("TCP4" | "TCP6")) => Some(v1_source(proto, parts)?),
        _ => return Err(ProxyError::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Some(Header {
        len: lf + 1,
        source,
    }))
}

fn v1_source<'a>(
    proto: &str,
    mut parts: impl Iterator<Item = &'a str>,
) -> Result<SocketAddr, ProxyError> {
    let mut next = || parts.next().ok_or(ProxyError::V1("missing field"));
    let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
    if next().is_ok() {
        return Err(ProxyError::V1("extra fields"));
    }
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        match proto {
            "TCP4" => s.parse::<Ipv4Addr>().map(IpAddr::V4),
            _ => s.parse::<Ipv6Addr>().map(IpAddr::V6),
        }
        .map_err(|_| ProxyError::V1("bad address"))
    };
    // Ports are plain decimal without sign or leading zeros (spec §2.1).
    let port = |s: &str| -> Result<u16, ProxyError> {
        let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let canonical = s == "0" || !s.starts_with('0');
        match (plain && canonical).then(|| s.parse::<u16>()) {
            Some(Ok(p)) => Ok(p),
            _ => Err(ProxyError::V1("bad port")),
        }
    };
    ip(dst)?;
    port(dport)?;
    Ok(SocketAddr::new(ip(src)?, port(sport)?))
}

fn parse_v2(buf: &[u8]) -> Result<Option<Header>, ProxyError> {
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] != V2_SIG[..n] {
        return Err(ProxyError::NotProxy);
    }
    if buf.len() < 16 {
        return Ok(None);
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2("version is not 2"));
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX {
        return Err(ProxyError::TooLong);
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::V2("command is not LOCAL or PROXY")),
    };
    let Some(body) = buf.get(16..len) else {
        return Ok(None);
    };
    let source = match (local, fam >> 4) {
        (true, _) => None,
        (false, 1) => {
            let a = body
                .get(..12)
                .ok_or(ProxyError::V2("short IPv4 address block"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([a[8], a[9]]),
            ))
        }
        (false, 2) => {
            let a = body
                .get(..36)
                .ok_or(ProxyError::V2("short IPv6 address block"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[32], a[33]]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        // UNSPEC, UNIX and unknown families: keep the connection's own address (spec §2.2).
        (false, _) => None,
    };
    // The TLVs after the addresses are skipped.
    Ok(Some(Header { len, source }))
}

/// Reads the PROXY header that must open `stream`, consuming exactly its bytes, within
/// [`HEADER_TIMEOUT`]. Returns the client it names (`None`: keep the TCP peer).
pub async fn read_header(stream: &TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    match monoio::time::timeout(HEADER_TIMEOUT, read_exactly_header(stream)).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::Timeout),
    }
}

async fn read_exactly_header(stream: &TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    let fd = stream.as_raw_fd();
    // Bytes already consumed; every one of them is known to belong to the header.
    let mut have: Vec<u8> = Vec::with_capacity(256);
    let mut peeked = vec![0u8; V2_MAX];
    loop {
        stream
            .readable(false)
            .await
            .map_err(|e| ProxyError::Io(e.kind()))?;
        let room = V2_MAX - have.len();
        let n = match recv(fd, &mut peeked[..room], libc::MSG_PEEK) {
            Ok(0) => return Err(ProxyError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ProxyError::Io(e.kind())),
        };
        let mut candidate = have.clone();
        candidate.extend_from_slice(&peeked[..n]);
        match parse(&candidate)? {
            Some(header) => {
                // Consume only the header's own bytes; what follows is TLS or HTTP.
                consume(fd, &mut peeked, header.len - have.len())?;
                return Ok(header.source);
            }
            None if candidate.len() >= V2_MAX => return Err(ProxyError::TooLong),
            None => {
                // Incomplete: everything seen so far is header, so take it off the socket and
                // wait for more (a peek alone would report "readable" forever).
                consume(fd, &mut peeked, n)?;
                have = candidate;
            }
        }
    }
}

/// Takes `n` bytes that a peek has already seen off the socket.
fn consume(fd: i32, scratch: &mut [u8], n: usize) -> Result<(), ProxyError> {
    let mut left = n;
    while left > 0 {
        match recv(fd, &mut scratch[..left], 0) {
            Ok(0) => return Err(ProxyError::Closed),
            Ok(k) => left -= k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProxyError::Io(e.kind())),
        }
    }
    Ok(())
}

/// One non-blocking `recv(2)` with `flags` (plus `MSG_DONTWAIT`) into `buf`.
fn recv(fd: i32, buf: &mut [u8], flags: i32) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable region of `buf.len()` bytes for the duration of the
    // call, and `fd` is the open socket borrowed from the `TcpStream` the caller holds.
    let rc = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let h = b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Ok(Some(Header {
                len: 43,
                source: Some("203.0.113.7:56324".parse().unwrap())
            }))
        );
        let h = b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n";
        let got = parse(h).unwrap().unwrap();
        assert_eq!(got.source, Some("[2001:db8::1]:1".parse().unwrap()));
        assert_eq!(got.len, h.len());
        let h = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert_eq!(parse(h).unwrap().unwrap().source, None);
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().len, 15);
    }

    #[test]
    fn v1_rejects_malformed() {
        for bad in [
            &b"PROXY TCP4 203.0.113.7 10.0.0.1 56324\r\n"[..],
            b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443 x\r\n",
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 203.0.113.7 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 1\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 1\n",
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 1\r\n",
            b"PROXY TCP4 \xff.2.3.4 5.6.7.8 1 1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn truncated_needs_more_and_garbage_is_refused() {
        let full = b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        let full = v2(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 80, 1, 187]);
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"PROXX"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"\x16\x03\x01"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQUIX"), Err(ProxyError::NotProxy));
    }

    #[test]
    fn oversized_headers_are_refused() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'x');
        assert_eq!(parse(&long), Err(ProxyError::TooLong));
        let mut h = V2_SIG.to_vec();
        h.extend_from_slice(&[0x21, 0x11]);
        h.extend_from_slice(&((V2_MAX - 15) as u16).to_be_bytes());
        assert_eq!(parse(&h), Err(ProxyError::TooLong));
    }

    #[test]
    fn v2_tcp4_tcp6_local_and_tlvs() {
        // TCP4 with a TLV after the addresses (skipped).
        let mut body = vec![198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb];
        body.extend_from_slice(&[0x04, 0x00, 0x02, b'h', b'i']);
        let h = v2(1, 0x11, &body);
        let mut wire = h.clone();
        wire.extend_from_slice(b"\x16\x03\x01 tls follows");
        assert_eq!(
            parse(&wire),
            Ok(Some(Header {
                len: h.len(),
                source: Some("198.51.100.9:8080".parse().unwrap())
            }))
        );
        let mut body = vec![0u8; 36];
        body[..16].copy_from_slice(&"2001:db8:1:2::7".parse::<Ipv6Addr>().unwrap().octets());
        body[32..34].copy_from_slice(&4444u16.to_be_bytes());
        let got = parse(&v2(1, 0x21, &body)).unwrap().unwrap();
        assert_eq!(got.source, Some("[2001:db8:1:2::7]:4444".parse().unwrap()));
        // LOCAL (health checks) and UNSPEC keep the TCP peer.
        assert_eq!(parse(&v2(0, 0x00, &[])).unwrap().unwrap().source, None);
        assert_eq!(parse(&v2(1, 0x00, &[1, 2])).unwrap().unwrap().source, None);
        // Wrong version or command, short address blocks.
        let mut bad = v2(1, 0x11, &[0; 12]);
        bad[12] = 0x11;
        assert!(parse(&bad).is_err());
        assert!(parse(&v2(2, 0x11, &[0; 12])).is_err());
        assert!(parse(&v2(1, 0x11, &[0; 11])).is_err());
        assert!(parse(&v2(1, 0x21, &[0; 35])).is_err());
    }
}
