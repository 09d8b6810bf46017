//! The admin listener: scraped after real traffic through the in-process proxy, and in the
//! binary (`prometheus.enabled`), where `/readyz` turns 503 while draining.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aperture::admin::Admin;

use crate::support::{
    buy_token, get, reload_routes, service, wait_until, Conn, KillOnDrop, Origin, Proxy,
};

/// One request to the admin listener; returns (status, body).
fn fetch(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read admin answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, body.to_string())
}

/// The value of the sample `series` (name plus labels, exactly as exposed).
fn sample(text: &str, series: &str) -> Option<i64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn sum_of(text: &str, name: &str) -> i64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}

#[test]
fn metrics_count_real_traffic() {
    let origin = Origin::start();
    let free = service(
        "free",
        origin.addr,
        "    pathregexp: \"^/free\"\n    auth: \"off\"\n",
    );
    let paid = service("paid", origin.addr, "");
    let proxy = Proxy::start(&format!("{free}{paid}"), 2);

    let auth = buy_token(&proxy, "/paid"); // one 402, one challenge
    let r = get(proxy.addr, "/paid", &format!("Authorization: {auth}\r\n"));
    assert_eq!(r.status, 200, "{}", r.text());
    let free_requests = 4;
    for i in 0..free_requests {
        assert_eq!(get(proxy.addr, &format!("/free/{i}"), "").status, 200);
    }
    let sent = 2 + free_requests;

    let admin = Admin::start(
        "127.0.0.1:0".parse().unwrap(),
        proxy.server().metrics().clone(),
        Arc::new(|| true),
        Arc::new(|s: &mut String| s.push_str("# TYPE extra_gauge gauge\nextra_gauge 42\n")),
    )
    .expect("admin");
    let addr = admin.local_addr();
    // A core counts a forwarded response and closes its connection after the client already
    // has the answer: wait until every connection has ended, after which nothing moves.
    wait_until(
        "every proxy connection to close",
        Duration::from_secs(10),
        || {
            let text = fetch(addr, "/metrics").1;
            sample(&text, "aperture_connections_accepted_total") == Some(sent)
                && sum_of(&text, "aperture_connections_active") == 0
        },
    );
    let (status, text) = fetch(addr, "/metrics");
    assert_eq!(status, 200);
    for (series, want) in [
        ("aperture_requests_total", sent),
        ("aperture_challenges_minted_total{service=\"paid\"}", 1),
        ("aperture_challenges_minted_total{service=\"free\"}", 0),
        ("aperture_tokens_accepted_total{service=\"paid\"}", 1),
        ("aperture_forwarded_total", 1 + free_requests),
        ("aperture_responses_total{class=\"2xx\"}", 1 + free_requests),
        ("aperture_responses_total{class=\"4xx\"}", 1),
        ("aperture_responses_total{class=\"5xx\"}", 0),
        (
            "aperture_service_requests_total{service=\"free\",class=\"2xx\"}",
            free_requests,
        ),
        ("aperture_upstream_errors_total{service=\"paid\"}", 0),
        ("aperture_bridge_unavailable_total", 0),
        ("aperture_connection_panics_total", 0),
        ("aperture_connections_accepted_total", sent),
        ("extra_gauge", 42),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    assert_eq!(
        sum_of(&text, "aperture_requests_core_total"),
        sent,
        "{text}"
    );
    assert!(sample(&text, "aperture_requests_core_total{core=\"1\"}").is_some());
    assert_eq!(sum_of(&text, "aperture_tokens_rejected_total"), 0, "{text}");
    assert_eq!(fetch(addr, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(fetch(addr, "/readyz"), (200, "ready\n".to_string()));
    assert_eq!(fetch(addr, "/debug/pprof/").0, 404);
    admin.shutdown();
    assert!(!crate::support::listening(addr), "admin still listening");
}

/// An admin listener over `proxy`'s counters and its bridge's state, as the binary wires it.
fn admin_for(proxy: &Proxy) -> Admin {
    let bridge = proxy.bridge().handle();
    Admin::start(
        "127.0.0.1:0".parse().unwrap(),
        proxy.server().metrics().clone(),
        Arc::new(|| true),
        Arc::new(move |out: &mut String| aperture::exposition::render_bridge(&bridge.stats(), out)),
    )
    .expect("admin")
}

/// Scrapes until every connection the proxy accepted (`accepted` of them) has closed: a core
/// counts a response after the client already has it, and nothing moves after the close.
fn settled_scrape(addr: SocketAddr, accepted: i64) -> String {
    let mut text = String::new();
    wait_until(
        "every proxy connection to close",
        Duration::from_secs(10),
        || {
            text = fetch(addr, "/metrics").1;
            sample(&text, "aperture_connections_accepted_total") == Some(accepted)
                && sum_of(&text, "aperture_connections_active") == 0
        },
    );
    text
}

#[test]
fn per_service_counters_move_with_402s_payments_rejections_and_rate_limits() {
    let origin = Origin::start();
    let limited = "    pathregexp: '^/alpha'\n    ratelimits:\n      - pathregexp: '^/alpha/limited'\n        requests: 1\n        per: 1m\n        burst: 1\n";
    let services = format!(
        "{}{}",
        service("alpha", origin.addr, limited),
        service("beta", origin.addr, "    pathregexp: '^/beta'\n")
    );
    let proxy = Proxy::start(&services, 2);
    let admin = admin_for(&proxy);
    let addr = admin.local_addr();

    // 402 for alpha (a bridge-backed challenge), then the paid request.
    let auth = buy_token(&proxy, "/alpha");
    let r = get(proxy.addr, "/alpha", &format!("Authorization: {auth}\r\n"));
    assert_eq!(r.status, 200, "{}", r.text());
    // Forged tokens: a flipped signature bit, a wrong preimage, a token for another service.
    let (mac, preimage) = auth["L402 ".len()..].split_once(':').unwrap();
    let mut forged = aperture::l402::macaroon_from_base64(mac).unwrap();
    forged.signature[0] ^= 1;
    let forged = format!("L402 {}:{preimage}", forged.to_base64());
    let wrong_preimage = format!("L402 {mac}:{}", "00".repeat(32));
    for (path, value) in [
        ("/alpha", &forged),
        ("/alpha", &wrong_preimage),
        ("/beta", &auth),
    ] {
        let r = get(proxy.addr, path, &format!("Authorization: {value}\r\n"));
        assert_eq!(r.status, 402, "{path} {value}");
    }
    // The rule allows one request a minute per token: the second is denied.
    let limited: Vec<u16> = (0..2)
        .map(|_| {
            get(
                proxy.addr,
                "/alpha/limited",
                &format!("Authorization: {auth}\r\n"),
            )
            .status
        })
        .collect();
    assert_eq!(limited, [200, 429]);

    // One connection per request: the challenge, the paid one, three forged, two limited.
    let text = settled_scrape(addr, 7);
    let alpha = "service=\"alpha\"";
    let beta = "service=\"beta\"";
    for (series, want) in [
        (format!("aperture_challenges_minted_total{{{alpha}}}"), 3),
        (format!("aperture_challenges_minted_total{{{beta}}}"), 1),
        (format!("aperture_tokens_accepted_total{{{alpha}}}"), 3),
        (format!("aperture_tokens_accepted_total{{{beta}}}"), 0),
        (
            format!("aperture_service_requests_total{{{alpha},class=\"2xx\"}}"),
            2,
        ),
        (
            format!("aperture_service_requests_total{{{alpha},class=\"4xx\"}}"),
            4,
        ),
        (
            format!("aperture_service_requests_total{{{beta},class=\"4xx\"}}"),
            1,
        ),
        (
            format!("aperture_service_requests_total{{{beta},class=\"2xx\"}}"),
            0,
        ),
        (
            format!("aperture_tokens_rejected_total{{{alpha},reason=\"bad_signature\"}}"),
            1,
        ),
        (
            format!("aperture_tokens_rejected_total{{{alpha},reason=\"bad_preimage\"}}"),
            1,
        ),
        (
            format!("aperture_tokens_rejected_total{{{beta},reason=\"wrong_service\"}}"),
            1,
        ),
        (
            format!("aperture_tokens_rejected_total{{{alpha},reason=\"expired\"}}"),
            0,
        ),
        (
            format!("aperture_upstream_latency_seconds_count{{{alpha}}}"),
            2,
        ),
        (
            format!("aperture_upstream_latency_seconds_bucket{{{alpha},le=\"+Inf\"}}"),
            2,
        ),
        (
            format!("aperture_upstream_latency_seconds_count{{{beta}}}"),
            0,
        ),
        (format!("aperture_upstream_errors_total{{{alpha}}}"), 0),
        (
            format!("aperture_ratelimit_allowed_total{{{alpha},path_pattern=\"^/alpha/limited\"}}"),
            1,
        ),
        (
            format!("aperture_ratelimit_denied_total{{{alpha},path_pattern=\"^/alpha/limited\"}}"),
            1,
        ),
        // One client key (the token) in alpha's limiter, on the core that owns it.
        (format!("aperture_ratelimit_cache_size{{{alpha}}}"), 1),
        (format!("aperture_ratelimit_evictions_total{{{alpha}}}"), 0),
        // Four invoices through the dev bridge: alpha's three challenges and beta's one.
        ("aperture_invoice_latency_seconds_count".to_string(), 4),
        (
            "aperture_invoice_latency_seconds_bucket{le=\"+Inf\"}".to_string(),
            4,
        ),
        ("aperture_invoice_failures_total".to_string(), 0),
        ("aperture_bridge_in_flight".to_string(), 0),
        ("aperture_lnd_connected".to_string(), 1),
    ] {
        assert_eq!(sample(&text, &series), Some(want), "{series} in\n{text}");
    }
    assert_eq!(sum_of(&text, "aperture_tokens_rejected_total"), 3, "{text}");
    // Beta has no rules, so Go aperture's families carry no series for it.
    assert!(!text.contains("aperture_ratelimit_denied_total{service=\"beta\""));
    assert!(!text.contains("aperture_ratelimit_cache_size{service=\"beta\""));
    let sum: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("aperture_invoice_latency_seconds_sum "))
        .and_then(|v| v.parse().ok())
        .expect("invoice latency sum");
    assert!(sum > 0.0, "{text}");
}

#[test]
fn a_service_renamed_by_a_reload_keeps_its_series_and_resumes_them_when_it_returns() {
    let origin = Origin::start();
    let free = |name: &str| {
        service(
            name,
            origin.addr,
            &format!("    pathregexp: '^/{name}'\n    auth: \"off\"\n"),
        )
    };
    let proxy = Proxy::start(&free("one"), 2);
    let admin = admin_for(&proxy);
    let addr = admin.local_addr();
    let ok = |path: &str| get(proxy.addr, path, "").status == 200;
    assert!(ok("/one"));
    proxy.server().reload(&reload_routes(&free("two")));
    wait_until(
        "the reload to reach a core",
        Duration::from_secs(10),
        || ok("/two"),
    );
    let series =
        |name: &str| format!("aperture_service_requests_total{{service=\"{name}\",class=\"2xx\"}}");
    // A core counts an answer after writing it, so the count may trail the client by a moment.
    wait_until("one's answer counted", Duration::from_secs(10), || {
        sample(&fetch(addr, "/metrics").1, &series("one")) == Some(1)
    });
    // "two" may still be counting its first answer; it is never more than one.
    wait_until(
        "two's first answer counted",
        Duration::from_secs(10),
        || sample(&fetch(addr, "/metrics").1, &series("two")) == Some(1),
    );
    proxy.server().reload(&reload_routes(&free("one")));
    wait_until(
        "the second reload to reach a core",
        Duration::from_secs(10),
        || ok("/one"),
    );
    wait_until("one's series resumed", Duration::from_secs(10), || {
        sample(&fetch(addr, "/metrics").1, &series("one")) == Some(2)
    });
    let text = fetch(addr, "/metrics").1;
    assert_eq!(sample(&text, &series("two")), Some(1), "{text}");
}

/// Starts the binary with `prometheus` on port 0; returns it with the proxy and admin addresses.
fn spawn_with_admin(
    dir: &tempfile::TempDir,
    origin: SocketAddr,
) -> (KillOnDrop, SocketAddr, SocketAddr) {
    let yaml = format!(
        "listenaddr: \"127.0.0.1:0\"\ninsecure: true\ndbbackend: sqlite\n\
         prometheus:\n  enabled: true\n  listenaddr: \"127.0.0.1:0\"\n\
         authenticator:\n  network: regtest\n  dev:\n    listenaddr: \"127.0.0.1:0\"\n\
         services:\n{}",
        service("free", origin, "    auth: \"off\"\n")
    );
    let markers = [
        "aperture listening on http://",
        "admin listening on http://",
    ];
    let (child, addrs) = crate::support::spawn_logging_addresses(
        dir.path(),
        &yaml,
        1,
        &markers,
        Duration::from_secs(20),
    );
    (child, addrs[0], addrs[1])
}

#[test]
fn binary_serves_admin_and_turns_unready_while_draining() {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, proxy, admin) = spawn_with_admin(&dir, origin.addr);
    assert_eq!(fetch(admin, "/readyz"), (200, "ready\n".to_string()));
    let mut conn = Conn::open(proxy);
    conn.send(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_until(
        "the request to reach the origin",
        Duration::from_secs(10),
        || origin.holding() == 1,
    );
    let text = fetch(admin, "/metrics").1;
    assert_eq!(sample(&text, "aperture_requests_total"), Some(1), "{text}");
    // main.rs wires the bridge's state and the routes' per-service series in.
    for (series, want) in [
        ("aperture_lnd_connected", 1),
        ("aperture_bridge_in_flight", 0),
        ("aperture_bridge_queue_capacity", 4096),
        (
            "aperture_service_requests_total{service=\"free\",class=\"2xx\"}",
            0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    assert_eq!(
        sample(&text, "aperture_connections_active{core=\"0\"}"),
        Some(1),
        "{text}"
    );
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGTERM);
    }
    wait_until(
        "/readyz to turn 503 while draining",
        Duration::from_secs(10),
        || fetch(admin, "/readyz") == (503, "not ready\n".to_string()),
    );
    assert_eq!(fetch(admin, "/healthz").0, 200);
    origin.release();
    assert_eq!(conn.read_response(false).status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "aperture did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        !crate::support::listening(admin),
        "admin outlived the process"
    );
}
