//! The admin API of the real binary over its real backend (the token database, the reload path):
//! a service created through REST answers 402 at its price within a second, an update changes
//! the next 402's invoice amount, a delete makes the path 404; a payment appears in the
//! transactions and the stats; a revoke through the API makes the token 402 again.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{self, pay, service, wait_until, Conn, KillOnDrop, Origin, Response};

/// Starts the binary with `admin.enabled`; returns it, the proxy, the admin API and the dev
/// wallet addresses.
fn spawn(dir: &tempfile::TempDir, origin: SocketAddr) -> (KillOnDrop, [SocketAddr; 3]) {
    spawn_on(dir, origin, "dbbackend: sqlite\n")
}

/// [`spawn`] with the database section `db`.
fn spawn_on(
    dir: &tempfile::TempDir,
    origin: SocketAddr,
    db: &str,
) -> (KillOnDrop, [SocketAddr; 3]) {
    let yaml = format!(
        "listenaddr: \"127.0.0.1:0\"\ninsecure: true\n{db}\
         admin:\n  enabled: true\n  listenaddr: \"127.0.0.1:0\"\n\
         authenticator:\n  network: regtest\n  dev:\n    listenaddr: \"127.0.0.1:0\"\n\
         services:\n{}",
        service("a", origin, "    pathregexp: \"^/a\"\n")
            + &service(
                "all",
                origin,
                "    pathregexp: \"^/api\"\n    auth: \"off\"\n"
            )
    );
    let markers = [
        "aperture listening on http://",
        "admin API and dashboard on http://",
        "wallet at http://",
    ];
    let (child, addrs) =
        support::spawn_logging_addresses(dir.path(), &yaml, 2, &markers, Duration::from_secs(30));
    (child, [addrs[0], addrs[1], addrs[2]])
}

/// One REST call with the admin macaroon.
fn api(admin: SocketAddr, macaroon: &str, method: &str, path: &str, body: &str) -> Response {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nGrpc-Metadata-Macaroon: {macaroon}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    Conn::open(admin).request(raw.as_bytes())
}

/// The amount of the 402's L402 invoice, from its BOLT11 human-readable part (`lnbcrt<n>n1…`).
fn invoice_nano(resp: &Response) -> String {
    let (_, invoice) = support::challenge(resp);
    // The bech32 separator is the last `1`.
    let hrp = &invoice[..invoice.rfind('1').unwrap()];
    hrp.trim_start_matches("lnbcrt").to_owned()
}

