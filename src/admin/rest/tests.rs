//! The REST mirror against a [`FakeBackend`]: Go's paths, names and encodings, auth, CORS,
//! errors.

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::admin::backend::{AuthScheme, ServiceSource, TxState};
use crate::admin::fake::FakeBackend;

fn rest(cors: &[&str]) -> (Rest, Arc<FakeBackend>) {
    let fake = Arc::new(FakeBackend::sample());
    let rest = Rest {
        backend: fake.clone(),
        key: AdminKey::from_root_key([3; 32]),
        cors_origins: cors.iter().map(|s| s.to_string()).collect(),
    };
    (rest, fake)
}

/// One call; `auth` adds the macaroon header.
fn call(r: &Rest, method: &str, uri: &str, body: &str, auth: bool) -> (u16, Value) {
    let mut b = http::Request::builder().method(method).uri(uri);
    if auth {
        b = b.header("Grpc-Metadata-Macaroon", r.key.macaroon_hex());
    }
    let (parts, ()) = b.body(()).unwrap().into_parts();
    let a = r.handle(&parts, body.as_bytes());
    let v = if a.body().is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(a.body()).unwrap()
    };
    (a.status().as_u16(), v)
}

#[test]
fn reads_in_go_shapes() {
    let (r, _) = rest(&[]);
    let (s, v) = call(&r, "GET", "/api/admin/info", "", true);
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"network": "regtest", "listen_addr": "127.0.0.1:8081", "insecure": true,
               "mpp_enabled": true, "sessions_enabled": false, "mpp_realm": "aperture"})
    );
    let (_, v) = call(&r, "GET", "/api/admin/services", "", true);
    assert_eq!(
        v["services"][0],
        json!({"name": "file-svc", "address": "127.0.0.1:9000", "protocol": "http",
               "host_regexp": ".*", "path_regexp": "^/file/.*$", "price": "10", "auth": "on",
               "auth_scheme": "AUTH_SCHEME_L402", "source": "file"})
    );
    let (_, v) = call(&r, "GET", "/api/admin/transactions?limit=2", "", true);
    assert_eq!(v["total_count"], "3");
    assert_eq!(v["transactions"].as_array().unwrap().len(), 2);
    let t = &v["transactions"][0];
    assert_eq!(
        *t,
        json!({"id": 3, "token_id": "03".repeat(32), "payment_hash": "83".repeat(32),
               "service_name": "file-svc", "price_sats": "10", "state": "pending",
               "created_at": "2023-11-14T22:18:20Z", "settled_at": "", "kind": "l402",
               "revoked_at": ""})
    );
    let (_, v) = call(
        &r,
        "GET",
        "/api/admin/transactions?state=settled&service=other",
        "",
        true,
    );
    assert_eq!(v["total_count"], "1");
    let (_, v) = call(
        &r,
        "GET",
        "/api/admin/transactions?startDate=2023-11-15T00%3A00%3A00Z&end_date=2023-11-16T00:00:00Z",
        "",
        true,
    );
    assert_eq!(v["transactions"][0]["service_name"], "other", "{v}");
    let (_, v) = call(&r, "GET", "/api/admin/tokens", "", true);
    assert_eq!(v["total_count"], "2");
    assert_eq!(v["tokens"].as_array().unwrap().len(), 2);
    let (_, v) = call(&r, "GET", "/api/admin/stats", "", true);
    assert_eq!(
        v,
        json!({"total_revenue_sats": "35", "transaction_count": "2", "refunded_sats": "0",
               "service_breakdown": [
                   {"service_name": "file-svc", "total_revenue_sats": "10", "count": "1"},
                   {"service_name": "other", "total_revenue_sats": "25", "count": "1"}]})
    );
    let (_, v) = call(&r, "GET", "/api/admin/revenue", "", true);
    assert_eq!(v["days"][0]["day"], "2023-11-14T00:00:00Z");
    let (_, v) = call(&r, "GET", "/api/admin/node", "", true);
    assert_eq!(v["backend"], "dev");
    assert_eq!(
        call(&r, "GET", "/api/admin/health", "", false),
        (200, json!({"status": "ok"}))
    );
}

