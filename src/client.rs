//! `aperture fetch`: a small blocking L402 client on `std::net` (HTTP/1.1, http:// only). It runs on
//! the main thread, never on a worker core. Flow: request → on 402 parse the L402/LSAT challenge →
//! pay the invoice through an LND-REST-compatible wallet (`/v2/router/send`, NDJSON stream) →
//! retry with `Authorization: L402 <macaroon>:<hex preimage>`. It must not log or print:
//! `main.rs` prints the returned response. [`admin`] is the client of a running instance's admin
//! API (`aperture admin …`), on the same HTTP/1.1 code.

pub mod admin;
mod h1;
mod session;

pub use session::{fetch_session, SessionReport};

use std::io::Read;
use std::time::Duration;

use base64::Engine;

use h1::{exchange, Body, Request, Target};

/// Cap on the wallet's NDJSON stream.
const MAX_WALLET_BYTES: u64 = 16 * 1024 * 1024;

/// What to fetch and how to pay for it.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub url: String,
    /// LND REST base URL (http:// only), e.g. the dev backend `http://127.0.0.1:8089`.
    pub wallet: String,
    /// Hex macaroon sent to the wallet as `Grpc-Metadata-macaroon`.
    pub wallet_macaroon: Option<String>,
    pub method: String,
    pub body: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
    /// Connect/read/write timeout for the resource requests.
    pub timeout: Duration,
    /// `timeout_seconds` sent to the wallet; its reads wait this plus a margin.
    pub payment_timeout: Duration,
    pub fee_limit_sat: u64,
    pub max_body_bytes: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            url: String::new(),
            wallet: "http://127.0.0.1:8089".to_owned(),
            wallet_macaroon: None,
            method: "GET".to_owned(),
            body: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(30),
            payment_timeout: Duration::from_secs(60),
            fee_limit_sat: 100,
            max_body_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The final response (after paying, if a 402 came first).
#[derive(Clone, Debug)]
pub struct FetchResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Set when a challenge was paid on the way.
    pub paid: Option<Payment>,
}

impl FetchResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// `L402` or `Payment` (an MPP charge).
    pub scheme: &'static str,
    /// The L402 macaroon (empty for a Payment charge).
    pub macaroon: String,
    pub invoice: String,
    pub preimage_hex: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("{scheme}:// URLs are not supported yet; use an http:// URL")]
    UnsupportedScheme { scheme: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("I/O error talking to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("malformed HTTP response from {addr}: {reason}")]
    Response { addr: String, reason: String },
    #[error("got 402 but no usable L402/LSAT challenge (need macaroon=\"…\" and invoice=\"…\" in WWW-Authenticate); got {0:?}")]
    Challenge(Vec<String>),
    #[error("wallet {wallet} answered HTTP {status}: {body}")]
    WalletHttp {
        wallet: String,
        status: u16,
        body: String,
    },
    #[error("wallet error: {0}")]
    Wallet(String),
    #[error("payment failed: {0}")]
    PaymentFailed(String),
    #[error("wallet stream ended without a final payment status")]
    WalletIncomplete,
    #[error("session: {0}")]
    Session(String),
}

/// A parsed L402/LSAT challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub macaroon: String,
    pub invoice: String,
}

/// Fetches `opts.url`, paying once if the server asks for it: an L402 challenge when there is
/// one, else a Payment (MPP) charge.
pub fn fetch(opts: &FetchOptions) -> Result<FetchResponse, ClientError> {
    let target = Target::parse(&opts.url)?;
    let first = request(&target, opts, None)?;
    if first.status != 402 {
        return Ok(first);
    }
    let values: Vec<&str> = header_values(&first.headers, "www-authenticate").collect();
    let Some(challenge) = parse_challenge(&values) else {
        let charge = payment_charge(&values).ok_or_else(|| {
            ClientError::Challenge(values.iter().map(|v| v.to_string()).collect())
        })?;
        return pay_charge(&target, opts, &charge);
    };
    let preimage = pay_invoice(opts, &challenge.invoice)?;
    let preimage_hex = hex::encode(preimage);
    let auth = format!("L402 {}:{preimage_hex}", challenge.macaroon);
    let mut resp = request(&target, opts, Some(&auth))?;
    resp.paid = Some(Payment {
        scheme: "L402",
        macaroon: challenge.macaroon,
        invoice: challenge.invoice,
        preimage_hex,
    });
    Ok(resp)
}

