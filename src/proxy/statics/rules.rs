//! The pure rules of the static file server: a request path to a safe relative path (decoded
//! once, traversal refused), `Content-Type` by extension, entity tags, `If-None-Match`,
//! HTTP dates and single byte ranges. No I/O, no clock, no allocation beyond the path itself;
//! everything here is total over arbitrary bytes from the network (never a panic).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// A request path that passed the checks: the file's path under the root (never absolute,
/// never with a `..`, `.` or empty component), and whether the request ended with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafePath {
    /// Components joined by `/`; empty for the root itself.
    pub rel: PathBuf,
    /// The request path ended with `/` (a directory is asked for).
    pub dir: bool,
    /// The last component as sent (decoded), for the `Content-Type` and redirects.
    pub last: Vec<u8>,
}

/// Why a request path was refused (answered 400; nothing is looked up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (an authority-form or `*` target).
    #[error("path is not absolute")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("bad percent-encoding")]
    BadEscape,
    /// A `..` segment (raw or encoded).
    #[error("`..` segment")]
    DotDot,
    /// An encoded `/` (`%2f`), which would hide a separator from this check.
    #[error("encoded slash")]
    EncodedSlash,
    /// A backslash (raw or encoded), a separator on other systems.
    #[error("backslash")]
    Backslash,
    /// A NUL byte (raw or encoded).
    #[error("NUL byte")]
    Nul,
}

/// Checks and decodes a request path (without its query): percent-decoding happens exactly
/// once, per segment, after splitting on the raw `/`; `..` segments, encoded slashes,
/// backslashes and NUL bytes are refused, `.` and empty segments (`//`) are dropped. The
/// result can only name something under the root.
pub fn safe_path(raw: &[u8]) -> Result<SafePath, PathError> {
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut rel = Vec::with_capacity(raw.len());
    let mut last = Vec::new();
    for segment in raw[1..].split(|&b| b == b'/') {
        let decoded = decode(segment)?;
        if decoded.contains(&b'/') {
            return Err(PathError::EncodedSlash);
        }
        if decoded.contains(&b'\\') {
            return Err(PathError::Backslash);
        }
        if decoded.contains(&0) {
            return Err(PathError::Nul);
        }
        match decoded.as_slice() {
            b".." => return Err(PathError::DotDot),
            b"" | b"." => continue,
            _ => {}
        }
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(&decoded);
        last = decoded;
    }
    Ok(SafePath {
        rel: PathBuf::from(OsStr::from_bytes(&rel)),
        dir: raw.ends_with(b"/"),
        last,
    })
}

