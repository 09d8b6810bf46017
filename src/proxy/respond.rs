//! The one place that turns a [`Synthetic`] answer into bytes: HTTP/1.1, HTTP/2 and the gRPC
//! Trailers-Only form (`wire-format.md` §3.2, §4: `:status 200`, `grpc-status`/`grpc-message`, the
//! challenges, in one HEADERS frame with END_STREAM), so every answer keeps one definition. Also owns the CORS set Go aperture adds to answers and to
//! proxied responses, the per-core `Date` header cache, and the heads of static file answers
//! (`super::statics::Head`, both protocols).

use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::Synthetic;

use super::h1::push_field;

/// `Access-Control-Allow-Headers` Go aperture adds.
pub const CORS_ALLOW_HEADERS: &str =
    "Content-Type, Authorization, Grpc-Metadata-macaroon, WWW-Authenticate, Payment-Receipt";
/// `Access-Control-Allow-Methods` Go aperture adds.
pub const CORS_ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// `Access-Control-Expose-Headers` Go aperture adds.
pub const CORS_EXPOSE_HEADERS: &str = "WWW-Authenticate, Payment-Receipt";

/// Renders `answer` as an HTTP/1.1 response into `out`. Headers come out sorted by name, as Go
/// writes them, and never copy anything from the request (Go aperture issue #114).
pub fn render_h1(answer: &Synthetic, head_only: bool, close: bool, out: &mut Vec<u8>) {
    let status = answer.status();
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", status, answer.reason_phrase());
    if answer.cors() {
        push_field(out, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
        push_field(out, "Access-Control-Allow-Methods", CORS_ALLOW_METHODS);
        push_field(out, "Access-Control-Allow-Origin", "*");
        push_field(out, "Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS);
    }
    match answer {
        Synthetic::PaymentRequired(_) => push_field(out, "Cache-Control", "no-store"),
        Synthetic::Session(_) => push_field(out, "Cache-Control", "private"),
        _ => {}
    }
    if close {
        push_field(out, "Connection", "close");
    }
    let (content_type, body) = body_of(answer);
    let body_len = body.len();
    let _ = write!(out, "Content-Length: {body_len}\r\n");
    if body_len > 0 {
        push_field(out, "Content-Type", content_type);
    }
    out.extend_from_slice(b"Date: ");
    with_date(|d| out.extend_from_slice(d));
    out.extend_from_slice(b"\r\n");
    if let Some(secs) = answer.retry_after() {
        let _ = write!(out, "Retry-After: {secs}\r\n");
    }
    if let Synthetic::Session(session) = answer {
        push_field(out, "Payment-Receipt", &session.receipt);
    }
    if let Synthetic::PaymentRequired(challenge) = answer {
        for value in &challenge.www_authenticate {
            push_field(out, "Www-Authenticate", value);
        }
    }
    if body_len > 0 {
        push_field(out, "X-Content-Type-Options", "nosniff");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
}

/// The body of an answer and its type: Go aperture's one-line text, or for a 402 that offers a
/// Payment challenge the 140-byte `payment-required` problem document (no newline).
fn body_of(answer: &Synthetic) -> (&'static str, std::borrow::Cow<'static, str>) {
    match answer {
        Synthetic::BadGateway => ("", "".into()),
        Synthetic::Session(session) => ("application/json", session.body.clone().into()),
        Synthetic::PaymentRequired(c) if c.offers_payment() => (
            crate::mpp::PROBLEM_CONTENT_TYPE,
            crate::mpp::PAYMENT_REQUIRED_BODY.into(),
        ),
        other => (
            "text/plain; charset=utf-8",
            format!("{}\n", other.message()).into(),
        ),
    }
}

/// Renders `answer` as an HTTP/2 response head and body (the HTTP/1.1 fields minus the
/// connection-specific ones).
pub fn render_h2(answer: &Synthetic, head_only: bool) -> (http::Response<()>, bytes::Bytes) {
    let mut resp = http::Response::new(());
    *resp.status_mut() =
        http::StatusCode::from_u16(answer.status()).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let headers = resp.headers_mut();
    common_fields(answer, headers);
    let (content_type, body) = body_of(answer);
    let body = bytes::Bytes::from(body.into_owned());
    headers.insert(http::header::CONTENT_LENGTH, body.len().into());
    if !body.is_empty() {
        let text = http::HeaderValue::from_static(content_type);
        headers.insert(http::header::CONTENT_TYPE, text);
        let nosniff = http::HeaderValue::from_static("nosniff");
        headers.insert("x-content-type-options", nosniff);
    }
    (resp, if head_only { bytes::Bytes::new() } else { body })
}

/// Renders `answer` as a gRPC Trailers-Only response: HTTP 200, `content-type:
/// application/grpc`, `grpc-status` and `grpc-message`, plus the challenges, `cache-control`,
/// `retry-after` and the CORS set where the HTTP form has them. Sent with END_STREAM.
pub fn render_grpc(answer: &Synthetic) -> http::Response<()> {
    let mut resp = http::Response::new(());
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", u16::from(answer.grpc_status()).into());
    if let Ok(message) = http::HeaderValue::from_str(answer.message()) {
        headers.insert("grpc-message", message);
    }
    common_fields(answer, headers);
    resp
}

/// The fields an answer carries in every HTTP/2 form: CORS, `cache-control`, `retry-after`,
/// `www-authenticate`, `date`.
fn common_fields(answer: &Synthetic, headers: &mut http::HeaderMap) {
    use http::HeaderValue as V;
    if answer.cors() {
        let cors = [
            ("access-control-allow-headers", CORS_ALLOW_HEADERS),
            ("access-control-allow-methods", CORS_ALLOW_METHODS),
            ("access-control-allow-origin", "*"),
            ("access-control-expose-headers", CORS_EXPOSE_HEADERS),
        ];
        for (name, value) in cors {
            headers.insert(name, V::from_static(value));
        }
    }
    if let Synthetic::PaymentRequired(challenge) = answer {
        headers.insert(http::header::CACHE_CONTROL, V::from_static("no-store"));
        for value in &challenge.www_authenticate {
            if let Ok(v) = V::from_str(value) {
                headers.append(http::header::WWW_AUTHENTICATE, v);
            }
        }
    }
    if let Synthetic::Session(session) = answer {
        headers.insert(http::header::CACHE_CONTROL, V::from_static("private"));
        if let Ok(v) = V::from_str(&session.receipt) {
            headers.insert("payment-receipt", v);
        }
    }
    if let Some(secs) = answer.retry_after() {
        headers.insert(http::header::RETRY_AFTER, secs.into());
    }
    with_date(|d| {
        if let Ok(v) = V::from_bytes(d) {
            headers.insert(http::header::DATE, v);
        }
    });
}

/// Renders a static file answer's head (`super::statics`) as HTTP/1.1, fields sorted by name.
/// A 304 carries no `Content-Length` (it never has a body).
pub fn render_static_h1(head: &super::statics::Head, close: bool, out: &mut Vec<u8>) {
    let status = head.status;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\n",
        crate::error::reason_phrase(status)
    );
    if head.accept_ranges {
        push_field(out, "Accept-Ranges", "bytes");
    }
    if head.allow {
        push_field(out, "Allow", super::statics::ALLOW);
    }
    if close {
        push_field(out, "Connection", "close");
    }
    if let Some(len) = head.length {
        let _ = write!(out, "Content-Length: {len}\r\n");
    }
    if let Some(range) = &head.content_range {
        push_field(out, "Content-Range", range);
    }
    if let Some(content_type) = head.content_type {
        push_field(out, "Content-Type", content_type);
    }
    out.extend_from_slice(b"Date: ");
    with_date(|d| out.extend_from_slice(d));
    out.extend_from_slice(b"\r\n");
    if let Some(etag) = &head.etag {
        push_field(out, "Etag", etag);
    }
    if let Some(secs) = head.last_modified {
        push_field(out, "Last-Modified", imf_fixdate(secs));
    }
    if let Some(location) = &head.location {
        push_field(out, "Location", location);
    }
    if head.content_type.is_some() {
        push_field(out, "X-Content-Type-Options", "nosniff");
    }
    out.extend_from_slice(b"\r\n");
}

/// Renders a static file answer's head as an HTTP/2 response (the same fields as HTTP/1.1
/// minus `Connection`).
pub fn render_static_h2(head: &super::statics::Head) -> http::Response<()> {
    use http::header;
    use http::HeaderValue as V;
    let mut resp = http::Response::new(());
    *resp.status_mut() =
        http::StatusCode::from_u16(head.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    if head.accept_ranges {
        h.insert(header::ACCEPT_RANGES, V::from_static("bytes"));
    }
    if head.allow {
        h.insert(header::ALLOW, V::from_static(super::statics::ALLOW));
    }
    if let Some(len) = head.length {
        h.insert(header::CONTENT_LENGTH, len.into());
    }
    let mut text = |name: header::HeaderName, value: &str| {
        if let Ok(v) = V::from_str(value) {
            h.insert(name, v);
        }
    };
    if let Some(range) = &head.content_range {
        text(header::CONTENT_RANGE, range);
    }
    if let Some(etag) = &head.etag {
        text(header::ETAG, etag);
    }
    if let Some(location) = &head.location {
        text(header::LOCATION, location);
    }
    if let Some(content_type) = head.content_type {
        h.insert(header::CONTENT_TYPE, V::from_static(content_type));
        h.insert("x-content-type-options", V::from_static("nosniff"));
    }
    if let Some(secs) = head.last_modified {
        if let Ok(v) = V::from_bytes(&imf_fixdate(secs)) {
            h.insert(header::LAST_MODIFIED, v);
        }
    }
    with_date(|d| {
        if let Ok(v) = V::from_bytes(d) {
            h.insert(header::DATE, v);
        }
    });
    resp
}

/// Renders the discovery document (200, JSON, CORS, never cached stale for long).
pub fn render_json_h1(json: &str, head_only: bool, close: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    push_field(out, "Access-Control-Allow-Origin", "*");
    push_field(out, "Cache-Control", "max-age=60");
    if close {
        push_field(out, "Connection", "close");
    }
    let _ = write!(out, "Content-Length: {}\r\n", json.len());
    push_field(out, "Content-Type", "application/json");
    out.extend_from_slice(b"Date: ");
    with_date(|d| out.extend_from_slice(d));
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only {
        out.extend_from_slice(json.as_bytes());
    }
}

/// Merges Go aperture's CORS values into what an upstream sent for one of the three list-valued
/// `Access-Control-*` fields: comma-split, de-duplicated case-insensitively, joined with ", ".
pub fn merge_cors_list(existing: &[&[u8]], ours: &str, out: &mut Vec<u8>) {
    let start = out.len();
    let mut seen: Vec<(usize, usize)> = Vec::new();
    let items = existing
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .chain(ours.as_bytes().split(|&b| b == b','));
    for item in items {
        let item = super::h1::trim(item);
        if item.is_empty()
            || seen
                .iter()
                .any(|&(s, e)| out[s..e].eq_ignore_ascii_case(item))
        {
            continue;
        }
        if out.len() > start {
            out.extend_from_slice(b", ");
        }
        let s = out.len();
        out.extend_from_slice(item);
        seen.push((s, out.len()));
    }
}

thread_local! {
    // Formatting a date per response is measurable; once a second per core is not.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0u8; 29])) };
}

/// Calls `f` with the current IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), cached per second.
pub fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != now {
            *cached = (now, imf_fixdate(now));
        }
        f(&cached.1)
    })
}

