//! The admin API server on port 0 with a `FakeBackend`: every `adminrpc.Admin` RPC over gRPC (a
//! tonic client, h2c) and over REST (a plain HTTP/1.1 client), with and without the macaroon;
//! GetHealth open; backend errors mapped to Go's codes; the probes still answering beside it,
//! on the same port, as they always did.

use std::net::SocketAddr;
use std::sync::Arc;

use aperture::admin::backend::AdminError;
use aperture::admin::fake::FakeBackend;
use aperture::admin::proto::admin_client::AdminClient;
use aperture::admin::proto::{self as pb};
use aperture::admin::{Admin, AdminKey, AdminOptions, ApiOptions};
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

use crate::support::{Conn, Response};

struct Api {
    admin: Admin,
    fake: Arc<FakeBackend>,
    key: AdminKey,
    _dir: tempfile::TempDir,
}

/// Every backend call ran on the admin thread: admin work never lands on a worker core
/// (`aperture-core-N`), nor on a thread of its own the API spawned.
fn ran_on_the_admin_thread_only(api: &Api) {
    let threads = api.fake.state().threads.clone();
    assert!(!threads.is_empty());
    assert!(threads.iter().all(|t| t == "aperture-admin"), "{threads:?}");
}

/// The listener with the API (its macaroon created in a fresh directory) and the sample fake.
fn start() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let (key, created) = AdminKey::load_or_create(&dir.path().join("admin.macaroon")).unwrap();
    assert!(created);
    let fake = Arc::new(FakeBackend::sample());
    let admin = Admin::start_with(AdminOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        metrics: aperture::metrics::Metrics::new(1),
        ready: Arc::new(|| true),
        extra: Arc::new(|s: &mut String| s.push_str("# TYPE extra_gauge gauge\nextra_gauge 42\n")),
        api: Some(ApiOptions {
            backend: fake.clone(),
            key: key.clone(),
            cors_origins: vec!["https://dash.example".into()],
        }),
        dashboard: None,
    })
    .expect("admin listener");
    Api {
        admin,
        fake,
        key,
        _dir: dir,
    }
}

// ---- gRPC ----

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn client(addr: SocketAddr) -> AdminClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("tonic connects to the admin listener");
    AdminClient::new(channel)
}

/// `msg` with the macaroon (`Some(hex)`) in its metadata.
fn req<T>(msg: T, macaroon: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(m) = macaroon {
        r.metadata_mut().insert("macaroon", m.parse().unwrap());
    }
    r
}

/// The status code of a call that must fail.
fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.unwrap_err().code()
}