/// Percent-decodes one segment.
fn decode(segment: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(segment.len());
    let mut i = 0;
    while i < segment.len() {
        if segment[i] == b'%' {
            let hi = segment.get(i + 1).and_then(|&b| hex(b));
            let lo = segment.get(i + 2).and_then(|&b| hex(b));
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(PathError::BadEscape),
            }
            i += 3;
        } else {
            out.push(segment[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The `Content-Type` of a file name, by its extension (case-insensitive); unknown and missing
/// extensions are `application/octet-stream` (no sniffing: answers carry `nosniff`).
pub fn content_type(name: &[u8]) -> &'static str {
    let ext = match name.iter().rposition(|&b| b == b'.') {
        Some(dot) => &name[dot + 1..],
        None => return "application/octet-stream",
    };
    const TYPES: &[(&str, &str)] = &[
        ("html", "text/html; charset=utf-8"),
        ("htm", "text/html; charset=utf-8"),
        ("css", "text/css; charset=utf-8"),
        ("js", "text/javascript; charset=utf-8"),
        ("mjs", "text/javascript; charset=utf-8"),
        ("json", "application/json"),
        ("map", "application/json"),
        ("svg", "image/svg+xml"),
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("jpeg", "image/jpeg"),
        ("gif", "image/gif"),
        ("webp", "image/webp"),
        ("ico", "image/x-icon"),
        ("txt", "text/plain; charset=utf-8"),
        ("xml", "text/xml; charset=utf-8"),
        ("wasm", "application/wasm"),
        ("woff", "font/woff"),
        ("woff2", "font/woff2"),
        ("pdf", "application/pdf"),
    ];
    TYPES
        .iter()
        .find(|(e, _)| e.as_bytes().eq_ignore_ascii_case(ext))
        .map_or("application/octet-stream", |&(_, t)| t)
}

/// A strong entity tag from a file's size and modification time (nanoseconds): any write that
/// changes either changes the tag.
pub fn etag(len: u64, mtime_secs: i64, mtime_nanos: u32) -> String {
    format!("\"{len:x}-{mtime_secs:x}-{mtime_nanos:x}\"")
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, RFC 9110 §13.1.2): `*`,
/// or one of the listed tags with or without `W/`.
pub fn none_match(value: &[u8], etag: &str) -> bool {
    let value = trim(value);
    if value == b"*" {
        return true;
    }
    let ours = etag.as_bytes();
    value.split(|&b| b == b',').any(|tag| {
        let tag = trim(tag);
        let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
        tag == ours
    })
}

/// Whether an `If-Range` value still names the representation: the same strong entity tag, or
/// exactly its `Last-Modified` date (RFC 9110 §13.1.5). Anything else: serve the whole file.
pub fn if_range_holds(value: &[u8], etag: &str, mtime_secs: u64) -> bool {
    let value = trim(value);
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        return value == etag.as_bytes();
    }
    parse_http_date(value) == Some(mtime_secs)
}

/// What a `Range` field asks of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAsk {
    /// No usable range (absent, another unit, several ranges or malformed): the whole file.
    Whole,
    /// One satisfiable range, first and last byte inclusive.
    Bytes(u64, u64),
    /// A well-formed range that lies outside the file: 416.
    Unsatisfiable,
}

/// Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range (RFC 9110 §14.1.2). Several
/// ranges are served as the whole file (a server may ignore `Range`), so no multipart answer.
pub fn parse_range(value: &[u8], len: u64) -> RangeAsk {
    let value = trim(value);
    let Some(unit_end) = value.iter().position(|&b| b == b'=') else {
        return RangeAsk::Whole;
    };
    if !trim(&value[..unit_end]).eq_ignore_ascii_case(b"bytes") {
        return RangeAsk::Whole;
    }
    let spec = trim(&value[unit_end + 1..]);
    if spec.contains(&b',') {
        return RangeAsk::Whole;
    }
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return RangeAsk::Whole;
    };
    let (first, last) = (trim(&spec[..dash]), trim(&spec[dash + 1..]));
    if first.is_empty() {
        // Suffix: the last n bytes.
        let Some(n) = number(last) else {
            return RangeAsk::Whole;
        };
        if n == 0 || len == 0 {
            return RangeAsk::Unsatisfiable;
        }
        return RangeAsk::Bytes(len.saturating_sub(n), len - 1);
    }
    let Some(first) = number(first) else {
        return RangeAsk::Whole;
    };
    let last = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(l) if l >= first => l,
            _ => return RangeAsk::Whole,
        }
    };
    if first >= len {
        return RangeAsk::Unsatisfiable;
    }
    RangeAsk::Bytes(first, last.min(len - 1))
}

/// ASCII digits only (no sign, no spaces), as a u64; a number too large for one is clamped
/// (a last-byte position past any file means "to the end").
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds; the obsolete RFC
/// 850 and asctime forms are not accepted (the conditional is then ignored, as RFC 9110 allows).
pub fn parse_http_date(value: &[u8]) -> Option<u64> {
    let v = trim(value);
    if v.len() != 29 || &v[3..5] != b", " || &v[25..] != b" GMT" {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let d = v.get(range)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0u64, |n, &b| n * 10 + u64::from(b - b'0')))
    };
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let day = num(5..7)?;
    let month = MONTHS.iter().position(|m| &v[8..11] == *m)? as u64 + 1;
    let year = num(12..16)?;
    let (h, m, s) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if v[7] != b' ' || v[11] != b' ' || v[16] != b' ' || v[19] != b':' || v[22] != b':' {
        return None;
    }
    if !(1..=31).contains(&day) || year < 1970 || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm), for
/// years from 1970 on.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