/// The first Payment challenge with method `lightning` and intent `charge`, and its invoice.
fn payment_charge(values: &[&str]) -> Option<(crate::mpp::ChallengeParams, String)> {
    let offers = crate::mpp::parse_challenge_fields(values.iter().copied()).ok()?;
    offers.into_iter().find_map(|c| {
        if c.method != crate::mpp::METHOD_LIGHTNING || c.intent != "charge" {
            return None;
        }
        let request = crate::mpp::ChargeRequest::decode(&c.request).ok()?;
        let invoice = request.method_details.invoice.clone();
        (!invoice.is_empty()).then_some((c, invoice))
    })
}

/// Pays a charge's invoice and retries with `Authorization: Payment <credential>` echoing the
/// challenge (the receipt comes back in the answer's `Payment-Receipt`).
fn pay_charge(
    target: &Target,
    opts: &FetchOptions,
    (challenge, invoice): &(crate::mpp::ChallengeParams, String),
) -> Result<FetchResponse, ClientError> {
    let preimage_hex = hex::encode(pay_invoice(opts, invoice)?);
    let credential = crate::mpp::Credential {
        challenge: challenge.clone(),
        source: String::new(),
        payload: serde_json::json!({ "preimage": preimage_hex }),
    };
    let mut resp = request(target, opts, Some(&credential.to_header()))?;
    resp.paid = Some(Payment {
        scheme: "Payment",
        macaroon: String::new(),
        invoice: invoice.clone(),
        preimage_hex,
    });
    Ok(resp)
}

fn header_values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn request(
    target: &Target,
    opts: &FetchOptions,
    auth: Option<&str>,
) -> Result<FetchResponse, ClientError> {
    let mut headers: Vec<(String, String)> = opts
        .headers
        .iter()
        .filter(|(n, _)| !(auth.is_some() && n.eq_ignore_ascii_case("authorization")))
        .cloned()
        .collect();
    if let Some(a) = auth {
        headers.push(("Authorization".to_owned(), a.to_owned()));
    }
    let req = Request {
        method: &opts.method,
        headers: &headers,
        body: opts.body.as_deref(),
    };
    let (head, mut reader) = exchange(target, &req, opts.timeout)?;
    let io = |source| ClientError::Io {
        addr: target.connect.clone(),
        source,
    };
    let mut body = Vec::new();
    Body::new(&mut reader, &head, opts.method.eq_ignore_ascii_case("HEAD"))
        .take(opts.max_body_bytes)
        .read_to_end(&mut body)
        .map_err(io)?;
    Ok(FetchResponse {
        status: head.status,
        headers: head.headers,
        body,
        paid: None,
    })
}

/// Pays `invoice` via `POST <wallet>/v2/router/send` and returns the 32-byte preimage.
pub fn pay_invoice(opts: &FetchOptions, invoice: &str) -> Result<[u8; 32], ClientError> {
    let base = Target::parse(&opts.wallet)?;
    let target = Target {
        path: format!("{}/v2/router/send", base.path.trim_end_matches('/')),
        ..base
    };
    let payload = serde_json::json!({
        "payment_request": invoice,
        "timeout_seconds": opts.payment_timeout.as_secs(),
        "fee_limit_sat": opts.fee_limit_sat,
    })
    .to_string();
    let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    if let Some(mac) = &opts.wallet_macaroon {
        headers.push(("Grpc-Metadata-macaroon".to_owned(), mac.clone()));
    }
    let req = Request {
        method: "POST",
        headers: &headers,
        body: Some(payload.as_bytes()),
    };
    let (head, mut reader) = exchange(
        &target,
        &req,
        opts.payment_timeout + Duration::from_secs(30),
    )?;
    let body = Body::new(&mut reader, &head, false).take(MAX_WALLET_BYTES);
    if head.status != 200 {
        let mut text = Vec::new();
        // Best effort: the status alone already says what went wrong.
        let _ = body.take(4096).read_to_end(&mut text);
        let body = String::from_utf8_lossy(&text).trim().to_owned();
        return Err(ClientError::WalletHttp {
            wallet: opts.wallet.clone(),
            status: head.status,
            body,
        });
    }
    read_payment_stream(body)
}

