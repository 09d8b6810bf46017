//! The built-in meter (`metering: openai`, no pricer daemon) against the fake OpenAI-compatible
//! origin: a 402 sells a bundle of the request's model at the model's bundle price; the bundle
//! serves requests (JSON and SSE usage debited) until it runs out, then a fresh 402; a bundle
//! cannot be spent on another model; an unknown model is refused; an abandoned stream is
//! settled at its reservation; concurrent requests on one token from several connections on a
//! 2-core proxy never overdraw; the balance survives a restart (SQLite, and PostgreSQL when
//! `APERTURE_TEST_PG` is set); an HTTP/2 client is refused rather than served unmetered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use aperture::store::Store;

use crate::openai::OpenAi;
use crate::pricing::invoice_sats;
use crate::support::{challenge, pay, wait_until, Conn, Proxy, Response};

const PATH: &str = "/v1/chat/completions";
const WAIT: Duration = Duration::from_secs(20);
/// Tokens in a bundle.
const BUNDLE: u64 = 100;
/// The reservation of each request (`max_tokens`).
const MAX_TOKENS: u64 = 64;

/// `small`: 10/30 msat per token (a bundle: 100 × 20 msat = 2 sats); `big`: 100/300 (20 sats).
fn services(origin: &OpenAi) -> String {
    format!(
        "  - name: \"llm\"\n    hostregexp: \".*\"\n    address: \"{}\"\n    protocol: http\n    metering: openai\n    meter:\n      bundletokens: {BUNDLE}\n      models:\n        small: {{inputmsatpertoken: 10, outputmsatpertoken: 30}}\n        big: {{inputmsatpertoken: 100, outputmsatpertoken: 300}}\n",
        origin.addr
    )
}

/// Where the balances are: the proxy's SQLite file, or a PostgreSQL database.
#[derive(Clone)]
enum Db {
    Sqlite(std::path::PathBuf),
    Pg(String),
}

impl Db {
    fn sqlite(dir: &tempfile::TempDir) -> Db {
        Db::Sqlite(dir.path().join("aperture.db"))
    }

    fn top(&self) -> String {
        match self {
            Db::Sqlite(path) => format!("sqlite:\n  databasefilename: \"{}\"\n", path.display()),
            Db::Pg(url) => crate::store::pg_yaml(url),
        }
    }

    /// The bundle's row as the database holds it.
    fn row(&self, token: [u8; 32]) -> Option<aperture::store::BundleRow> {
        match self {
            Db::Sqlite(path) => {
                let mut store = aperture::store::sqlite::SqliteStore::open(path, false).unwrap();
                store.bundle(token).unwrap()
            }
            Db::Pg(url) => {
                let mut store = aperture::store::postgres::PgStore::connect(url, false).unwrap();
                store.bundle(token).unwrap()
            }
        }
    }

    fn remaining(&self, token: [u8; 32]) -> Option<u64> {
        self.row(token).map(|r| r.remaining)
    }
}

fn start(dir: tempfile::TempDir, origin: &OpenAi) -> (Proxy, Db) {
    let db = Db::sqlite(&dir);
    (start_on(dir, origin, &db), db)
}

fn start_on(dir: tempfile::TempDir, origin: &OpenAi, db: &Db) -> Proxy {
    Proxy::start_in(dir, &services(origin), 2, &db.top(), 4096)
}

fn body(model: &str, stream: bool) -> String {
    format!("{{\"model\":\"{model}\",\"max_tokens\":{MAX_TOKENS},\"stream\":{stream},\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}")
}

