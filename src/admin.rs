//! The admin listener (layer 1): Prometheus metrics and health probes on their own address, off
//! the worker cores by construction. One plain `std::thread` (`aperture-admin`) with a blocking
//! `std::net::TcpListener` serves one short request per connection, one connection at a time;
//! it only *reads* the per-core counters (each core stays their single writer).
//!
//! It must never use monoio or tokio, never take a lock a worker takes, and never serve anything
//! beyond `/metrics`, `/healthz` and `/readyz` (Go aperture exposes pprof on this listener; we
//! do not).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::{
    Counter, Metrics, Reject, RuleKey, RuleStats, ServiceStats, CLASSES, LATENCY_BOUNDS_US,
};

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

/// Counters exported as one sum over the cores: (name, help, counter).
const TOTALS: &[(&str, &str, Counter)] = &[
    (
        "aperture_requests_total",
        "Requests whose head was parsed.",
        Counter::Requests,
    ),
    (
        "aperture_forwarded_total",
        "Requests forwarded upstream (paid or free).",
        Counter::Forwarded,
    ),
    (
        "aperture_bridge_unavailable_total",
        "503s because the Lightning bridge queue was full or timed out.",
        Counter::BridgeUnavailable,
    ),
    (
        "aperture_connections_accepted_total",
        "Client connections accepted.",
        Counter::ConnectionsAccepted,
    ),
    (
        "aperture_tls_handshake_failures_total",
        "TLS handshakes that failed or timed out (the connection was closed).",
        Counter::TlsHandshakeFailures,
    ),
    (
        "aperture_token_cache_hits_total",
        "Credentials accepted from the per-core verification cache (no HMAC work).",
        Counter::TokenCacheHits,
    ),
    (
        "aperture_connection_panics_total",
        "Connection tasks that panicked (only that connection was closed).",
        Counter::ConnectionPanics,
    ),
];

/// Responses by status class, in [`CLASSES`] order.
const BY_CLASS: [Counter; 4] = [
    Counter::Status2xx,
    Counter::Status3xx,
    Counter::Status4xx,
    Counter::Status5xx,
];

/// Renders the proxy's counters in the Prometheus text format 0.0.4.
pub fn render(metrics: &Metrics, out: &mut String) {
    for &(name, help, counter) in TOTALS {
        family(out, name, help, "counter");
        let _ = writeln!(out, "{name} {}", metrics.total(counter));
    }
    let name = "aperture_responses_total";
    family(out, name, "Responses sent, by status class.", "counter");
    for (class, counter) in CLASSES.iter().zip(BY_CLASS) {
        let _ = writeln!(
            out,
            "{name}{{class=\"{class}\"}} {}",
            metrics.total(counter)
        );
    }
    let name = "aperture_requests_core_total";
    family(
        out,
        name,
        "Requests whose head was parsed, by worker core.",
        "counter",
    );
    for (core, n) in metrics.per_core(Counter::Requests).into_iter().enumerate() {
        let _ = writeln!(out, "{name}{{core=\"{core}\"}} {n}");
    }
    let name = "aperture_connections_active";
    family(
        out,
        name,
        "Client connections open now, by worker core.",
        "gauge",
    );
    for (core, n) in metrics
        .per_core(Counter::ConnectionsActive)
        .into_iter()
        .enumerate()
    {
        // A gauge kept with wrapping add/sub: read it back as signed so a transient
        // decrement-before-increment never shows as 2^64.
        let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", n as i64);
    }
    render_services(&metrics.services(), out);
    render_rules(&metrics.rules(), out);
}