/// Reads the wallet's NDJSON stream until a final status: `SUCCEEDED` gives the preimage,
/// `FAILED` the failure reason. Intermediate (`IN_FLIGHT`) updates are skipped.
pub fn read_payment_stream(reader: impl Read) -> Result<[u8; 32], ClientError> {
    let stream = serde_json::Deserializer::from_reader(reader).into_iter::<serde_json::Value>();
    for item in stream {
        let value =
            item.map_err(|e| ClientError::Wallet(format!("bad JSON in payment stream: {e}")))?;
        if let Some(err) = value.get("error") {
            let msg = err
                .get("message")
                .and_then(|m| m.as_str())
                .map_or_else(|| err.to_string(), str::to_owned);
            return Err(ClientError::Wallet(msg));
        }
        let update = value.get("result").unwrap_or(&value);
        match update.get("status").and_then(|s| s.as_str()) {
            Some("SUCCEEDED") => {
                let pre = update
                    .get("payment_preimage")
                    .and_then(|p| p.as_str())
                    .unwrap_or("");
                return decode_preimage(pre);
            }
            Some("FAILED") => {
                let reason = update
                    .get("failure_reason")
                    .map_or("unknown".to_owned(), |r| {
                        r.as_str().map_or_else(|| r.to_string(), str::to_owned)
                    });
                return Err(ClientError::PaymentFailed(reason));
            }
            _ => {}
        }
    }
    Err(ClientError::WalletIncomplete)
}

/// LND REST sends bytes as base64; some wallets send hex. 64 hex characters are hex, anything else
/// is base64 (standard or URL-safe).
pub fn decode_preimage(text: &str) -> Result<[u8; 32], ClientError> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(t).ok()
    } else {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        STANDARD.decode(t).or_else(|_| URL_SAFE.decode(t)).ok()
    };
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            ClientError::Wallet(format!(
                "payment_preimage {t:?} is not 32 bytes of hex or base64"
            ))
        })
}

/// Picks the challenge to pay from all `WWW-Authenticate` values: L402 first, else LSAT. Each
/// value may hold several challenges. `token=` stands in for a missing `macaroon=`.
pub fn parse_challenge(values: &[&str]) -> Option<Challenge> {
    let all: Vec<(String, Vec<(String, String)>)> =
        values.iter().flat_map(|v| split_challenges(v)).collect();
    ["L402", "LSAT"].iter().find_map(|want| {
        all.iter()
            .filter(|(s, _)| s.eq_ignore_ascii_case(want))
            .find_map(|(scheme, params)| {
                let get = |k: &str| {
                    params
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.clone())
                };
                let macaroon = get("macaroon")
                    .or_else(|| get("token"))
                    .filter(|m| !m.is_empty())?;
                let invoice = get("invoice").filter(|i| !i.is_empty())?;
                Some(Challenge {
                    scheme: scheme.clone(),
                    macaroon,
                    invoice,
                })
            })
    })
}

/// RFC 7235 challenges: `scheme k=v, k="v", scheme2 ...`. Tolerates missing commas between
/// parameters (one deployed server omits one).
fn split_challenges(value: &str) -> Vec<(String, Vec<(String, String)>)> {
    let b = value.as_bytes();
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut i = 0;
    let is_delim = |c: u8| c == b',' || c == b'=' || c == b'"' || c.is_ascii_whitespace();
    while i < b.len() {
        if b[i] == b',' || b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_delim(b[i]) {
            i += 1;
        }
        let token = &value[start..i];
        let mut j = i;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if token.is_empty() || j >= b.len() || b[j] != b'=' {
            if !token.is_empty() {
                out.push((token.to_owned(), Vec::new()));
            }
            i = if token.is_empty() { i + 1 } else { i };
            continue;
        }
        let (val, next) = param_value(value, j + 1);
        if let Some(last) = out.last_mut() {
            last.1.push((token.to_owned(), val));
        }
        i = next;
    }
    out
}

