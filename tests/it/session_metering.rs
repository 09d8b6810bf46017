//! Payment sessions on a service with a pricer (`dynamicprice.enabled`), against the in-process
//! fake pricer and fake OpenAI-compatible origin: `QuoteSession` at each 402 (its unit price and
//! deposit in the session challenge; `Unimplemented` and errors fall back to the charge price),
//! and `SettleSession` after each bearer request's response (its fields; `complete=false` for a
//! client that leaves mid-stream), whose cost moves the session's balance by cost − estimate,
//! clamped to what is left, and whose absence leaves the estimate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use aperture::store::Store;
use lnd_bridge::fake::pricer::{FakePricer, SessionAnswer};

use crate::openai::OpenAi;
use crate::pricing::invoice_sats;
use crate::session::{credential, return_invoice, session_challenge};
use crate::support::{pay, service, wait_until, Conn, Proxy, Response};

const PATH: &str = "/v1/chat/completions";
const WAIT: Duration = Duration::from_secs(20);

/// Sessions on (deposit = 3 units unless quoted), the dev backend, SQLite in the basedir, and
/// one Payment-only service priced by `pricer` (metered or not).
fn start(pricer: &FakePricer, origin: &OpenAi, metered: bool) -> (Proxy, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aperture.db");
    let top = format!(
        "authenticator:\n  network: regtest\n  enablempp: true\n  enablesessions: true\n  sessiondepositmultiplier: 3\n  mpprealm: \"api.example.com\"\n  dev:\n    listenaddr: \"127.0.0.1:0\"\nsqlite:\n  databasefilename: \"{}\"\n",
        db.display()
    );
    let extra = format!(
        "    authscheme: \"mpp\"\n    dynamicprice:\n      enabled: true\n      grpcaddress: \"{}\"\n      insecure: true\n      metered: {metered}\n",
        pricer.addr()
    );
    let proxy = Proxy::start_in(dir, &service("llm", origin.addr, &extra), 2, &top, 4096);
    (proxy, db)
}

fn body(stream: bool) -> String {
    format!("{{\"model\":\"gpt-test\",\"max_tokens\":64,\"stream\":{stream},\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}")
}

fn chat(authorization: Option<&str>, query: &str, stream: bool) -> Vec<u8> {
    let body = body(stream);
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    format!(
        "POST {PATH}{query} HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nAccept-Encoding: gzip, br\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn send(proxy: &Proxy, raw: &[u8]) -> Response {
    Conn::open(proxy.addr).request(raw)
}

/// What the database says the session has spent.
fn spent(db: &Path, session_id: &str) -> u64 {
    let mut store = aperture::store::sqlite::SqliteStore::open(db, false).unwrap();
    store.session(session_id).unwrap().unwrap().spent_sats
}

/// A 402's session request: (unit amount, deposit amount, deposit invoice's sats).
fn session_prices(resp: &Response) -> (String, String, u64) {
    let (_, request) = session_challenge(resp);
    let invoice = request["depositInvoice"].as_str().unwrap();
    (
        request["amount"].as_str().unwrap().to_owned(),
        request["depositAmount"].as_str().unwrap().to_owned(),
        invoice_sats(invoice),
    )
}

/// 402 → pay the deposit → open: the bearer credential and the session id.
fn open(proxy: &Proxy) -> (String, String) {
    let first = send(proxy, &chat(None, "", false));
    assert_eq!(first.status, 402, "{}", first.text());
    let (c, request) = session_challenge(&first);
    let preimage = pay(proxy.wallet, request["depositInvoice"].as_str().unwrap());
    let session_id = request["paymentHash"].as_str().unwrap().to_owned();
    let (invoice, _) = return_invoice(proxy.wallet);
    let payload =
        serde_json::json!({"action": "open", "preimage": preimage, "returnInvoice": invoice});
    let opened = send(proxy, &chat(Some(&credential(&c, payload)), "", false));
    assert_eq!(opened.status, 200, "{}", opened.text());
    let bearer = credential(
        &c,
        serde_json::json!({"action": "bearer", "sessionId": session_id, "preimage": preimage}),
    );
    (bearer, session_id)
}

#[test]
fn a_402_carries_the_pricers_session_quote() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    pricer.set_quote(SessionAnswer::Answer(4, 100));
    let (proxy, _db) = start(&pricer, &origin, false);
    let resp = send(&proxy, &chat(None, "", false));
    assert_eq!(resp.status, 402, "{}", resp.text());
    assert_eq!(
        session_prices(&resp),
        ("4".to_owned(), "100".to_owned(), 100)
    );
    let quotes = pricer.quotes();
    assert_eq!(quotes.len(), 1, "{quotes:?}");
    let q = &quotes[0];
    assert_eq!(
        (
            q.session_id.as_str(),
            q.path.as_str(),
            q.service_name.as_str()
        ),
        ("", PATH, "llm")
    );
    assert!(
        q.http_request_text
            .starts_with("POST /v1/chat/completions HTTP/1.1\r\nHost: api\r\n"),
        "{}",
        q.http_request_text
    );
    assert!(q.http_request_text.ends_with(&body(false)));
    // The charge challenge keeps the charge price.
    let charge = crate::payment::payment_challenges(&resp)
        .into_iter()
        .find(|c| c.intent == "charge")
        .expect("a charge challenge");
    let request = aperture::mpp::b64::decode(&charge.request).unwrap();
    let request: serde_json::Value = serde_json::from_slice(&request).unwrap();
    assert_eq!(request["amount"], "10");

    // A quote without a deposit: the multiplier's deposit of the quoted unit.
    pricer.set_quote(SessionAnswer::Answer(5, 0));
    let resp = send(&proxy, &chat(None, "", false));
    assert_eq!(session_prices(&resp), ("5".to_owned(), "15".to_owned(), 15));
}

