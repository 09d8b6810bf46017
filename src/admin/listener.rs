//! The admin listener (layer 1): Prometheus metrics and health probes on their own address, off
//! the worker cores by construction. One plain `std::thread` (`aperture-admin`) with a blocking
//! `std::net::TcpListener` serves one short request per connection, one connection at a time;
//! it only *reads* the per-core counters (each core stays their single writer).
//!
//! It must never use monoio or tokio, never take a lock a worker takes, and never serve anything
//! beyond `/metrics`, `/healthz` and `/readyz` (Go aperture exposes pprof on this listener; we
//! do not).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::exposition::render;
use crate::metrics::Metrics;

/// Whether the process should receive traffic (`/readyz`).
pub type Ready = Arc<dyn Fn() -> bool + Send + Sync>;
/// Appends more exposition text (other subsystems' metrics) to a `/metrics` body.
pub type Extra = Arc<dyn Fn(&mut String) + Send + Sync>;

/// How long one client may take to send its request, and each write of the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest request head we read; a scrape or probe is a few hundred bytes.
const MAX_REQUEST: usize = 16 * 1024;
/// Prometheus text exposition format 0.0.4.
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The running admin listener. Dropping it stops it too.
pub struct Admin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the admin thread serves.
struct State {
    metrics: Metrics,
    ready: Ready,
    extra: Extra,
}

impl Admin {
    /// Binds `addr` and starts the admin thread. `ready` answers `/readyz`; `extra` may append
    /// exposition text after the proxy's own metrics.
    pub fn start(
        addr: SocketAddr,
        metrics: Metrics,
        ready: Ready,
        extra: Extra,
    ) -> io::Result<Admin> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let state = State {
            metrics,
            ready,
            extra,
        };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("aperture-admin".into())
            .spawn(move || serve(listener, &flag, &state))?;
        Ok(Admin {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and joins the thread (at most one in-flight request's timeouts later).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        // `accept` blocks: a connection of our own wakes it so it sees the flag. If even that
        // fails the thread is left detached; it exits on the next connection it accepts.
        if TcpStream::connect_timeout(&wake_addr(self.addr), IO_TIMEOUT).is_ok() {
            let _ = thread.join();
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Where to connect to reach our own listener (a wildcard bind is reached over loopback).
fn wake_addr(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, bound.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, bound.port()).into(),
        _ => bound,
    }
}

fn serve(listener: TcpListener, stop: &AtomicBool, state: &State) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                if let Err(e) = handle(stream, state) {
                    tracing::debug!("admin: connection ended: {e}");
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on a failing accept.
                tracing::warn!("admin: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// One connection: read one request head, answer, close.
fn handle(mut stream: TcpStream, state: &State) -> io::Result<()> {
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let reply = match read_head(&mut stream)? {
        Head::Complete(head) => match parse_request_line(&head) {
            Some((method, path)) => route(method, path, state),
            None => Reply::text(400, "Bad Request", "bad request\n"),
        },
        Head::TooLarge => Reply::text(431, "Request Header Fields Too Large", "too large\n"),
        Head::Closed => return Ok(()),
    };
    let head_only = reply.head_only;
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.reason,
        reply.content_type,
        reply.body.len()
    );
    if reply.status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&reply.body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
    /// The peer closed before a whole head arrived (our own wake-up connection does this).
    Closed,
}

/// Reads up to the end of the request head, within one overall deadline so that a client
/// trickling bytes cannot hold the (single) admin thread longer than `IO_TIMEOUT`.
fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_end(&buf) {
            buf.truncate(end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() >= MAX_REQUEST {
            return Ok(Head::TooLarge);
        }
    }
}

/// Where the head ends (after `\r\n\r\n`, or a bare `\n\n`), if it has.
fn find_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `METHOD SP target SP HTTP/1.x`; returns the method and the path without its query.
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line_end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Some((method, path))
}

/// One answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
    head_only: bool,
}

impl Reply {
    fn text(status: u16, reason: &'static str, body: &str) -> Reply {
        Reply {
            status,
            reason,
            content_type: TEXT,
            body: body.to_string(),
            head_only: false,
        }
    }
}

/// The whole routing table: three read-only endpoints, nothing else.
fn route(method: &str, path: &str, state: &State) -> Reply {
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return Reply::text(404, "Not Found", "404 page not found\n");
    }
    if method != "GET" && method != "HEAD" {
        return Reply::text(405, "Method Not Allowed", "method not allowed\n");
    }
    let mut reply = match path {
        "/metrics" => {
            let mut body = String::with_capacity(4096);
            render(&state.metrics, &mut body);
            (state.extra)(&mut body);
            Reply {
                content_type: EXPOSITION,
                ..Reply::text(200, "OK", &body)
            }
        }
        "/readyz" if !(state.ready)() => Reply::text(503, "Service Unavailable", "not ready\n"),
        "/readyz" => Reply::text(200, "OK", "ready\n"),
        _ => Reply::text(200, "OK", "ok\n"),
    };
    reply.head_only = method == "HEAD";
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(ready: bool) -> State {
        State {
            metrics: crate::exposition::tests::sample_metrics(),
            ready: Arc::new(move || ready),
            extra: Arc::new(|s: &mut String| s.push_str("# extra\n")),
        }
    }

    #[test]
    fn routes() {
        let ready = state(true);
        let r = route("GET", "/metrics", &ready);
        assert_eq!((r.status, r.content_type), (200, EXPOSITION));
        assert!(r.body.ends_with("# extra\n"), "{}", r.body);
        let r = route("GET", "/healthz", &ready);
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
        let r = route("GET", "/readyz", &ready);
        assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
        let r = route("GET", "/readyz", &state(false));
        assert_eq!((r.status, r.body.as_str()), (503, "not ready\n"));
        for path in ["/debug/pprof/", "/debug/pprof/heap", "/", "/metrics/x"] {
            assert_eq!(route("GET", path, &ready).status, 404, "{path}");
        }
        assert_eq!(route("POST", "/metrics", &ready).status, 405);
        assert!(route("HEAD", "/healthz", &ready).head_only);
    }

    #[test]
    fn request_line() {
        assert_eq!(
            parse_request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(parse_request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"GET / HTTP/2 x\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"\xff / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n"), None);
    }

    fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The server may answer and close before it has read everything we send.
        let _ = s.write_all(raw);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn serves_over_tcp_and_shuts_down() {
        let st = state(false);
        let ready_flag = Arc::new(AtomicBool::new(false));
        let flag = ready_flag.clone();
        let admin = Admin::start(
            "127.0.0.1:0".parse().unwrap(),
            st.metrics.clone(),
            Arc::new(move || flag.load(Ordering::SeqCst)),
            st.extra.clone(),
        )
        .unwrap();
        let addr = admin.local_addr();
        let r = exchange(addr, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nnot ready\n"), "{r}");
        ready_flag.store(true, Ordering::SeqCst);
        let r = exchange(addr, b"GET /readyz HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        let r = exchange(addr, b"GET /debug/pprof/ HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.contains(&format!("\r\nContent-Type: {EXPOSITION}\r\n")),
            "{r}"
        );
        assert!(r.contains("\naperture_requests_total 7\n"), "{r}");
        let r = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.ends_with("\r\n\r\n") && r.contains("Content-Length: "),
            "{r}"
        );
        // Exactly the cap, so the server has read all of it and closes with FIN, not RST.
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST, b'a');
        let r = exchange(addr, &big);
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        let r = exchange(addr, b"garbage\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        admin.shutdown();
        assert!(
            TcpStream::connect(addr).is_err(),
            "still listening after shutdown"
        );
    }
}