/// The per-service families. Every service ever configured in this process is listed (the
/// registry only grows), so a series never goes back to zero after a reload.
fn render_services(services: &[(String, Arc<ServiceStats>)], out: &mut String) {
    let name = "aperture_service_requests_total";
    let help = "Requests routed to a service, by the status class of the answer.";
    family(out, name, help, "counter");
    for (service, s) in services {
        let service = escape(service);
        for (class, n) in CLASSES.iter().zip(s.classes()) {
            let _ = writeln!(out, "{name}{{service=\"{service}\",class=\"{class}\"}} {n}");
        }
    }
    type Read = fn(&ServiceStats) -> u64;
    let simple: [(&str, &str, Read); 3] = [
        (
            "aperture_challenges_minted_total",
            "402 challenges minted, by service.",
            ServiceStats::minted,
        ),
        (
            "aperture_tokens_accepted_total",
            "Requests with a credential that verified, by service.",
            ServiceStats::accepted,
        ),
        (
            "aperture_upstream_errors_total",
            "Upstream connect, TLS, write or read failures (each a 502), by service.",
            ServiceStats::upstream_errors,
        ),
    ];
    for (name, help, read) in simple {
        family(out, name, help, "counter");
        for (service, s) in services {
            let _ = writeln!(out, "{name}{{service=\"{}\"}} {}", escape(service), read(s));
        }
    }
    let name = "aperture_tokens_rejected_total";
    let help = "Requests with a credential that was rejected, by service and reason.";
    family(out, name, help, "counter");
    for (service, s) in services {
        let service = escape(service);
        for reason in Reject::ALL {
            let _ = writeln!(
                out,
                "{name}{{service=\"{service}\",reason=\"{}\"}} {}",
                reason.label(),
                s.rejected(reason)
            );
        }
    }
    let name = "aperture_upstream_latency_seconds";
    let help = "Time from starting an upstream request (connect included) to its response head, by service.";
    family(out, name, help, "histogram");
    for (service, s) in services {
        let labels = format!("service=\"{}\"", escape(service));
        let h = s.upstream_latency();
        histogram(out, name, &labels, &LATENCY_BOUNDS_US, &h.buckets, h.sum_us);
    }
}

/// Go aperture's rate-limit families (same names and labels: every rule that matched a request
/// counts it), and the same for `challengeratelimits`.
fn render_rules(rules: &[(RuleKey, Arc<RuleStats>)], out: &mut String) {
    let families = [
        (
            "aperture_ratelimit_allowed_total",
            "Requests a rate-limit rule matched that every matching rule allowed, by service and rule.",
            true,
        ),
        (
            "aperture_ratelimit_denied_total",
            "Requests a rate-limit rule matched that some matching rule denied (429), by service and rule.",
            false,
        ),
    ];
    for (name, help, allowed) in families {
        family(out, name, help, "counter");
        for (key, r) in rules {
            let Some(service) = &key.service else {
                continue;
            };
            let (a, d) = r.totals();
            let n = if allowed { a } else { d };
            let _ = writeln!(
                out,
                "{name}{{service=\"{}\",path_pattern=\"{}\"}} {n}",
                escape(service),
                escape(&key.pattern)
            );
        }
    }
    for (name, help, allowed) in [
        (
            "aperture_challenge_ratelimit_allowed_total",
            "Challenges the challengeratelimits allowed, by rule (every matching rule counts).",
            true,
        ),
        (
            "aperture_challenge_ratelimit_denied_total",
            "Challenges the challengeratelimits denied (429), by rule (every matching rule counts).",
            false,
        ),
    ] {
        family(out, name, help, "counter");
        for (key, r) in rules.iter().filter(|(k, _)| k.service.is_none()) {
            let (a, d) = r.totals();
            let n = if allowed { a } else { d };
            let _ = writeln!(
                out,
                "{name}{{path_pattern=\"{}\"}} {n}",
                escape(&key.pattern)
            );
        }
    }
}

