//! HTTP/2 frames (RFC 9113 §4, §6) for the native server: parsed in place from the
//! connection's read buffer into borrowed views, and written into a `Vec<u8>` write buffer.
//!
//! Owns: the 9-byte frame header, the ten frame types' layouts (padding, priority fields,
//! SETTINGS parameters and their ranges, WINDOW_UPDATE increments), the frame size limit, and
//! which violation is a connection error and which a stream error, with its error code. Must
//! not do I/O or keep state across frames: sequencing (CONTINUATION runs, stream states, flow
//! control windows, floods) belongs to the connection layer (`super::dispatch`).

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The frame header's length.
pub const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value and lower bound.
pub const MIN_MAX_FRAME_SIZE: u32 = 16_384;
/// SETTINGS_MAX_FRAME_SIZE's upper bound (2^24 - 1).
pub const MAX_MAX_FRAME_SIZE: u32 = 16_777_215;
/// The largest flow-control window (2^31 - 1).
pub const MAX_WINDOW: u32 = 0x7fff_ffff;

/// Frame type codes (RFC 9113 §6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Flag bits (RFC 9113 §6).
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS parameter identifiers (RFC 9113 §6.5.2, RFC 8441 §3).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// Error codes (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    NoError = 0x0,
    ProtocolError = 0x1,
    InternalError = 0x2,
    FlowControlError = 0x3,
    SettingsTimeout = 0x4,
    StreamClosed = 0x5,
    FrameSizeError = 0x6,
    RefusedStream = 0x7,
    Cancel = 0x8,
    CompressionError = 0x9,
    ConnectError = 0xa,
    EnhanceYourCalm = 0xb,
    InadequateSecurity = 0xc,
    Http11Required = 0xd,
}

/// A protocol violation and its scope (RFC 9113 §5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum H2Error {
    /// GOAWAY with this code, then close.
    #[error("connection error {0:?}: {1}")]
    Connection(ErrorCode, &'static str),
    /// RST_STREAM on this stream with this code; the connection goes on.
    #[error("stream {0} error {1:?}: {2}")]
    Stream(u32, ErrorCode, &'static str),
}

impl H2Error {
    /// The error code either scope carries.
    pub fn code(&self) -> ErrorCode {
        match *self {
            H2Error::Connection(c, _) | H2Error::Stream(_, c, _) => c,
        }
    }
}

fn conn(code: ErrorCode, why: &'static str) -> H2Error {
    H2Error::Connection(code, why)
}

/// The 9-byte frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// The stream identifier, reserved bit cleared (RFC 9113 §4.1: ignored on receipt).
    pub stream: u32,
}

impl Header {
    /// Reads a frame header; `None` when fewer than 9 bytes are buffered.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }

    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// A stream dependency (RFC 9113 §5.3.2; deprecated, parsed and otherwise ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    pub exclusive: bool,
    pub depends_on: u32,
    pub weight: u8,
}

/// One SETTINGS parameter already checked against its range.
pub type Setting = (u16, u32);

/// SETTINGS parameters, in order, validated when the frame was parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings<'a>(&'a [u8]);

impl<'a> Settings<'a> {
    /// The parameters in frame order (a later value of the same one wins, §6.5.3).
    pub fn iter(&self) -> impl Iterator<Item = Setting> + 'a {
        self.0.chunks_exact(6).map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
            )
        })
    }
}

/// A parsed frame borrowing its payload from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    Data {
        stream: u32,
        data: &'a [u8],
        end_stream: bool,
        /// The whole payload length, padding included: what flow control counts (§6.9).
        flow_len: u32,
    },
    Headers {
        stream: u32,
        block: &'a [u8],
        end_stream: bool,
        end_headers: bool,
        priority: Option<Priority>,
    },
    Priority {
        stream: u32,
        priority: Priority,
    },
    RstStream {
        stream: u32,
        code: u32,
    },
    Settings {
        ack: bool,
        params: Settings<'a>,
    },
    PushPromise {
        stream: u32,
        promised: u32,
        block: &'a [u8],
        end_headers: bool,
    },
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        code: u32,
        debug: &'a [u8],
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        block: &'a [u8],
        end_headers: bool,
    },
    /// A type this endpoint does not know: ignored (§4.1, §5.5), but still a frame.
    Unknown {
        kind: u8,
        stream: u32,
    },
}

