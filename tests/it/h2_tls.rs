//! HTTP/2 over TLS under load: many concurrent streams on one connection with request and
//! response bodies in flight at once (the proxy's h2 driver reads and writes the TLS stream
//! concurrently), and the `http2.idletimeout` GOAWAY that never cuts an open stream.

use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;

use aperture::metrics::Counter;

use crate::support::{self, service, Origin, Proxy};
use crate::tls::{client_config, TLS_TOP};

type Sender = h2::client::SendRequest<Bytes>;

/// An h2 connection to the proxy over TLS (ALPN h2); its driver runs on the test runtime.
async fn connect_h2(proxy: &Proxy) -> (Sender, tokio::task::JoinHandle<()>) {
    let config = client_config(proxy.basedir.path(), &[b"h2", b"http/1.1"]);
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("tls");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // Large windows, so the proxy's writes are limited by the socket rather than flow control.
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(8 << 20)
        .initial_connection_window_size(64 << 20)
        .handshake(tls)
        .await
        .expect("h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, driver)
}

/// Sends `data` in 16 KiB pieces as the flow-control window allows, yielding in between so
/// other streams' frames interleave with these.
async fn send_body(to: &mut h2::SendStream<Bytes>, data: &[u8]) {
    for piece in data.chunks(16 * 1024) {
        let mut piece = Bytes::copy_from_slice(piece);
        while !piece.is_empty() {
            to.reserve_capacity(piece.len());
            let n = std::future::poll_fn(|cx| to.poll_capacity(cx))
                .await
                .expect("capacity")
                .expect("stream open");
            let chunk = piece.split_to(n.min(piece.len()));
            to.send_data(chunk, false).expect("send data");
        }
        tokio::task::yield_now().await;
    }
    to.send_data(Bytes::new(), true).expect("end stream");
}

/// One POST /echo with a `size`-byte body; returns the status and the response body.
async fn echo(mut send: Sender, size: usize, seed: u8) -> (u16, Vec<u8>, Vec<u8>) {
    let payload: Vec<u8> = (0..size).map(|i| seed.wrapping_add(i as u8)).collect();
    let req = http::Request::post("https://localhost/echo")
        .body(())
        .unwrap();
    send = send.ready().await.expect("ready");
    let (resp, mut body_tx) = send.send_request(req, false).expect("send");
    let upload = send_body(&mut body_tx, &payload);
    let (resp, ()) = tokio::join!(resp, upload);
    let resp = resp.expect("response");
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    (status, got, payload)
}

/// One GET /big of `size` bytes, read in full; returns the status and the length read.
async fn download(send: Sender, size: usize) -> (u16, usize) {
    let req = http::Request::get(format!("https://localhost/big?n={size}"))
        .body(())
        .unwrap();
    let (resp, _) = send
        .ready()
        .await
        .expect("ready")
        .send_request(req, true)
        .expect("send");
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
async fn many_concurrent_streams_with_bodies_both_ways_over_tls() {
    let origin = Origin::start();
    let svc = service("svc", origin.addr, "    auth: \"off\"\n");
    let proxy = Proxy::start_with(&svc, 1, TLS_TOP, 4096);
    let (send, driver) = connect_h2(&proxy).await;
    let mut tasks = Vec::new();
    let mut downloads = Vec::new();
    for i in 0..96usize {
        let size = 20_000 + (i % 7) * 37_000;
        tasks.push(tokio::spawn(echo(send.clone(), size, i as u8)));
        if i % 12 == 0 {
            downloads.push(tokio::spawn(download(send.clone(), 3_000_000)));
        }
    }
    for task in downloads {
        let (status, len) = tokio::time::timeout(Duration::from_secs(180), task)
            .await
            .expect("in time")
            .unwrap();
        assert_eq!((status, len), (200, 3_000_000));
    }
    for task in tasks {
        let (status, got, payload) = tokio::time::timeout(Duration::from_secs(180), task)
            .await
            .expect("in time")
            .unwrap();
        assert_eq!(status, 200);
        assert!(
            got.ends_with(&payload),
            "the echo carries the body ({} bytes)",
            got.len()
        );
    }
    let metrics = proxy.server().metrics().clone();
    assert_eq!(
        metrics.total(Counter::ConnectionPanics),
        0,
        "no connection task panicked"
    );
    assert_eq!(metrics.total(Counter::TlsHandshakeFailures), 0);
    assert!(!driver.is_finished(), "the connection is still up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2_connections_get_goaway_but_open_streams_are_not_cut() {
    let origin = Origin::start();
    let svc = service("svc", origin.addr, "    auth: \"off\"\n");
    let top = format!("{TLS_TOP}http2:\n  idletimeout: 1s\n");
    let proxy = Proxy::start_with(&svc, 1, &top, 4096);
    // A connection holding one open stream (parked at the origin) for longer than the timeout.
    let (mut busy, busy_driver) = connect_h2(&proxy).await;
    let req = http::Request::get("https://localhost/hold")
        .body(())
        .unwrap();
    let (held, _) = busy.send_request(req, true).expect("send");
    support::wait_until("the request is parked", Duration::from_secs(10), || {
        origin.holding() == 1
    });
    // An idle connection beside it is closed after the timeout...
    let (idle, idle_driver) = connect_h2(&proxy).await;
    tokio::time::timeout(Duration::from_secs(20), idle_driver)
        .await
        .expect("the idle connection is closed within the deadline")
        .unwrap();
    drop(idle);
    // ...while the busy one, idle as long, still has its stream.
    assert!(!busy_driver.is_finished(), "an open stream is never cut");
    origin.release();
    let resp = tokio::time::timeout(Duration::from_secs(60), held)
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(resp.status(), 200);
    drop(resp);
    tokio::time::timeout(Duration::from_secs(60), busy_driver)
        .await
        .expect("closed once idle after its stream ended")
        .unwrap();
}
