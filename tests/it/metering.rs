//! Metered pricing (`dynamicprice.metered`) against the in-process fake pricer (every rpc of
//! Go's `pricesrpc.Prices`) and a fake OpenAI-compatible origin: each rpc at its moment with its
//! fields (a minted 402 booked, a paid request admitted, its response's tail reported), each
//! failure answer, the tail of a 5 MB event stream, a client that leaves mid-stream, and a usage
//! report the pricer refuses kept in the database and delivered after a restart.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use aperture::store::Store;
use lnd_bridge::fake::pricer::{FakePricer, MeterCall, Rpc};

use crate::openai::{usage_event, OpenAi};
use crate::pricing::invoice_sats;
use crate::support::{challenge, pay, service, wait_until, Conn, Proxy, Response};

const PATH: &str = "/v1/chat/completions";
const WAIT: Duration = Duration::from_secs(20);

fn top(dir: &Path) -> String {
    format!(
        "sqlite:\n  databasefilename: \"{}\"\n",
        dir.join("aperture.db").display()
    )
}

fn services(pricer: &FakePricer, origin: &OpenAi, metered: bool, extra: &str) -> String {
    let dynamic = format!(
        "    dynamicprice:\n      enabled: true\n      grpcaddress: \"{}\"\n      insecure: true\n      metered: {metered}\n{extra}",
        pricer.addr()
    );
    service("llm", origin.addr, &dynamic)
}

fn start(dir: tempfile::TempDir, pricer: &FakePricer, origin: &OpenAi, extra: &str) -> Proxy {
    let top = top(dir.path());
    Proxy::start_in(dir, &services(pricer, origin, true, extra), 2, &top, 4096)
}

fn body(stream: bool) -> String {
    format!("{{\"model\":\"gpt-test\",\"max_tokens\":64,\"stream\":{stream},\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}")
}