/// Parses the frame at the start of `buf`: `Ok(None)` when more bytes are needed, else the frame
/// and how many bytes it took. `max_frame_size` is our SETTINGS_MAX_FRAME_SIZE; a larger frame is
/// a connection error before its payload is even buffered, so an attacker cannot make us hold
/// more than one frame's worth.
pub fn parse(buf: &[u8], max_frame_size: u32) -> Result<Option<(Frame<'_>, usize)>, H2Error> {
    let Some(h) = Header::parse(buf) else {
        return Ok(None);
    };
    if h.len > max_frame_size {
        // §4.2: treated as a connection error whatever the type (we never read past it).
        return Err(conn(
            ErrorCode::FrameSizeError,
            "frame larger than SETTINGS_MAX_FRAME_SIZE",
        ));
    }
    let total = HEADER_LEN + h.len as usize;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Ok(None);
    };
    let frame = parse_payload(h, payload)?;
    Ok(Some((frame, total)))
}

/// Parses a payload whose header was read already.
pub fn parse_payload(h: Header, p: &[u8]) -> Result<Frame<'_>, H2Error> {
    use ErrorCode::{FrameSizeError, ProtocolError};
    let on_stream = |what| {
        if h.stream == 0 {
            Err(conn(ProtocolError, what))
        } else {
            Ok(h.stream)
        }
    };
    let on_conn = |what| {
        if h.stream != 0 {
            Err(conn(ProtocolError, what))
        } else {
            Ok(())
        }
    };
    let exact = |n: usize, what| {
        if p.len() != n {
            Err(conn(FrameSizeError, what))
        } else {
            Ok(())
        }
    };
    Ok(match h.kind {
        kind::DATA => {
            let stream = on_stream("DATA on stream 0")?;
            Frame::Data {
                stream,
                data: unpad(h, p)?,
                end_stream: h.has(flag::END_STREAM),
                flow_len: h.len,
            }
        }
        kind::HEADERS => {
            let stream = on_stream("HEADERS on stream 0")?;
            let mut rest = unpad(h, p)?;
            let mut priority = None;
            if h.has(flag::PRIORITY) {
                let (pri, block) = split_priority(stream, rest)?;
                priority = Some(pri);
                rest = block;
            }
            Frame::Headers {
                stream,
                block: rest,
                end_stream: h.has(flag::END_STREAM),
                end_headers: h.has(flag::END_HEADERS),
                priority,
            }
        }
        kind::PRIORITY => {
            let stream = on_stream("PRIORITY on stream 0")?;
            if p.len() != 5 {
                // §6.3: a stream error, the frame does not touch the connection.
                return Err(H2Error::Stream(
                    stream,
                    FrameSizeError,
                    "PRIORITY not 5 bytes",
                ));
            }
            let (priority, _) = split_priority(stream, p)?;
            Frame::Priority { stream, priority }
        }
        kind::RST_STREAM => {
            let stream = on_stream("RST_STREAM on stream 0")?;
            exact(4, "RST_STREAM not 4 bytes")?;
            Frame::RstStream {
                stream,
                code: be32(p),
            }
        }
        kind::SETTINGS => {
            on_conn("SETTINGS on a stream")?;
            let ack = h.has(flag::ACK);
            if ack && !p.is_empty() {
                return Err(conn(FrameSizeError, "SETTINGS ACK with a payload"));
            }
            if p.len() % 6 != 0 {
                return Err(conn(FrameSizeError, "SETTINGS not a multiple of 6 bytes"));
            }
            let params = Settings(p);
            params.iter().try_for_each(check_setting)?;
            Frame::Settings { ack, params }
        }
        kind::PUSH_PROMISE => {
            let stream = on_stream("PUSH_PROMISE on stream 0")?;
            let rest = unpad(h, p)?;
            if rest.len() < 4 {
                return Err(conn(FrameSizeError, "PUSH_PROMISE shorter than 4 bytes"));
            }
            Frame::PushPromise {
                stream,
                promised: be32(rest) & 0x7fff_ffff,
                block: &rest[4..],
                end_headers: h.has(flag::END_HEADERS),
            }
        }
        kind::PING => {
            on_conn("PING on a stream")?;
            exact(8, "PING not 8 bytes")?;
            let mut data = [0; 8];
            data.copy_from_slice(p);
            Frame::Ping {
                ack: h.has(flag::ACK),
                data,
            }
        }
        kind::GOAWAY => {
            on_conn("GOAWAY on a stream")?;
            if p.len() < 8 {
                return Err(conn(FrameSizeError, "GOAWAY shorter than 8 bytes"));
            }
            Frame::GoAway {
                last_stream: be32(p) & 0x7fff_ffff,
                code: be32(&p[4..]),
                debug: &p[8..],
            }
        }
        kind::WINDOW_UPDATE => {
            exact(4, "WINDOW_UPDATE not 4 bytes")?;
            let increment = be32(p) & 0x7fff_ffff;
            if increment == 0 {
                // §6.9: a stream error on a stream, a connection error on the connection.
                let why = "WINDOW_UPDATE of 0";
                return Err(match h.stream {
                    0 => conn(ProtocolError, why),
                    s => H2Error::Stream(s, ProtocolError, why),
                });
            }
            Frame::WindowUpdate {
                stream: h.stream,
                increment,
            }
        }
        kind::CONTINUATION => Frame::Continuation {
            stream: on_stream("CONTINUATION on stream 0")?,
            block: p,
            end_headers: h.has(flag::END_HEADERS),
        },
        other => Frame::Unknown {
            kind: other,
            stream: h.stream,
        },
    })
}

