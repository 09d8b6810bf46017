//! HTTP/1.1 over a blocking `TcpStream` for `aperture fetch`: URL splitting, one request per
//! connection (`Connection: close`), response heads (interim 1xx skipped) and bodies framed by
//! Content-Length, chunked coding or connection close. Size limits guard every read; nothing here
//! panics on what the peer sends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::{header_values, ClientError};

/// Longest response head we accept (status line + headers).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size or trailer line.
const MAX_LINE_BYTES: u64 = 8 * 1024;

/// An http:// URL split for connecting and for the request line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Target {
    /// `Host` header value (host, plus `:port` when given).
    pub(super) host: String,
    /// `host:port` to connect to.
    pub(super) connect: String,
    /// Path and query, at least "/".
    pub(super) path: String,
}

impl Target {
    pub(super) fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected http://host[:port]/path"))?;
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(ClientError::UnsupportedScheme {
                scheme: scheme.to_owned(),
            });
        }
        let rest = rest.split('#').next().unwrap_or("");
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("missing host (user info is not supported)"));
        }
        let has_port = match authority.rfind(':') {
            Some(p) => !authority[p..].contains(']'),
            None => false,
        };
        if has_port
            && authority
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .is_none()
        {
            return Err(bad("invalid port"));
        }
        let connect = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        Ok(Self {
            host: authority.to_owned(),
            connect,
            path,
        })
    }
}

pub(super) struct Request<'a> {
    pub(super) method: &'a str,
    pub(super) headers: &'a [(String, String)],
    pub(super) body: Option<&'a [u8]>,
}

/// Response status line and headers.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the final response head.
pub(super) fn exchange(
    target: &Target,
    req: &Request<'_>,
    timeout: Duration,
) -> Result<(Head, BufReader<TcpStream>), ClientError> {
    let addr = target.connect.clone();
    let stream = connect(&addr, timeout)?;
    let io = |source| ClientError::Io {
        addr: addr.clone(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut msg = format!("{} {} HTTP/1.1\r\n", req.method, target.path);
    if !req
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("host"))
    {
        msg.push_str(&format!("Host: {}\r\n", target.host));
    }
    msg.push_str(concat!(
        "User-Agent: aperture-fetch/",
        env!("CARGO_PKG_VERSION"),
        "\r\nAccept: */*\r\nConnection: close\r\n"
    ));
    for (n, v) in req.headers {
        if !n.eq_ignore_ascii_case("content-length") && !n.eq_ignore_ascii_case("connection") {
            msg.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    if let Some(body) = req.body {
        msg.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    msg.push_str("\r\n");
    let mut w = &stream;
    w.write_all(msg.as_bytes()).map_err(io)?;
    w.write_all(req.body.unwrap_or_default()).map_err(io)?;
    w.flush().map_err(io)?;
    let mut reader = BufReader::new(stream);
    let head = read_final_head(&mut reader).map_err(|e| match e {
        HeadError::Io(source) => ClientError::Io {
            addr: addr.clone(),
            source,
        },
        HeadError::Bad(reason) => ClientError::Response {
            addr: addr.clone(),
            reason,
        },
    })?;
    Ok((head, reader))
}

pub(super) fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
    let err = |source| ClientError::Connect {
        addr: addr.to_owned(),
        source,
    };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "host name did not resolve");
    for sa in addr.to_socket_addrs().map_err(err)? {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(err(last))
}

#[derive(Debug)]
pub(super) enum HeadError {
    Io(std::io::Error),
    Bad(String),
}

/// Reads response heads, skipping interim 1xx responses (except 101).
pub(super) fn read_final_head(r: &mut impl BufRead) -> Result<Head, HeadError> {
    loop {
        let head = read_head(r)?;
        if !(100..200).contains(&head.status) || head.status == 101 {
            return Ok(head);
        }
    }
}

pub(super) fn read_head(r: &mut impl BufRead) -> Result<Head, HeadError> {
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        let n = r
            .by_ref()
            .take((MAX_HEAD_BYTES + 1 - before) as u64)
            .read_until(b'\n', &mut raw)
            .map_err(HeadError::Io)?;
        if raw.len() > MAX_HEAD_BYTES {
            return Err(HeadError::Bad(format!(
                "response head exceeds {MAX_HEAD_BYTES} bytes"
            )));
        }
        if n == 0 {
            return Err(HeadError::Bad(
                "connection closed before the response head ended".to_owned(),
            ));
        }
        let line = &raw[before..];
        if (line == b"\r\n" || line == b"\n") && before > 0 {
            break;
        }
    }
    let mut storage = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut storage);
    match resp.parse(&raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HeadError::Bad("incomplete response head".to_owned()))
        }
        Err(e) => return Err(HeadError::Bad(format!("bad response head: {e}"))),
    }
    let status = resp
        .code
        .ok_or_else(|| HeadError::Bad("no status code".to_owned()))?;
    let headers = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Ok(Head { status, headers })
}