fn chat(authorization: &str, query: &str, stream: bool) -> Vec<u8> {
    let body = body(stream);
    let auth = if authorization.is_empty() {
        String::new()
    } else {
        format!("Authorization: {authorization}\r\n")
    };
    format!(
        "POST {PATH}{query} HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nAccept-Encoding: gzip, br\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn send(proxy: &Proxy, raw: &[u8]) -> Response {
    Conn::open(proxy.addr).request(raw)
}

/// The token id (hex) inside a base64 macaroon.
fn token_id_of(macaroon: &str) -> String {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(macaroon)
        .unwrap();
    let mac = aperture::l402::Macaroon::decode_v2(&raw).unwrap();
    let id = aperture::l402::Identifier::decode(&mac.identifier).unwrap();
    hex::encode(id.token_id)
}

/// 402 → pay: the `Authorization` value and the token id.
fn buy(proxy: &Proxy) -> (String, String) {
    let resp = send(proxy, &chat("", "", false));
    assert_eq!(resp.status, 402, "{}", resp.text());
    let (mac, invoice) = challenge(&resp);
    let preimage = pay(proxy.wallet, &invoice);
    (format!("L402 {mac}:{preimage}"), token_id_of(&mac))
}

fn minted(pricer: &FakePricer) -> Vec<lnd_bridge::fake::pricer::ChallengeMintedRequest> {
    let calls = pricer.meter_calls().into_iter();
    calls
        .filter_map(|c| match c {
            MeterCall::Minted(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn authorized(pricer: &FakePricer) -> Vec<lnd_bridge::fake::pricer::AuthorizeRequestRequest> {
    let calls = pricer.meter_calls().into_iter();
    calls
        .filter_map(|c| match c {
            MeterCall::Authorize(a) => Some(a),
            _ => None,
        })
        .collect()
}

#[test]
fn every_rpc_is_called_at_its_moment_with_its_fields() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    pricer.set_verdict(true, 0, 4096);
    let proxy = start(tempfile::tempdir().unwrap(), &pricer, &origin, "");

    // The 402: priced (GetPrice), then booked (ChallengeMinted) under the macaroon's token id.
    let resp = send(&proxy, &chat("", "", false));
    assert_eq!(resp.status, 402, "{}", resp.text());
    let (mac, invoice) = challenge(&resp);
    assert_eq!(invoice_sats(&invoice), 10);
    assert_eq!(pricer.calls().len(), 1);
    let booked = minted(&pricer);
    assert_eq!(booked.len(), 1, "{booked:?}");
    let m = &booked[0];
    assert_eq!(m.token_id, token_id_of(&mac));
    assert_eq!(
        (m.price_sats, m.service_name.as_str(), m.path.as_str()),
        (10, "llm", PATH)
    );
    assert!(
        m.http_request_text.starts_with(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: api\r\nAccept-Encoding: gzip, br\r\n"
        ),
        "{}",
        m.http_request_text
    );
    assert!(m
        .http_request_text
        .ends_with(&format!("\r\n\r\n{}", body(false))));

    // The paid request: admitted (AuthorizeRequest) with its token and body, forwarded without
    // Accept-Encoding, and its whole (small) JSON body reported as the tail.
    let preimage = pay(proxy.wallet, &invoice);
    let resp = send(&proxy, &chat(&format!("L402 {mac}:{preimage}"), "", false));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.text().contains("\"usage\""), "{}", resp.text());
    let asked = authorized(&pricer);
    assert_eq!(asked.len(), 1);
    let a = &asked[0];
    assert_eq!(
        (
            a.token_id.as_str(),
            a.service_name.as_str(),
            a.path.as_str()
        ),
        (m.token_id.as_str(), "llm", PATH)
    );
    assert!(
        a.http_request_text.contains("\r\nAuthorization: L402 "),
        "{}",
        a.http_request_text
    );
    assert!(a.http_request_text.ends_with(&body(false)));
    let head = origin.heads().pop().unwrap().to_ascii_lowercase();
    assert!(!head.contains("accept-encoding"), "{head}");

    wait_until("the usage report", WAIT, || {
        pricer.usage_reports().len() == 1
    });
    let r = pricer.usage_reports().remove(0);
    assert_eq!(r.token_id, m.token_id);
    assert_eq!((r.path.as_str(), r.service_name.as_str()), (PATH, "llm"));
    assert_eq!(
        (r.http_status, r.complete, r.reserved_estimate),
        (200, true, 4096)
    );
    assert_eq!(r.content_type, "application/json");
    assert_eq!(r.content_encoding, "");
    assert_eq!(r.response_tail, resp.body);
    // In that order, and nothing else (GetPrice is not a metered rpc).
    let order: Vec<&str> = pricer
        .meter_calls()
        .iter()
        .map(|c| match c {
            MeterCall::Minted(_) => "minted",
            MeterCall::Authorize(_) => "authorize",
            MeterCall::Usage(_) => "usage",
            MeterCall::Quote(_) => "quote",
            MeterCall::Settle(_) => "settle",
        })
        .collect();
    assert_eq!(order, ["minted", "authorize", "usage"]);
}

#[test]
fn the_tail_of_a_5mb_event_stream_holds_its_final_usage_chunk() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    let proxy = start(tempfile::tempdir().unwrap(), &pricer, &origin, "");
    let (auth, token_id) = buy(&proxy);
    let resp = send(&proxy, &chat(&auth, "?bytes=5000000", true));
    assert_eq!(resp.status, 200);
    assert!(resp.body.len() > 5_000_000, "{}", resp.body.len());
    wait_until("the usage report", WAIT, || {
        pricer.usage_reports().len() == 1
    });
    let r = pricer.usage_reports().remove(0);
    assert_eq!(r.token_id, token_id);
    assert_eq!((r.http_status, r.complete), (200, true));
    assert_eq!(r.content_type, "text/event-stream");
    // The last 16384 bytes of the de-chunked body: the usage event, then [DONE].
    assert_eq!(r.response_tail.len(), 16384);
    assert_eq!(r.response_tail, resp.body[resp.body.len() - 16384..]);
    let tail = String::from_utf8(r.response_tail).unwrap();
    let events = resp.text().matches("\"delta\"").count();
    let usage = usage_event(body(true).len().div_ceil(4), events * 1000);
    assert!(
        tail.ends_with(&format!("{usage}data: [DONE]\n\n")),
        "{}",
        &tail[tail.len() - 300..]
    );
}

#[test]
fn a_client_that_leaves_mid_stream_is_reported_incomplete() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    pricer.set_verdict(true, 0, 64);
    let proxy = start(
        tempfile::tempdir().unwrap(),
        &pricer,
        &origin,
        "      usagetailbytes: 100\n",
    );
    let (auth, _) = buy(&proxy);
    let mut client = TcpStream::connect(proxy.addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client
        .write_all(&chat(&auth, "?bytes=100000&stall=1", true))
        .unwrap();
    // The first event arrives, then the origin stalls and the client leaves.
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    while !String::from_utf8_lossy(&seen).contains("\"delta\"") {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(client);
    wait_until("the usage report", WAIT, || {
        pricer.usage_reports().len() == 1
    });
    origin.release();
    let r = pricer.usage_reports().remove(0);
    assert_eq!(
        (r.http_status, r.complete, r.reserved_estimate),
        (200, false, 64)
    );
    // At most the configured tail: the end of the one event that went through.
    assert_eq!(r.response_tail.len(), 100);
    assert!(
        r.response_tail.ends_with(b"\"}}]}\n\n"),
        "{}",
        String::from_utf8_lossy(&r.response_tail)
    );
}

#[test]
fn each_failure_gets_gos_answer() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    let proxy = start(tempfile::tempdir().unwrap(), &pricer, &origin, "");

    // A challenge that cannot be booked is not sent.
    pricer.set_rpc_failing(Rpc::ChallengeMinted, true);
    let resp = send(&proxy, &chat("", "", false));
    assert_eq!(resp.status, 500);
    assert!(resp.text().contains("challenge failure"), "{}", resp.text());
    assert!(resp.header("www-authenticate").is_none());
    pricer.set_rpc_failing(Rpc::ChallengeMinted, false);

    // A pricer that cannot be asked: 500, nothing forwarded.
    let (auth, token_id) = buy(&proxy);
    let before = origin.heads().len();
    pricer.set_rpc_failing(Rpc::AuthorizeRequest, true);
    let resp = send(&proxy, &chat(&auth, "", false));
    assert_eq!(resp.status, 500);
    assert!(
        resp.text().contains("failure authorizing metered request"),
        "{}",
        resp.text()
    );
    pricer.set_rpc_failing(Rpc::AuthorizeRequest, false);

    // Refused at a price: a fresh 402 at that price, booked.
    pricer.set_verdict(false, 33, 0);
    let resp = send(&proxy, &chat(&auth, "", false));
    assert_eq!(resp.status, 402, "{}", resp.text());
    let (mac, invoice) = challenge(&resp);
    assert_eq!(invoice_sats(&invoice), 33);
    let last = minted(&pricer).pop().unwrap();
    assert_eq!((last.token_id, last.price_sats), (token_id_of(&mac), 33));
    assert_ne!(token_id_of(&mac), token_id);

    // Refused without a price: GetPrice names it.
    pricer.set_verdict(false, 0, 0);
    pricer.set_price(7);
    let resp = send(&proxy, &chat(&auth, "", false));
    assert_eq!(resp.status, 402, "{}", resp.text());
    assert_eq!(invoice_sats(&challenge(&resp).1), 7);

    // None of those reached the origin or were reported.
    assert_eq!(origin.heads().len(), before);
    assert!(pricer.usage_reports().is_empty());
}

#[test]
fn unmetered_paid_requests_never_reach_the_metered_rpcs() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let top = top(dir.path());
    let proxy = Proxy::start_in(dir, &services(&pricer, &origin, false, ""), 2, &top, 4096);
    let (auth, _) = buy(&proxy);
    let resp = send(&proxy, &chat(&auth, "", false));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(pricer.meter_calls().is_empty());
    // Accept-Encoding goes through untouched.
    let head = origin.heads().pop().unwrap().to_ascii_lowercase();
    assert!(head.contains("accept-encoding: gzip, br"), "{head}");
}

#[test]
fn a_refused_usage_report_is_retried_then_kept_and_delivered_after_a_restart() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    pricer.set_verdict(true, 0, 128);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aperture.db");
    let proxy = start(dir, &pricer, &origin, "");
    let (auth, token_id) = buy(&proxy);
    pricer.set_rpc_failing(Rpc::ReportUsage, true);
    let resp = send(&proxy, &chat(&auth, "", false));
    assert_eq!(resp.status, 200);
    // Go's schedule: four attempts (0.5 s, 1 s, 2 s apart), then the report is kept.
    let kept = |p: &Proxy| {
        p.store
            .as_ref()
            .unwrap()
            .handle()
            .stats()
            .usage_recorded
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    wait_until("four attempts and a kept report", WAIT, || {
        pricer.usage_reports().len() == 4 && kept(&proxy) == 1
    });
    let first = pricer.usage_reports().remove(0);
    assert!(pricer.usage_reports().iter().all(|r| *r == first));
    assert_eq!(proxy.bridge().handle().usage_stats().failed_attempts, 4);

    // Restarted with the pricer back: the kept report is delivered, then its row deleted.
    let dir = proxy.stop();
    pricer.set_rpc_failing(Rpc::ReportUsage, false);
    let proxy = start(dir, &pricer, &origin, "");
    wait_until("the replayed report", WAIT, || {
        pricer.usage_reports().len() == 5
    });
    let replayed = pricer.usage_reports().pop().unwrap();
    assert_eq!(replayed, first);
    assert_eq!(
        (replayed.token_id.as_str(), replayed.reserved_estimate),
        (token_id.as_str(), 128)
    );
    wait_until("the kept row deleted", WAIT, || kept(&proxy) == 1);
    let dir = proxy.stop();
    let mut store = aperture::store::sqlite::SqliteStore::open(&db, false).unwrap();
    assert!(store.pending_usage(10).unwrap().is_empty());
    drop(dir);
}

#[test]
fn reports_in_flight_at_shutdown_are_kept() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aperture.db");
    let proxy = start(dir, &pricer, &origin, "");
    let (auth, token_id) = buy(&proxy);
    pricer.set_rpc_failing(Rpc::ReportUsage, true);
    assert_eq!(send(&proxy, &chat(&auth, "", false)).status, 200);
    // The first attempt failed; the proxy stops while the report waits for its retry.
    wait_until("a first attempt", WAIT, || {
        !pricer.usage_reports().is_empty()
    });
    let dir = proxy.stop();
    let mut store = aperture::store::sqlite::SqliteStore::open(&db, false).unwrap();
    let kept = store.pending_usage(10).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].token_id, token_id);
    assert_eq!(kept[0].target, pricer.target());
    drop(dir);
}

