//! Header rewriting between an HTTP/2 stream and an HTTP/1.1 upstream, done in one pass each
//! way: the request head is written straight to bytes from the stream's header map, and the
//! response's fields go straight from the parsed head into the client's header map, their values
//! sharing one buffer. Same rules as [`super::upstream::request_headers`] and
//! [`super::upstream::response_headers`] (Go aperture's director); no I/O.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue};

use crate::l402::UpstreamAuthorization;

use super::super::h1::{self, push_field, Head};
use super::upstream::{cors_value, Outbound, ANY_ORIGIN, CORS_LISTS};

/// The HTTP/1.1 request: head (Go aperture's director rewriting) and the whole body.
pub(super) fn request_bytes(
    out: &Outbound<'_>,
    parts: &http::request::Parts,
    body: &[u8],
) -> Vec<u8> {
    let route = out.route;
    let mut raw = Vec::with_capacity(1024 + body.len());
    raw.extend_from_slice(parts.method.as_str().as_bytes());
    raw.push(b' ');
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    if let Some(prefix) = &route.service.rewrite_prefix {
        raw.extend_from_slice(prefix.trim_end_matches('/').as_bytes());
    }
    raw.extend_from_slice(pq.as_bytes());
    raw.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    raw.extend_from_slice(route.service.address.as_bytes());
    raw.extend_from_slice(b"\r\n");
    let mut forwarded_for = 0;
    for (name, value) in &parts.headers {
        let n = name.as_str();
        // `te` goes too, `te: trailers` included: it means nothing to an HTTP/1.1 upstream.
        if h1::is_hop_by_hop(n)
            || name == http::header::HOST
            || name == http::header::CONTENT_LENGTH
            || (out.upstream_auth.is_some() && name == http::header::AUTHORIZATION)
            || route
                .service
                .headers
                .iter()
                .any(|(h, _)| h.eq_ignore_ascii_case(n))
        {
            continue;
        }
        if name == "x-forwarded-for" {
            forwarded_for += 1;
            continue;
        }
        push_field(&mut raw, n.as_bytes(), value.as_bytes());
    }
    let credential = out
        .upstream_auth
        .filter(|_| route.service.forwards_credential());
    if let Some([lsat, l402]) = credential {
        // Built from a verified token (base64 and hex): always a valid field value.
        if out.authorization == UpstreamAuthorization::Aperture {
            push_field(&mut raw, b"authorization", lsat.as_bytes());
        }
        push_field(&mut raw, b"authorization", l402.as_bytes());
    }
    for (name, value) in &route.service.headers {
        // `X-Forwarded-For` is ours to set (below), whatever the service configures.
        if let Ok(n) = HeaderName::try_from(name.as_str()) {
            if visible_ascii(value.as_bytes()) && n != "x-forwarded-for" {
                push_field(&mut raw, n.as_str().as_bytes(), value.as_bytes());
            }
        }
    }
    raw.extend_from_slice(b"x-forwarded-for: ");
    if forwarded_for > 0 {
        for prior in parts.headers.get_all("x-forwarded-for") {
            // A prior hop that is not visible ASCII counts as empty, as it always has.
            if visible_ascii(prior.as_bytes()) {
                raw.extend_from_slice(prior.as_bytes());
            }
            raw.extend_from_slice(b", ");
        }
    }
    h1::push_ip(&mut raw, out.peer);
    raw.extend_from_slice(b"\r\n");
    if !body.is_empty() || parts.method == http::Method::POST || parts.method == http::Method::PUT {
        raw.extend_from_slice(b"Content-Length: ");
        h1::push_decimal(&mut raw, body.len() as u64);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    raw
}

/// What `HeaderValue::from_str` accepts.
fn visible_ascii(v: &[u8]) -> bool {
    v.iter().all(|&b| (32..127).contains(&b) || b == b'\t')
}

/// The upstream's response fields for the client: framing and connection-specific ones dropped,
/// `WWW-Authenticate` kept only on a 402, the CORS set merged (a constant when the upstream sent
/// none of it). Kept values are slices of one copy of the head.
pub(super) fn response_fields(resp: &Head) -> HeaderMap {
    let status = resp.status;
    let base = resp.raw();
    let shared = Bytes::copy_from_slice(base);
    let mut headers = HeaderMap::with_capacity(resp.fields().count() + 4);
    let mut cors: [Vec<&[u8]>; 3] = Default::default();
    for (name, value) in resp.fields() {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if h1::is_hop_by_hop(name)
            || is("content-length")
            || (is("www-authenticate") && status != 402)
        {
            continue;
        }
        let cors_field = name
            .get(..15)
            .is_some_and(|p| p.eq_ignore_ascii_case("access-control-"));
        if cors_field {
            // Allow-Origin and any others are replaced by ours; the lists are merged.
            if let Some(i) = CORS_LISTS.iter().position(|n| is(n.as_str())) {
                if HeaderValue::from_bytes(value).is_ok() {
                    cors[i].push(value);
                }
            }
            continue;
        }
        let at = value.as_ptr() as usize - base.as_ptr() as usize;
        let value = shared.slice(at..at + value.len());
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_maybe_shared(value),
        ) {
            headers.append(n, v);
        }
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY_ORIGIN);
    for (i, name) in CORS_LISTS.into_iter().enumerate() {
        if let Some(v) = cors_value(&cors[i], i) {
            headers.insert(name, v);
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::super::super::respond::{CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS};
    use super::*;

    fn head(raw: &str) -> Head {
        let mut head = Head::default();
        head.parse_response(raw.as_bytes()).unwrap();
        head
    }

    #[test]
    fn response_fields_drop_framing_and_merge_cors() {
        let h = head(concat!(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n",
            "X-A: 1\r\nWWW-Authenticate: L402 x\r\nAccess-Control-Allow-Origin: example.com\r\n",
            "Access-Control-Max-Age: 5\r\nAccess-Control-Allow-Methods: PUT, get\r\nX-A: 2\r\n\r\n"
        ));
        let map = response_fields(&h);
        let all =
            |n: &str| -> Vec<&str> { map.get_all(n).iter().map(|v| v.to_str().unwrap()).collect() };
        assert_eq!(all("x-a"), ["1", "2"]);
        assert!(map.get("content-length").is_none() && map.get("connection").is_none());
        assert!(
            map.get("www-authenticate").is_none() && map.get("access-control-max-age").is_none()
        );
        assert_eq!(all("access-control-allow-origin"), ["*"]);
        assert_eq!(
            all("access-control-allow-methods"),
            ["PUT, get, POST, OPTIONS"]
        );
        assert_eq!(all("access-control-expose-headers"), [CORS_EXPOSE_HEADERS]);
        assert_eq!(all("access-control-allow-headers"), [CORS_ALLOW_HEADERS]);
        let h402 = head("HTTP/1.1 402 Payment Required\r\nWWW-Authenticate: L402 x\r\n\r\n");
        assert_eq!(
            response_fields(&h402).get("www-authenticate").unwrap(),
            "L402 x"
        );
    }
}