/// How the body is delimited (RFC 9112 §6.3).
#[derive(Debug)]
pub(super) enum Framing {
    Length(u64),
    /// Bytes left in the current chunk; `first` until the first size line is read.
    Chunked {
        left: u64,
        first: bool,
    },
    Close,
    Done,
}

/// Response body reader: Content-Length, chunked, or read-until-close.
pub(super) struct Body<'a, R> {
    inner: &'a mut R,
    framing: Framing,
}

impl<'a, R: BufRead> Body<'a, R> {
    pub(super) fn new(inner: &'a mut R, head: &Head, is_head_request: bool) -> Self {
        let get = |n: &str| {
            header_values(&head.headers, n)
                .last()
                .map(str::trim)
                .map(str::to_ascii_lowercase)
        };
        let framing = if is_head_request || head.status == 204 || head.status == 304 {
            Framing::Done
        } else if get("transfer-encoding")
            .is_some_and(|te| te.rsplit(',').next().is_some_and(|l| l.trim() == "chunked"))
        {
            Framing::Chunked {
                left: 0,
                first: true,
            }
        } else if let Some(len) = get("content-length").and_then(|l| l.parse::<u64>().ok()) {
            Framing::Length(len)
        } else {
            Framing::Close
        };
        Self { inner, framing }
    }

    fn line(&mut self) -> std::io::Result<Vec<u8>> {
        let mut line = Vec::new();
        self.inner
            .by_ref()
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\n") {
            return Err(bad_data("truncated or overlong chunk line"));
        }
        Ok(line)
    }

    /// Reads the next chunk-size line (after the previous chunk's CRLF); 0 ends the body.
    fn next_chunk(&mut self, first: bool) -> std::io::Result<u64> {
        if !first && self.line()?.trim_ascii() != b"" {
            return Err(bad_data("missing CRLF after chunk data"));
        }
        let line = self.line()?;
        let text = std::str::from_utf8(&line).map_err(|_| bad_data("non-ASCII chunk size"))?;
        let size = text.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16).map_err(|_| bad_data("bad chunk size"))?;
        if size == 0 {
            // Trailer section: skip fields up to the empty line.
            while self.line()?.trim_ascii() != b"" {}
        }
        Ok(size)
    }
}

pub(super) fn bad_data(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

impl<R: BufRead> Read for Body<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.framing {
                Framing::Done => return Ok(0),
                Framing::Close => return self.inner.read(out),
                Framing::Length(0) => self.framing = Framing::Done,
                Framing::Length(left) => {
                    let cap = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut out[..cap])?;
                    if n == 0 && cap > 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    self.framing = Framing::Length(left - n as u64);
                    return Ok(n);
                }
                Framing::Chunked { left: 0, first } => {
                    self.framing = match self.next_chunk(first)? {
                        0 => Framing::Done,
                        size => Framing::Chunked {
                            left: size,
                            first: false,
                        },
                    };
                }
                Framing::Chunked { left, first } => {
                    let cap = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut out[..cap])?;
                    if n == 0 && cap > 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    self.framing = Framing::Chunked {
                        left: left - n as u64,
                        first,
                    };
                    return Ok(n);
                }
            }
        }
    }
}