/// Renders the Lightning bridge's state: queue depth, invoice latency, LND connection.
pub fn render_bridge(stats: &lnd_bridge::BridgeStats, out: &mut String) {
    let gauges = [
        (
            "aperture_bridge_in_flight",
            "Invoice calls queued or running on the Lightning bridge.",
            stats.in_flight as u64,
        ),
        (
            "aperture_bridge_queue_capacity",
            "Most invoice calls in flight before new challenges get 503.",
            stats.capacity as u64,
        ),
        (
            "aperture_lnd_connected",
            "Whether the Lightning backend is reachable (1) or not (0); the dev backend is always 1.",
            u64::from(stats.backend.connected),
        ),
    ];
    for (name, help, v) in gauges {
        family(out, name, help, "gauge");
        let _ = writeln!(out, "{name} {v}");
    }
    let counters = [
        (
            "aperture_lnd_subscription_restarts_total",
            "Times the LND invoice subscription was restarted after failing.",
            stats.backend.subscription_restarts,
        ),
        (
            "aperture_invoice_failures_total",
            "Invoice calls that failed (backend error or deadline).",
            stats.invoice_failures,
        ),
    ];
    for (name, help, v) in counters {
        family(out, name, help, "counter");
        let _ = writeln!(out, "{name} {v}");
    }
    let name = "aperture_invoice_latency_seconds";
    let help =
        "Invoice calls for challenges, from queued on the bridge to answered (failures included).";
    family(out, name, help, "histogram");
    histogram(
        out,
        name,
        "",
        stats.invoice_latency_bounds_us,
        &stats.invoice_latency_buckets,
        stats.invoice_latency_sum_us,
    );
}

/// One histogram's samples: cumulative `_bucket`s (bounds in seconds, then `+Inf`), `_sum` in
/// seconds and `_count`. `buckets` holds per-bucket counts, one more than `bounds_us`.
fn histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds_us: &[u64],
    buckets: &[u64],
    sum_us: u64,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0u64;
    for (i, n) in buckets.iter().enumerate() {
        cumulative = cumulative.wrapping_add(*n);
        let le = match bounds_us.get(i) {
            Some(&us) => seconds(us),
            None => "+Inf".to_string(),
        };
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
        );
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", seconds(sum_us));
    let _ = writeln!(out, "{name}_count{braces} {cumulative}");
}

/// Microseconds as seconds in Prometheus' float syntax (`0.0005`, `1`, `2.5`).
fn seconds(us: u64) -> String {
    (us as f64 / 1e6).to_string()
}

