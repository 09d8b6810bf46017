//! Dynamic pricing on the data path (`dynamicprice`): what Go aperture sends its pricer
//! (`pricesrpc.Prices/GetPrice`) and how a core asks for it. The gRPC call itself runs on the
//! bridge runtime; a core only queues the question (`try_send`, never blocking) and awaits the
//! answer with a deadline, as it does for invoices. Must not block and must not hold the request
//! body beyond the bounded prefix the pricer gets.

use std::sync::Arc;

use lnd_bridge::PricerTarget;

use crate::error::Synthetic;

use super::h1::Head;
use super::{CoreCtx, BRIDGE_WAIT};

/// Leading request-body bytes serialized for the pricer (Go aperture's `maxPricerBodyBytes`).
pub const MAX_BODY_PREFIX: usize = 64 * 1024;

/// Go aperture's body for a failed `GetPrice` (500).
pub const FAILURE: &str = "failure fetching resource price";

/// The request as Go's `httputil.DumpRequest(r, false)` writes it, followed by `body` (at most
/// [`MAX_BODY_PREFIX`] bytes are used): `METHOD target HTTP/x.y`, `Host`, `Transfer-Encoding`
/// when chunked, then every other field under its canonical name, names sorted, values in
/// arrival order. `version` is `"1.1"` or `"2.0"`.
pub fn request_text(head: &Head, version: &str, body: &[u8]) -> String {
    let mut out = String::with_capacity(512 + body.len().min(MAX_BODY_PREFIX));
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    out.push_str(&lossy(head.method()));
    out.push(' ');
    out.push_str(&lossy(head.target()));
    out.push_str(" HTTP/");
    out.push_str(version);
    out.push_str("\r\n");
    if let Some(host) = head.host().filter(|h| !h.is_empty()) {
        out.push_str("Host: ");
        out.push_str(&lossy(super::h1::trim(host)));
        out.push_str("\r\n");
    }
    let mut fields: Vec<(String, &[u8])> = Vec::new();
    let mut chunked = false;
    for (name, value) in head.fields() {
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked |= super::h1::list_contains(value, "chunked");
            continue;
        }
        if name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("trailer") {
            continue;
        }
        fields.push((canonical(name), value));
    }
    if chunked {
        out.push_str("Transfer-Encoding: chunked\r\n");
    }
    // A stable sort keeps each name's values in arrival order, as Go's header map does.
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in fields {
        out.push_str(&name);
        out.push_str(": ");
        out.push_str(&lossy(super::h1::trim(value)).replace(['\r', '\n'], " "));
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&String::from_utf8_lossy(
        &body[..body.len().min(MAX_BODY_PREFIX)],
    ));
    out
}

/// Go's `CanonicalMIMEHeaderKey`: the first letter and each letter after `-` upper case, the
/// rest lower case; a name with a byte outside the token set is left alone.
fn canonical(name: &str) -> String {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !name.chars().all(token) {
        return name.to_owned();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// The request path as Go's `URL.Path` holds it: percent-escapes decoded (the raw path when it
/// does not decode to UTF-8). This is what the pricer gets and what names the resource.
pub fn decoded_path(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match raw[i] {
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => return String::from_utf8_lossy(raw).into_owned(),
            },
            b'%' => return String::from_utf8_lossy(raw).into_owned(),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned())
}

/// Asks the pricer behind `target` for the price of `path`. `Err` is the 500 Go aperture sends
/// for a failed `GetPrice` (a refused queue, a timeout, a pricer error, a negative price).
pub async fn ask(
    core: &CoreCtx,
    service: &str,
    target: &Arc<PricerTarget>,
    path: String,
    text: String,
) -> Result<u64, Synthetic> {
    let fail = |why: &dyn std::fmt::Display| {
        tracing::warn!(
            core = core.id,
            service,
            "error getting resource price: {why}"
        );
        Synthetic::Internal(FAILURE)
    };
    let rx = core
        .bridge
        .try_get_price(target.clone(), path, text)
        .map_err(|e| fail(&e))?;
    match monoio::time::timeout(BRIDGE_WAIT, rx).await {
        Ok(Ok(Ok(price))) => u64::try_from(price).map_err(|_| fail(&format!("price {price}"))),
        Ok(Ok(Err(e))) => Err(fail(&e)),
        Ok(Err(_)) => Err(fail(&"the bridge dropped the request")),
        Err(_) => Err(fail(&"the pricer did not answer in time")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::h1::Parse;
    use super::*;

    fn head(raw: &str) -> Head {
        let mut h = Head::default();
        assert!(matches!(
            h.parse_request(raw.as_bytes()),
            Ok(Parse::Complete(_))
        ));
        h
    }

    #[test]
    fn request_text_is_gos_dump_request() {
        let h = head(
            "POST /v1/chat?x=1 HTTP/1.1\r\nx-b: 2\r\nHost: api.example\r\ncontent-type: application/json\r\n\
             X-B: 1\r\nTrailer: x\r\ncontent-length: 13\r\n\r\n",
        );
        assert_eq!(
            request_text(&h, "1.1", b"{\"model\":\"m\"}"),
            "POST /v1/chat?x=1 HTTP/1.1\r\nHost: api.example\r\nContent-Length: 13\r\n\
             Content-Type: application/json\r\nX-B: 2\r\nX-B: 1\r\n\r\n{\"model\":\"m\"}"
        );
        let h = head("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nhost: h\r\n\r\n");
        assert_eq!(
            request_text(&h, "2.0", b""),
            "GET / HTTP/2.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let big = vec![b'a'; MAX_BODY_PREFIX + 10];
        let text = request_text(&head("PUT / HTTP/1.1\r\n\r\n"), "1.1", &big);
        assert_eq!(text.len(), "PUT / HTTP/1.1\r\n\r\n".len() + MAX_BODY_PREFIX);
    }

    #[test]
    fn canonical_names_and_paths() {
        assert_eq!(canonical("grpc-timeout"), "Grpc-Timeout");
        assert_eq!(canonical("X-FORWARDED-FOR"), "X-Forwarded-For");
        assert_eq!(canonical("bad name"), "bad name");
        assert_eq!(decoded_path(b"/a%20b/%E2%82%AC"), "/a b/\u{20ac}");
        assert_eq!(decoded_path(b"/pkg.Svc/Method"), "/pkg.Svc/Method");
        assert_eq!(decoded_path(b"/bad%zz"), "/bad%zz");
        assert_eq!(decoded_path(b"/cut%2"), "/cut%2");
        assert_eq!(decoded_path(b"/%ff"), "/%ff");
    }
}
