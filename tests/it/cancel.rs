//! Work a client abandons is cancelled: an in-process origin that stalls every request and
//! counts its connections (open now, most at once, closed by the proxy) shows that an HTTP/1.1
//! client closing, an h2 stream reset and a rapid-reset flood all end the upstream exchange,
//! and that one h2 connection never has more than `maxconcurrentstreams` upstream requests
//! alive. Upstream pool hygiene (idle timeout, per-core cap), the rolling write deadline for a
//! client that stops reading, and the RFC 9112 `Host` rules.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::support::{self, buy_token, service, wait_until, Conn, Proxy};

/// Counts of a [`StallingOrigin`].
#[derive(Default)]
struct Counts {
    /// Requests whose head arrived (each then stalls).
    stalled: AtomicUsize,
    /// Connections open now.
    open: AtomicUsize,
    /// Most requests in progress at once: heads received on connections the proxy had not
    /// closed, as the kernel says at the moment each head arrives (probed, not when a reader
    /// thread got round to seeing an EOF).
    max_requests: AtomicUsize,
    /// Connections the proxy closed.
    closed: AtomicUsize,
    /// The connections whose request head arrived, for the probe.
    with_head: Mutex<Vec<TcpStream>>,
}

/// An origin that reads a request head and then never answers, until the proxy closes.
struct StallingOrigin {
    addr: SocketAddr,
    counts: Arc<Counts>,
}

impl StallingOrigin {
    fn start() -> StallingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                c.open.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                std::thread::spawn(move || stall(stream, &c));
            }
        });
        StallingOrigin { addr, counts }
    }

    fn get(&self, what: fn(&Counts) -> &AtomicUsize) -> usize {
        what(&self.counts).load(Ordering::SeqCst)
    }
}

/// Whether the peer of `s` closed or reset it (a non-blocking look at the socket).
fn peer_closed(s: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

fn stall(stream: TcpStream, c: &Counts) {
    let probe = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut head_seen = false;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" && !head_seen => {
                head_seen = true;
                c.stalled.fetch_add(1, Ordering::SeqCst);
                let mut live = c.with_head.lock().unwrap();
                live.retain(|s| !peer_closed(s));
                if !peer_closed(&probe) {
                    live.push(probe.try_clone().unwrap());
                }
                c.max_requests.fetch_max(live.len(), Ordering::SeqCst);
            }
            Ok(_) => {}
        }
    }
    c.open.fetch_sub(1, Ordering::SeqCst);
    c.closed.fetch_add(1, Ordering::SeqCst);
}

fn stalling_service(origin: &StallingOrigin) -> String {
    service("stall", origin.addr, "")
}

#[test]
fn http1_clients_that_leave_close_their_upstream_connections() {
    let origin = StallingOrigin::start();
    let proxy = Proxy::start(&stalling_service(&origin), 2);
    let token = buy_token(&proxy, "/slow");
    let request =
        format!("GET /slow HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: {token}\r\n\r\n");
    let clients: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut c = TcpStream::connect(proxy.addr).unwrap();
            c.write_all(request.as_bytes()).unwrap();
            c
        })
        .collect();
    wait_until(
        "200 stalled upstream requests",
        Duration::from_secs(20),
        || origin.get(|c| &c.stalled) == 200,
    );
    assert_eq!(origin.get(|c| &c.closed), 0);
    drop(clients);
    wait_until(
        "all 200 upstream connections closed",
        Duration::from_secs(2),
        || origin.get(|c| &c.closed) == 200,
    );
    let metrics = proxy.server().metrics().clone();
    wait_until("200 client aborts counted", Duration::from_secs(2), || {
        metrics.total(aperture::metrics::Counter::ClientAborts) == 200
    });
}