#[test]
fn without_a_quote_the_session_is_offered_at_the_charge_price() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    let (proxy, _db) = start(&pricer, &origin, true);
    // Unimplemented (the fake's default), then a failing pricer: both quietly fall back.
    for answer in [SessionAnswer::Unimplemented, SessionAnswer::Fail] {
        pricer.set_quote(answer);
        let n = pricer.quotes().len();
        let resp = send(&proxy, &chat(None, "", false));
        assert_eq!(resp.status, 402, "{answer:?}: {}", resp.text());
        assert_eq!(
            session_prices(&resp),
            ("10".to_owned(), "30".to_owned(), 30),
            "{answer:?}"
        );
        assert_eq!(pricer.quotes().len(), n + 1, "{answer:?}");
    }
}

#[test]
fn bearer_responses_are_settled_and_their_cost_moves_the_balance() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    pricer.set_quote(SessionAnswer::Answer(4, 100));
    let (proxy, db) = start(&pricer, &origin, false);
    let (bearer, session_id) = open(&proxy);
    // The open is debited 1 sat (no static price) and never settled.
    wait_until("the open's debit written", WAIT, || {
        spent(&db, &session_id) == 1
    });
    assert!(pricer.settlements().is_empty());

    // Each step: how the pricer answers, and what the session has spent after it.
    let steps = [
        (SessionAnswer::Answer(9, 0), 10),     // 4 debited, 5 more
        (SessionAnswer::Answer(1, 0), 11),     // 4 debited, 3 back
        (SessionAnswer::Answer(0, 0), 11),     // free: all 4 back
        (SessionAnswer::Unimplemented, 15),    // the estimate stands
        (SessionAnswer::Fail, 19),             // the estimate stands
        (SessionAnswer::Answer(1000, 0), 100), // clamped at the deposit
    ];
    for (i, (answer, want)) in steps.into_iter().enumerate() {
        pricer.set_settle(answer);
        let resp = send(&proxy, &chat(Some(&bearer), "", false));
        assert_eq!(resp.status, 200, "{answer:?}: {}", resp.text());
        wait_until("the settlement", WAIT, || {
            pricer.settlements().len() == i + 1
        });
        let s = pricer.settlements().pop().unwrap();
        assert_eq!(
            (
                s.session_id.as_str(),
                s.path.as_str(),
                s.service_name.as_str()
            ),
            (session_id.as_str(), PATH, "llm")
        );
        assert_eq!((s.http_status, s.complete, s.estimate_sats), (200, true, 4));
        assert_eq!(s.content_type, "application/json");
        assert_eq!(s.content_encoding, "");
        assert_eq!(s.response_tail, resp.body);
        assert!(
            s.http_request_text.contains("\r\nAuthorization: Payment "),
            "{}",
            s.http_request_text
        );
        assert!(s.http_request_text.ends_with(&body(false)));
        // Stripped upstream, so the tail is plain text.
        let head = origin.heads().pop().unwrap().to_ascii_lowercase();
        assert!(!head.contains("accept-encoding"), "{head}");
        wait_until(&format!("{answer:?}: spent {want}"), WAIT, || {
            spent(&db, &session_id) == want
        });
    }
    // Nothing is left: the next bearer is refused with a top-up offer, never overdrawn.
    let short = send(&proxy, &chat(Some(&bearer), "", false));
    assert_eq!(short.status, 402, "{}", short.text());
    // The top-up offer carries the pricer's quote too.
    assert_eq!(
        session_prices(&short),
        ("4".to_owned(), "100".to_owned(), 100)
    );
    assert_eq!(pricer.settlements().len(), steps.len());
    assert_eq!(spent(&db, &session_id), 100);
}