#[test]
fn every_rpc_over_grpc_with_and_without_the_macaroon() {
    let api = start();
    let hex = api.key.macaroon_hex();
    let wrong = hex::encode(b"not a macaroon");
    runtime().block_on(async {
        let mut c = client(api.admin.local_addr()).await;

        // GetHealth needs nothing; every other RPC needs the macaroon.
        let h = c
            .get_health(req(pb::GetHealthRequest {}, None))
            .await
            .unwrap();
        assert_eq!(h.into_inner().status, "ok");
        for m in [None, Some(wrong.as_str()), Some("zz")] {
            let mut c = c.clone();
            assert_eq!(
                code(c.get_info(req(pb::GetInfoRequest {}, m)).await),
                Code::Unauthenticated
            );
            assert_eq!(
                code(c.list_services(req(pb::ListServicesRequest {}, m)).await),
                Code::Unauthenticated
            );
            assert_eq!(
                code(
                    c.create_service(req(pb::CreateServiceRequest::default(), m))
                        .await
                ),
                Code::Unauthenticated
            );
            assert_eq!(
                code(
                    c.update_service(req(pb::UpdateServiceRequest::default(), m))
                        .await
                ),
                Code::Unauthenticated
            );
            assert_eq!(
                code(
                    c.delete_service(req(pb::DeleteServiceRequest::default(), m))
                        .await
                ),
                Code::Unauthenticated
            );
            assert_eq!(
                code(
                    c.list_transactions(req(pb::ListTransactionsRequest::default(), m))
                        .await
                ),
                Code::Unauthenticated
            );
            assert_eq!(
                code(
                    c.list_tokens(req(pb::ListTokensRequest::default(), m))
                        .await
                ),
                Code::Unauthenticated
            );
            assert_eq!(
                code(
                    c.revoke_token(req(pb::RevokeTokenRequest::default(), m))
                        .await
                ),
                Code::Unauthenticated
            );
            assert_eq!(
                code(c.get_stats(req(pb::GetStatsRequest::default(), m)).await),
                Code::Unauthenticated
            );
        }
        let m = Some(hex.as_str());

        let info = c
            .get_info(req(pb::GetInfoRequest {}, m))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((info.network.as_str(), info.mpp_enabled), ("regtest", true));

        let list = c
            .list_services(req(pb::ListServicesRequest {}, m))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.services.len(), 1);
        assert_eq!(
            (list.services[0].name.as_str(), list.services[0].price),
            ("file-svc", 10)
        );

        let create = pb::CreateServiceRequest {
            name: "new".into(),
            address: "127.0.0.1:7".into(),
            path_regexp: "^/new/.*$".into(),
            price: 21,
            auth_scheme: pb::AuthScheme::L402Mpp as i32,
            ..Default::default()
        };
        let s = c
            .create_service(req(create.clone(), m))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (
                s.price,
                s.protocol.as_str(),
                s.host_regexp.as_str(),
                s.auth_scheme
            ),
            (21, "http", ".*", 2)
        );
        let e = c.create_service(req(create.clone(), m)).await.unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::AlreadyExists, "service already exists")
        );
        let e = c
            .create_service(req(
                pb::CreateServiceRequest {
                    path_regexp: "^/api/admin/".into(),
                    ..create
                },
                m,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("reserved paths"), "{}", e.message());

        let upd = pb::UpdateServiceRequest {
            name: "new".into(),
            price: Some(5),
            ..Default::default()
        };
        let s = c.update_service(req(upd, m)).await.unwrap().into_inner();
        assert_eq!(
            (s.price, s.address.as_str(), s.auth_scheme),
            (5, "127.0.0.1:7", 2)
        );
        let e = c
            .update_service(req(
                pb::UpdateServiceRequest {
                    name: "none".into(),
                    ..Default::default()
                },
                m,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);

        let del = pb::DeleteServiceRequest { name: "new".into() };
        let d = c
            .delete_service(req(del.clone(), m))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.status, "deleted");
        assert_eq!(
            c.delete_service(req(del, m)).await.unwrap_err().code(),
            Code::NotFound
        );
        let e = c
            .delete_service(req(pb::DeleteServiceRequest::default(), m))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::InvalidArgument, "missing service name")
        );

        let page = c
            .list_transactions(req(
                pb::ListTransactionsRequest {
                    limit: 2,
                    ..Default::default()
                },
                m,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((page.total_count, page.transactions.len()), (3, 2));
        let newest = &page.transactions[0];
        assert_eq!(
            (newest.id, newest.state.as_str(), newest.settled_at.as_str()),
            (3, "pending", "")
        );
        assert_eq!(newest.token_id, "03".repeat(32));
        assert_eq!(newest.created_at, "2023-11-14T22:18:20Z");
        let e = c
            .list_transactions(req(
                pb::ListTransactionsRequest {
                    state: "paid".into(),
                    ..Default::default()
                },
                m,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);

        let tokens = c
            .list_tokens(req(pb::ListTokensRequest::default(), m))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((tokens.total_count, tokens.tokens.len()), (2, 2));
        let r = c
            .revoke_token(req(
                pb::RevokeTokenRequest {
                    token_id: "01".repeat(32),
                },
                m,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, "revoked");
        let e = c
            .revoke_token(req(
                pb::RevokeTokenRequest {
                    token_id: "09".repeat(32),
                },
                m,
            ))
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::NotFound, "token not found"));
        let e = c
            .revoke_token(req(
                pb::RevokeTokenRequest {
                    token_id: "0102".into(),
                },
                m,
            ))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::InvalidArgument, "token ID must be 32 bytes, got 2")
        );

        let stats = c
            .get_stats(req(pb::GetStatsRequest::default(), m))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((stats.total_revenue_sats, stats.transaction_count), (35, 2));
        assert_eq!(stats.service_breakdown.len(), 2);
        let ranged = pb::GetStatsRequest {
            from: "2023-11-15T00:00:00Z".into(),
            to: "2023-11-16T00:00:00Z".into(),
        };
        let stats = c.get_stats(req(ranged, m)).await.unwrap().into_inner();
        assert_eq!((stats.total_revenue_sats, stats.transaction_count), (25, 1));

        // Backend failures keep their meaning.
        for (e, code) in [
            (
                AdminError::Unavailable("database down".into()),
                Code::Unavailable,
            ),
            (AdminError::Internal("boom".into()), Code::Internal),
            (AdminError::Conflict("x".into()), Code::AlreadyExists),
        ] {
            api.fake.fail_next(e);
            let got = c
                .list_services(req(pb::ListServicesRequest {}, m))
                .await
                .unwrap_err();
            assert_eq!(got.code(), code);
        }
    });
    ran_on_the_admin_thread_only(&api);
}

