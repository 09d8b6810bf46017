//! HTTP/2 clients forwarded to HTTP/1.1 upstreams: a stale pooled connection (closed by the
//! upstream after its answer) is retried on a fresh one, for h2 and HTTP/1.1 clients alike; a
//! response larger than the old 64 MiB buffer streams through.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::support::{self, service, Origin, Proxy};

/// An origin that answers one request per connection, advertising keep-alive, then closes:
/// every connection the proxy pools from it is stale by the time it is reused.
fn one_shot_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            // Dropped here: closed right after the answer.
        }
    });
    (addr, conns)
}

async fn h2c(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake(tcp)
        .await
        .expect("h2c handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// GET `path`; the status and the body length.
async fn get(send: &mut h2::client::SendRequest<Bytes>, path: &str) -> (u16, usize) {
    let req = http::Request::get(format!("http://proxy{path}"))
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).expect("send");
    let resp = resp.await.expect("response");
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut len = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
        len += chunk.len();
    }
    (status, len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_pooled_connections_are_retried_for_h2_clients() {
    let (origin, conns) = one_shot_origin();
    let proxy = Proxy::start(&service("svc", origin, "    auth: \"off\"\n"), 1);
    let mut send = h2c(proxy.addr).await;
    for i in 0..20 {
        assert_eq!(get(&mut send, "/x").await, (200, 2), "request {i}");
    }
    let metrics = proxy.server().metrics().clone();
    assert_eq!(metrics.total(aperture::metrics::Counter::UpstreamErrors), 0);
    assert!(
        conns.load(Ordering::SeqCst) >= 20,
        "one upstream connection per request"
    );
}

#[test]
fn stale_pooled_connections_are_retried_for_http1_clients() {
    let (origin, _) = one_shot_origin();
    let proxy = Proxy::start(&service("svc", origin, "    auth: \"off\"\n"), 1);
    let mut conn = support::Conn::open(proxy.addr);
    for i in 0..20 {
        let resp = conn.request(b"GET /x HTTP/1.1\r\nHost: p\r\n\r\n");
        assert_eq!(
            (resp.status, resp.text().as_str()),
            (200, "ok"),
            "request {i}"
        );
    }
    let metrics = proxy.server().metrics().clone();
    assert_eq!(metrics.total(aperture::metrics::Counter::UpstreamErrors), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_larger_than_64_mib_streams_to_an_h2_client() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("svc", origin.addr, "    auth: \"off\"\n"), 1);
    let mut send = h2c(proxy.addr).await;
    let n = 70 << 20;
    let got = tokio::time::timeout(
        Duration::from_secs(120),
        get(&mut send, &format!("/big?n={n}")),
    )
    .await
    .expect("in time");
    assert_eq!(got, (200, n));
    // The connection went back to the pool and serves the next request.
    assert_eq!(get(&mut send, "/small").await.0, 200);
}