#[test]
fn a_client_that_leaves_a_stalled_stream_closes_its_upstream_connection() {
    // A response that started, then stalls (an LLM thinking): the client gives up.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
            .unwrap();
        // Blocks until the proxy closes the connection.
        let n = s.read(&mut buf).unwrap_or(0);
        tx.send(n).unwrap();
    });
    let proxy = Proxy::start(&service("s", addr, "    auth: \"off\"\n"), 1);
    let mut client = TcpStream::connect(proxy.addr).unwrap();
    client
        .write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 64];
    let _ = client.read(&mut head).unwrap();
    drop(client);
    let n = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("the upstream connection was closed after the client left");
    assert_eq!(n, 0, "EOF, not another request");
}

async fn h2c(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_h2_streams_end_their_upstream_work() {
    let origin = StallingOrigin::start();
    let proxy = Proxy::start(&stalling_service(&origin), 1);
    let token = tokio::task::block_in_place(|| buy_token(&proxy, "/slow"));
    let mut send = h2c(proxy.addr).await;
    let mut pending = Vec::new();
    for _ in 0..100 {
        send = send.ready().await.unwrap();
        let req = http::Request::get("http://api.example.com/slow")
            .header("authorization", token.as_str())
            .body(())
            .unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        pending.push(resp);
    }
    let o = &origin;
    tokio::task::block_in_place(|| {
        wait_until(
            "100 stalled upstream requests",
            Duration::from_secs(20),
            || o.get(|c| &c.stalled) == 100,
        )
    });
    // Dropping a response future resets its stream (RST_STREAM CANCEL).
    drop(pending);
    tokio::task::block_in_place(|| {
        wait_until(
            "100 upstream connections closed",
            Duration::from_secs(2),
            || o.get(|c| &c.closed) == 100,
        )
    });
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `GET /slow` for `:authority proxy` with an `authorization` literal, as an HPACK block.
fn slow_block(token: &str) -> Vec<u8> {
    let mut out = vec![0x82, 0x86, 0x04, 5];
    out.extend_from_slice(b"/slow");
    out.extend_from_slice(&[0x01, 5]);
    out.extend_from_slice(b"proxy");
    // `authorization` is static-table name 23, literal without indexing (4-bit prefix).
    out.extend_from_slice(&[0x0f, 23 - 15]);
    assert!(token.len() < 127 * 128);
    let len = token.len();
    if len < 127 {
        out.push(len as u8);
    } else {
        out.push(0x7f);
        let mut rest = len - 127;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }
    out.extend_from_slice(token.as_bytes());
    out
}

#[test]
fn rapid_resets_stay_within_max_concurrent_streams_and_end_in_goaway() {
    let origin = StallingOrigin::start();
    let top = "http2:\n  maxconcurrentstreams: 16\n";
    let proxy = Proxy::start_with(&stalling_service(&origin), 1, top, 4096);
    let token = buy_token(&proxy, "/slow");
    let metrics = proxy.server().metrics().clone();
    let active = || metrics.total(aperture::metrics::Counter::ConnectionsActive) as i64;
    // The connections that bought the token are gone first.
    wait_until("no connection open", Duration::from_secs(5), || {
        active() == 0
    });
    let mut tcp = TcpStream::connect(proxy.addr).unwrap();
    tcp.write_all(PREFACE).unwrap();
    tcp.write_all(&frame(0x4, 0, 0, &[])).unwrap();
    let mut reader = tcp.try_clone().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut head = [0u8; 9];
        while reader.read_exact(&mut head).is_ok() {
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            if reader.read_exact(&mut payload).is_err() {
                break;
            }
            if head[3] == 0x7 {
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                let _ = tx.send(Some(code));
                return;
            }
        }
        let _ = tx.send(None);
    });
    let block = slow_block(&token);
    let cancel = 0x8u32.to_be_bytes();
    let mut id = 1u32;
    // First, rounds of 16 streams that reach the origin before they are reset.
    for _ in 0..3 {
        let before = origin.get(|c| &c.stalled);
        let mut batch = Vec::new();
        for i in 0..16 {
            batch.extend(frame(0x1, 0x4 | 0x1, id + 2 * i, &block));
        }
        tcp.write_all(&batch).unwrap();
        wait_until(
            "a round of requests at the origin",
            Duration::from_secs(10),
            || origin.get(|c| &c.stalled) == before + 16,
        );
        let mut batch = Vec::new();
        for _ in 0..16 {
            batch.extend(frame(0x3, 0, id, &cancel));
            id += 2;
        }
        tcp.write_all(&batch).unwrap();
        wait_until(
            "the round's upstream work ended",
            Duration::from_secs(2),
            || origin.get(|c| &c.open) == 0,
        );
    }
    // Then the flood: HEADERS and RST_STREAM back to back.
    for _ in 0..10_000 / 50 {
        let mut batch = Vec::new();
        for _ in 0..50 {
            batch.extend(frame(0x1, 0x4 | 0x1, id, &block));
            batch.extend(frame(0x3, 0, id, &cancel));
            id += 2;
        }
        if tcp.write_all(&batch).is_err() {
            break; // the proxy closed the connection
        }
    }
    let goaway = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the proxy reacted");
    assert_eq!(goaway, Some(0xb), "GOAWAY ENHANCE_YOUR_CALM");
    drop(tcp);
    let max = origin.get(|c| &c.max_requests);
    assert!(max <= 16, "{max} upstream requests at once (limit 16)");
    assert!(max >= 1, "the rounds reached the upstream");
    wait_until(
        "upstream connections closed",
        Duration::from_secs(5),
        || origin.get(|c| &c.open) == 0,
    );
    wait_until("the connection closed", Duration::from_secs(5), || {
        active() == 0
    });
    // Our reset accounting or the h2 crate's own (streams reset before they were accepted, as
    // on the epoll driver, which accepts in bigger gulps) sends the GOAWAY; at most one.
    assert!(metrics.total(aperture::metrics::Counter::H2Calmed) <= 1);
    assert_eq!(
        metrics.total(aperture::metrics::Counter::ConnectionPanics),
        0
    );
}