fn be32(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[0], p[1], p[2], p[3]])
}

/// Strips the Pad Length byte and padding of a PADDED frame (§6.1): padding as long as the
/// payload or longer is a connection PROTOCOL_ERROR.
fn unpad(h: Header, p: &[u8]) -> Result<&[u8], H2Error> {
    if !h.has(flag::PADDED) {
        return Ok(p);
    }
    let (&pad, rest) = p.split_first().ok_or(conn(
        ErrorCode::FrameSizeError,
        "PADDED frame without a pad length",
    ))?;
    rest.len()
        .checked_sub(pad as usize)
        .map(|end| &rest[..end])
        .ok_or(conn(
            ErrorCode::ProtocolError,
            "padding longer than the payload",
        ))
}

/// Splits the 5 priority bytes off; a stream that depends on itself is a stream error
/// (§5.3.1).
fn split_priority(stream: u32, p: &[u8]) -> Result<(Priority, &[u8]), H2Error> {
    if p.len() < 5 {
        return Err(conn(ErrorCode::FrameSizeError, "priority fields truncated"));
    }
    let dep = be32(p);
    let priority = Priority {
        exclusive: dep & 0x8000_0000 != 0,
        depends_on: dep & 0x7fff_ffff,
        weight: p[4],
    };
    if priority.depends_on == stream {
        return Err(H2Error::Stream(
            stream,
            ErrorCode::ProtocolError,
            "stream depends on itself",
        ));
    }
    Ok((priority, &p[5..]))
}

/// A SETTINGS value outside its range (§6.5.2) is a connection error; unknown ids are ignored.
fn check_setting((id, value): Setting) -> Result<(), H2Error> {
    use ErrorCode::{FlowControlError, ProtocolError};
    match id {
        setting::ENABLE_PUSH | setting::ENABLE_CONNECT_PROTOCOL if value > 1 => {
            Err(conn(ProtocolError, "boolean setting not 0 or 1"))
        }
        setting::INITIAL_WINDOW_SIZE if value > MAX_WINDOW => Err(conn(
            FlowControlError,
            "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
        )),
        setting::MAX_FRAME_SIZE if !(MIN_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) => {
            Err(conn(ProtocolError, "SETTINGS_MAX_FRAME_SIZE out of range"))
        }
        _ => Ok(()),
    }
}