#[test]
fn services_through_the_api_go_live_and_payments_and_revokes_show() {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let (_child, [proxy, admin, wallet]) = spawn(&dir, origin.addr);
    let macaroon = hex::encode(std::fs::read(dir.path().join("admin.macaroon")).unwrap());
    // Without the macaroon: refused; health is open.
    let raw = "GET /api/admin/info HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    assert_eq!(Conn::open(admin).request(raw.as_bytes()).status, 401);
    let info = api(admin, &macaroon, "GET", "/api/admin/info", "");
    assert_eq!(info.status, 200, "{}", info.text());
    assert!(info.text().contains("regtest"), "{}", info.text());
    // The admin paths on the data listener: 404, never proxied (a catch-all service is there).
    let all = api(proxy, &macaroon, "GET", "/api/admin/info", "");
    assert_eq!(all.status, 404, "{}", all.text());
    assert_eq!(origin.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Create: live on the data path within a second, at its price.
    assert_eq!(support::get(proxy, "/b", "").status, 404);
    let body = format!(
        r#"{{"name":"b","address":"{}","protocol":"http","host_regexp":".*","path_regexp":"^/b","price":"21"}}"#,
        origin.addr
    );
    let created = api(admin, &macaroon, "POST", "/api/admin/services", &body);
    assert_eq!(created.status, 200, "{}", created.text());
    let mut first = None;
    wait_until(
        "the new service to answer 402",
        Duration::from_secs(1),
        || {
            let r = support::get(proxy, "/b", "");
            let done = r.status == 402;
            first = Some(r);
            done
        },
    );
    assert_eq!(invoice_nano(first.as_ref().unwrap()), "210n");
    let listed = api(admin, &macaroon, "GET", "/api/admin/services", "");
    assert!(
        listed.text().contains("\"source\":\"db\""),
        "{}",
        listed.text()
    );
    // A bad service is a 400 naming the field; the running one stays.
    let bad = r#"{"name":"c","address":"127.0.0.1:9","path_regexp":"(","price":"1"}"#;
    let refused = api(admin, &macaroon, "POST", "/api/admin/services", bad);
    assert_eq!(refused.status, 400, "{}", refused.text());
    // Update: the next 402 asks the new price.
    let updated = api(
        admin,
        &macaroon,
        "PUT",
        "/api/admin/services/b",
        r#"{"price":"34"}"#,
    );
    assert_eq!(updated.status, 200, "{}", updated.text());
    wait_until("the new price", Duration::from_secs(1), || {
        invoice_nano(&support::get(proxy, "/b", "")) == "340n"
    });
    // Delete: the path is gone.
    let deleted = api(admin, &macaroon, "DELETE", "/api/admin/services/b", "");
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    wait_until("the service to go", Duration::from_secs(1), || {
        support::get(proxy, "/b", "").status == 404
    });
    // A payment shows in the transactions and the stats.
    let (mac, invoice) = support::challenge(&support::get(proxy, "/a", ""));
    let token = format!("Authorization: L402 {mac}:{}\r\n", pay(wallet, &invoice));
    assert_eq!(support::get(proxy, "/a", &token).status, 200);
    let mut settled = String::new();
    wait_until(
        "the settlement in the ledger",
        Duration::from_secs(5),
        || {
            settled = api(
                admin,
                &macaroon,
                "GET",
                "/api/admin/transactions?state=settled",
                "",
            )
            .text();
            settled.contains("\"service_name\":\"a\"")
        },
    );
    let stats = api(admin, &macaroon, "GET", "/api/admin/stats", "").text();
    assert!(stats.contains("\"total_revenue_sats\":\"10\""), "{stats}");
    // Revoke through the API: 402 again on every core within a second or two.
    let v: serde_json::Value = serde_json::from_str(&settled).unwrap();
    let token_id = v["transactions"][0]["token_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = api(
        admin,
        &macaroon,
        "DELETE",
        &format!("/api/admin/tokens/{token_id}"),
        "",
    );
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    wait_until(
        "the revocation on the cores",
        Duration::from_secs(3),
        || (0..4).all(|_| support::get(proxy, "/a", &token).status == 402),
    );
    // A file service's price changed through the API: a database override that keeps the file
    // block's other keys (its path here).
    let changed = api(
        admin,
        &macaroon,
        "PUT",
        "/api/admin/services/a",
        r#"{"price":"12"}"#,
    );
    assert_eq!(changed.status, 200, "{}", changed.text());
    wait_until("the override's price", Duration::from_secs(1), || {
        let r = support::get(proxy, "/a", "");
        r.status == 402 && invoice_nano(&r) == "120n"
    });
    assert_eq!(
        support::get(proxy, "/b", "").status,
        404,
        "the path rule was kept"
    );
}

/// Two instances on one PostgreSQL: a service created through one's API answers on the other
/// within a second (each store thread polls the services' change counter), and its deletion too.
#[test]
fn two_instances_on_postgres_pick_up_each_others_service_changes() {
    let Some(url) = crate::store::pg_url() else {
        return;
    };
    let db = crate::store::pg_yaml(&url);
    let origin = Origin::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_a, [_, admin_a, _]) = spawn_on(&dir_a, origin.addr, &db);
    let (_b, [proxy_b, _, _]) = spawn_on(&dir_b, origin.addr, &db);
    let macaroon = hex::encode(std::fs::read(dir_a.path().join("admin.macaroon")).unwrap());
    // A unique name: the test database is shared with other tests.
    let name = format!("fleet{}", std::process::id());
    let body = format!(
        r#"{{"name":"{name}","address":"{}","protocol":"http","host_regexp":".*","path_regexp":"^/{name}","price":"17"}}"#,
        origin.addr
    );
    let created = api(admin_a, &macaroon, "POST", "/api/admin/services", &body);
    assert_eq!(created.status, 200, "{}", created.text());
    let path = format!("/{name}");
    wait_until("B to serve A's new service", Duration::from_secs(2), || {
        let r = support::get(proxy_b, &path, "");
        r.status == 402 && invoice_nano(&r) == "170n"
    });
    let deleted = api(
        admin_a,
        &macaroon,
        "DELETE",
        &format!("/api/admin/services/{name}"),
        "",
    );
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    wait_until("B to drop it", Duration::from_secs(2), || {
        support::get(proxy_b, &path, "").status == 404
    });
}