#[test]
fn a_payment_charge_is_booked_and_admitted_by_its_payment_hash() {
    use sha2::Digest;
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let top = format!(
        "authenticator:\n  network: regtest\n  enablempp: true\n  mpprealm: \"api.example.com\"\n  dev:\n    listenaddr: \"127.0.0.1:0\"\n{}",
        top(dir.path())
    );
    let proxy = Proxy::start_in(dir, &services(&pricer, &origin, true, ""), 2, &top, 4096);
    let resp = send(&proxy, &chat("", "", false));
    assert_eq!(resp.status, 402, "{}", resp.text());
    // Booked twice: the L402 token id, then the charge's payment hash.
    let booked = minted(&pricer);
    assert_eq!(booked.len(), 2, "{booked:?}");
    assert_eq!(booked[0].token_id, token_id_of(&challenge(&resp).0));
    let charge = crate::payment::payment_challenges(&resp)
        .into_iter()
        .find(|c| c.intent == "charge")
        .expect("a charge challenge");
    let request = aperture::mpp::b64::decode(&charge.request).unwrap();
    let request: serde_json::Value = serde_json::from_slice(&request).unwrap();
    let preimage = pay(
        proxy.wallet,
        request["methodDetails"]["invoice"].as_str().unwrap(),
    );
    let hash = hex::encode(sha2::Sha256::digest(hex::decode(&preimage).unwrap()));
    assert_eq!(
        (booked[1].token_id.as_str(), booked[1].price_sats),
        (hash.as_str(), 10)
    );

    let auth = crate::payment::credential(&charge, &preimage);
    let resp = send(&proxy, &chat(&auth, "", false));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(authorized(&pricer)[0].token_id, hash);
    wait_until("the usage report", WAIT, || {
        pricer.usage_reports().len() == 1
    });
    assert_eq!(pricer.usage_reports()[0].token_id, hash);

    // A replay of the used charge: a fresh 402, booked like every other, never admitted.
    let resp = send(&proxy, &chat(&auth, "", false));
    assert_eq!(resp.status, 402, "{}", resp.text());
    let booked = minted(&pricer);
    assert_eq!(booked.len(), 4, "{booked:?}");
    assert_eq!(booked[2].token_id, token_id_of(&challenge(&resp).0));
    assert_eq!(authorized(&pricer).len(), 1);
}