#[test]
fn missing_or_repeated_host_is_a_400_and_absolute_form_wins() {
    let origin = support::Origin::start();
    let proxy = Proxy::start(&service("s", origin.addr, "    auth: \"off\"\n"), 1);
    for raw in [
        "GET /a HTTP/1.1\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n",
        "GET /a HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n",
    ] {
        let resp = Conn::open(proxy.addr).request(raw.as_bytes());
        assert_eq!(resp.status, 400, "{raw:?}");
    }
    assert_eq!(origin.hits.load(Ordering::SeqCst), 0);
    // HTTP/1.0 without Host is fine; absolute-form routes and forwards its path.
    let resp = Conn::open(proxy.addr).request(b"GET /a HTTP/1.0\r\n\r\n");
    assert_eq!(resp.status, 200);
    let raw = b"GET http://api.example.com/x?q=1 HTTP/1.1\r\nHost: other\r\n\r\n";
    let resp = Conn::open(proxy.addr).request(raw);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "origin saw /x?q=1");
}

/// An origin that answers every request with keep-alive and counts the connections it saw
/// closed by the proxy.
fn keepalive_origin(body: &'static [u8]) -> (SocketAddr, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            c.open.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" => {
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                                body.len()
                            );
                            let out = reader.get_mut();
                            if out
                                .write_all(head.as_bytes())
                                .and_then(|_| out.write_all(body))
                                .is_err()
                            {
                                break;
                            }
                        }
                        Ok(_) => {}
                    }
                }
                c.open.fetch_sub(1, Ordering::SeqCst);
                c.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

