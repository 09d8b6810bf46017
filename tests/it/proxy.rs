//! The HTTP/1.1 data path end to end: in-process proxy (workers + dev bridge), in-process fake
//! origin, real sockets on port 0.

use std::time::Duration;

use aperture::metrics::Counter;

use crate::support::{buy_token, challenge, get, pay, service, wait_until, Conn, Origin, Proxy};

#[test]
fn unpaid_request_gets_go_aperture_402() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("svc", origin.addr, ""), 1);
    let resp = get(proxy.addr, "/resource", "");
    assert_eq!(resp.status, 402);
    assert_eq!(resp.body, b"payment required\n");
    for (name, value) in [
        ("Access-Control-Allow-Headers", "Content-Type, Authorization, Grpc-Metadata-macaroon, WWW-Authenticate, Payment-Receipt"),
        ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Expose-Headers", "WWW-Authenticate, Payment-Receipt"),
        ("Cache-Control", "no-store"),
        ("Content-Length", "17"),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Content-Type-Options", "nosniff"),
    ] {
        assert_eq!(resp.header(name), Some(value), "{name}");
    }
    let fields = resp.all("www-authenticate");
    assert_eq!(fields.len(), 2, "{fields:?}");
    let (mac, invoice) = challenge(&resp);
    assert_eq!(
        fields[0],
        format!("LSAT macaroon=\"{mac}\", invoice=\"{invoice}\"")
    );
    assert!(fields[1].starts_with(&format!("L402 macaroon=\"{mac}\", invoice=\"{invoice}\"")));
    assert!(invoice.starts_with("lnbcrt100n1"), "{invoice}");
    assert_eq!(origin.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn pay_then_retry_reaches_the_origin_on_any_path_and_connection() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("svc", origin.addr, ""), 2);
    let auth = buy_token(&proxy, "/first");
    let resp = get(proxy.addr, "/first", &format!("Authorization: {auth}\r\n"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "origin saw /first");
    assert_eq!(resp.header("Access-Control-Allow-Origin"), Some("*"));
    let mut conn = Conn::open(proxy.addr);
    for i in 0..20 {
        let path = format!("/other/{i}");
        let r = conn.request(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("origin saw {path}"));
    }
    for _ in 0..16 {
        assert_eq!(
            get(proxy.addr, "/x", &format!("Authorization: {auth}\r\n")).status,
            200
        );
    }
}

#[test]
fn upstream_sees_rewritten_authorization_and_forwarded_for() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("svc", origin.addr, ""), 1);
    let auth = buy_token(&proxy, "/echo");
    let (mac, preimage) = auth["L402 ".len()..].split_once(':').unwrap();
    let resp = get(
        proxy.addr,
        "/echo",
        &format!("Authorization: {auth}\r\nX-Forwarded-For: 203.0.113.7\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n"),
    );
    assert_eq!(resp.status, 200);
    let seen = resp.text();
    // One canonical field by default (nginx rejects two) ...
    assert!(
        seen.contains(&format!("\r\nAuthorization: L402 {mac}:{preimage}\r\n")),
        "{seen}"
    );
    assert_eq!(seen.matches("Authorization:").count(), 1, "{seen}");
    assert!(
        seen.contains(&format!("Host: {}\r\n", origin.addr)),
        "{seen}"
    );
    assert!(
        seen.contains("X-Forwarded-For: 203.0.113.7, 127.0.0.1\r\n"),
        "{seen}"
    );
    assert!(!seen.contains("X-Hop"), "hop-by-hop field leaked: {seen}");
    // ... and Go aperture's LSAT + L402 pair when asked for.
    let proxy = Proxy::start_with(
        &service("svc", origin.addr, ""),
        1,
        "upstreamauthorization: aperture",
        16,
    );
    let auth = buy_token(&proxy, "/echo");
    let (mac, preimage) = auth["L402 ".len()..].split_once(':').unwrap();
    let seen = get(proxy.addr, "/echo", &format!("Authorization: {auth}\r\n")).text();
    assert!(
        seen.contains(&format!(
            "Authorization: LSAT {mac}:{preimage}\r\nAuthorization: L402 {mac}:{preimage}\r\n"
        )),
        "{seen}"
    );
    // ... and Go aperture's LSAT + L402 pair when asked for.
    let proxy = Proxy::start_with(
        &service("svc", origin.addr, ""),
        1,
        "upstreamauthorization: aperture",
        16,
    );
    let auth = buy_token(&proxy, "/echo");
    let (mac, preimage) = auth["L402 ".len()..].split_once(':').unwrap();
    let seen = get(proxy.addr, "/echo", &format!("Authorization: {auth}\r\n")).text();
    let pair =
        format!("Authorization: LSAT {mac}:{preimage}\r\nAuthorization: L402 {mac}:{preimage}\r\n");
    assert!(seen.contains(&pair), "{seen}");
}

