//! An HTTP/2 request's header list checked against RFC 9113 §8.2–§8.3 and handed to the
//! HTTP/1.1 phases as a [`Head`] without copying: pseudo-header fields first, each once, the
//! ones a request needs present (`:method`, and `:scheme` with a non-empty `:path` unless it is
//! a CONNECT); no connection-specific fields; `te` only as `trailers`; `host` equal to
//! `:authority` when both are sent. A failure is a malformed request: a stream error
//! PROTOCOL_ERROR (§8.1.1), never a connection error.
//!
//! Pure.

use std::ops::Range;

use super::hpack::HeaderList;
use crate::proxy::h1::Head;

/// A request's pseudo-header fields, as ranges into [`HeaderList::bytes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pseudo {
    pub method: Range<usize>,
    pub scheme: Option<Range<usize>>,
    pub authority: Option<Range<usize>>,
    pub path: Option<Range<usize>>,
    /// How many fields of the list are pseudo-header fields (they come first).
    pub count: usize,
}

/// Checks a decoded request list (§8.3.1, §8.2.2).
pub fn check_request(list: &HeaderList) -> Result<Pseudo, &'static str> {
    let mut method = None;
    let mut p = Pseudo::default();
    for (i, f) in list.fields.iter().enumerate() {
        let name = &list.bytes[f.name.clone()];
        if name.first() != Some(&b':') {
            break;
        }
        p.count = i + 1;
        let slot = match name {
            b":method" => &mut method,
            b":scheme" => &mut p.scheme,
            b":authority" => &mut p.authority,
            b":path" => &mut p.path,
            // :status is a response field; :protocol needs SETTINGS_ENABLE_CONNECT_PROTOCOL,
            // which we do not send.
            _ => return Err("unknown or response pseudo-header field"),
        };
        if slot.replace(f.value.clone()).is_some() {
            return Err("pseudo-header field repeated");
        }
    }
    let mut host = None;
    for f in &list.fields[p.count..] {
        let (name, value) = (&list.bytes[f.name.clone()], &list.bytes[f.value.clone()]);
        match name {
            [b':', ..] => return Err("pseudo-header field after a regular field"),
            b"connection" | b"proxy-connection" | b"keep-alive" | b"transfer-encoding"
            | b"upgrade" => return Err("connection-specific header field"),
            b"te" if value != b"trailers" => return Err("te other than trailers"),
            b"host" => host = Some(value),
            _ => {}
        }
    }
    p.method = method.ok_or("no :method")?;
    let bytes = &list.bytes;
    if bytes[p.method.clone()] == *b"CONNECT" {
        if p.scheme.is_some() || p.path.is_some() || p.authority.is_none() {
            return Err("CONNECT needs :authority and no :scheme or :path");
        }
    } else {
        if p.scheme.is_none() {
            return Err("no :scheme");
        }
        if p.path.as_ref().is_none_or(|r| r.is_empty()) {
            return Err("no :path, or an empty one");
        }
    }
    if let (Some(a), Some(h)) = (&p.authority, host) {
        if bytes[a.clone()] != *h {
            return Err("host differs from :authority");
        }
    }
    Ok(p)
}

/// Moves a checked request list into `head` (buffers are swapped, not copied); `list` is left
/// with `head`'s old buffer, cleared, ready for the next block.
pub fn into_head(list: &mut HeaderList, p: &Pseudo, head: &mut Head) {
    let fields = list.fields[p.count..]
        .iter()
        .map(|f| (f.name.clone(), f.value.clone()));
    let path = p.path.clone().unwrap_or(0..0);
    head.set_h2_request(
        &mut list.bytes,
        p.method.clone(),
        path,
        p.authority.clone(),
        fields,
    );
    list.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::h2n::hpack::{Decoder, Encoder};

    fn list(fields: &[(&str, &str)]) -> HeaderList {
        let mut e = Encoder::default();
        let mut block = Vec::new();
        for (n, v) in fields {
            e.field(n.as_bytes(), v.as_bytes(), false, &mut block);
        }
        let mut out = HeaderList::default();
        Decoder::new(4096, 64 << 10)
            .decode(&block, &mut out)
            .expect("decodes");
        out
    }

    const PAID: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/paid/resource?q=1"),
        (":authority", "api.example.com"),
        ("authorization", "L402 mac:preimage"),
        ("accept", "*/*"),
    ];

    #[test]
    fn a_paid_request_becomes_a_head_the_h1_phases_read() {
        let mut l = list(PAID);
        let p = check_request(&l).expect("valid");
        let mut head = Head::default();
        into_head(&mut l, &p, &mut head);
        assert_eq!(head.method(), b"GET");
        assert_eq!(head.target(), b"/paid/resource?q=1");
        assert_eq!(head.path(), b"/paid/resource");
        assert_eq!(head.host(), Some(&b"api.example.com"[..]));
        assert_eq!(head.get("Authorization"), Some(&b"L402 mac:preimage"[..]));
        assert_eq!(head.fields().count(), 2);
        assert!(l.fields.is_empty() && l.bytes.is_empty());
        // Without :authority the host field is the host.
        let mut l = list(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            ("host", "h.example"),
        ]);
        let p = check_request(&l).expect("valid");
        into_head(&mut l, &p, &mut head);
        assert_eq!(head.host(), Some(&b"h.example"[..]));
    }

    #[test]
    fn malformed_requests_are_refused() {
        let cases: &[&[(&str, &str)]] = &[
            &[(":scheme", "http"), (":path", "/")],
            &[(":method", "GET"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "http")],
            &[(":method", "GET"), (":scheme", "http"), (":path", "")],
            &[
                (":method", "GET"),
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":status", "200"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":protocol", "websocket"),
            ],
            &[
                (":method", "GET"),
                ("accept", "*/*"),
                (":scheme", "http"),
                (":path", "/"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("connection", "close"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("transfer-encoding", "chunked"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("upgrade", "h2c"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("keep-alive", "5"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("te", "gzip"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "a"),
                ("host", "b"),
            ],
            &[
                (":method", "CONNECT"),
                (":authority", "a:443"),
                (":path", "/"),
            ],
            &[(":method", "CONNECT")],
        ];
        for c in cases {
            assert!(check_request(&list(c)).is_err(), "{c:?}");
        }
        let ok: &[&[(&str, &str)]] = &[
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/svc/M"),
                ("te", "trailers"),
            ],
            &[(":method", "CONNECT"), (":authority", "a:443")],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "a"),
                ("host", "a"),
            ],
        ];
        for c in ok {
            assert!(check_request(&list(c)).is_ok(), "{c:?}");
        }
    }
}
