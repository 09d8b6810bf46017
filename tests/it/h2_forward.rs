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

/// An h2c origin that serves one stream per connection, echoing the request body, then goes
/// away (GOAWAY NO_ERROR, h2's graceful two-step) and refuses every other stream with
/// REFUSED_STREAM: each was left unprocessed, as nginx does after `keepalive_requests`.
fn one_stream_h2c_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut h2) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    // Two streams served per connection (the test warms one up first).
                    let mut served = Vec::new();
                    while served.len() < 2 {
                        let Some(Ok((req, respond))) = h2.accept().await else {
                            return;
                        };
                        served.push(tokio::spawn(echo(req, respond)));
                    }
                    h2.graceful_shutdown();
                    // Drive the connection until the served streams are done and it closes.
                    while let Some(Ok((_, mut refused))) = h2.accept().await {
                        refused.send_reset(h2::Reason::REFUSED_STREAM);
                    }
                    for s in served {
                        let _ = s.await;
                    }
                });
            }
        });
    });
    (addr, conns)
}

async fn echo(req: http::Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>) {
    let mut body = req.into_body();
    let mut seen = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        seen.extend_from_slice(&chunk);
    }
    let head = http::Response::builder().status(200).body(()).unwrap();
    if let Ok(mut send) = respond.send_response(head, false) {
        let _ = send.send_data(Bytes::from(seen), true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_an_h2_upstream_refused_with_goaway_are_replayed_on_a_new_connection() {
    let (upstream, conns) = one_stream_h2c_origin();
    let services = open_h2c_service(upstream);
    let proxy = Proxy::start(&services, 1);
    let mut send = h2c(proxy.addr).await;
    // One call first, so the proxy holds one cached upstream connection that every next stream
    // shares; it serves one more, then refuses the rest.
    send = send.ready().await.unwrap();
    let req = http::Request::post("http://test/echo").body(()).unwrap();
    let (resp, mut body) = send.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(b"warm"), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    let mut calls = Vec::new();
    for i in 0..6 {
        send = send.ready().await.unwrap();
        let req = http::Request::post("http://test/echo").body(()).unwrap();
        let (resp, mut body) = send.send_request(req, false).unwrap();
        body.send_data(Bytes::from(format!("body {i}")), true)
            .unwrap();
        calls.push(async move {
            let resp = resp.await.expect("response");
            let status = resp.status();
            let mut body = resp.into_body();
            let mut seen = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.expect("body");
                let _ = body.flow_control().release_capacity(chunk.len());
                seen.extend_from_slice(&chunk);
            }
            (status, String::from_utf8(seen).unwrap())
        });
    }
    for (i, call) in calls.into_iter().enumerate() {
        let (status, body) = tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("answered in time");
        assert_eq!(status, 200, "stream {i} was not replayed");
        assert_eq!(body, format!("body {i}"));
    }
    assert!(
        conns.load(Ordering::SeqCst) >= 3,
        "fresh connections were made"
    );
}

/// An h2c origin that counts the request streams it accepted and answers each once its body
/// has ended (`echo`).
fn counting_h2c_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let streams = Arc::new(AtomicUsize::new(0));
    let counted = streams.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(mut h2) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((req, respond))) = h2.accept().await {
                        counted.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(echo(req, respond));
                    }
                });
            }
        });
    });
    (addr, streams)
}

/// A client that goes away in the middle of its uploads to an h2 upstream is a client abort,
/// never an upstream error or a 5xx. (The body pump resets the upstream stream when the
/// client's body breaks, which fails the upstream response too; the stream task polled that
/// failure and the client's departure in random order, so about a quarter of such aborts were
/// counted as upstream errors with a 502 for the service.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_upload_to_an_h2_upstream_is_a_client_abort() {
    use crate::h2_raw::{frame, request_block, Peer, DATA, END_HEADERS, HEADERS};
    use aperture::metrics::Counter;
    let (upstream, streams) = counting_h2c_origin();
    let services = open_h2c_service(upstream);
    let proxy = Proxy::start(&services, 1);
    let metrics = proxy.server().metrics().clone();
    const ROUNDS: usize = 10;
    const PER: usize = 4;
    for round in 0..ROUNDS {
        let mut peer = Peer::open(proxy.addr);
        let block = request_block(true, "/upload");
        for i in 0..PER as u32 {
            let id = 2 * i + 1;
            assert!(peer.send(&frame(HEADERS, END_HEADERS, id, &block)));
            assert!(peer.send(&frame(DATA, 0, id, b"part of a body")));
        }
        // Every stream is upstream, its body pump waiting for more, before the client leaves.
        support::wait_until(
            "the origin has the streams",
            Duration::from_secs(20),
            || streams.load(Ordering::SeqCst) >= (round + 1) * PER,
        );
        peer.close();
    }
    support::wait_until(
        "every stream counted as a client abort",
        Duration::from_secs(20),
        || metrics.total(Counter::ClientAborts) >= (ROUNDS * PER) as u64,
    );
    assert_eq!(metrics.total(Counter::UpstreamErrors), 0);
    assert_eq!(metrics.total(Counter::ConnectionPanics), 0);
}

/// A client that stops sending its body to an h2 upstream for longer than `readtimeout` gets a
/// 408 on its stream: its fault, not the upstream's (no 502, no upstream error counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalled_mid_upload_to_an_h2_upstream_gets_408() {
    use crate::h2_raw::{frame, request_block, Outcome, Peer, DATA, END_HEADERS, HEADERS};
    use aperture::metrics::Counter;
    let (upstream, streams) = counting_h2c_origin();
    let services = open_h2c_service(upstream);
    let proxy = Proxy::start_with(&services, 1, "readtimeout: 1s\n", 4096);
    let metrics = proxy.server().metrics().clone();
    let mut peer = Peer::open(proxy.addr);
    assert!(peer.send(&frame(
        HEADERS,
        END_HEADERS,
        1,
        &request_block(true, "/upload")
    )));
    assert!(peer.send(&frame(DATA, 0, 1, b"part of a body")));
    support::wait_until("the origin has the stream", Duration::from_secs(20), || {
        streams.load(Ordering::SeqCst) >= 1
    });
    match peer.outcome(1) {
        Outcome::Response(status, _) => assert_eq!(status, 408),
        other => panic!("expected a 408, got {other:?}"),
    }
    assert_eq!(metrics.total(Counter::UpstreamErrors), 0);
}

/// One auth-off service forwarding everything to the h2c `upstream`.
fn open_h2c_service(upstream: SocketAddr) -> String {
    format!(
        "  - name: \"h2\"\n    hostregexp: \".*\"\n    address: \"{upstream}\"\n    protocol: h2c\n    auth: \"off\"\n"
    )
}