#[test]
fn bad_tokens_get_a_fresh_402_never_5xx() {
    let origin = Origin::start();
    let services = format!(
        "{}{}",
        service("svc", origin.addr, ""),
        service("other", origin.addr, "    pathregexp: '^/other'\n")
    )
    .replace(
        "hostregexp: \".*\"\n    address",
        "hostregexp: \".*\"\n    address",
    );
    let proxy = Proxy::start(&services, 1);
    let auth = buy_token(&proxy, "/a");
    let (mac, preimage) = auth["L402 ".len()..].split_once(':').unwrap();
    let mut tampered = mac.as_bytes().to_vec();
    let i = tampered.len() - 6;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let wrong_preimage = "00".repeat(32);
    let cases = [
        format!("L402 {tampered}:{preimage}"),
        format!("L402 {mac}:{wrong_preimage}"),
        "L402 LSAT x:y".to_string(),
        "L402 ::::".to_string(),
        format!("L402 {}:{}", "A".repeat(4000), preimage),
        "Bearer abc".to_string(),
        "LSAT".to_string(),
        format!("L402 {mac}"),
    ];
    for value in &cases {
        let resp = get(proxy.addr, "/a", &format!("Authorization: {value}\r\n"));
        assert_eq!(resp.status, 402, "{value}");
        assert_eq!(resp.all("www-authenticate").len(), 2);
    }
    // A token for one service is no good for another ("other" is matched first for /other).
    let services = format!(
        "{}{}",
        service("other", origin.addr, "    pathregexp: '^/other'\n"),
        service("svc", origin.addr, "")
    );
    drop(proxy);
    let proxy = Proxy::start(&services, 1);
    let auth = buy_token(&proxy, "/a");
    assert_eq!(
        get(proxy.addr, "/a", &format!("Authorization: {auth}\r\n")).status,
        200
    );
    assert_eq!(
        get(proxy.addr, "/other", &format!("Authorization: {auth}\r\n")).status,
        402
    );
}

#[test]
fn expired_token_gets_a_fresh_402() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("svc", origin.addr, "    timeout: 3600\n"), 1);
    let resp = get(proxy.addr, "/", "");
    let (_, invoice) = challenge(&resp);
    let preimage_hex = pay(proxy.wallet, &invoice);
    let preimage: [u8; 32] = hex::decode(&preimage_hex).unwrap().try_into().unwrap();
    let payment_hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(preimage).into();
    // Mint, with the proxy's own master secret, a token whose validity ended in 2001.
    let verifier = aperture::l402::Verifier::new(proxy.master_secret());
    let caveats = aperture::l402::mint_caveats("svc", None, &[], Some(1_000_000_000));
    let expired = verifier.mint(payment_hash, [9u8; 32], &caveats);
    let auth = format!("L402 {}:{preimage_hex}", expired.to_base64());
    assert_eq!(
        get(proxy.addr, "/", &format!("Authorization: {auth}\r\n")).status,
        402
    );
    let caveats = aperture::l402::mint_caveats("svc", None, &[], Some(4_102_444_800));
    let fresh = verifier.mint(payment_hash, [9u8; 32], &caveats);
    let auth = format!("L402 {}:{preimage_hex}", fresh.to_base64());
    assert_eq!(
        get(proxy.addr, "/", &format!("Authorization: {auth}\r\n")).status,
        200
    );
}