/// A label value escaped as the text format requires: backslash, double quote and newline.
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.into()
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(ready: bool) -> State {
        let m = Metrics::new(2);
        m.core(0).add(Counter::Requests, 3);
        m.core(1).add(Counter::Requests, 4);
        m.core(0).status(200);
        m.core(1).status(402);
        m.core(1).status(503);
        m.core(0).incr(Counter::ConnectionsActive);
        let paid = m.service("paid");
        paid.core(1).minted();
        paid.core(1).status(402);
        paid.core(0).rejected(Reject::BadSignature);
        m.rule(Some("paid"), "^/api").core(0).unwrap().denied();
        State {
            metrics: m,
            ready: Arc::new(move || ready),
            extra: Arc::new(|s: &mut String| s.push_str("# extra\n")),
        }
    }

    /// Checks the exposition's shape: every sample follows the `# TYPE` of its family (a
    /// histogram's `_bucket`, `_sum` and `_count` included), each family announced once, no
    /// series twice. Returns the number of families.
    fn families(out: &str) -> usize {
        let mut types = std::collections::HashMap::new();
        let mut series = std::collections::HashSet::new();
        for l in out.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "{l}"
                );
            } else if !l.starts_with('#') {
                let (key, value) = l.rsplit_once(' ').unwrap();
                assert!(value.parse::<f64>().is_ok(), "{l}");
                assert!(series.insert(key.to_string()), "series twice: {l}");
                let name = key.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|b| types.get(*b).is_some_and(|k| k == "histogram"));
                let name = base.unwrap_or(name);
                assert!(types.contains_key(name), "sample before its TYPE: {l}");
            }
        }
        assert!(out.ends_with('\n'));
        types.len()
    }

    #[test]
    fn exposition_has_help_type_and_values() {
        let mut out = String::new();
        render(&state(true).metrics, &mut out);
        for line in [
            "# HELP aperture_requests_total Requests whose head was parsed.",
            "# TYPE aperture_requests_total counter",
            "aperture_requests_total 7",
            "aperture_forwarded_total 0",
            "# TYPE aperture_responses_total counter",
            "aperture_responses_total{class=\"2xx\"} 1",
            "aperture_responses_total{class=\"3xx\"} 0",
            "aperture_responses_total{class=\"4xx\"} 1",
            "aperture_responses_total{class=\"5xx\"} 1",
            "aperture_requests_core_total{core=\"0\"} 3",
            "aperture_requests_core_total{core=\"1\"} 4",
            "# TYPE aperture_connections_active gauge",
            "aperture_connections_active{core=\"0\"} 1",
            "aperture_connections_active{core=\"1\"} 0",
            "aperture_connection_panics_total 0",
            "aperture_challenges_minted_total{service=\"paid\"} 1",
            "aperture_service_requests_total{service=\"paid\",class=\"4xx\"} 1",
            "aperture_tokens_rejected_total{service=\"paid\",reason=\"bad_signature\"} 1",
            "aperture_tokens_rejected_total{service=\"paid\",reason=\"expired\"} 0",
            "# TYPE aperture_upstream_latency_seconds histogram",
            "aperture_upstream_latency_seconds_count{service=\"paid\"} 0",
            "aperture_ratelimit_denied_total{service=\"paid\",path_pattern=\"^/api\"} 1",
            "aperture_ratelimit_allowed_total{service=\"paid\",path_pattern=\"^/api\"} 0",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        // 10 process-wide families, 6 per service, 4 per rate-limit rule.
        assert_eq!(families(&out), 20);
    }

    #[test]
    fn per_service_families_render_exactly() {
        let m = Metrics::new(2);
        // A name that needs escaping in a label value: quote, backslash, newline.
        let s = m.service("a\"b\\c\nd");
        s.core(0).status(200);
        s.core(1).status(204);
        s.core(1).status(429);
        s.core(0).minted();
        s.core(0).accepted();
        s.core(1).accepted();
        s.core(1).rejected(Reject::Revoked);
        s.core(0).upstream_error();
        s.core(0).upstream_latency(Duration::from_micros(700)); // le 0.001
        s.core(1).upstream_latency(Duration::from_millis(30)); // le 0.05
        s.core(1).upstream_latency(Duration::from_secs(11)); // +Inf only
        let r = m.rule(Some("svc"), r"^/v\d+");
        r.core(0).unwrap().allowed();
        r.core(1).unwrap().allowed();
        r.core(1).unwrap().denied();
        m.rule(None, "").core(0).unwrap().denied();
        let mut out = String::new();
        render_services(&m.services(), &mut out);
        render_rules(&m.rules(), &mut out);
        let svc = r#"service="a\"b\\c\nd""#;
        let mut want = String::new();
        want.push_str(
            "# HELP aperture_service_requests_total Requests routed to a service, by the status class of the answer.\n\
             # TYPE aperture_service_requests_total counter\n",
        );
        for (class, n) in [("2xx", 2), ("3xx", 0), ("4xx", 1), ("5xx", 0)] {
            want += &format!("aperture_service_requests_total{{{svc},class=\"{class}\"}} {n}\n");
        }
        want += &format!(
            "# HELP aperture_challenges_minted_total 402 challenges minted, by service.\n\
             # TYPE aperture_challenges_minted_total counter\n\
             aperture_challenges_minted_total{{{svc}}} 1\n\
             # HELP aperture_tokens_accepted_total Requests with a credential that verified, by service.\n\
             # TYPE aperture_tokens_accepted_total counter\n\
             aperture_tokens_accepted_total{{{svc}}} 2\n\
             # HELP aperture_upstream_errors_total Upstream connect, TLS, write or read failures (each a 502), by service.\n\
             # TYPE aperture_upstream_errors_total counter\n\
             aperture_upstream_errors_total{{{svc}}} 1\n\
             # HELP aperture_tokens_rejected_total Requests with a credential that was rejected, by service and reason.\n\
             # TYPE aperture_tokens_rejected_total counter\n"
        );
        for reason in [
            "malformed",
            "bad_identifier",
            "third_party_caveat",
            "bad_preimage",
            "bad_signature",
            "wrong_service",
            "expired",
            "capability",
            "widened_caveat",
            "bad_caveat",
            "preimage_caveat",
            "revoked",
            "not_settled",
        ] {
            let n = u8::from(reason == "revoked");
            want += &format!("aperture_tokens_rejected_total{{{svc},reason=\"{reason}\"}} {n}\n");
        }
        want.push_str(
            "# HELP aperture_upstream_latency_seconds Time from starting an upstream request (connect included) to its response head, by service.\n\
             # TYPE aperture_upstream_latency_seconds histogram\n",
        );
        for (le, n) in [
            ("0.0005", 0),
            ("0.001", 1),
            ("0.0025", 1),
            ("0.005", 1),
            ("0.01", 1),
            ("0.025", 1),
            ("0.05", 2),
            ("0.1", 2),
            ("0.25", 2),
            ("0.5", 2),
            ("1", 2),
            ("2.5", 2),
            ("5", 2),
            ("10", 2),
            ("+Inf", 3),
        ] {
            want += &format!("aperture_upstream_latency_seconds_bucket{{{svc},le=\"{le}\"}} {n}\n");
        }
        want += &format!(
            "aperture_upstream_latency_seconds_sum{{{svc}}} 11.0307\n\
             aperture_upstream_latency_seconds_count{{{svc}}} 3\n"
        );
        want.push_str(
            "# HELP aperture_ratelimit_allowed_total Requests a rate-limit rule matched that every matching rule allowed, by service and rule.\n\
             # TYPE aperture_ratelimit_allowed_total counter\n\
             aperture_ratelimit_allowed_total{service=\"svc\",path_pattern=\"^/v\\\\d+\"} 2\n\
             # HELP aperture_ratelimit_denied_total Requests a rate-limit rule matched that some matching rule denied (429), by service and rule.\n\
             # TYPE aperture_ratelimit_denied_total counter\n\
             aperture_ratelimit_denied_total{service=\"svc\",path_pattern=\"^/v\\\\d+\"} 1\n\
             # HELP aperture_challenge_ratelimit_allowed_total Challenges the challengeratelimits allowed, by rule (every matching rule counts).\n\
             # TYPE aperture_challenge_ratelimit_allowed_total counter\n\
             aperture_challenge_ratelimit_allowed_total{path_pattern=\"\"} 0\n\
             # HELP aperture_challenge_ratelimit_denied_total Challenges the challengeratelimits denied (429), by rule (every matching rule counts).\n\
             # TYPE aperture_challenge_ratelimit_denied_total counter\n\
             aperture_challenge_ratelimit_denied_total{path_pattern=\"\"} 1\n",
        );
        assert_eq!(out, want);
        assert_eq!(families(&out), 10);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert!(matches!(escape("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(escape("a\"b"), "a\\\"b");
        assert_eq!(escape("a\\b"), "a\\\\b");
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("ünï"), "ünï");
    }

    #[test]
    fn bridge_state_renders_with_a_cumulative_histogram() {
        let stats = lnd_bridge::BridgeStats {
            in_flight: 3,
            capacity: 4096,
            invoice_latency_bounds_us: &[1_000, 10_000],
            invoice_latency_buckets: vec![2, 0, 1],
            invoice_latency_sum_us: 6_001_500,
            invoice_failures: 1,
            backend: lnd_bridge::BackendStats {
                connected: false,
                subscription_restarts: 5,
                ..Default::default()
            },
        };
        let mut out = String::new();
        render_bridge(&stats, &mut out);
        for line in [
            "aperture_bridge_in_flight 3",
            "aperture_bridge_queue_capacity 4096",
            "# TYPE aperture_lnd_connected gauge",
            "aperture_lnd_connected 0",
            "aperture_lnd_subscription_restarts_total 5",
            "aperture_invoice_failures_total 1",
            "# TYPE aperture_invoice_latency_seconds histogram",
            "aperture_invoice_latency_seconds_bucket{le=\"0.001\"} 2",
            "aperture_invoice_latency_seconds_bucket{le=\"0.01\"} 2",
            "aperture_invoice_latency_seconds_bucket{le=\"+Inf\"} 3",
            "aperture_invoice_latency_seconds_sum 6.0015",
            "aperture_invoice_latency_seconds_count 3",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        assert_eq!(families(&out), 6);
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
