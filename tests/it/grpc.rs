//! HTTP/2 through the proxy: REST over h2c (prior knowledge on the plaintext port) and over TLS
//! (ALPN `h2`), with a real `h2` client on tokio.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::net::TcpStream;

use crate::support::{challenge, pay, service, Origin, Proxy};
use crate::tls::{client_config, TLS_TOP};

/// A response read in full.
struct H2Response {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

async fn h2_get(
    send: &mut h2::client::SendRequest<Bytes>,
    uri: &str,
    auth: Option<&str>,
) -> H2Response {
    let mut req = http::Request::get(uri).body(()).unwrap();
    if let Some(auth) = auth {
        req.headers_mut()
            .insert("authorization", auth.parse().unwrap());
    }
    let (resp, _) = send.send_request(req, true).expect("send");
    let resp = resp.await.expect("response");
    let (parts, mut body) = resp.into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    H2Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: bytes,
    }
}

/// 402 → pay → 200 over one HTTP/2 connection.
async fn pay_and_get(mut send: h2::client::SendRequest<Bytes>, wallet: SocketAddr, base: &str) {
    let resp = h2_get(&mut send, &format!("{base}/paid"), None).await;
    assert_eq!(resp.status, 402, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.headers["cache-control"], "no-store");
    let values: Vec<String> = resp
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(values.len(), 2, "LSAT and L402 challenges");
    let fake = crate::support::Response {
        status: 402,
        headers: values
            .iter()
            .map(|v| ("www-authenticate".to_string(), v.clone()))
            .collect(),
        body: Vec::new(),
    };
    let (mac, invoice) = challenge(&fake);
    let preimage = tokio::task::spawn_blocking(move || pay(wallet, &invoice))
        .await
        .unwrap();
    let auth = format!("L402 {mac}:{preimage}");
    let resp = h2_get(&mut send, &format!("{base}/paid"), Some(&auth)).await;
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (200, &b"origin saw /paid"[..])
    );
    assert_eq!(resp.headers["access-control-allow-origin"], "*");
    let resp = h2_get(&mut send, &format!("{base}/big?n=500000"), Some(&auth)).await;
    assert_eq!((resp.status, resp.body.len()), (200, 500_000));
    let resp = h2_get(&mut send, &format!("{base}/chunked"), Some(&auth)).await;
    assert_eq!(resp.body, b"hello world");
}

#[tokio::test(flavor = "current_thread")]
async fn rest_over_h2c_prior_knowledge() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("svc", origin.addr, ""), 2);
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(conn);
    pay_and_get(send, proxy.wallet, "http://test").await;
    // HTTP/1.1 keeps working on the same port.
    let resp = tokio::task::spawn_blocking(move || crate::support::get(proxy.addr, "/x", ""))
        .await
        .unwrap();
    assert_eq!(resp.status, 402);
}

#[tokio::test(flavor = "current_thread")]
async fn rest_over_h2_through_tls_alpn() {
    let origin = Origin::start();
    let proxy = Proxy::start_with(&service("svc", origin.addr, ""), 2, TLS_TOP, 4096);
    let config = client_config(proxy.basedir.path(), &[b"h2", b"http/1.1"]);
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("tls");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN picks h2"
    );
    let (send, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(conn);
    pay_and_get(send, proxy.wallet, "https://localhost").await;
}

#[tokio::test(flavor = "current_thread")]
async fn unpaid_grpc_call_gets_a_trailers_only_challenge() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("svc", origin.addr, ""), 1);
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(conn);
    let req = http::Request::post("http://test/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).expect("send");
    let resp = resp.await.expect("response");
    assert!(
        resp.body().is_end_stream(),
        "one HEADERS frame with END_STREAM"
    );
    let h = resp.headers();
    assert_eq!(resp.status(), 200);
    assert_eq!(h["content-type"], "application/grpc");
    assert_eq!(h["grpc-status"], "13");
    assert_eq!(h["grpc-message"], "payment required");
    assert_eq!(h.get_all("www-authenticate").iter().count(), 2);
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(origin.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}