#[test]
fn post_bodies_pass_through_402_and_paid_paths() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("svc", origin.addr, ""), 1);
    let body = "x".repeat(1000);
    let mut conn = Conn::open(proxy.addr);
    // Go aperture issue #114: the 402 must not echo the request's Content-Length.
    let r = conn.request(
        format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 402);
    assert_eq!(r.header("content-length"), Some("17"));
    // The connection survives the 402 (the small body was drained).
    let (mac, invoice) = challenge(&r);
    let preimage = pay(proxy.wallet, &invoice);
    let auth = format!("Authorization: L402 {mac}:{preimage}\r\n");
    let r = conn.request(
        format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert!(r.text().ends_with(&body));
    // Chunked upload passes through and ends where it should.
    let r = conn.request(format!("POST /echo HTTP/1.1\r\nHost: t\r\n{auth}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").as_bytes());
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("Transfer-Encoding: chunked"),
        "{}",
        r.text()
    );
    assert!(r.text().ends_with("hello world"), "{}", r.text());
    // A chunked response passes through.
    let r = conn.request(format!("GET /chunked HTTP/1.1\r\nHost: t\r\n{auth}\r\n").as_bytes());
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
}

#[test]
fn large_response_streams_through() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("free", origin.addr, "    auth: \"off\"\n"), 1);
    let n = 50 * 1024 * 1024;
    let r = get(proxy.addr, &format!("/big?n={n}"), "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), n);
    assert!(r.body.iter().all(|&b| b == b'x'));
}

#[test]
fn upstream_down_is_502_and_big_heads_are_431() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(&service("free", closed, "    auth: \"off\"\n"), 1);
    let r = get(proxy.addr, "/", "");
    assert_eq!(r.status, 502);
    let r = get(
        proxy.addr,
        "/",
        &format!("X-Big: {}\r\n", "a".repeat(70 * 1024)),
    );
    assert_eq!(r.status, 431);
    let r = Conn::open(proxy.addr).request(b"GARBAGE\r\n\r\n");
    assert_eq!(r.status, 400);
    let r = Conn::open(proxy.addr).request(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(r.status, 400);
}

#[test]
fn unmatched_host_is_404_and_options_is_local() {
    let origin = Origin::start();
    let svc = service("svc", origin.addr, "")
        .replace("hostregexp: \".*\"", "hostregexp: '^api\\.example$'");
    let proxy = Proxy::start(&svc, 1);
    let r = get(proxy.addr, "/", "");
    assert_eq!((r.status, r.text().as_str()), (404, "404 page not found\n"));
    let r = Conn::open(proxy.addr).request(b"OPTIONS /x HTTP/1.1\r\nHost: api.example\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, POST, OPTIONS")
    );
    let r = Conn::open(proxy.addr).request(b"GET / HTTP/1.1\r\nHost: api.example\r\n\r\n");
    assert_eq!(r.status, 402);
}

#[test]
fn backend_www_authenticate_is_stripped_outside_402() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("free", origin.addr, "    auth: \"off\"\n"), 1);
    let r = get(proxy.addr, "/www-auth", "");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_none(), "{:?}", r.headers);
}

#[test]
fn saturated_bridge_gets_503_with_retry_after() {
    let origin = Origin::start();
    let proxy = Proxy::start_with(&service("svc", origin.addr, ""), 1, "", 1);
    proxy
        .bridge()
        .handle()
        .set_dev_delay(Duration::from_secs(3));
    let mut slow = Conn::open(proxy.addr);
    slow.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    let handle = proxy.bridge().handle();
    wait_until(
        "the first invoice to be in flight",
        Duration::from_secs(5),
        || handle.in_flight() == 1,
    );
    let r = get(proxy.addr, "/", "");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(slow.read_response(false).status, 402);
}