// ---- REST ----

/// One REST call on its own connection; returns the answer and its JSON body.
fn rest(
    addr: SocketAddr,
    method: &str,
    path: &str,
    macaroon: Option<&str>,
    body: &str,
) -> (Response, Value) {
    let auth = macaroon.map_or(String::new(), |m| {
        format!("Grpc-Metadata-Macaroon: {m}\r\n")
    });
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = Conn::open(addr).request(raw.as_bytes());
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r, v)
}

#[test]
fn every_rpc_over_rest_with_and_without_the_macaroon() {
    let api = start();
    let addr = api.admin.local_addr();
    let hex = api.key.macaroon_hex();
    let m = Some(hex.as_str());
    let token = "02".repeat(32);
    let calls: [(&str, String, &str); 9] = [
        ("GET", "/api/admin/info".into(), ""),
        ("GET", "/api/admin/services".into(), ""),
        (
            "POST",
            "/api/admin/services".into(),
            r#"{"name":"x","address":"a:1","path_regexp":"^/x"}"#,
        ),
        (
            "PUT",
            "/api/admin/services/file-svc".into(),
            r#"{"price":"3"}"#,
        ),
        ("DELETE", "/api/admin/services/x".into(), ""),
        ("GET", "/api/admin/transactions".into(), ""),
        ("GET", "/api/admin/tokens".into(), ""),
        ("DELETE", format!("/api/admin/tokens/{token}"), ""),
        ("GET", "/api/admin/stats".into(), ""),
    ];
    for (method, path, body) in &calls {
        for bad in [None, Some("00ff"), Some("not hex")] {
            let (r, v) = rest(addr, method, path, bad, body);
            assert_eq!(r.status, 401, "{method} {path} {bad:?}: {}", r.text());
            assert_eq!(v["code"], 16, "{v}");
        }
    }
    let (r, v) = rest(addr, "GET", "/api/admin/health", None, "");
    assert_eq!((r.status, v), (200, json!({"status": "ok"})));

    let (r, v) = rest(addr, "GET", "/api/admin/info", m, "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(v["listen_addr"], "127.0.0.1:8081");
    let (_, v) = rest(addr, "GET", "/api/admin/services", m, "");
    assert_eq!(v["services"][0]["price"], "10", "int64 as a string: {v}");
    assert_eq!(v["services"][0]["auth_scheme"], "AUTH_SCHEME_L402");
    assert_eq!(v["services"][0]["source"], "file");

    let (r, v) = rest(addr, "POST", "/api/admin/services", m, calls[2].2);
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(
        (v["name"].clone(), v["source"].clone(), v["price"].clone()),
        (json!("x"), json!("db"), json!("0"))
    );
    let (r, v) = rest(addr, "POST", "/api/admin/services", m, calls[2].2);
    assert_eq!((r.status, v["code"].clone()), (409, json!(6)));
    let (r, v) = rest(addr, "PUT", "/api/admin/services/file-svc", m, calls[3].2);
    assert_eq!((r.status, v["price"].clone()), (200, json!("3")));
    let (r, v) = rest(addr, "DELETE", "/api/admin/services/x", m, "");
    assert_eq!((r.status, v), (200, json!({"status": "deleted"})));
    let (r, v) = rest(addr, "DELETE", "/api/admin/services/x", m, "");
    assert_eq!(
        (r.status, v),
        (
            404,
            json!({"code": 5, "message": "service not found", "details": []})
        )
    );

    let (r, v) = rest(
        addr,
        "GET",
        "/api/admin/transactions?state=settled&limit=1&offset=1",
        m,
        "",
    );
    assert_eq!(r.status, 200);
    assert_eq!(v["total_count"], "2");
    assert_eq!(v["transactions"][0]["id"], 1);
    assert_eq!(v["transactions"][0]["settled_at"], "2023-11-14T22:15:50Z");
    let (r, v) = rest(
        addr,
        "GET",
        "/api/admin/transactions?start_date=2024-01-01T00:00:00Z",
        m,
        "",
    );
    assert_eq!(
        (r.status, v["message"].clone()),
        (
            400,
            json!("both start_date and end_date must be set together")
        )
    );
    let (_, v) = rest(addr, "GET", "/api/admin/tokens", m, "");
    assert_eq!(
        (
            v["total_count"].clone(),
            v["tokens"].as_array().unwrap().len()
        ),
        (json!("2"), 2)
    );
    let (r, v) = rest(addr, "DELETE", &calls[7].1, m, "");
    assert_eq!((r.status, v), (200, json!({"status": "revoked"})));
    let (r, v) = rest(addr, "DELETE", "/api/admin/tokens/zz", m, "");
    assert_eq!(
        (r.status, v["message"].clone()),
        (400, json!("invalid token ID"))
    );
    let (_, v) = rest(addr, "GET", "/api/admin/stats", m, "");
    assert_eq!(
        (
            v["total_revenue_sats"].clone(),
            v["transaction_count"].clone()
        ),
        (json!("35"), json!("2"))
    );
    let (r, _) = rest(addr, "GET", "/api/admin/stats?from=x&to=y", m, "");
    assert_eq!(r.status, 400);

    api.fake
        .fail_next(AdminError::Unavailable("database down".into()));
    let (r, v) = rest(addr, "GET", "/api/admin/transactions", m, "");
    assert_eq!(
        (r.status, v),
        (
            503,
            json!({"code": 14, "message": "database down", "details": []})
        )
    );
    let (r, v) = rest(addr, "GET", "/api/admin/nope", m, "");
    assert_eq!((r.status, v["code"].clone()), (404, json!(5)));
    let (r, v) = rest(addr, "PATCH", "/api/admin/services", m, "{}");
    assert_eq!((r.status, v["code"].clone()), (405, json!(12)));

    // Every answer carries the security headers; CORS only for the listed origin.
    let (r, _) = rest(addr, "GET", "/api/admin/health", None, "");
    for (name, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(r.header(name), Some(value), "{name}");
    }
    assert!(r.header("content-security-policy").is_some());
    let cors = |origin: &str| {
        let raw = format!("GET /api/admin/health HTTP/1.1\r\nHost: a\r\nOrigin: {origin}\r\n\r\n");
        Conn::open(addr).request(raw.as_bytes())
    };
    assert_eq!(
        cors("https://dash.example").header("access-control-allow-origin"),
        Some("https://dash.example")
    );
    assert_eq!(
        cors("https://evil.example").header("access-control-allow-origin"),
        None
    );
    assert_eq!(
        cors("https://dash.example").header("access-control-allow-credentials"),
        None
    );
    ran_on_the_admin_thread_only(&api);
}

#[test]
fn the_probes_answer_beside_the_api_as_before() {
    let api = start();
    let addr = api.admin.local_addr();
    let mut conn = Conn::open(addr);
    let r = conn.request(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("\nextra_gauge 42\n"), "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(conn.closed(), "a probe answer closes the connection");
    for (path, status, body) in [("/healthz", 200, "ok\n"), ("/readyz", 200, "ready\n")] {
        let r = Conn::open(addr).request(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!((r.status, r.text().as_str()), (status, body), "{path}");
    }
    let r = Conn::open(addr).request(b"GET /debug/pprof/ HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 404);
    // REST answers keep the connection for the next request.
    let mut conn = Conn::open(addr);
    for _ in 0..3 {
        let r = conn.request(b"GET /api/admin/health HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.status, 200);
    }
    api.admin.shutdown();
    assert!(!crate::support::listening(addr), "admin still listening");
}