/// Formats Unix seconds as an IMF-fixdate (RFC 9110 §5.6.7).
pub fn imf_fixdate(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    put2(&mut out[5..7], d as u64);
    out[8..11].copy_from_slice(MONTHS[(m - 1) as usize]);
    let y = y as u64;
    put2(&mut out[12..14], y / 100);
    put2(&mut out[14..16], y % 100);
    put2(&mut out[17..19], rem / 3600);
    put2(&mut out[20..22], rem % 3600 / 60);
    put2(&mut out[23..25], rem % 60);
    out
}

fn put2(dst: &mut [u8], v: u64) {
    dst[0] = b'0' + (v / 10 % 10) as u8;
    dst[1] = b'0' + (v % 10) as u8;
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Challenge;

    #[test]
    fn dates_format_like_http() {
        assert_eq!(&imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&imf_fixdate(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            &imf_fixdate(4_102_444_800),
            b"Fri, 01 Jan 2100 00:00:00 GMT"
        );
    }

    #[test]
    fn payment_required_matches_go_aperture() {
        let answer = Synthetic::PaymentRequired(Challenge {
            www_authenticate: vec![
                "LSAT macaroon=\"m\", invoice=\"i\"".into(),
                "L402 macaroon=\"m\", invoice=\"i\"".into(),
            ],
        });
        let mut out = Vec::new();
        render_h1(&answer, false, false, &mut out);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "payment required\n");
        let lines: Vec<&str> = head.lines().filter(|l| !l.starts_with("Date: ")).collect();
        assert_eq!(
            lines,
            [
                "HTTP/1.1 402 Payment Required",
                "Access-Control-Allow-Headers: Content-Type, Authorization, Grpc-Metadata-macaroon, WWW-Authenticate, Payment-Receipt",
                "Access-Control-Allow-Methods: GET, POST, OPTIONS",
                "Access-Control-Allow-Origin: *",
                "Access-Control-Expose-Headers: WWW-Authenticate, Payment-Receipt",
                "Cache-Control: no-store",
                "Content-Length: 17",
                "Content-Type: text/plain; charset=utf-8",
                "Www-Authenticate: LSAT macaroon=\"m\", invoice=\"i\"",
                "Www-Authenticate: L402 macaroon=\"m\", invoice=\"i\"",
                "X-Content-Type-Options: nosniff",
            ]
        );
    }

    #[test]
    fn bad_gateway_is_empty_and_rate_limit_has_retry_after() {
        let mut out = Vec::new();
        render_h1(&Synthetic::BadGateway, false, true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(text.contains("Content-Length: 0\r\n") && text.ends_with("\r\n\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        let mut out = Vec::new();
        render_h1(
            &Synthetic::TooManyRequests { retry_after: 12 },
            false,
            false,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Retry-After: 12\r\n") && text.ends_with("rate limit exceeded\n"));
    }

    #[test]
    fn grpc_answers_are_trailers_only() {
        let answer = Synthetic::PaymentRequired(Challenge {
            www_authenticate: vec!["LSAT a".into(), "L402 b".into()],
        });
        let resp = render_grpc(&answer);
        let h = resp.headers();
        assert_eq!(resp.status(), 200);
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "13");
        assert_eq!(h["grpc-message"], "payment required");
        let challenges: Vec<_> = h.get_all("www-authenticate").iter().collect();
        assert_eq!(challenges, ["LSAT a", "L402 b"]);
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["access-control-allow-origin"], "*");
        let limited = render_grpc(&Synthetic::TooManyRequests { retry_after: 3 });
        let h = limited.headers();
        assert_eq!(
            (h["grpc-status"].as_bytes(), h["retry-after"].as_bytes()),
            (&b"8"[..], &b"3"[..])
        );
    }

    #[test]
    fn cors_lists_merge_case_insensitively() {
        let mut out = Vec::new();
        merge_cors_list(&[b"PUT, get", b" options"], CORS_ALLOW_METHODS, &mut out);
        assert_eq!(out, b"PUT, get, options, POST");
    }
}