#[test]
fn both_cores_serve_under_many_connections() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("free", origin.addr, "    auth: \"off\"\n"), 2);
    let conns: Vec<Conn> = (0..64).map(|_| Conn::open(proxy.addr)).collect();
    for mut c in conns {
        assert_eq!(c.request(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").status, 200);
    }
    let per_core = proxy.server().metrics().per_core(Counter::Requests);
    assert_eq!(per_core.iter().sum::<u64>(), 64);
    assert!(
        per_core.iter().all(|&n| n > 0),
        "one core served nothing: {per_core:?}"
    );
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests() {
    let origin = Origin::start();
    let mut proxy = Proxy::start(&service("free", origin.addr, "    auth: \"off\"\n"), 2);
    let mut conn = Conn::open(proxy.addr);
    conn.send(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_until(
        "the request to reach the origin",
        Duration::from_secs(5),
        || origin.holding() == 1,
    );
    let server = proxy.server.take().unwrap();
    server.begin_shutdown(Duration::from_secs(10));
    let closed_addr = proxy.addr;
    wait_until("the listeners to close", Duration::from_secs(5), || {
        !crate::support::listening(closed_addr)
    });
    origin.release();
    let r = conn.read_response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "released"));
    assert_eq!(r.header("connection"), Some("close"));
    wait_until("the workers to exit", Duration::from_secs(5), || {
        server.finished()
    });
    server.join();
}

#[test]
fn blocked_peers_get_403() {
    let origin = Origin::start();
    let proxy = Proxy::start_with(
        &service("svc", origin.addr, ""),
        1,
        "blocklist:\n  - \"127.0.0.0/8\"",
        16,
    );
    let r = get(proxy.addr, "/", "");
    assert_eq!((r.status, r.text().as_str()), (403, "access denied\n"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}

#[test]
fn tokens_minted_before_a_restart_verify_after_it() {
    let origin = Origin::start();
    let svc = service("svc", origin.addr, "");
    let proxy = Proxy::start(&svc, 1);
    let auth = buy_token(&proxy, "/");
    let basedir = proxy.stop();
    let proxy = Proxy::start_in(basedir, &svc, 2, "", 16);
    let r = get(proxy.addr, "/again", &format!("Authorization: {auth}\r\n"));
    assert_eq!((r.status, r.text().as_str()), (200, "origin saw /again"));
}

#[test]
fn a_stalled_request_head_gets_408() {
    let origin = Origin::start();
    let proxy = Proxy::start_with(
        &service("svc", origin.addr, ""),
        1,
        "readtimeout: 200ms",
        16,
    );
    let mut conn = Conn::open(proxy.addr);
    conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n");
    let r = conn.read_response(false);
    assert_eq!(r.status, 408);
    assert!(conn.closed());
}

#[test]
fn configured_headers_replace_client_values_and_prefix_rewrites_the_path() {
    let origin = Origin::start();
    let extra = "    auth: \"off\"\n    headers:\n      X-Api-Key: \"from-config\"\n";
    let proxy = Proxy::start(&service("free", origin.addr, extra), 1);
    let seen = get(proxy.addr, "/echo", "X-Api-Key: from-client\r\n").text();
    assert!(seen.contains("X-Api-Key: from-config\r\n"), "{seen}");
    assert!(!seen.contains("from-client"), "{seen}");
    let extra = "    auth: \"off\"\n    rewrite:\n      prefix: \"/api/v2\"\n";
    let proxy = Proxy::start(&service("free", origin.addr, extra), 1);
    let r = get(proxy.addr, "/items?id=1", "");
    assert_eq!(r.text(), "origin saw /api/v2/items?id=1");
}

/// Go `Set`s the configured headers after rewriting the credential: a configured
/// `Authorization` (the upstream's own API key) replaces the client's token upstream.
#[test]
fn a_configured_authorization_replaces_the_paid_credential_upstream() {
    let origin = Origin::start();
    let extra = "    headers:\n      Authorization: \"Bearer upstream-key\"\n";
    let proxy = Proxy::start(&service("svc", origin.addr, extra), 1);
    let auth = buy_token(&proxy, "/echo");
    let seen = get(proxy.addr, "/echo", &format!("Authorization: {auth}\r\n")).text();
    assert!(
        seen.contains("Authorization: Bearer upstream-key\r\n"),
        "{seen}"
    );
    assert_eq!(seen.matches("Authorization:").count(), 1, "{seen}");
}

#[test]
fn a_macaroon_header_beside_a_bearer_value_is_not_cached_under_it() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("svc", origin.addr, ""), 1);
    let auth = buy_token(&proxy, "/");
    let (mac, preimage) = auth["L402 ".len()..].split_once(':').unwrap();
    // The Loop / Go-client form: hex macaroon with an appended preimage caveat.
    let mut m = aperture::l402::macaroon_from_base64(mac).unwrap();
    m.add_first_party_caveat(format!("preimage={preimage}"));
    let hex_mac = hex::encode(m.encode_v2());
    let both = format!("Authorization: Bearer abc\r\nMacaroon: {hex_mac}\r\n");
    assert_eq!(get(proxy.addr, "/", &both).status, 200);
    assert_eq!(get(proxy.addr, "/", &both).status, 200);
    assert_eq!(
        get(proxy.addr, "/", "Authorization: Bearer abc\r\n").status,
        402
    );
    // A cached L402 value keeps working, and a tampered one does not ride on it.
    let good = format!("Authorization: {auth}\r\n");
    assert_eq!(get(proxy.addr, "/", &good).status, 200);
    assert_eq!(get(proxy.addr, "/", &good).status, 200);
    let flipped = if auth.ends_with('0') { '1' } else { '0' };
    let bad = format!("Authorization: {}{flipped}\r\n", &auth[..auth.len() - 1]);
    assert_eq!(get(proxy.addr, "/", &bad).status, 402);
}

#[test]
fn a_revoked_token_is_rejected_on_every_core() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("svc", origin.addr, ""), 2);
    let auth = buy_token(&proxy, "/");
    let header = format!("Authorization: {auth}\r\n");
    for _ in 0..8 {
        assert_eq!(get(proxy.addr, "/", &header).status, 200);
    }
    let mac = auth["L402 ".len()..].split_once(':').unwrap().0;
    let m = aperture::l402::macaroon_from_base64(mac).unwrap();
    let token_id = aperture::l402::Identifier::decode(&m.identifier)
        .unwrap()
        .token_id;
    proxy
        .bridge()
        .handle()
        .publish(lnd_bridge::Event::TokenRevoked { token_id });
    wait_until(
        "the revocation to reach the cores",
        Duration::from_secs(1),
        || (0..16).all(|_| get(proxy.addr, "/", &header).status == 402),
    );
}

