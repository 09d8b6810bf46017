//! HTTP/1.1 framing for the data path: request and response heads (parsed with `httparse` into a
//! copy the handler can keep while the body streams), body framing rules (RFC 9112 §6) and a
//! chunked-encoding scanner that finds where a message ends so chunked bodies pass through
//! verbatim, without decoding and re-encoding. No I/O here.

use std::ops::Range;

/// Most header fields a head may carry before it is refused (431).
pub const MAX_HEADERS: usize = 128;

/// Errors in a request or response head or body framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("malformed HTTP head")]
    Malformed,
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("invalid Content-Length")]
    BadContentLength,
    #[error("both Transfer-Encoding and Content-Length")]
    Smuggling,
    #[error("unsupported Transfer-Encoding")]
    BadTransferEncoding,
    #[error("malformed chunked encoding")]
    BadChunk,
    #[error("unsupported HTTP version")]
    Version,
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`, passed through verbatim.
    Chunked,
    /// Until the peer closes (responses only).
    Close,
}

/// A parsed head: its bytes copied out of the connection buffer, fields as ranges into them.
#[derive(Debug, Default)]
pub struct Head {
    bytes: Vec<u8>,
    method: Range<usize>,
    target: Range<usize>,
    /// The authority of an absolute-form target (RFC 9112 §3.2.2: it wins over `Host`).
    authority: Option<Range<usize>>,
    reason: Range<usize>,
    /// Response status (0 for requests).
    pub status: u16,
    /// HTTP/1.x minor version.
    pub minor: u8,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

/// Outcome of trying to parse a head from buffered bytes.
pub enum Parse {
    /// A whole head of this many bytes was parsed.
    Complete(usize),
    /// More bytes are needed.
    Partial,
}

fn range_in(base: &[u8], part: &[u8]) -> Range<usize> {
    // Pointer arithmetic on two slices of the same buffer: httparse returns sub-slices of the
    // input it was given, except for empty parts, which may be a static `""` elsewhere (a
    // status line without a reason phrase). Anything outside `base` is the empty range.
    if part.is_empty() {
        return 0..0;
    }
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    debug_assert!(start + part.len() <= base.len());
    start..start + part.len()
}

/// Where the authority of an absolute-form request target (`http://host/path`) ends inside
/// `target`, and where the host starts: `None` for origin-form.
fn absolute_form(target: &[u8]) -> Option<(usize, usize)> {
    let scheme = if target.len() >= 7 && target[..7].eq_ignore_ascii_case(b"http://") {
        7
    } else if target.len() >= 8 && target[..8].eq_ignore_ascii_case(b"https://") {
        8
    } else {
        return None;
    };
    let end = target[scheme..]
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .map_or(target.len(), |i| scheme + i);
    Some((scheme, end))
}