// ---------- writing ----------

/// Appends a frame header.
pub fn write_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_MAX_FRAME_SIZE as usize);
    let l = (len as u32).to_be_bytes();
    out.extend_from_slice(&[l[1], l[2], l[3], kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// Appends DATA frames carrying `data`, split at `max_frame_size` (the peer's setting);
/// END_STREAM goes on the last one. Empty `data` makes one empty frame.
pub fn write_data(out: &mut Vec<u8>, stream: u32, data: &[u8], end_stream: bool, max: u32) {
    let mut chunks = data.chunks(max.max(1) as usize).peekable();
    if chunks.peek().is_none() {
        let f = if end_stream { flag::END_STREAM } else { 0 };
        write_header(out, 0, kind::DATA, f, stream);
        return;
    }
    while let Some(c) = chunks.next() {
        let last = chunks.peek().is_none();
        let f = if last && end_stream {
            flag::END_STREAM
        } else {
            0
        };
        write_header(out, c.len(), kind::DATA, f, stream);
        out.extend_from_slice(c);
    }
}

/// Appends a HEADERS frame with `block`, and CONTINUATION frames for what does not fit in
/// `max_frame_size` (the peer's setting); END_HEADERS goes on the last.
pub fn write_headers(out: &mut Vec<u8>, stream: u32, block: &[u8], end_stream: bool, max: u32) {
    let max = max.max(1) as usize;
    let first = &block[..block.len().min(max)];
    let mut rest = &block[first.len()..];
    let mut f = if end_stream { flag::END_STREAM } else { 0 };
    if rest.is_empty() {
        f |= flag::END_HEADERS;
    }
    write_header(out, first.len(), kind::HEADERS, f, stream);
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let c = &rest[..rest.len().min(max)];
        rest = &rest[c.len()..];
        let f = if rest.is_empty() {
            flag::END_HEADERS
        } else {
            0
        };
        write_header(out, c.len(), kind::CONTINUATION, f, stream);
        out.extend_from_slice(c);
    }
}

/// Appends a SETTINGS frame with `params`.
pub fn write_settings(out: &mut Vec<u8>, params: &[Setting]) {
    write_header(out, params.len() * 6, kind::SETTINGS, 0, 0);
    for &(id, v) in params {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Appends a SETTINGS acknowledgement.
pub fn write_settings_ack(out: &mut Vec<u8>) {
    write_header(out, 0, kind::SETTINGS, flag::ACK, 0);
}

/// Appends a PING (or its ACK, echoing `data`).
pub fn write_ping(out: &mut Vec<u8>, ack: bool, data: [u8; 8]) {
    write_header(out, 8, kind::PING, if ack { flag::ACK } else { 0 }, 0);
    out.extend_from_slice(&data);
}

/// Appends a GOAWAY.
pub fn write_goaway(out: &mut Vec<u8>, last_stream: u32, code: ErrorCode, debug: &[u8]) {
    write_header(out, 8 + debug.len(), kind::GOAWAY, 0, 0);
    out.extend_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(&(code as u32).to_be_bytes());
    out.extend_from_slice(debug);
}

/// Appends an RST_STREAM.
pub fn write_rst_stream(out: &mut Vec<u8>, stream: u32, code: ErrorCode) {
    write_header(out, 4, kind::RST_STREAM, 0, stream);
    out.extend_from_slice(&(code as u32).to_be_bytes());
}

/// Appends a WINDOW_UPDATE (`increment` 1..=2^31-1).
pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    debug_assert!((1..=MAX_WINDOW).contains(&increment));
    write_header(out, 4, kind::WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&(increment & MAX_WINDOW).to_be_bytes());
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