#[test]
fn idle_upstream_connections_close_after_the_idle_timeout() {
    let (addr, counts) = keepalive_origin(b"ok");
    let top = "upstreamidletimeout: 1s\n";
    let proxy = Proxy::start_with(&service("s", addr, "    auth: \"off\"\n"), 1, top, 4096);
    let resp = support::get(proxy.addr, "/a", "");
    assert_eq!(resp.status, 200);
    assert_eq!(
        counts.closed.load(Ordering::SeqCst),
        0,
        "pooled, not closed"
    );
    wait_until(
        "the idle upstream connection closed",
        Duration::from_secs(5),
        || counts.closed.load(Ordering::SeqCst) == 1,
    );
    // The eviction is counted right after the socket is closed: the origin may see the close
    // first, so the count is waited for too (and must not go past one).
    let metrics = proxy.server().metrics().clone();
    let evictions = || metrics.total(aperture::metrics::Counter::UpstreamPoolEvictions);
    wait_until("the eviction counted", Duration::from_secs(5), || {
        evictions() >= 1
    });
    assert_eq!(evictions(), 1);
    // The next request opens a fresh connection and is served.
    assert_eq!(support::get(proxy.addr, "/b", "").status, 200);
}

#[test]
fn the_per_core_idle_cap_closes_what_does_not_fit() {
    let (addr, counts) = keepalive_origin(b"ok");
    let top = "upstreammaxidle: 0\n";
    let proxy = Proxy::start_with(&service("s", addr, "    auth: \"off\"\n"), 1, top, 4096);
    for _ in 0..3 {
        assert_eq!(support::get(proxy.addr, "/a", "").status, 200);
    }
    wait_until(
        "every upstream connection closed",
        Duration::from_secs(5),
        || counts.closed.load(Ordering::SeqCst) == 3,
    );
}

#[test]
fn a_client_that_stops_reading_is_cut_and_its_upstream_closed() {
    // 64 MiB the client never reads: once the socket buffers fill, no write makes progress
    // for `writetimeout`, so the proxy closes both sides.
    static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let body: &'static [u8] = BIG.get_or_init(|| vec![b'x'; 64 << 20]);
    let (addr, counts) = keepalive_origin(body);
    let top = "writetimeout: 1s\n";
    let proxy = Proxy::start_with(&service("s", addr, "    auth: \"off\"\n"), 1, top, 4096);
    let mut client = TcpStream::connect(proxy.addr).unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    wait_until(
        "the stalled upstream closed",
        Duration::from_secs(10),
        || counts.closed.load(Ordering::SeqCst) == 1,
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_connection_that_drops_ends_all_its_upstream_work() {
    let origin = StallingOrigin::start();
    let proxy = Proxy::start(&stalling_service(&origin), 1);
    let token = tokio::task::block_in_place(|| buy_token(&proxy, "/slow"));
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut pending = Vec::new();
    for _ in 0..20 {
        send = send.ready().await.unwrap();
        let req = http::Request::get("http://api.example.com/slow")
            .header("authorization", token.as_str())
            .body(())
            .unwrap();
        pending.push(send.send_request(req, true).unwrap().0);
    }
    let o = &origin;
    tokio::task::block_in_place(|| {
        wait_until(
            "20 stalled upstream requests",
            Duration::from_secs(20),
            || o.get(|c| &c.stalled) == 20,
        )
    });
    // The TCP connection goes away under every stream (no RST_STREAM, no GOAWAY).
    driver.abort();
    let _ = driver.await;
    drop(send);
    tokio::task::block_in_place(|| {
        wait_until(
            "20 upstream connections closed",
            Duration::from_secs(2),
            || o.get(|c| &c.closed) == 20,
        )
    });
    drop(pending);
}

#[test]
fn a_slowloris_head_is_cut_after_readtimeout_in_total() {
    let origin = support::Origin::start();
    let top = "readtimeout: 1s\n";
    let proxy = Proxy::start_with(
        &service("s", origin.addr, "    auth: \"off\"\n"),
        1,
        top,
        4096,
    );
    let mut tcp = TcpStream::connect(proxy.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let started = std::time::Instant::now();
    // One byte every 100 ms: each read is quick, the head never ends.
    let mut answer = Vec::new();
    for b in b"GET / HTTP/1.1\r\nX-Slow: ".iter().cycle() {
        if tcp.write_all(&[*b]).is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the slow head was never cut"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(origin.hits.load(Ordering::SeqCst), 0);
}