#[test]
fn a_tail_longer_than_a_read_spans_reads_in_order() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    let extra = "      usagetailbytes: 100000\n";
    let proxy = start(tempfile::tempdir().unwrap(), &pricer, &origin, extra);
    let (auth, _) = buy(&proxy);
    for (query, stream) in [("?bytes=1000000", true), ("", false)] {
        let n = pricer.usage_reports().len();
        let resp = send(&proxy, &chat(&auth, query, stream));
        assert_eq!(resp.status, 200);
        wait_until("the usage report", WAIT, || {
            pricer.usage_reports().len() == n + 1
        });
        let tail = pricer.usage_reports().pop().unwrap().response_tail;
        let keep = resp.body.len().min(100_000);
        assert_eq!(tail.len(), keep);
        assert!(tail == resp.body[resp.body.len() - keep..], "{query}");
    }
}

/// POSTs a chat request over h2c (prior knowledge) with `authorization`; status and body.
pub(crate) async fn h2_chat(
    addr: std::net::SocketAddr,
    authorization: &str,
    query: &str,
    stream: bool,
) -> (u16, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::post(format!("http://api{PATH}{query}"))
        .header("authorization", authorization)
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip")
        .body(())
        .unwrap();
    let (resp, mut tx) = send.send_request(req, false).expect("send");
    tx.send_data(bytes::Bytes::from(body(stream)), true)
        .unwrap();
    let resp = resp.await.expect("response");
    let status = resp.status().as_u16();
    let mut recv = resp.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("body");
        let _ = recv.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    (status, out)
}

