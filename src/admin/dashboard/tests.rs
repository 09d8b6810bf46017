//! The dashboard's gatekeeping: loopback peers, hosts, CSRF, security headers, assets.

use std::net::SocketAddr;

use super::*;
use crate::admin::fake::FakeBackend;

/// The fake's sample plus a database service `db-svc` (10 sats), the one the tests change.
fn dashboard(options: Options) -> Dashboard {
    let fake = FakeBackend::sample();
    {
        let mut s = fake.state();
        let mut db = s.services[0].clone();
        db.name = "db-svc".into();
        db.path_regexp = "^/db/.*$".into();
        db.source = Some(crate::admin::backend::ServiceSource::Db);
        s.services.push(db);
    }
    Dashboard::new(Arc::new(fake), options)
}

fn request(
    method: &str,
    path: &str,
    peer: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Bytes> {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(Bytes::from(body.to_owned())).unwrap();
    if let Some(peer) = peer {
        req.extensions_mut()
            .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
    }
    req
}

const LOCAL: Option<&str> = Some("127.0.0.1:40000");
const HOST: (&str, &str) = ("host", "127.0.0.1:8082");

fn get(d: &Dashboard, path: &str) -> Response<Bytes> {
    d.serve(request("GET", path, LOCAL, &[HOST], ""))
}

fn body(r: &Response<Bytes>) -> String {
    String::from_utf8_lossy(r.body()).into_owned()
}

/// A same-origin mutation as the page sends it.
fn mutate(d: &Dashboard, method: &str, path: &str, json: &str) -> Response<Bytes> {
    let token = d.csrf.clone();
    d.serve(request(
        method,
        path,
        LOCAL,
        &[
            HOST,
            ("x-csrf-token", &token),
            ("origin", "http://127.0.0.1:8082"),
            ("sec-fetch-site", "same-origin"),
            ("content-type", "application/json"),
        ],
        json,
    ))
}

#[test]
fn only_loopback_peers_unless_opted_in() {
    let d = dashboard(Options::default());
    for peer in [
        "127.0.0.1:1",
        "[::1]:1",
        "[::ffff:127.0.0.1]:1",
        "127.8.9.10:1",
    ] {
        let r = d.serve(request("GET", "/", Some(peer), &[HOST], ""));
        assert_eq!(r.status(), 200, "{peer}");
    }
    for peer in [Some("10.0.0.2:1"), Some("[2001:db8::1]:1"), None] {
        let r = d.serve(request("GET", "/dashboard/api/services", peer, &[HOST], ""));
        assert_eq!(r.status(), 403, "{peer:?}");
        assert!(body(&r).contains("loopback"));
        assert_eq!(
            r.headers()["x-frame-options"],
            "DENY",
            "headers on refusals too"
        );
    }
    let open = dashboard(Options {
        allow_remote: true,
        ..Options::default()
    });
    let r = open.serve(request("GET", "/", Some("10.0.0.2:1"), &[HOST], ""));
    assert_eq!(r.status(), 200);
}

#[test]
fn hosts_that_could_be_rebound_are_refused() {
    let d = dashboard(Options {
        allowed_hosts: vec!["Admin.Example".into()],
        ..Options::default()
    });
    for host in [
        "127.0.0.1:8082",
        "localhost:8082",
        "LOCALHOST",
        "app.localhost:1",
        "[::1]:8082",
        "admin.example:8082",
    ] {
        let r = d.serve(request("GET", "/", LOCAL, &[("host", host)], ""));
        assert_eq!(r.status(), 200, "{host}");
    }
    for host in [
        "evil.example:8082",
        "127.0.0.1.evil.example",
        "localhost.evil",
    ] {
        let r = d.serve(request("GET", "/", LOCAL, &[("host", host)], ""));
        assert_eq!(r.status(), 403, "{host}");
    }
    let r = d.serve(request("GET", "/", LOCAL, &[], ""));
    assert_eq!(r.status(), 400, "no Host at all");
    let r = d.serve(request("GET", "http://localhost:9/", LOCAL, &[], ""));
    assert_eq!(r.status(), 200, "an HTTP/2 authority counts as the host");
}

#[test]
fn pages_carry_the_token_and_the_security_headers() {
    let d = dashboard(Options::default());
    for view in View::ALL {
        let r = get(&d, view.path());
        assert_eq!(r.status(), 200);
        let h = r.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin");
        assert_eq!(h["content-security-policy"], CSP);
        assert_eq!(h["cache-control"], "no-store");
        assert!(body(&r).contains(&d.csrf));
    }
    assert!(!CSP.contains("unsafe"), "no inline code allowed");
    assert_eq!(d.csrf.len(), 64);
    assert_ne!(
        d.csrf,
        dashboard(Options::default()).csrf,
        "random per process"
    );
    assert_eq!(get(&d, "/dashboard/nope").status(), 404);
    let r = d.serve(request(
        "POST",
        "/",
        LOCAL,
        &[HOST, ("x-csrf-token", &d.csrf.clone())],
        "",
    ));
    assert_eq!(r.status(), 405);
    let r = d.serve(request("HEAD", "/dashboard/services", LOCAL, &[HOST], ""));
    assert_eq!((r.status().as_u16(), r.body().len()), (200, 0));
}

#[test]
fn assets_are_embedded_with_an_etag() {
    let d = dashboard(Options::default());
    let js = get(&d, "/dashboard/static/dashboard.js");
    assert_eq!(js.status(), 200);
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(js.headers()["cache-control"], "no-cache");
    assert_eq!(body(&js), SCRIPT);
    let css = get(&d, "/dashboard/static/dashboard.css");
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    let etag = js.headers()["etag"].to_str().unwrap().to_owned();
    let again = d.serve(request(
        "GET",
        "/dashboard/static/dashboard.js",
        LOCAL,
        &[HOST, ("if-none-match", &etag)],
        "",
    ));
    assert_eq!((again.status().as_u16(), again.body().len()), (304, 0));
    assert!(body(&get(&d, "/")).contains(&format!("dashboard.js?v={}", d.asset_version)));
}

#[test]
fn mutations_need_the_token_and_the_same_origin() {
    let d = dashboard(Options::default());
    let token = d.csrf.clone();
    let price = r#"{"price":42}"#;
    let path = "/dashboard/api/services/db-svc";
    let json = ("content-type", "application/json");
    let refusals: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no token", vec![HOST, json]),
        ("wrong token", vec![HOST, json, ("x-csrf-token", "00")]),
        (
            "token of another length",
            vec![HOST, json, ("x-csrf-token", &token[..63])],
        ),
        (
            "cross-site fetch",
            vec![
                HOST,
                json,
                ("x-csrf-token", &token),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
        (
            "same-site is not same-origin",
            vec![
                HOST,
                json,
                ("x-csrf-token", &token),
                ("sec-fetch-site", "same-site"),
            ],
        ),
        (
            "foreign origin",
            vec![
                HOST,
                json,
                ("x-csrf-token", &token),
                ("origin", "http://evil.example"),
            ],
        ),
        (
            "other port",
            vec![
                HOST,
                json,
                ("x-csrf-token", &token),
                ("origin", "http://127.0.0.1:9999"),
            ],
        ),
        (
            "null origin",
            vec![HOST, json, ("x-csrf-token", &token), ("origin", "null")],
        ),
        (
            "form body",
            vec![
                HOST,
                ("x-csrf-token", &token),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
        ),
    ];
    for (what, headers) in refusals {
        let r = d.serve(request("PUT", path, LOCAL, &headers, price));
        assert_eq!(r.status(), 403, "{what}: {}", body(&r));
    }
    assert_eq!(list_price(&d), 10, "nothing refused reached the backend");
    let r = mutate(&d, "PUT", path, price);
    assert_eq!(r.status(), 200, "{}", body(&r));
    assert_eq!(list_price(&d), 42);
    // Without the optional browser headers (curl with the token) it is allowed too.
    let r = d.serve(request(
        "PUT",
        path,
        LOCAL,
        &[HOST, json, ("x-csrf-token", &token)],
        r#"{"price":43}"#,
    ));
    assert_eq!(r.status(), 200);
    assert_eq!(list_price(&d), 43);
}

fn list_price(d: &Dashboard) -> u64 {
    let r = get(d, "/dashboard/api/services");
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db-svc")
        .and_then(|s| s["price"].as_u64())
        .unwrap()
}

#[test]
fn cross_site_reads_are_refused_but_links_to_pages_work() {
    let d = dashboard(Options::default());
    let cross = ("sec-fetch-site", "cross-site");
    let r = d.serve(request(
        "GET",
        "/dashboard/api/transactions",
        LOCAL,
        &[HOST, cross],
        "",
    ));
    assert_eq!(r.status(), 403);
    let r = d.serve(request(
        "GET",
        "/dashboard/static/dashboard.js",
        LOCAL,
        &[HOST, cross],
        "",
    ));
    assert_eq!(r.status(), 403);
    let r = d.serve(request(
        "GET",
        "/dashboard/services",
        LOCAL,
        &[HOST, cross],
        "",
    ));
    assert_eq!(r.status(), 200);
}

#[test]
fn hostile_requests_do_not_panic() {
    let d = dashboard(Options::default());
    let token = d.csrf.clone();
    let paths = [
        "/dashboard/api/",
        "/dashboard/api/services/",
        "/dashboard/api/services/%",
        "/dashboard/api/services/%ff%fe",
        "/dashboard/api/tokens/zz",
        "/dashboard/api/tokens/",
        "/dashboard/api/transactions?limit=-1&offset=99999999999999",
        "/dashboard/api/transactions?from=9999-99-99",
        "/dashboard/api/transactions.csv?state=%00",
        "/dashboard/api/overview?days=18446744073709551615",
        "/dashboard/api/overview?days=3661",
        "/dashboard/api/%2e%2e/%2e%2e/etc/passwd",
        "/dashboard/static/../../Cargo.toml",
    ];
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in paths {
            for body in ["", "{", "[]", "{\"price\":1e99}", "\u{0}"] {
                let r = d.serve(request(
                    method,
                    path,
                    LOCAL,
                    &[
                        HOST,
                        ("x-csrf-token", &token),
                        ("content-type", "application/json"),
                    ],
                    body,
                ));
                assert!(
                    r.status().is_client_error(),
                    "{method} {path} {body:?}: {}",
                    r.status()
                );
            }
        }
    }
}