fn chat(authorization: &str, model: &str, query: &str, stream: bool) -> Vec<u8> {
    let body = body(model, stream);
    let auth = if authorization.is_empty() {
        String::new()
    } else {
        format!("Authorization: {authorization}\r\n")
    };
    format!(
        "POST {PATH}{query} HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn send(proxy: &Proxy, raw: &[u8]) -> Response {
    Conn::open(proxy.addr).request(raw)
}

/// The tokens one JSON request of `model`'s body debits: the fake origin counts a prompt token
/// per 4 body bytes and 2 completion tokens ("hello"); weighted 1:3 against the blend of 2.
fn json_debit() -> u64 {
    let prompt = body("small", false).len().div_ceil(4) as u64;
    (2 * (prompt * 10 + 2 * 30)).div_ceil(40)
}

/// 402 for `model` → pay: the `Authorization` value, the token id and the price paid.
fn buy(proxy: &Proxy, model: &str) -> (String, [u8; 32], u64) {
    let resp = send(proxy, &chat("", model, "", false));
    assert_eq!(resp.status, 402, "{}", resp.text());
    let (mac, invoice) = challenge(&resp);
    let sats = invoice_sats(&invoice);
    let preimage = pay(proxy.wallet, &invoice);
    (format!("L402 {mac}:{preimage}"), token_id_of(&mac), sats)
}

fn token_id_of(macaroon: &str) -> [u8; 32] {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(macaroon)
        .unwrap();
    let mac = aperture::l402::Macaroon::decode_v2(&raw).unwrap();
    aperture::l402::Identifier::decode(&mac.identifier)
        .unwrap()
        .token_id
}

/// Sends paid JSON requests on one connection until a 402; returns how many were served.
/// With `settled` (the database, the token, its balance now), each debit is awaited before the
/// next request (a settle lands just after the response's last byte).
fn spend(proxy: &Proxy, auth: &str, settled: Option<(&Db, [u8; 32], u64)>) -> u64 {
    let mut conn = Conn::open(proxy.addr);
    let mut served = 0;
    loop {
        let resp = conn.request(&chat(auth, "small", "", false));
        match resp.status {
            200 => served += 1,
            402 => return served,
            s => panic!("unexpected {s}: {}", resp.text()),
        }
        assert!(served <= BUNDLE, "a bundle that never runs out");
        if let Some((db, token, start)) = settled {
            let want = start.saturating_sub(served * json_debit());
            wait_until("the debit", WAIT, || db.remaining(token) == Some(want));
        }
    }
}

#[test]
fn a_bundle_serves_requests_until_its_tokens_run_out_then_a_fresh_402() {
    let origin = OpenAi::start();
    let (proxy, db) = start(tempfile::tempdir().unwrap(), &origin);
    // The 402's price is a bundle of the request's model.
    let (_, _, big) = buy(&proxy, "big");
    assert_eq!(big, 20);
    let (auth, token, small) = buy(&proxy, "small");
    assert_eq!(small, 2);
    let d = json_debit();
    assert!(d < MAX_TOKENS);
    // Admitted while any balance is left: the last request may take it below zero (kept at 0).
    assert_eq!(
        spend(&proxy, &auth, Some((&db, token, BUNDLE))),
        BUNDLE.div_ceil(d)
    );
    // The fresh 402 sells another bundle of the same model.
    let resp = send(&proxy, &chat(&auth, "small", "", false));
    assert_eq!(resp.status, 402);
    assert_eq!(invoice_sats(&challenge(&resp).1), 2);
    assert_eq!(db.row(token).unwrap().model, "small");
}

#[test]
fn an_event_stream_is_debited_from_its_final_usage_chunk() {
    let origin = OpenAi::start();
    let (proxy, db) = start(tempfile::tempdir().unwrap(), &origin);
    let (auth, token, _) = buy(&proxy, "small");
    // One JSON request leaves most of the bundle ...
    assert_eq!(send(&proxy, &chat(&auth, "small", "", false)).status, 200);
    let left = BUNDLE - json_debit();
    wait_until("the debit", WAIT, || db.remaining(token) == Some(left));
    // ... one stream of 1000 completion tokens spends it all.
    let resp = send(&proxy, &chat(&auth, "small", "?bytes=1", true));
    assert_eq!(resp.status, 200);
    assert!(resp.text().contains("[DONE]"));
    wait_until("the debit", WAIT, || db.remaining(token) == Some(0));
    assert_eq!(send(&proxy, &chat(&auth, "small", "", false)).status, 402);
}

#[test]
fn a_bundle_is_not_spent_on_another_model_and_unknown_models_are_refused() {
    let origin = OpenAi::start();
    let (proxy, _) = start(tempfile::tempdir().unwrap(), &origin);
    let (auth, _, _) = buy(&proxy, "small");
    // The token bought `small`: a request for `big` gets a 402 for a `big` bundle.
    let resp = send(&proxy, &chat(&auth, "big", "", false));
    assert_eq!(resp.status, 402);
    assert_eq!(invoice_sats(&challenge(&resp).1), 20);
    for authorization in ["", auth.as_str()] {
        let resp = send(&proxy, &chat(authorization, "gpt-unpriced", "", false));
        assert_eq!(resp.status, 400);
        assert!(resp.text().contains("unknown model"), "{}", resp.text());
    }
    // A body whose model cannot be read (not JSON) is refused too, never priced as another.
    let raw = format!("POST {PATH} HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(send(&proxy, raw.as_bytes()).status, 400);
    // Nothing reached the origin.
    assert!(origin.heads().is_empty());
}

#[test]
fn an_abandoned_stream_is_settled_at_its_reservation() {
    let origin = OpenAi::start();
    let (proxy, db) = start(tempfile::tempdir().unwrap(), &origin);
    let (auth, token, _) = buy(&proxy, "small");
    let mut client = TcpStream::connect(proxy.addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client
        .write_all(&chat(&auth, "small", "?bytes=100000&stall=1", true))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    while !String::from_utf8_lossy(&seen).contains("\"delta\"") {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(client);
    wait_until("the reservation debited", WAIT, || {
        db.remaining(token) == Some(BUNDLE - MAX_TOKENS)
    });
    origin.release();
}

#[test]
fn concurrent_requests_on_one_token_never_overdraw_it() {
    let origin = OpenAi::start();
    let (proxy, db) = start(tempfile::tempdir().unwrap(), &origin);
    let (auth, token, _) = buy(&proxy, "small");
    let d = json_debit();
    let served: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|_| s.spawn(|| spend(&proxy, &auth, None)))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    // Each request uses less than it reserves, so the debits stay below the bundle plus one
    // request's usage (docs/metering.md, "Built-in meter").
    assert!(served >= 1);
    assert!(served * d < BUNDLE + d, "{served} requests of {d} tokens");
    let want = BUNDLE.saturating_sub(served * d);
    wait_until("the debits written", WAIT, || {
        db.remaining(token) == Some(want)
    });
}

#[test]
fn a_balance_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::sqlite(&dir);
    balance_survives_a_restart(dir, db);
}

#[test]
fn a_balance_survives_a_restart_on_postgres() {
    let Some(url) = crate::store::pg_url() else {
        return;
    };
    balance_survives_a_restart(tempfile::tempdir().unwrap(), Db::Pg(url));
}

fn balance_survives_a_restart(dir: tempfile::TempDir, db: Db) {
    let origin = OpenAi::start();
    let proxy = start_on(dir, &origin, &db);
    let (auth, token, _) = buy(&proxy, "small");
    let d = json_debit();
    for served in 1..=2 {
        assert_eq!(send(&proxy, &chat(&auth, "small", "", false)).status, 200);
        let want = BUNDLE - served * d;
        wait_until("the debit", WAIT, || db.remaining(token) == Some(want));
    }
    assert_eq!(db.row(token).unwrap().service, "llm");
    let dir = proxy.stop();
    let proxy = start_on(dir, &origin, &db);
    // The restarted proxy reads the bundle back: only what was left is served.
    let left = BUNDLE - 2 * d;
    assert_eq!(
        spend(&proxy, &auth, Some((&db, token, left))),
        left.div_ceil(d)
    );
    drop(proxy);
}

#[test]
fn an_h2_client_is_refused_rather_than_served_unmetered() {
    let origin = OpenAi::start();
    let (proxy, _) = start(tempfile::tempdir().unwrap(), &origin);
    let (auth, _, _) = buy(&proxy, "small");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for authorization in ["", auth.as_str()] {
        let (status, body) = rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
            let (mut send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut req = http::Request::post(format!("http://api{PATH}"));
            if !authorization.is_empty() {
                req = req.header("authorization", authorization);
            }
            let (resp, mut tx) = send.send_request(req.body(()).unwrap(), false).unwrap();
            tx.send_data(bytes::Bytes::from(body("small", false)), true)
                .unwrap();
            let resp = resp.await.expect("response");
            let status = resp.status().as_u16();
            let mut recv = resp.into_body();
            let mut out = Vec::new();
            while let Some(chunk) = recv.data().await {
                out.extend_from_slice(&chunk.expect("body"));
            }
            (status, out)
        });
        assert_eq!(status, 500);
        assert!(String::from_utf8_lossy(&body).contains("HTTP/1.1 clients only"));
    }
    // Nothing reached the origin.
    assert!(origin.heads().is_empty());
}