#[test]
fn mutations_take_protojson_inputs() {
    let (r, fake) = rest(&[]);
    // lowerCamel names, an int64 as a string, an enum by name, one of our extra keys.
    let body = r#"{"name":"new","address":"127.0.0.1:7","pathRegexp":"^/new/.*$","price":"21",
        "authScheme":"AUTH_SCHEME_L402_MPP","timeout":60,"source":"db"}"#;
    let (s, v) = call(&r, "POST", "/api/admin/services", body, true);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["price"].clone(), v["auth_scheme"].clone()),
        (json!("21"), json!("AUTH_SCHEME_L402_MPP"))
    );
    assert_eq!(
        (v["host_regexp"].clone(), v["protocol"].clone()),
        (json!(".*"), json!("http"))
    );
    assert_eq!(
        (v["source"].clone(), v["timeout"].clone()),
        (json!("db"), json!(60))
    );
    let created = fake.state().services[1].clone();
    assert_eq!(created.auth_scheme, AuthScheme::L402Mpp);
    assert_eq!(created.source, Some(ServiceSource::Db));
    assert_eq!(created.extra.len(), 1, "source is not an extra key");
    // Conflict, then an update by the path's name (the body's is ignored), enum by number.
    let (s, v) = call(&r, "POST", "/api/admin/services", body, true);
    assert_eq!((s, v["code"].clone()), (409, json!(6)));
    let (s, v) = call(
        &r,
        "PUT",
        "/api/admin/services/new",
        r#"{"name":"x","price":5,"auth_scheme":1}"#,
        true,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            v["name"].clone(),
            v["price"].clone(),
            v["auth_scheme"].clone()
        ),
        (json!("new"), json!("5"), json!("AUTH_SCHEME_MPP"))
    );
    assert_eq!(v["address"], "127.0.0.1:7", "unchanged");
    let (s, v) = call(&r, "PUT", "/api/admin/services/none", "{}", true);
    assert_eq!(
        (s, v),
        (
            404,
            json!({"code": 5, "message": "service not found", "details": []})
        )
    );
    assert_eq!(
        call(&r, "DELETE", "/api/admin/services/new", "", true),
        (200, json!({"status": "deleted"}))
    );
    assert_eq!(
        call(&r, "DELETE", "/api/admin/services/new", "", true).0,
        404
    );
    // Revoke: Go's checks, then the backend's.
    let (s, v) = call(
        &r,
        "DELETE",
        &format!("/api/admin/tokens/{}", "01".repeat(32)),
        "",
        true,
    );
    assert_eq!((s, v), (200, json!({"status": "revoked"})));
    assert_eq!(fake.state().txs[0].state, TxState::Settled);
    assert!(fake.state().txs[0].revoked_at.is_some());
    let (s, v) = call(&r, "DELETE", "/api/admin/tokens/abcd", "", true);
    assert_eq!(
        (s, v["message"].clone()),
        (400, json!("token ID must be 32 bytes, got 2"))
    );
}