#[test]
fn a_client_that_leaves_mid_stream_is_settled_incomplete() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    let (proxy, _db) = start(&pricer, &origin, true);
    let (bearer, session_id) = open(&proxy);
    let mut client = TcpStream::connect(proxy.addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client
        .write_all(&chat(Some(&bearer), "?bytes=100000&stall=1", true))
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
    wait_until("the settlement", WAIT, || pricer.settlements().len() == 1);
    origin.release();
    let s = pricer.settlements().remove(0);
    assert_eq!(s.session_id, session_id);
    assert_eq!(
        (s.http_status, s.complete, s.estimate_sats),
        (200, false, 10)
    );
    assert_eq!(s.content_type, "text/event-stream");
    assert!(
        String::from_utf8_lossy(&s.response_tail).contains("\"delta\""),
        "{}",
        String::from_utf8_lossy(&s.response_tail)
    );
    // A session is not a metered token: no metered rpc for it.
    assert!(pricer.usage_reports().is_empty());
}

#[test]
fn an_h2_bearer_is_settled_through_an_http1_upstream() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    pricer.set_quote(SessionAnswer::Answer(4, 100));
    pricer.set_settle(SessionAnswer::Answer(6, 0));
    let (proxy, db) = start(&pricer, &origin, false);
    let (bearer, session_id) = open(&proxy);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body) = rt.block_on(crate::metering::h2_chat(proxy.addr, &bearer, "", false));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let head = origin.heads().pop().unwrap().to_ascii_lowercase();
    assert!(!head.contains("accept-encoding"), "{head}");
    wait_until("the settlement", WAIT, || pricer.settlements().len() == 1);
    let s = pricer.settlements().remove(0);
    assert_eq!(
        (
            s.session_id.as_str(),
            s.http_status,
            s.complete,
            s.estimate_sats
        ),
        (session_id.as_str(), 200, true, 4)
    );
    assert_eq!(s.response_tail, body);
    // The HTTP/2 request text is the head alone.
    assert!(
        s.http_request_text
            .starts_with("POST /v1/chat/completions HTTP/2.0\r\n"),
        "{}",
        s.http_request_text
    );
    // 1 (the open) + 4 (the estimate) + 2 (the settlement).
    wait_until("spent 7", WAIT, || spent(&db, &session_id) == 7);
}

#[test]
fn a_402_without_the_session_intent_asks_no_quote() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    pricer.set_quote(SessionAnswer::Answer(4, 100));
    let (proxy, _db) = start(&pricer, &origin, false);
    let body = body(false);
    let raw = format!(
        "POST {PATH} HTTP/1.1\r\nHost: api\r\nAccept-Payment: lightning/charge\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let resp = send(&proxy, raw.as_bytes());
    assert_eq!(resp.status, 402, "{}", resp.text());
    let intents: Vec<String> = crate::payment::payment_challenges(&resp)
        .into_iter()
        .map(|c| c.intent)
        .collect();
    assert_eq!(intents, ["charge"]);
    assert!(pricer.quotes().is_empty());
}

#[test]
fn a_bearer_whose_upstream_failed_is_not_settled() {
    let origin = OpenAi::start();
    let pricer = FakePricer::start(10).unwrap();
    pricer.set_quote(SessionAnswer::Answer(4, 100));
    pricer.set_settle(SessionAnswer::Answer(6, 0));
    let (proxy, db) = start(&pricer, &origin, false);
    let (bearer, session_id) = open(&proxy);
    // No response: nothing to price, the estimate stands.
    let failed = send(&proxy, &chat(Some(&bearer), "?hangup=1", false));
    assert_eq!(failed.status, 502, "{}", failed.text());
    // The next one is settled (+2); the failed one would have been settled first.
    let ok = send(&proxy, &chat(Some(&bearer), "", false));
    assert_eq!(ok.status, 200, "{}", ok.text());
    // 1 (the open) + 4 (the failed bearer's estimate) + 4 + 2.
    wait_until("spent 11", WAIT, || spent(&db, &session_id) == 11);
    let settled = pricer.settlements();
    assert_eq!(settled.len(), 1, "{settled:?}");
    assert_eq!(settled[0].http_status, 200);
}