impl Head {
    /// Parses a request head from `data` into `self`, reusing its allocations.
    pub fn parse_request(&mut self, data: &[u8]) -> Result<Parse, FrameError> {
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut storage);
        let n = match req.parse(data) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(Parse::Partial),
            Err(httparse::Error::TooManyHeaders) => return Err(FrameError::TooManyHeaders),
            Err(httparse::Error::Version) => return Err(FrameError::Version),
            Err(_) => return Err(FrameError::Malformed),
        };
        let (method, target) = match (req.method, req.path) {
            (Some(m), Some(p)) => (range_in(data, m.as_bytes()), range_in(data, p.as_bytes())),
            _ => return Err(FrameError::Malformed),
        };
        self.method = method;
        self.target = target;
        self.authority = None;
        self.reason = 0..0;
        self.status = 0;
        self.minor = req.version.unwrap_or(1);
        self.store(data, n, req.headers);
        self.split_absolute_form();
        Ok(Parse::Complete(n))
    }

    /// A request head from a decoded HTTP/2 header list (src/proxy/h2n), taking over `bytes`
    /// by swapping buffers (the caller gets this head's old buffer back to decode the next
    /// block into), so nothing is copied. `authority` plays the part of an absolute-form
    /// target's authority. Every name range must be a lowercase RFC 9110 token, which HPACK
    /// decoding checked and [`Head::fields`] relies on; [`Head::raw`] is then not an HTTP/1.1
    /// head.
    pub fn set_h2_request(
        &mut self,
        bytes: &mut Vec<u8>,
        method: Range<usize>,
        path: Range<usize>,
        authority: Option<Range<usize>>,
        fields: impl IntoIterator<Item = (Range<usize>, Range<usize>)>,
    ) {
        std::mem::swap(&mut self.bytes, bytes);
        self.method = method;
        self.target = path;
        self.authority = authority;
        self.reason = 0..0;
        self.status = 0;
        self.minor = 1;
        self.fields.clear();
        self.fields.extend(fields);
    }

    /// Parses a response head from `data` into `self`.
    pub fn parse_response(&mut self, data: &[u8]) -> Result<Parse, FrameError> {
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut storage);
        let n = match res.parse(data) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(Parse::Partial),
            Err(httparse::Error::TooManyHeaders) => return Err(FrameError::TooManyHeaders),
            Err(_) => return Err(FrameError::Malformed),
        };
        self.status = res.code.ok_or(FrameError::Malformed)?;
        self.reason = res
            .reason
            .map(|r| range_in(data, r.as_bytes()))
            .unwrap_or(0..0);
        self.method = 0..0;
        self.target = 0..0;
        self.authority = None;
        self.minor = res.version.unwrap_or(1);
        self.store(data, n, res.headers);
        Ok(Parse::Complete(n))
    }

    fn store(&mut self, data: &[u8], n: usize, headers: &[httparse::Header<'_>]) {
        self.fields.clear();
        self.fields.reserve(headers.len());
        for h in headers.iter() {
            self.fields
                .push((range_in(data, h.name.as_bytes()), range_in(data, h.value)));
        }
        self.bytes.clear();
        self.bytes.extend_from_slice(&data[..n]);
    }

    /// An absolute-form target becomes its authority plus an origin-form target (`/` when the
    /// path is empty), so routing, caveats and the upstream request line see one shape.
    fn split_absolute_form(&mut self) {
        let Some((host_at, end)) = absolute_form(&self.bytes[self.target.clone()]) else {
            return;
        };
        let start = self.target.start;
        self.authority = Some(start + host_at..start + end);
        let rest = start + end..self.target.end;
        if self.bytes[rest.clone()].first() == Some(&b'/') {
            self.target = rest;
        } else {
            // `http://host` or `http://host?q`: the origin form needs a leading `/`, appended
            // behind the head's bytes (nothing reads them as a whole head again).
            let at = self.bytes.len();
            self.bytes.push(b'/');
            self.bytes.extend_from_within(rest);
            self.target = at..self.bytes.len();
        }
    }

    /// The request's host: the authority of an absolute-form target, else the `Host` field.
    pub fn host(&self) -> Option<&[u8]> {
        match &self.authority {
            Some(a) => Some(&self.bytes[a.clone()]),
            None => self.get("host"),
        }
    }

    /// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host` field, and no request
    /// carries two. False means the request gets 400.
    pub fn host_field_ok(&self) -> bool {
        let mut hosts = self
            .fields
            .iter()
            .filter(|(n, _)| self.bytes[n.clone()].eq_ignore_ascii_case(b"host"));
        match (hosts.next(), hosts.next()) {
            (_, Some(_)) => false,
            (None, None) => self.minor == 0,
            (Some(_), None) => true,
        }
    }

    /// The request method.
    pub fn method(&self) -> &[u8] {
        &self.bytes[self.method.clone()]
    }

    /// The request target (path and query).
    pub fn target(&self) -> &[u8] {
        &self.bytes[self.target.clone()]
    }

    /// The path of the request target, without the query.
    pub fn path(&self) -> &[u8] {
        let t = self.target();
        let end = t.iter().position(|&b| b == b'?').unwrap_or(t.len());
        &t[..end]
    }

    /// The response reason phrase.
    pub fn reason(&self) -> &[u8] {
        &self.bytes[self.reason.clone()]
    }

    /// The head's bytes as parsed: every slice [`Head::fields`] yields lies inside them.
    pub fn raw(&self) -> &[u8] {
        &self.bytes
    }

    /// All header fields, in order, as (name, value).
    pub fn fields(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields.iter().map(|(n, v)| {
            let name = &self.bytes[n.clone()];
            debug_assert!(name.is_ascii());
            // SAFETY: httparse accepts only RFC 9110 token characters in field names (all ASCII,
            // so valid UTF-8), and these bytes are a copy of what it parsed. Re-validating every
            // name on every scan was the largest single cost per request (callgrind).
            let name = unsafe { std::str::from_utf8_unchecked(name) };
            (name, &self.bytes[v.clone()])
        })
    }

    /// The first value of a header field (name compared case-insensitively).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether any `Connection` field lists `token`.
    pub fn connection_has(&self, token: &str) -> bool {
        self.fields()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .any(|(_, v)| list_contains(v, token))
    }

    /// Whether a `Connection` field names other fields to drop (anything but `keep-alive` and
    /// `close`): the usual answer is no, which spares a scan per forwarded field.
    pub fn connection_names_fields(&self) -> bool {
        self.fields()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(|&b| b == b','))
            .map(trim)
            .any(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case(b"keep-alive")
                    && !t.eq_ignore_ascii_case(b"close")
            })
    }

    /// Whether the connection stays open after this message (RFC 9112 §9.3).
    pub fn keep_alive(&self) -> bool {
        if self.minor == 0 {
            self.connection_has("keep-alive")
        } else {
            !self.connection_has("close")
        }
    }

    /// Request body framing (RFC 9112 §6.3); both TE and CL is refused as smuggling.
    pub fn request_framing(&self) -> Result<Framing, FrameError> {
        match self.body_framing()? {
            Framing::Close => Err(FrameError::BadTransferEncoding),
            f => Ok(f),
        }
    }

    /// Response body framing for a response to `method`.
    pub fn response_framing(&self, method: &[u8]) -> Result<Framing, FrameError> {
        if method == b"HEAD" || matches!(self.status, 100..=199 | 204 | 304) {
            return Ok(Framing::Length(0));
        }
        self.body_framing()
    }

    fn body_framing(&self) -> Result<Framing, FrameError> {
        let mut length: Option<u64> = None;
        let mut te: Option<bool> = None;
        for (name, value) in self.fields() {
            if name.eq_ignore_ascii_case("content-length") {
                let n = parse_content_length(value)?;
                if length.is_some_and(|l| l != n) {
                    return Err(FrameError::BadContentLength);
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Only the last coding matters: it must be chunked for the length to be known.
                let last = value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                te = Some(trim(last).eq_ignore_ascii_case(b"chunked"));
            }
        }
        match (te, length) {
            (Some(_), Some(_)) => Err(FrameError::Smuggling),
            (Some(true), None) => Ok(Framing::Chunked),
            (Some(false), None) => Ok(Framing::Close),
            (None, Some(n)) => Ok(Framing::Length(n)),
            (None, None) if self.status == 0 => Ok(Framing::Length(0)),
            (None, None) => Ok(Framing::Close),
        }
    }
}

