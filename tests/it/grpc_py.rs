//! gRPC through the proxy with grpcio 1.85.1 (PyPI: the C-core client, an HTTP/2 stack of its
//! own, unlike tonic's h2) driven by tests/clients/grpcio_client.py, in front of the tonic
//! upstream of grpc_tonic.rs (`tests/proto/echo.proto`, in this process, h2c both sides):
//! the unpaid call's challenge and the Loop-style paid retry, a 1,000-message server stream in
//! order, a bidi stream in lockstep, a 3.5 MiB message both ways, and an upstream's non-OK
//! status with custom metadata, in Trailers-Only and in real trailers after messages.
//!
//! scripts/test.sh installs grpcio; when it is missing the tests skip, except when `CI` is set:
//! then they fail.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::echo_proto::echo_server::EchoServer;
use crate::grpc_tonic::{EchoService, FAILING_COUNT};
use crate::support::{pay, Proxy};

/// The proxy (price 10, h2c to the upstream) in front of the tonic upstream.
struct Setup {
    proxy: Proxy,
    upstream: EchoService,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn setup() -> Setup {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    let upstream = EchoService::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder().serve_with_incoming_shutdown(
        EchoServer::new(upstream.clone()),
        TcpListenerStream::new(listener),
        async {
            let _ = stopped.await;
        },
    );
    tokio::spawn(server);
    let services = format!(
        "  - name: \"echo\"\n    hostregexp: \".*\"\n    pathregexp: \"^/aperture.test.Echo/.*$\"\n    \
         address: \"{upstream_addr}\"\n    protocol: h2c\n    price: 10\n"
    );
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(&services, 2))
        .await
        .unwrap();
    Setup {
        proxy,
        upstream,
        _stop: stop,
    }
}

/// Runs one grpcio call (`mode arg`, see the script) against the proxy, off the async workers;
/// the JSON line it printed, or `None` (skip) when grpcio is missing.
async fn grpcio(proxy: SocketAddr, macaroon: Option<&str>, mode: &str, arg: &str) -> Option<Value> {
    let args = vec![
        proxy.to_string(),
        macaroon.unwrap_or("-").to_string(),
        mode.to_string(),
        arg.to_string(),
    ];
    tokio::task::spawn_blocking(move || crate::clients::drive("python3", "grpcio_client.py", &args))
        .await
        .unwrap()
}

/// The values of metadata `key` in a `[[key, value], …]` list.
fn values<'a>(json: &'a Value, list: &str, key: &str) -> Vec<&'a str> {
    json[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list} in {json}"))
        .iter()
        .filter(|kv| kv[0] == key)
        .map(|kv| kv[1].as_str().unwrap())
        .collect()
}

/// An unpaid Say: the Trailers-Only challenge (INTERNAL "payment required", LSAT then L402 in
/// `www-authenticate`); pays its invoice at the dev wallet and returns the `macaroon` metadata
/// the way Loop's Go client sends it (hex, with a `preimage=` caveat). `None`: grpcio missing.
async fn buy(s: &Setup) -> Option<String> {
    let out = grpcio(s.proxy.addr, None, "say", "2").await?;
    assert_eq!(out["code"], "INTERNAL", "{out}");
    assert_eq!(out["details"], "payment required");
    let fields = values(&out, "trailing", "www-authenticate");
    assert_eq!(fields.len(), 2, "LSAT and L402 challenges: {fields:?}");
    assert!(fields[0].starts_with("LSAT macaroon=\""), "{fields:?}");
    assert!(fields[1].starts_with("L402 macaroon=\""), "{fields:?}");
    let field = fields[1].to_string();
    let grab = |key: &str| {
        let start = field.find(&format!("{key}=\"")).expect(key) + key.len() + 2;
        let end = start + field[start..].find('"').expect("closing quote");
        field[start..end].to_string()
    };
    let (mac, invoice) = (grab("macaroon"), grab("invoice"));
    let wallet = s.proxy.wallet;
    let preimage = tokio::task::spawn_blocking(move || pay(wallet, &invoice))
        .await
        .unwrap();
    let mut m = aperture::l402::macaroon_from_base64(&mac).expect("challenge macaroon");
    m.add_first_party_caveat(format!("preimage={preimage}"));
    Some(hex::encode(m.encode_v2()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_unpaid_call_gets_the_challenge_then_the_paid_call_answers() {
    let s = setup().await;
    let Some(macaroon) = buy(&s).await else {
        return;
    };
    assert_eq!(
        s.upstream.calls.load(Ordering::SeqCst),
        0,
        "never forwarded"
    );
    let out = grpcio(s.proxy.addr, Some(&macaroon), "say", "5")
        .await
        .unwrap();
    assert_eq!(out["code"], "OK", "{out}");
    assert_eq!(out["intact"], true);
    assert_eq!(out["seq"], 3);
    assert_eq!(s.upstream.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_server_stream_of_a_thousand_messages_arrives_in_order() {
    let s = setup().await;
    let Some(macaroon) = buy(&s).await else {
        return;
    };
    let out = grpcio(s.proxy.addr, Some(&macaroon), "count", "1000")
        .await
        .unwrap();
    assert_eq!(out["code"], "OK", "{out}");
    assert_eq!(out["messages"], 1000);
    assert_eq!(out["in_order"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_bidi_stream_goes_in_lockstep() {
    let s = setup().await;
    let Some(macaroon) = buy(&s).await else {
        return;
    };
    let out = grpcio(s.proxy.addr, Some(&macaroon), "chat", "50")
        .await
        .unwrap();
    assert_eq!(out["code"], "OK", "{out}");
    assert_eq!(out["lockstep"], 50, "every reply before the next message");
    assert_eq!(out["extra"], 0, "a clean end after the client's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_three_and_a_half_mebibyte_message_crosses_both_ways() {
    let s = setup().await;
    let Some(macaroon) = buy(&s).await else {
        return;
    };
    // Over every HTTP/2 window on the way (1 MiB stream, 4 MiB connection at the proxy), under
    // both ends' 4 MiB default message limit.
    let n = 7 * 512 * 1024;
    let out = grpcio(s.proxy.addr, Some(&macaroon), "say", &n.to_string())
        .await
        .unwrap();
    assert_eq!(out["code"], "OK", "{out}");
    assert_eq!(out["len"], n + "echo: ".len());
    assert_eq!(out["intact"], true, "body intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_sees_the_upstream_status_and_metadata_unchanged() {
    let s = setup().await;
    let Some(macaroon) = buy(&s).await else {
        return;
    };
    // Trailers-Only: the status and metadata in the one HEADERS frame.
    let out = grpcio(s.proxy.addr, Some(&macaroon), "fail", "nope")
        .await
        .unwrap();
    assert_eq!(out["code"], "NOT_FOUND", "{out}");
    assert_eq!(out["details"], "nope");
    assert_eq!(values(&out, "trailing", "x-detail"), ["why"]);
    assert_eq!(values(&out, "trailing", "x-raw-bin"), ["0001feff"]);
    // Real trailers after three messages.
    let out = grpcio(s.proxy.addr, Some(&macaroon), "count", "3")
        .await
        .unwrap();
    assert_eq!(out["messages"], FAILING_COUNT, "{out}");
    assert_eq!(out["in_order"], true);
    assert_eq!(out["code"], "DATA_LOSS");
    assert_eq!(out["details"], "lost after three");
    assert_eq!(values(&out, "trailing", "x-detail"), ["why"]);
    assert_eq!(values(&out, "trailing", "x-raw-bin"), ["0001feff"]);
    assert_eq!(s.upstream.calls.load(Ordering::SeqCst), 2);
}
