//! Misbehaving HTTP/2 clients, on hand-written frames over plain TCP (h2c prior knowledge): a
//! rapid-reset client (HEADERS then RST_STREAM, stream after stream) is disconnected, and a
//! header list over `http2.maxheaderlistsize` gets its stream refused; in both cases a
//! well-behaved client on another connection to the same core keeps getting 200s.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::support::{service, Origin, Proxy};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), the prefix's high bits in `first`.
fn hpack_int(first: u8, n: u32, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header string literal, not Huffman-coded.
fn hpack_str(s: &[u8], out: &mut Vec<u8>) {
    hpack_int(0, 7, s.len(), out);
    out.extend_from_slice(s);
}

/// `GET /` for authority `proxy` plus `extra` fields, as an HPACK block: static-table indexed
/// pseudo-headers, then literals without indexing (new names).
fn get_block(extra: &[(&str, &[u8])]) -> Vec<u8> {
    // :method GET (2), :scheme http (6), :path / (4).
    let mut out = vec![0x82, 0x86, 0x84];
    // :authority (static name 1), literal without indexing.
    hpack_int(0, 4, 1, &mut out);
    hpack_str(b"proxy", &mut out);
    for (name, value) in extra {
        out.push(0x00);
        hpack_str(name.as_bytes(), &mut out);
        hpack_str(value, &mut out);
    }
    out
}

/// A raw h2c connection that has sent the preface and an empty SETTINGS.
fn raw_h2c(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.write_all(PREFACE).unwrap();
    tcp.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    tcp
}

/// The next frame: (type, flags, stream, payload); `None` at EOF or on a read error.
fn read_frame(tcp: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).ok()?;
    Some((head[3], head[4], stream, payload))
}

/// A well-behaved h2c client on its own connection: GETs until `stop`, every one must be a 200.
/// Returns how many it made.
async fn good_client(addr: SocketAddr, stop: Arc<AtomicBool>) -> usize {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut done = 0;
    // At least a few requests after the abuse ended, so "still served" is observed.
    let mut after = 0;
    while after < 5 {
        if stop.load(Ordering::SeqCst) {
            after += 1;
        }
        send = send
            .ready()
            .await
            .expect("the good connection stays usable");
        let req = http::Request::get("http://proxy/ok").body(()).unwrap();
        let (resp, _) = send.send_request(req, true).expect("send");
        let resp = resp.await.expect("response");
        assert_eq!(resp.status(), 200, "the well-behaved client is served");
        let mut body = resp.into_body();
        while let Some(chunk) = body.data().await {
            let chunk: Bytes = chunk.expect("body");
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        done += 1;
    }
    done
}

fn open_service(origin: &Origin) -> String {
    service("svc", origin.addr, "    auth: \"off\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_client_is_disconnected_and_others_are_unaffected() {
    let origin = Origin::start();
    let proxy = Proxy::start(&open_service(&origin), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let good = tokio::spawn(good_client(proxy.addr, stop.clone()));
    let mut tcp = raw_h2c(proxy.addr);
    let mut reader = tcp.try_clone().unwrap();
    let (tx, rx) = mpsc::channel();
    // Reads until the proxy says GOAWAY or closes; reports which.
    std::thread::spawn(move || loop {
        match read_frame(&mut reader) {
            Some((GOAWAY, ..)) => return tx.send("goaway").unwrap(),
            Some(_) => {}
            None => return tx.send("eof").unwrap(),
        }
    });
    let block = get_block(&[]);
    let cancel = 0x8u32.to_be_bytes();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut id = 1u32;
    let mut verdict = None;
    // A batch of HEADERS+RST_STREAM pairs at a time, until the proxy reacts.
    while verdict.is_none() && Instant::now() < deadline && id < 400_000 {
        let mut batch = Vec::with_capacity(64 * 40);
        for _ in 0..64 {
            batch.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
            batch.extend(frame(RST_STREAM, 0, id, &cancel));
            id += 2;
        }
        if tcp.write_all(&batch).is_err() {
            break; // closed under us: the reader reports it
        }
        verdict = rx.try_recv().ok();
    }
    let verdict = verdict.or_else(|| {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left.max(Duration::from_secs(1))).ok()
    });
    assert!(
        verdict.is_some(),
        "the rapid-reset client was not disconnected after {} streams",
        id / 2
    );
    eprintln!("rapid reset: {verdict:?} after {} streams", id / 2);
    stop.store(true, Ordering::SeqCst);
    let served = tokio::time::timeout(Duration::from_secs(30), good)
        .await
        .expect("the good client finishes in time")
        .expect("the good client saw only 200s");
    assert!(served >= 5);
    let metrics = proxy.server().metrics().clone();
    assert_eq!(
        metrics.total(aperture::metrics::Counter::ConnectionPanics),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_list_is_refused_and_others_are_unaffected() {
    let origin = Origin::start();
    let top = "http2:\n  maxheaderlistsize: 4096\n";
    let proxy = Proxy::start_with(&open_service(&origin), 1, top, 4096);
    let stop = Arc::new(AtomicBool::new(false));
    let good = tokio::spawn(good_client(proxy.addr, stop.clone()));
    let mut tcp = raw_h2c(proxy.addr);
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The proxy's SETTINGS first (acknowledged, so its limits are in force on both sides).
    let (kind, ..) = read_frame(&mut tcp).expect("server SETTINGS");
    assert_eq!(kind, SETTINGS);
    tcp.write_all(&frame(SETTINGS, ACK, 0, &[])).unwrap();
    let big = vec![b'a'; 8000];
    let block = get_block(&[("x-big", &big)]);
    tcp.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
        .unwrap();
    // A response (431), a RST_STREAM for stream 1, or the connection closed: never a 200.
    let outcome = loop {
        match read_frame(&mut tcp) {
            Some((HEADERS, _, 1, block)) => {
                // :status 200 would be the static-table index 8 (0x88).
                assert_ne!(
                    block.first(),
                    Some(&0x88),
                    "an oversized request was served"
                );
                break "refused with a response";
            }
            Some((RST_STREAM, _, 1, _)) => break "stream reset",
            Some((GOAWAY, ..)) | None => break "connection closed",
            Some(_) => {}
        }
    };
    tracing_outcome(outcome);
    stop.store(true, Ordering::SeqCst);
    let served = tokio::time::timeout(Duration::from_secs(30), good)
        .await
        .expect("the good client finishes in time")
        .expect("the good client saw only 200s");
    assert!(served >= 5);
}

/// Names how the oversized request was refused (visible with `--nocapture`).
fn tracing_outcome(outcome: &str) {
    eprintln!("oversized header list: {outcome}");
}