fn parse_content_length(v: &[u8]) -> Result<u64, FrameError> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(FrameError::BadContentLength);
    }
    v.iter()
        .try_fold(0u64, |acc, &d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(FrameError::BadContentLength)
}

/// Trims optional whitespace (SP, HTAB) from both ends.
pub fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => &v[s..=e],
        _ => &[],
    }
}

/// Whether a comma-separated list contains `token` (case-insensitive).
pub fn list_contains(v: &[u8], token: &str) -> bool {
    v.split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
}

/// Hop-by-hop fields (RFC 9110 §7.6.1 plus the legacy ones Go's ReverseProxy removes).
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "transfer-encoding",
        "upgrade",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size {
        digits: u8,
    },
    /// Whitespace after the size, before a `;` (BWS).
    SizeWs,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte of a field value or chunk extension: VCHAR, obs-text, SP or HTAB; never CR, LF, NUL
/// or another control character.
fn is_value_byte(b: u8) -> bool {
    b == b' ' || b == b'\t' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Follows a chunked body byte by byte (data runs are skipped whole) to find its end.
#[derive(Debug, Clone)]
pub struct ChunkScanner {
    state: ChunkState,
    size: u64,
}

impl Default for ChunkScanner {
    fn default() -> Self {
        Self {
            state: ChunkState::Size { digits: 0 },
            size: 0,
        }
    }
}

impl ChunkScanner {
    /// Whether the final chunk and trailers have been seen.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Feeds bytes; returns how many belong to the body (fewer than `data.len()` only when the
    /// body ended inside `data`).
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, FrameError> {
        let mut i = 0;
        while i < data.len() && !self.done() {
            if self.state == ChunkState::Data {
                let take = self.size.min((data.len() - i) as u64) as usize;
                self.size -= take as u64;
                i += take;
                if self.size == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            self.step(data[i])?;
            i += 1;
        }
        Ok(i)
    }

    /// [`Self::feed`] that also names each run of chunk data (the decoded body) to `on_data`, as
    /// a range of `data`: for the metered response tail, which holds the body, not its framing.
    pub fn feed_observed(
        &mut self,
        data: &[u8],
        mut on_data: impl FnMut(std::ops::Range<usize>),
    ) -> Result<usize, FrameError> {
        let mut i = 0;
        while i < data.len() && !self.done() {
            if self.state == ChunkState::Data {
                let take = self.size.min((data.len() - i) as u64) as usize;
                on_data(i..i + take);
                self.size -= take as u64;
                i += take;
                if self.size == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            self.step(data[i])?;
            i += 1;
        }
        Ok(i)
    }

    /// One byte of framing. Only CRLF ends a line: a bare LF or CR, a control character or a
    /// malformed trailer field is an error, so no origin can end the body anywhere else than
    /// where this scanner does (an origin that accepts a bare LF as a line end would otherwise
    /// read the bytes after it as a request the proxy never authenticated).
    fn step(&mut self, b: u8) -> Result<(), FrameError> {
        use ChunkState::*;
        self.state = match (self.state, b) {
            (Size { digits }, b) if b.is_ascii_hexdigit() => {
                if digits >= 15 {
                    return Err(FrameError::BadChunk);
                }
                let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                self.size = self.size * 16 + d;
                Size { digits: digits + 1 }
            }
            (Size { digits }, b' ' | b'\t') if digits > 0 => SizeWs,
            (Size { digits }, b';') if digits > 0 => Ext,
            (Size { digits }, b'\r') if digits > 0 => SizeLf,
            (SizeWs, b' ' | b'\t') => SizeWs,
            (SizeWs, b';') => Ext,
            (Ext, b'\r') => SizeLf,
            (Ext, b) if is_value_byte(b) => Ext,
            (SizeLf, b'\n') if self.size == 0 => TrailerStart,
            (SizeLf, b'\n') => Data,
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size { digits: 0 },
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | TrailerName, b) if is_tchar(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, b) if is_value_byte(b) => TrailerValue,
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            _ => return Err(FrameError::BadChunk),
        };
        Ok(())
    }
}

/// Appends one `name: value` line of a head (HTTP/1.1 framing, CRLF included).
#[inline]
pub fn push_field(out: &mut Vec<u8>, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
    out.extend_from_slice(name.as_ref());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_ref());
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal. `write!` costs several hundred instructions per number through
/// `core::fmt`; heads carry a status and a length on every request.
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(decimal(n, &mut [0u8; 20]));
}

/// `n` in decimal, written into the end of `buf` (for callers with no `Vec` to append to).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Appends `ip` as `Display` writes it: IPv4 by hand (the `X-Forwarded-For` of every forwarded
/// request, about 950 instructions through `core::fmt`), IPv6 through `fmt` (its `::` rules).
pub fn push_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u64::from(octet));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn decimal_and_ip_writers_match_display() {
        for n in [0u64, 7, 10, 200, 402, 65_535, u64::MAX] {
            let mut out = Vec::new();
            super::push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
            assert_eq!(super::decimal(n, &mut [0u8; 20]), n.to_string().as_bytes());
        }
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.20.0.9",
            "::1",
            "2001:db8::7",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            super::push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().into_bytes());
        }
    }
    use super::*;

    fn req(s: &str) -> Head {
        let mut h = Head::default();
        match h.parse_request(s.as_bytes()).unwrap() {
            Parse::Complete(n) => assert_eq!(n, s.len()),
            Parse::Partial => panic!("partial"),
        }
        h
    }

    #[test]
    fn parses_request_fields_and_framing() {
        let h = req("POST /a/b?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.method(), b"POST");
        assert_eq!(h.path(), b"/a/b");
        assert_eq!(h.target(), b"/a/b?x=1");
        assert_eq!(h.get("host"), Some(&b"x"[..]));
        assert_eq!(h.request_framing(), Ok(Framing::Length(5)));
        assert!(h.keep_alive());
        let h = req("GET / HTTP/1.0\r\n\r\n");
        assert!(!h.keep_alive());
        assert_eq!(h.request_framing(), Ok(Framing::Length(0)));
    }

    #[test]
    fn refuses_smuggling_and_bad_lengths() {
        let h = req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.request_framing(), Err(FrameError::Smuggling));
        let h = req("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(h.request_framing(), Err(FrameError::BadContentLength));
        let h = req("POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n");
        assert_eq!(h.request_framing(), Err(FrameError::BadContentLength));
        let h = req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(h.request_framing(), Err(FrameError::BadTransferEncoding));
        let h = req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.request_framing(), Ok(Framing::Chunked));
    }

    #[test]
    fn response_framing_rules() {
        let mut h = Head::default();
        let s = b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n";
        assert!(matches!(h.parse_response(s), Ok(Parse::Complete(_))));
        assert_eq!(h.response_framing(b"GET"), Ok(Framing::Length(0)));
        let s = b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n";
        assert!(matches!(h.parse_response(s), Ok(Parse::Complete(_))));
        assert_eq!(h.response_framing(b"GET"), Ok(Framing::Close));
        assert_eq!(h.response_framing(b"HEAD"), Ok(Framing::Length(0)));
        assert_eq!(h.reason(), b"OK");
    }

    #[test]
    fn chunk_scanner_finds_the_end_in_any_split() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..body.len() {
            let mut s = ChunkScanner::default();
            let a = s.feed(&body[..split]).unwrap();
            assert_eq!(a, split.min(end));
            let b = s.feed(&body[split.min(end)..]).unwrap();
            assert_eq!(a + b, end, "split at {split}");
            assert!(s.done());
        }
    }

    #[test]
    fn chunk_scanner_takes_extensions_with_bws_and_trailers() {
        let body = b"5 ;a=\"b c\"\r\nhello\r\n0\r\nX-A: 1\r\nX-B:\t\r\n\r\n";
        let mut s = ChunkScanner::default();
        assert_eq!(s.feed(body), Ok(body.len()));
        assert!(s.done());
    }

    #[test]
    fn a_status_line_without_reason_phrase_parses() {
        // httparse hands back a static "" for the missing phrase (not a slice of the input).
        for line in [&b"HTTP/1.1 418\r\n\r\n"[..], b"HTTP/1.1 200 \r\n\r\n"] {
            let mut h = Head::default();
            assert!(matches!(h.parse_response(line), Ok(Parse::Complete(_))));
            assert_eq!(h.reason(), b"");
        }
    }

    #[test]
    fn host_rules() {
        assert!(req("GET / HTTP/1.1\r\nHost: a\r\n\r\n").host_field_ok());
        assert!(!req("GET / HTTP/1.1\r\n\r\n").host_field_ok());
        assert!(!req("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n").host_field_ok());
        assert!(req("GET / HTTP/1.0\r\n\r\n").host_field_ok());
        assert!(!req("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n").host_field_ok());
        let h = req("GET http://api.example.com:8080/paid?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(h.host(), Some(&b"api.example.com:8080"[..]));
        assert_eq!(h.target(), b"/paid?x=1");
        assert_eq!(h.path(), b"/paid");
        let h = req("GET HTTPS://api.example.com?x HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(h.host(), Some(&b"api.example.com"[..]));
        assert_eq!(h.target(), b"/?x");
        let h = req("GET /p HTTP/1.1\r\nHost: a.example\r\n\r\n");
        assert_eq!(h.host(), Some(&b"a.example"[..]));
    }

    #[test]
    fn chunk_scanner_rejects_garbage() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b"fffffffffffffffff\r\n",
            // A bare LF ending a trailer line: an origin that accepts it would end the body
            // here and read what follows as a second, unauthenticated request.
            b"0\r\nX: a\n\r\nGET /paid HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
            b"0\r\n\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"0\r\nno-colon\r\n\r\n",
            b"0\r\n: empty-name\r\n\r\n",
            b"0\r\nX: a\x00b\r\n\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
        ] {
            let mut s = ChunkScanner::default();
            assert!(s.feed(bad).is_err(), "{bad:?}");
        }
    }
}