#[test]
fn errors_auth_routing_and_bad_inputs() {
    let (r, fake) = rest(&[]);
    let (s, v) = call(&r, "GET", "/api/admin/info", "", false);
    assert_eq!(
        (s, v),
        (
            401,
            json!({"code": 16, "message": "missing macaroon", "details": []})
        )
    );
    let mut parts = http::Request::get("/api/admin/info")
        .header("grpc-metadata-macaroon", "00ff")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    assert_eq!(r.handle(&parts, b"").status(), 401);
    parts.headers.clear();
    assert_eq!(call(&r, "GET", "/api/admin/nothing", "", true).0, 404);
    assert_eq!(
        call(&r, "GET", "/api/admin/nothing", "", false).0,
        404,
        "404 before 401"
    );
    let (s, v) = call(&r, "POST", "/api/admin/info", "", true);
    assert_eq!((s, v["code"].clone()), (405, json!(12)));
    for (body, msg) in [
        ("[1]", "the request body must be a JSON object"),
        (r#"{"name":5}"#, "invalid value for string field name: 5"),
        (
            r#"{"name":"a","address":"b","path_regexp":"^/a","price":"x"}"#,
            "invalid value for int64 field price: \"x\"",
        ),
        (
            r#"{"name":"a","address":"b","path_regexp":"^/a","auth_scheme":"MPP"}"#,
            "invalid value for enum field auth_scheme: \"MPP\"",
        ),
        (
            r#"{"name":"a","address":"b"}"#,
            "path_regexp must not match reserved paths (/api/admin/, /api/proxy/, /_next/)",
        ),
    ] {
        let (s, v) = call(&r, "POST", "/api/admin/services", body, true);
        assert_eq!(
            (s, v["code"].clone(), v["message"].clone()),
            (400, json!(3), json!(msg)),
            "{body}"
        );
    }
    assert!(
        call(&r, "POST", "/api/admin/services", "{", true).1["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON body")
    );
    let (s, v) = call(&r, "GET", "/api/admin/transactions?limit=x", "", true);
    assert_eq!(
        (s, v["message"].clone()),
        (400, json!("invalid value for int32 field limit: \"x\""))
    );
    let (s, v) = call(
        &r,
        "GET",
        "/api/admin/stats?from=2024-01-01T00:00:00Z",
        "",
        true,
    );
    assert_eq!(
        (s, v["message"].clone()),
        (400, json!("both 'from' and 'to' must be set together"))
    );
    fake.fail_next(AdminError::Unavailable("database down".into()));
    let (s, v) = call(&r, "GET", "/api/admin/services", "", true);
    assert_eq!(
        (s, v),
        (
            503,
            json!({"code": 14, "message": "database down", "details": []})
        )
    );
    fake.fail_next(AdminError::Internal("boom".into()));
    assert_eq!(call(&r, "GET", "/api/admin/stats", "", true).0, 500);
}

#[test]
fn cors_only_for_listed_origins_and_never_credentials() {
    let req = |r: &Rest, method: &str, origin: &str| {
        let parts = http::Request::builder()
            .method(method)
            .uri("/api/admin/health")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        r.handle(&parts, b"")
    };
    let (r, _) = rest(&["https://ok.example"]);
    let a = req(&r, "GET", "https://ok.example");
    assert_eq!(
        a.headers()["access-control-allow-origin"],
        "https://ok.example"
    );
    assert!(a
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
    assert!(a.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("Grpc-Metadata-Macaroon"));
    assert!(req(&r, "GET", "https://evil.example")
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert_eq!(req(&r, "OPTIONS", "https://ok.example").status(), 204);
    assert_eq!(req(&r, "OPTIONS", "https://evil.example").status(), 403);
    let (none, _) = rest(&[]);
    assert!(req(&none, "GET", "https://ok.example")
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let (any, _) = rest(&["*"]);
    assert_eq!(
        req(&any, "GET", "https://x.example").headers()["access-control-allow-origin"],
        "https://x.example"
    );
}

#[test]
fn query_and_path_decoding() {
    assert_eq!(percent_decode("a%20b+c", true).as_deref(), Some("a b c"));
    assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
    assert_eq!(percent_decode("%zz", false), None);
    assert_eq!(percent_decode("%2", false), None);
    assert_eq!(percent_decode("%+1", false), None);
    assert_eq!(percent_decode("%ff", false), None, "not UTF-8");
    assert_eq!(
        Route::of("services/a%2Fb"),
        Some(Route::Service("a/b".into()))
    );
    assert_eq!(Route::of("services/"), None);
    assert_eq!(Route::of("services/a/b"), None);
    assert_eq!(camel("host_regexp"), "hostRegexp");
    let q = query_pairs("limit=5&&x&service=a%26b");
    assert_eq!(query_get(&q, "service").as_deref(), Some("a&b"));
    assert_eq!(query_get(&q, "x").as_deref(), Some(""));
}
