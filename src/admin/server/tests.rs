//! The admin listener over TCP: the probes exactly as before (HTTP/1 answers that close, 404,
//! 405, 431, 400, HEAD), security headers, the API's presence with `api`, the dashboard hook,
//! and shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::admin::fake::FakeBackend;

fn options(ready: Ready) -> AdminOptions {
    AdminOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        metrics: crate::exposition::tests::sample_metrics(),
        ready,
        extra: Arc::new(|s: &mut String| s.push_str("# extra\n")),
        api: None,
        dashboard: None,
    }
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

fn has_header(answer: &str, line: &str) -> bool {
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().any(|l| l.eq_ignore_ascii_case(line))
}

#[test]
fn serves_probes_as_before_and_shuts_down() {
    let ready_flag = Arc::new(AtomicBool::new(false));
    let flag = ready_flag.clone();
    let admin = Admin::start_with(options(Arc::new(move || flag.load(Ordering::SeqCst)))).unwrap();
    let addr = admin.local_addr();
    let r = exchange(addr, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
    assert!(r.ends_with("\r\n\r\nnot ready\n"), "{r}");
    assert!(has_header(&r, "connection: close"), "{r}");
    for line in [
        "x-frame-options: DENY",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
        &format!("content-security-policy: {CSP}"),
    ] {
        assert!(has_header(&r, line), "{line} in {r}");
    }
    ready_flag.store(true, Ordering::SeqCst);
    let r = exchange(addr, b"GET /readyz HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    let r = exchange(addr, b"GET /debug/pprof/ HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
    // Without the API, its paths are not there either.
    for path in ["/api/admin/health", "/", "/dashboard/x"] {
        let r = exchange(addr, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
        assert!(r.starts_with("HTTP/1.1 404 "), "{path}: {r}");
    }
    let r = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
    let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(
        has_header(&r, &format!("content-type: {}", probes::EXPOSITION)),
        "{r}"
    );
    assert!(r.contains("\naperture_requests_total 7\n"), "{r}");
    let r = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(r.ends_with("\r\n\r\n"), "{r}");
    assert!(r.to_ascii_lowercase().contains("content-length: "), "{r}");
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.resize(MAX_HEAD + 1024, b'a');
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

#[test]
fn api_and_dashboard_on_the_same_listener() {
    let key = AdminKey::from_root_key([5; 32]);
    let mut o = options(Arc::new(|| true));
    o.api = Some(ApiOptions {
        backend: Arc::new(FakeBackend::sample()),
        key: key.clone(),
        cors_origins: Vec::new(),
    });
    o.dashboard = Some(Arc::new(|req: Request<Bytes>| {
        let peer = req
            .extensions()
            .get::<PeerAddr>()
            .map(|p| p.0.ip().to_string());
        let mut r = Response::new(Bytes::from(format!(
            "{} {} {} {:?}",
            req.method(),
            req.uri(),
            String::from_utf8_lossy(req.body()),
            peer
        )));
        r.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'"),
        );
        r
    }));
    let admin = Admin::start_with(o).unwrap();
    let addr = admin.local_addr();
    let get = |path: &str, extra: &str| {
        exchange(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{extra}\r\n")
                .as_bytes(),
        )
    };
    let r = get("/api/admin/health", "");
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    assert!(r.ends_with("{\"status\":\"ok\"}"), "{r}");
    assert!(has_header(&r, "cache-control: no-store"), "{r}");
    let r = get("/api/admin/info", "");
    assert!(r.starts_with("HTTP/1.1 401 "), "{r}");
    let auth = format!("Grpc-Metadata-Macaroon: {}\r\n", key.macaroon_hex());
    let r = get("/api/admin/info", &auth);
    assert!(
        r.starts_with("HTTP/1.1 200 ") && r.contains("\"network\":\"regtest\""),
        "{r}"
    );
    let r = exchange(
        addr,
        b"POST /dashboard/api/x?y=1 HTTP/1.1\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(
        r.ends_with("POST /dashboard/api/x?y=1 abc Some(\"127.0.0.1\")"),
        "{r}"
    );
    assert!(
        has_header(&r, "content-security-policy: default-src 'self'"),
        "{r}"
    );
    assert!(has_header(&r, "x-frame-options: DENY"), "{r}");
    assert!(get("/", "").starts_with("HTTP/1.1 200 "));
    assert!(get("/dashboardx", "").starts_with("HTTP/1.1 404 "));
    let mut big = format!(
        "POST /api/admin/services HTTP/1.1\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n",
        MAX_BODY + 1
    )
    .into_bytes();
    big.resize(big.len() + MAX_BODY + 1, b' ');
    let r = exchange(addr, &big);
    assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
    // The probes still answer as before.
    assert!(get("/healthz", "").ends_with("\r\n\r\nok\n"));
}