#[test]
fn an_h2_client_is_metered_through_an_http1_upstream() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    pricer.set_verdict(true, 0, 7);
    let proxy = start(tempfile::tempdir().unwrap(), &pricer, &origin, "");
    let (auth, token_id) = buy(&proxy);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (query, stream) in [("", false), ("?bytes=300000", true)] {
        let n = pricer.usage_reports().len();
        let (status, body) = rt.block_on(h2_chat(proxy.addr, &auth, query, stream));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(authorized(&pricer).last().unwrap().token_id, token_id);
        assert!(authorized(&pricer)
            .last()
            .unwrap()
            .http_request_text
            .starts_with("POST /v1/chat/completions"));
        let head = origin.heads().pop().unwrap().to_ascii_lowercase();
        assert!(!head.contains("accept-encoding"), "{head}");
        wait_until("the usage report", WAIT, || {
            pricer.usage_reports().len() == n + 1
        });
        let r = pricer.usage_reports().pop().unwrap();
        assert_eq!(
            (
                r.token_id.as_str(),
                r.http_status,
                r.complete,
                r.reserved_estimate
            ),
            (token_id.as_str(), 200, true, 7)
        );
        let keep = body.len().min(16384);
        assert!(r.response_tail == body[body.len() - keep..], "{query}");
    }
}