fn trim(v: &[u8]) -> &[u8] {
    crate::proxy::h1::trim(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(raw: &str) -> Result<(String, bool), PathError> {
        safe_path(raw.as_bytes()).map(|p| (p.rel.to_string_lossy().into_owned(), p.dir))
    }

    #[test]
    fn paths_decode_once_and_stay_under_the_root() {
        assert_eq!(rel("/"), Ok((String::new(), true)));
        assert_eq!(rel("/a/b.txt"), Ok(("a/b.txt".into(), false)));
        assert_eq!(rel("//a///b/"), Ok(("a/b".into(), true)));
        assert_eq!(rel("/./a/./b"), Ok(("a/b".into(), false)));
        assert_eq!(
            rel("/hello%20world.txt"),
            Ok(("hello world.txt".into(), false))
        );
        // Decoded once: `%252e%252e` is the literal name `%2e%2e`, not `..`.
        assert_eq!(rel("/%252e%252e/x"), Ok(("%2e%2e/x".into(), false)));
        assert_eq!(rel("/..."), Ok(("...".into(), false)));
        assert_eq!(rel("/a..b"), Ok(("a..b".into(), false)));
    }

    #[test]
    fn traversal_forms_are_refused() {
        for (raw, why) in [
            ("/../etc/passwd", PathError::DotDot),
            ("/a/../../etc/passwd", PathError::DotDot),
            ("/..", PathError::DotDot),
            ("/%2e%2e/etc/passwd", PathError::DotDot),
            ("/%2E%2e/", PathError::DotDot),
            ("/a/%2e%2e/%2e%2e/etc/passwd", PathError::DotDot),
            ("/.%2e/x", PathError::DotDot),
            ("/..%2f", PathError::EncodedSlash),
            ("/..%2fetc%2fpasswd", PathError::EncodedSlash),
            ("/a%2F..", PathError::EncodedSlash),
            ("/..\\etc\\passwd", PathError::Backslash),
            ("/a\\b", PathError::Backslash),
            ("/..%5cetc", PathError::Backslash),
            ("/a%00.txt", PathError::Nul),
            ("/a%", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("etc/passwd", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
        ] {
            assert_eq!(safe_path(raw.as_bytes()), Err(why), "{raw}");
        }
        // Never absolute, whatever the slashes.
        let p = safe_path(b"//etc/passwd").unwrap();
        assert!(p.rel.is_relative() && p.rel.to_str() == Some("etc/passwd"));
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type(b"index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type(b"A.CSS"), "text/css; charset=utf-8");
        assert_eq!(content_type(b"app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type(b"d.json"), "application/json");
        assert_eq!(content_type(b"i.svg"), "image/svg+xml");
        assert_eq!(content_type(b"i.png"), "image/png");
        assert_eq!(content_type(b"i.jpg"), "image/jpeg");
        assert_eq!(content_type(b"i.gif"), "image/gif");
        assert_eq!(content_type(b"favicon.ico"), "image/x-icon");
        assert_eq!(content_type(b"r.txt"), "text/plain; charset=utf-8");
        assert_eq!(content_type(b"m.wasm"), "application/wasm");
        assert_eq!(content_type(b"f.woff2"), "font/woff2");
        assert_eq!(content_type(b"d.pdf"), "application/pdf");
        for other in [&b"x.bin"[..], b"Makefile", b"x.", b".", b""] {
            assert_eq!(content_type(other), "application/octet-stream");
        }
    }

    #[test]
    fn entity_tags_match_weakly_for_if_none_match() {
        let tag = etag(10, 1_700_000_000, 5);
        assert_eq!(tag, "\"a-6553f100-5\"");
        assert!(none_match(tag.as_bytes(), &tag));
        assert!(none_match(b"*", &tag));
        assert!(none_match(format!("\"x\", W/{tag}").as_bytes(), &tag));
        assert!(!none_match(b"\"a-6553f100-6\"", &tag));
        assert!(!none_match(b"", &tag));
        // If-Range compares strongly.
        assert!(if_range_holds(tag.as_bytes(), &tag, 0));
        assert!(!if_range_holds(format!("W/{tag}").as_bytes(), &tag, 0));
        assert!(if_range_holds(
            b"Sun, 06 Nov 1994 08:49:37 GMT",
            &tag,
            784_111_777
        ));
        assert!(!if_range_holds(
            b"Sun, 06 Nov 1994 08:49:38 GMT",
            &tag,
            784_111_777
        ));
    }

    #[test]
    fn ranges() {
        use RangeAsk::*;
        assert_eq!(parse_range(b"bytes=0-9", 100), Bytes(0, 9));
        assert_eq!(parse_range(b"bytes=90-200", 100), Bytes(90, 99));
        assert_eq!(parse_range(b"bytes=90-", 100), Bytes(90, 99));
        assert_eq!(parse_range(b"bytes=-10", 100), Bytes(90, 99));
        assert_eq!(parse_range(b"bytes=-1000", 100), Bytes(0, 99));
        assert_eq!(parse_range(b"BYTES = 5-5", 100), Bytes(5, 5));
        assert_eq!(
            parse_range(b"bytes=0-99999999999999999999999", 100),
            Bytes(0, 99)
        );
        assert_eq!(parse_range(b"bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=100-200", 100), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-5", 0), Unsatisfiable);
        for ignored in [
            &b"bytes=0-1,5-6"[..],
            b"bytes=9-1",
            b"bytes=a-b",
            b"bytes=-",
            b"bytes=1",
            b"items=0-1",
            b"bytes=+1-2",
            b"",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_range(ignored, 100), Whole, "{ignored:?}");
        }
    }

    #[test]
    fn http_dates_round_trip() {
        for secs in [0u64, 784_111_777, 951_782_400, 1_709_251_199, 4_102_444_800] {
            let text = crate::proxy::respond::imf_fixdate(secs);
            assert_eq!(parse_http_date(&text), Some(secs), "{secs}");
        }
        assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Xyz 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, 6x Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date(b""), None);
    }
}