/// A parameter value starting at `i` (after '='): quoted string or token. Returns it and the
/// index after it.
fn param_value(value: &str, mut i: usize) -> (String, usize) {
    let b = value.as_bytes();
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    if i < b.len() && b[i] == b'"' {
        let mut out = String::new();
        let mut chars = value[i + 1..].char_indices();
        while let Some((k, c)) = chars.next() {
            match c {
                '\\' => out.extend(chars.next().map(|(_, c)| c)),
                '"' => return (out, i + 1 + k + 1),
                c => out.push(c),
            }
        }
        return (out, b.len());
    }
    let start = i;
    while i < b.len() && b[i] != b',' && !b[i].is_ascii_whitespace() {
        i += 1;
    }
    (value[start..i].to_owned(), i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::thread::JoinHandle;

    const MAC: &str = "AgEEbHNhdAJCAAAn+Q==";
    const INV: &str = "lnbcrt100n1pjtest";

    #[test]
    fn challenge_prefers_l402() {
        let lsat = format!("LSAT macaroon=\"{MAC}\", invoice=\"{INV}\"");
        let l402 =
            format!("L402 macaroon=\"{MAC}x\", invoice=\"{INV}\", version=\"0\", token=\"{MAC}\"");
        let c = parse_challenge(&[&lsat, &l402]).unwrap();
        assert_eq!(
            (c.scheme.as_str(), c.macaroon.as_str(), c.invoice.as_str()),
            ("L402", &*format!("{MAC}x"), INV)
        );
        let c = parse_challenge(&[&lsat]).unwrap();
        assert_eq!((c.scheme.as_str(), c.macaroon.as_str()), ("LSAT", MAC));
        // Both challenges joined into one field by an intermediary.
        let joined = format!("{lsat}, {l402}");
        assert_eq!(parse_challenge(&[&joined]).unwrap().scheme, "L402");
    }

    #[test]
    fn challenge_variants() {
        // Spec-strict shape: token= only.
        let strict = format!("L402 version=\"0\", token=\"{MAC}\", invoice=\"{INV}\"");
        assert_eq!(parse_challenge(&[&strict]).unwrap().macaroon, MAC);
        // Missing comma after version (a deployed server does this).
        let sloppy = format!("L402 version=\"0\" token=\"{MAC}\", invoice={INV}");
        let c = parse_challenge(&[&sloppy]).unwrap();
        assert_eq!((c.macaroon.as_str(), c.invoice.as_str()), (MAC, INV));
        let escaped = "lsat macaroon=\"a\\\"b\", invoice=\"i\"";
        assert_eq!(parse_challenge(&[escaped]).unwrap().macaroon, "a\"b");
        assert_eq!(parse_challenge(&["Basic realm=\"x\""]), None);
        assert_eq!(parse_challenge(&["L402 macaroon=\"m\""]), None);
        assert_eq!(parse_challenge(&[]), None);
        assert_eq!(
            parse_challenge(&["Bearer abc==, L402 invoice=\"i\", macaroon=\"m\""])
                .unwrap()
                .macaroon,
            "m"
        );
    }

    #[test]
    fn payment_stream() {
        let pre = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(pre);
        let ndjson = format!(
            "{{\"result\":{{\"status\":\"IN_FLIGHT\"}}}}\n{{\"result\":{{\"status\":\"SUCCEEDED\",\"payment_preimage\":\"{b64}\"}}}}\n"
        );
        assert_eq!(read_payment_stream(ndjson.as_bytes()).unwrap(), pre);
        let hex_line = format!(
            "{{\"result\":{{\"status\":\"SUCCEEDED\",\"payment_preimage\":\"{}\"}}}}",
            hex::encode(pre)
        );
        assert_eq!(read_payment_stream(hex_line.as_bytes()).unwrap(), pre);
        let failed = "{\"result\":{\"status\":\"IN_FLIGHT\"}}\n{\"result\":{\"status\":\"FAILED\",\"failure_reason\":\"FAILURE_REASON_NO_ROUTE\"}}\n";
        let e = read_payment_stream(failed.as_bytes()).unwrap_err();
        assert!(
            matches!(&e, ClientError::PaymentFailed(r) if r == "FAILURE_REASON_NO_ROUTE"),
            "{e}"
        );
        let err = "{\"error\":{\"code\":2,\"message\":\"invoice is already paid\"}}\n";
        assert!(read_payment_stream(err.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("already paid"));
        let cut = "{\"result\":{\"status\":\"IN_FLIGHT\"}}\n";
        assert!(matches!(
            read_payment_stream(cut.as_bytes()),
            Err(ClientError::WalletIncomplete)
        ));
        assert!(read_payment_stream(&b"{\"result\": nope"[..]).is_err());
    }

    #[test]
    fn preimage_encodings() {
        let pre: [u8; 32] = core::array::from_fn(|i| i as u8);
        assert_eq!(decode_preimage(&hex::encode(pre)).unwrap(), pre);
        assert_eq!(
            decode_preimage(&base64::engine::general_purpose::STANDARD.encode(pre)).unwrap(),
            pre
        );
        assert_eq!(
            decode_preimage(&base64::engine::general_purpose::URL_SAFE.encode(pre)).unwrap(),
            pre
        );
        assert!(decode_preimage("abcd").is_err());
        assert!(decode_preimage("").is_err());
    }

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8081/a/b?q=1#frag").unwrap();
        assert_eq!(
            (t.host.as_str(), t.connect.as_str(), t.path.as_str()),
            ("127.0.0.1:8081", "127.0.0.1:8081", "/a/b?q=1")
        );
        let t = Target::parse("http://example.com").unwrap();
        assert_eq!(
            (t.host.as_str(), t.connect.as_str(), t.path.as_str()),
            ("example.com", "example.com:80", "/")
        );
        let t = Target::parse("http://[::1]:9/x").unwrap();
        assert_eq!(t.connect, "[::1]:9");
        assert_eq!(Target::parse("http://[::1]/").unwrap().connect, "[::1]:80");
        assert!(matches!(
            Target::parse("https://x/"),
            Err(ClientError::UnsupportedScheme { .. })
        ));
        assert!(Target::parse("http://h:port/").is_err());
        assert!(Target::parse("nourl").is_err());
        assert!(Target::parse("http:///x").is_err());
    }

    /// Reads one request (head + Content-Length body) from a fake-server connection.
    fn read_request(stream: &mut TcpStream) -> String {
        let mut r = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let len = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        head + "\r\n" + &String::from_utf8(body).unwrap()
    }

    type Reply = Box<dyn FnOnce(&str) -> Vec<u8> + Send>;

    /// A fake server on port 0 answering one connection per reply; returns the requests it saw.
    fn serve(replies: Vec<Reply>) -> (SocketAddr, JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for reply in replies {
                let (mut s, _) = listener.accept().unwrap();
                let req = read_request(&mut s);
                s.write_all(&reply(&req)).unwrap();
                seen.push(req);
            }
            seen
        });
        (addr, handle)
    }

    fn fixed(resp: &str) -> Reply {
        let resp = resp.as_bytes().to_vec();
        Box::new(move |_| resp)
    }

    fn opts(addr: SocketAddr, path: &str) -> FetchOptions {
        FetchOptions {
            url: format!("http://{addr}{path}"),
            wallet: format!("http://{addr}"),
            timeout: Duration::from_secs(10),
            ..FetchOptions::default()
        }
    }

    #[test]
    fn reads_length_chunked_and_close_bodies() {
        let (addr, h) = serve(vec![
            fixed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello"),
            fixed("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"),
            fixed("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close"),
            fixed("HTTP/1.1 204 No Content\r\n\r\n"),
        ]);
        let r = fetch(&opts(addr, "/one")).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        assert!(r.headers.contains(&("X-A".to_owned(), "1".to_owned())));
        assert!(r.paid.is_none());
        let r = fetch(&opts(addr, "/two")).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"hello, world"[..]));
        let r = fetch(&opts(addr, "/three")).unwrap();
        assert_eq!(r.body, b"until close");
        let r = fetch(&opts(addr, "/four")).unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        let seen = h.join().unwrap();
        assert!(
            seen[0].starts_with("GET /one HTTP/1.1\r\n")
                && seen[0].contains(&format!("Host: {addr}\r\n")),
            "{}",
            seen[0]
        );
    }

    #[test]
    fn truncated_and_malformed_responses_fail() {
        let (addr, h) = serve(vec![
            fixed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
            fixed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            fixed("garbage\r\n\r\n"),
        ]);
        assert!(matches!(
            fetch(&opts(addr, "/")),
            Err(ClientError::Io { .. })
        ));
        assert!(matches!(
            fetch(&opts(addr, "/")),
            Err(ClientError::Io { .. })
        ));
        assert!(matches!(
            fetch(&opts(addr, "/")),
            Err(ClientError::Response { .. })
        ));
        h.join().unwrap();
    }

    #[test]
    fn pays_a_402_and_retries_with_the_credential() {
        let pre = [9u8; 32];
        let pre_b64 = base64::engine::general_purpose::STANDARD.encode(pre);
        let expected_auth = format!("Authorization: L402 {MAC}:{}\r\n", hex::encode(pre));
        let challenge = format!(
            "HTTP/1.1 402 Payment Required\r\nWWW-Authenticate: LSAT macaroon=\"{MAC}\", invoice=\"{INV}\"\r\nWWW-Authenticate: L402 macaroon=\"{MAC}\", invoice=\"{INV}\", version=\"0\", token=\"{MAC}\"\r\nContent-Length: 17\r\n\r\npayment required\n"
        );
        let lines = format!("{{\"result\":{{\"status\":\"IN_FLIGHT\"}}}}\n{{\"result\":{{\"status\":\"SUCCEEDED\",\"payment_preimage\":\"{pre_b64}\"}}}}\n");
        let wallet = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{lines}\r\n0\r\n\r\n",
            lines.len()
        );
        let auth = expected_auth.clone();
        let (addr, h) = serve(vec![
            fixed(&challenge),
            fixed(&wallet),
            Box::new(move |req: &str| {
                let status = if req.contains(&auth) {
                    "200 OK"
                } else {
                    "402 Payment Required"
                };
                format!("HTTP/1.1 {status}\r\nContent-Length: 4\r\n\r\npaid").into_bytes()
            }),
        ]);
        let mut o = opts(addr, "/api?x=1");
        o.method = "POST".to_owned();
        o.body = Some(b"in".to_vec());
        let r = fetch(&o).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"paid"[..]));
        assert_eq!(
            r.paid,
            Some(Payment {
                scheme: "L402",
                macaroon: MAC.into(),
                invoice: INV.into(),
                preimage_hex: hex::encode(pre)
            })
        );
        let seen = h.join().unwrap();
        assert!(
            seen[0].starts_with("POST /api?x=1 ") && seen[0].ends_with("\r\n\r\nin"),
            "{}",
            seen[0]
        );
        assert!(
            seen[1].starts_with("POST /v2/router/send HTTP/1.1"),
            "{}",
            seen[1]
        );
        let body: serde_json::Value =
            serde_json::from_str(seen[1].split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"payment_request": INV, "timeout_seconds": 60, "fee_limit_sat": 100})
        );
        assert!(seen[2].contains(&expected_auth), "{}", seen[2]);
    }

    #[test]
    fn wallet_failures_are_reported() {
        let challenge = format!("HTTP/1.1 402 Payment Required\r\nWWW-Authenticate: L402 macaroon=\"{MAC}\", invoice=\"{INV}\"\r\nContent-Length: 0\r\n\r\n");
        let failed =
            "{\"result\":{\"status\":\"FAILED\",\"failure_reason\":\"FAILURE_REASON_TIMEOUT\"}}";
        let (addr, h) = serve(vec![
            fixed(&challenge),
            fixed(&format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{failed}", failed.len())),
            fixed(&challenge),
            fixed("HTTP/1.1 401 Unauthorized\r\nContent-Length: 14\r\n\r\nbad macaroon\r\n"),
            fixed("HTTP/1.1 402 Payment Required\r\nWWW-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\n\r\n"),
        ]);
        let e = fetch(&opts(addr, "/")).unwrap_err();
        assert!(
            matches!(&e, ClientError::PaymentFailed(r) if r.contains("TIMEOUT")),
            "{e}"
        );
        let e = fetch(&opts(addr, "/")).unwrap_err();
        assert!(
            matches!(&e, ClientError::WalletHttp { status: 401, body, .. } if body == "bad macaroon"),
            "{e}"
        );
        assert!(matches!(
            fetch(&opts(addr, "/")),
            Err(ClientError::Challenge(_))
        ));
        h.join().unwrap();
    }
}