#[test]
fn discovery_document_lists_services_and_is_never_payment_gated() {
    let origin = Origin::start();
    let extra = "    timeout: 3600\n    capabilities: \"read,write\"\n    constraints:\n      zeta: \"1\"\n      alpha: \"2\"\n";
    let proxy = Proxy::start(&service("svc", origin.addr, extra), 1);
    let r = get(proxy.addr, "/.well-known/l402.json", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let svc = &doc["services"][0];
    assert_eq!(svc["name"], "svc");
    assert_eq!(svc["price_sats"], 10);
    assert_eq!(svc["timeout_seconds"], 3600);
    assert_eq!(svc["caveats"]["services"], "svc:0");
    assert_eq!(svc["caveats"]["capabilities"], "read,write");
    assert_eq!(svc["caveats"]["constraints"]["alpha"], "2");
    assert_eq!(origin.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn whitelisted_paths_are_free_and_skip_invoice_paths_get_401() {
    let origin = Origin::start();
    let extra = "    authwhitelistpaths:\n      - '^/health$'\n    authskipinvoicecreationpaths:\n      - '^/stream'\n";
    let proxy = Proxy::start(&service("svc", origin.addr, extra), 1);
    let r = get(proxy.addr, "/health", "");
    assert_eq!((r.status, r.text().as_str()), (200, "origin saw /health"));
    let r = get(proxy.addr, "/stream/x", "");
    assert_eq!((r.status, r.text().as_str()), (401, "unauthorized\n"));
    assert!(
        r.header("www-authenticate").is_none(),
        "no challenge on a skip-invoice path"
    );
    assert_eq!(get(proxy.addr, "/other", "").status, 402);
    // A paid token opens the skip-invoice path.
    let auth = buy_token(&proxy, "/other");
    assert_eq!(
        get(
            proxy.addr,
            "/stream/x",
            &format!("Authorization: {auth}\r\n")
        )
        .status,
        200
    );
}
