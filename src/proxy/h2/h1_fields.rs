//! Header rewriting between an HTTP/2 stream and an HTTP/1.1 upstream, done in one pass each
//! way: the request head is written straight to bytes from the stream's `Head` by the HTTP/1.1
//! path's own writer ([`crate::proxy::forward::write_request_head`], Go aperture's director:
//! one rule set for both), and the response's fields go straight from the parsed head to the
//! client's header block. Same response rules as [`super::upstream::response_headers`] (for h2
//! upstreams) and the HTTP/1.1 response writer; no I/O.

use crate::proxy::forward::{self, Outbound as H1Outbound};
use crate::proxy::h1::{self, Framing, Head};

use super::upstream::{cors_value, Outbound, CORS_LISTS};

/// The HTTP/1.1 request: head (Go aperture's director rewriting) and the whole body.
pub(super) fn request_bytes(out: &Outbound<'_>, head: &Head, body: &[u8]) -> Vec<u8> {
    let req = H1Outbound {
        head,
        framing: Framing::Length(body.len() as u64),
        peer: out.peer,
        upstream_auth: out.upstream_auth,
        authorization: out.authorization,
        // Not watched from here: the stream's reset is (see `super::serve_native`).
        client_fd: -1,
        receipt: None,
    };
    let mut raw = Vec::with_capacity(512 + head.raw().len() + body.len());
    if out.observer.is_some() {
        // A metered response's tail must be plain text.
        forward::write_request_head::<true>(out.route, &req, &mut raw);
    } else {
        forward::write_request_head::<false>(out.route, &req, &mut raw);
    }
    raw.extend_from_slice(body);
    raw
}

/// The upstream's response fields for the client, handed to `emit` as (name, value, whether
/// the name is lowercase already): framing and connection-specific ones dropped, `WWW-Authenticate` kept only on a 402,
/// the CORS set merged (a constant when the upstream sent none of it).
pub(super) fn response_fields(resp: &Head, mut emit: impl FnMut(&[u8], &[u8], bool)) {
    let status = resp.status;
    let mut cors: [Vec<&[u8]>; 3] = Default::default();
    for (name, value) in resp.fields() {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if h1::is_hop_by_hop(name)
            || is("content-length")
            || is("proxy-authenticate")
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
                if http::HeaderValue::from_bytes(value).is_ok() {
                    cors[i].push(value);
                }
            }
            continue;
        }
        emit(name.as_bytes(), value, false);
    }
    emit(b"access-control-allow-origin", b"*", true);
    for (i, name) in CORS_LISTS.into_iter().enumerate() {
        if let Some(v) = cors_value(&cors[i], i) {
            emit(name.as_str().as_bytes(), v.as_bytes(), true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::respond::{CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS};
    use super::*;

    fn fields(h: &Head) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        response_fields(h, |n, v, _| {
            map.append(
                http::HeaderName::from_bytes(n).unwrap(),
                http::HeaderValue::from_bytes(v).unwrap(),
            );
        });
        map
    }

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
        let map = fields(&h);
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
        assert_eq!(fields(&h402).get("www-authenticate").unwrap(), "L402 x");
    }
}
