//! `aperture admin …` (the binary) against a fake admin API: a tiny in-process HTTP/1.1 server
//! that records each request and answers canned JSON in Go aperture's REST shapes (grpc-gateway:
//! proto field names, int64 as strings, enums by name, `{"code","message","details"}` errors).
//! Checks the request each command sends (method, path, query, body, the hex macaroon header),
//! what it prints (the JSON as received when piped, tables with --human), where it finds the
//! API and the macaroon (flags, the config, the basedir), and its error messages and exit codes.
//! [`real_api`] then runs the CLI against the real admin server over a `FakeBackend`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::{json, Value};

use crate::support::aperture_command;

/// The macaroon the fake accepts (any bytes; the CLI sends them hex-encoded).
const MACAROON: &[u8] = &[0x02, 0x01, 0x08, b'a', b'p', b'e', 0xff];

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

type Answer = dyn Fn(&Recorded) -> (u16, String) + Send + Sync;

/// The fake admin API: one thread, one request per connection (the CLI sends `Connection: close`).
struct FakeApi {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeApi {
    fn start(answer: Arc<Answer>) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Some(req) = read_request(&conn) {
                    let (status, body) = answer(&req);
                    log2.lock().unwrap().push(req);
                    let mut w = &conn;
                    let _ = write!(
                        w,
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            }
        });
        FakeApi {
            addr,
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests so far, and forgets them.
    fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(conn: &TcpStream) -> Option<Recorded> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap_or(0));
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}

fn status(code: i32, message: &str) -> String {
    json!({"code": code, "message": message, "details": []}).to_string()
}

fn service(name: &str, price: &str, scheme: &str) -> Value {
    json!({"name": name, "address": "127.0.0.1:9000", "protocol": "http", "host_regexp": ".*",
           "path_regexp": format!("^/{name}/"), "price": price, "auth": "on", "auth_scheme": scheme})
}

/// Go's answers (grpc-gateway with UseProtoNames and EmitUnpopulated), 401 without the macaroon
/// (except for health).
fn go_api() -> Arc<Answer> {
    Arc::new(|req: &Recorded| {
        let (path, _query) = req.path.split_once('?').unwrap_or((&req.path, ""));
        if path != "/api/admin/health"
            && req.header("grpc-metadata-macaroon") != Some(hex::encode(MACAROON).as_str())
        {
            return (401, status(16, "invalid macaroon"));
        }
        let tx = |id: i32, token: &str, state: &str| {
            json!({"id": id, "token_id": token, "payment_hash": "11".repeat(32),
                   "service_name": "echo", "price_sats": "10", "state": state,
                   "created_at": "2026-03-01T10:00:00Z",
                   "settled_at": if state == "settled" { "2026-03-01T10:00:03Z" } else { "" }})
        };
        let body = match (req.method.as_str(), path) {
            ("GET", "/api/admin/health") => json!({"status": "ok"}),
            ("GET", "/api/admin/info") => json!({
                "network": "regtest", "listen_addr": "127.0.0.1:8081", "insecure": true,
                "mpp_enabled": true, "sessions_enabled": false, "mpp_realm": "127.0.0.1:8081"}),
            ("GET", "/api/admin/services") => json!({"services": [
                service("echo", "10", "AUTH_SCHEME_L402"),
                service("premium", "1250", "AUTH_SCHEME_L402_MPP")]}),
            ("POST", "/api/admin/services") => {
                let b = req.json();
                let name = b["name"].as_str().unwrap_or("");
                if name == "echo" {
                    return (409, status(6, "service already exists"));
                }
                if b["path_regexp"] == "^/api/admin/" {
                    return (
                        400,
                        status(3, "path_regexp must not match reserved paths"),
                    );
                }
                service(name, &b["price"].to_string(), "AUTH_SCHEME_MPP")
            }
            ("PUT", p) if p.starts_with("/api/admin/services/") => {
                service(&p["/api/admin/services/".len()..], "250", "AUTH_SCHEME_L402")
            }
            ("DELETE", "/api/admin/services/echo") => json!({"status": "deleted"}),
            ("DELETE", "/api/admin/services/nope")
            | ("DELETE", "/api/admin/tokens/0000000000000000000000000000000000000000000000000000000000000000") => {
                return (404, status(5, "not found"))
            }
            ("GET", "/api/admin/transactions") => json!({
                "transactions": [tx(2, &"bb".repeat(32), "pending"), tx(1, &"aa".repeat(32), "settled")],
                "total_count": "2"}),
            ("GET", "/api/admin/tokens") => {
                json!({"tokens": [tx(1, &"aa".repeat(32), "settled")], "total_count": "1"})
            }
            ("DELETE", p) if p.starts_with("/api/admin/tokens/") => json!({"status": "revoked"}),
            ("GET", "/api/admin/stats") => json!({
                "total_revenue_sats": "2450", "transaction_count": "17",
                "service_breakdown": [
                    {"service_name": "echo", "total_revenue_sats": "1200"},
                    {"service_name": "premium", "total_revenue_sats": "1250"}]}),
            _ => return (404, "Not Found\n".to_owned()),
        };
        (200, body.to_string())
    })
}

/// A basedir holding the admin macaroon.
fn basedir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.macaroon"), MACAROON).unwrap();
    dir
}

/// Runs `aperture --basedir DIR admin --admin URL ARGS…` (stdout is a pipe: JSON by default).
fn admin(dir: &Path, url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = aperture_command();
    cmd.arg("--basedir").arg(dir).arg("admin");
    if let Some(url) = url {
        cmd.args(["--admin", url]);
    }
    cmd.args(args).output().expect("run aperture")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(out));
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

#[test]
fn each_command_sends_gos_request_and_prints_its_json() {
    let api = FakeApi::start(go_api());
    let dir = basedir();
    let url = api.url();
    let run = |args: &[&str]| admin(dir.path(), Some(&url), args);
    let mac = hex::encode(MACAROON);

    let out = ok(&run(&["health"]));
    assert_eq!(out, json!({"status": "ok"}));
    let r = api.take();
    assert_eq!(
        (r[0].method.as_str(), r[0].path.as_str()),
        ("GET", "/api/admin/health")
    );
    assert_eq!(
        r[0].header("grpc-metadata-macaroon"),
        None,
        "GetHealth needs none"
    );

    let out = ok(&run(&["info"]));
    assert_eq!(out["network"], "regtest");
    assert_eq!(out["mpp_enabled"], true);
    let r = api.take();
    assert_eq!(
        (r[0].method.as_str(), r[0].path.as_str()),
        ("GET", "/api/admin/info")
    );
    assert_eq!(r[0].header("grpc-metadata-macaroon"), Some(mac.as_str()));

    let out = ok(&run(&["services"]));
    assert_eq!(
        out["services"][1]["price"], "1250",
        "Go's int64-as-string kept"
    );
    let out = ok(&run(&["services", "list"]));
    assert_eq!(out["services"][0]["auth_scheme"], "AUTH_SCHEME_L402");
    let r = api.take();
    assert!(r
        .iter()
        .all(|r| r.method == "GET" && r.path == "/api/admin/services"));

    let out = ok(&run(&[
        "services",
        "create",
        "--name",
        "api",
        "--address",
        "127.0.0.1:9000",
        "--path-regexp",
        "^/api/",
        "--price",
        "100",
        "--auth",
        "freebie 2",
        "--auth-scheme",
        "mpp",
    ]));
    assert_eq!(out["name"], "api");
    let r = api.take();
    assert_eq!(
        (r[0].method.as_str(), r[0].path.as_str()),
        ("POST", "/api/admin/services")
    );
    assert_eq!(r[0].header("content-type"), Some("application/json"));
    assert_eq!(
        r[0].json(),
        json!({"name": "api", "address": "127.0.0.1:9000", "path_regexp": "^/api/",
               "price": 100, "auth": "freebie 2", "auth_scheme": "AUTH_SCHEME_MPP"})
    );

    let out = ok(&run(&["services", "update", "echo", "--price", "250"]));
    assert_eq!(out["price"], "250");
    let r = api.take();
    assert_eq!(
        (r[0].method.as_str(), r[0].path.as_str()),
        ("PUT", "/api/admin/services/echo")
    );
    assert_eq!(r[0].json(), json!({"price": 250}), "only what was given");

    let out = ok(&run(&["services", "delete", "echo"]));
    assert_eq!(out["status"], "deleted");
    let r = api.take();
    assert_eq!(
        (r[0].method.as_str(), r[0].path.as_str()),
        ("DELETE", "/api/admin/services/echo")
    );

    let out = ok(&run(&[
        "transactions",
        "--service",
        "echo",
        "--state",
        "settled",
        "--from",
        "1772323200",
        "--to",
        "2026-03-31T23:59:59+02:00",
        "--limit",
        "20",
        "--offset",
        "40",
    ]));
    assert_eq!(out["total_count"], "2");
    let r = api.take();
    assert_eq!(
        r[0].path,
        "/api/admin/transactions?service=echo&state=settled&start_date=2026-03-01T00%3A00%3A00Z\
         &end_date=2026-03-31T23%3A59%3A59%2B02%3A00&limit=20&offset=40"
    );

    let out = ok(&run(&["tokens", "--limit", "1"]));
    assert_eq!(out["tokens"][0]["state"], "settled");
    assert_eq!(api.take()[0].path, "/api/admin/tokens?limit=1");

    let token = "aa".repeat(32);
    let out = ok(&run(&["revoke", &token]));
    assert_eq!(out["status"], "revoked");
    let r = api.take();
    assert_eq!(
        (r[0].method.as_str(), r[0].path.clone()),
        ("DELETE", format!("/api/admin/tokens/{token}"))
    );

    let out = ok(&run(&[
        "stats",
        "--from",
        "2026-03-01T00:00:00Z",
        "--to",
        "1774994399",
    ]));
    assert_eq!(out["total_revenue_sats"], "2450");
    assert_eq!(
        api.take()[0].path,
        "/api/admin/stats?from=2026-03-01T00%3A00%3A00Z&to=2026-03-31T21%3A59%3A59Z"
    );
}

#[test]
fn a_spec_file_carries_every_service_key() {
    let api = FakeApi::start(go_api());
    let dir = basedir();
    let spec = dir.path().join("svc.yaml");
    // As copied from aperture.yaml's services list.
    std::fs::write(
        &spec,
        "- name: metered\n  hostregexp: '^api\\.'\n  pathregexp: '^/metered/'\n  \
         address: 127.0.0.1:9100\n  protocol: https\n  price: 5\n  authscheme: l402+mpp\n  \
         timeout: 3600\n  ratelimits:\n    - requests: 10\n      per: 1s\n  \
         headers:\n    X-Tier: gold\n",
    )
    .unwrap();
    let spec = spec.to_str().unwrap();
    let out = admin(
        dir.path(),
        Some(&api.url()),
        &["services", "create", "--spec", spec, "--price", "7"],
    );
    ok(&out);
    let r = api.take();
    assert_eq!(
        r[0].json(),
        json!({"name": "metered", "address": "127.0.0.1:9100", "protocol": "https",
               "host_regexp": "^api\\.", "path_regexp": "^/metered/", "price": 7,
               "auth_scheme": "AUTH_SCHEME_L402_MPP",
               "timeout": 3600, "ratelimits": [{"requests": 10, "per": "1s"}],
               "headers": {"X-Tier": "gold"}})
    );
    // The spec names the service for an update; its name goes in the path.
    ok(&admin(
        dir.path(),
        Some(&api.url()),
        &["services", "update", "--spec", spec],
    ));
    let r = api.take();
    assert_eq!(r[0].path, "/api/admin/services/metered");
    assert!(r[0].json().get("name").is_none());

    // A typo fails before anything is sent, naming the key; exit 64.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: x\naddress: h:1\nratelimit: []\n").unwrap();
    let out = admin(
        dir.path(),
        Some(&api.url()),
        &["services", "create", "--spec", bad.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("ratelimit"), "{}", stderr(&out));
    assert!(api.take().is_empty());
}

#[test]
fn human_tables_with_human() {
    let api = FakeApi::start(go_api());
    let dir = basedir();
    let url = api.url();
    let out = admin(dir.path(), Some(&url), &["transactions", "--human"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "transactions 1-2 of 2");
    assert!(
        lines[1].starts_with("ID  TOKEN ID") && lines[1].ends_with("SETTLED"),
        "{text}"
    );
    assert!(
        lines[2].contains("pending") && lines[2].ends_with("  -"),
        "{text}"
    );
    assert!(lines[3].ends_with("2026-03-01T10:00:03Z"), "{text}");
    let out = admin(dir.path(), Some(&url), &["--human", "stats"]);
    assert_eq!(
        stdout(&out),
        "revenue (sats):       2450\nsettled transactions: 17\n\n\
         SERVICE  SATS\necho     1200\npremium  1250\n"
    );
    let out = admin(dir.path(), Some(&url), &["services", "--human"]);
    assert!(stdout(&out)
        .lines()
        .any(|l| l.starts_with("premium") && l.ends_with("l402+mpp")));
}

#[test]
fn the_config_names_the_listener_and_the_macaroon() {
    let api = FakeApi::start(go_api());
    let dir = tempfile::tempdir().unwrap();
    let mac = dir.path().join("keys/custom.macaroon");
    std::fs::create_dir_all(mac.parent().unwrap()).unwrap();
    std::fs::write(&mac, MACAROON).unwrap();
    // With --basedir, the config is <basedir>/aperture.yaml (as for the proxy). Keys this
    // client does not read are ignored.
    std::fs::write(
        dir.path().join("aperture.yaml"),
        format!(
            "listenaddr: \"127.0.0.1:0\"\nprometheus:\n  enabled: true\n  listenaddr: \"0.0.0.0:{}\"\n\
             admin:\n  enabled: true\n  macaroonpath: \"{}\"\n",
            api.addr.port(),
            mac.display()
        ),
    )
    .unwrap();
    let out = admin(dir.path(), None, &["info"]);
    assert_eq!(ok(&out)["network"], "regtest");
    assert_eq!(api.take().len(), 1);

    // Without a config, the macaroon is <basedir>/admin.macaroon.
    let plain = basedir();
    ok(&admin(plain.path(), Some(&api.url()), &["info"]));
    // --macaroon wins.
    let out = aperture_command()
        .args(["--basedir", plain.path().to_str().unwrap(), "admin", "info"])
        .args(["--admin", &api.url(), "--macaroon", mac.to_str().unwrap()])
        .output()
        .unwrap();
    ok(&out);
}

#[test]
fn failures_say_what_to_check() {
    let api = FakeApi::start(go_api());
    let url = api.url();

    // Not running: names the URL it tried.
    let gone = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let dir = basedir();
    let out = admin(dir.path(), Some(&gone), &["info"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "is the proxy running with admin.enabled? tried {gone}"
        )),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());

    // A macaroon the instance did not write: 401 names the file.
    let wrong = tempfile::tempdir().unwrap();
    let path = wrong.path().join("admin.macaroon");
    std::fs::write(&path, b"\x02other").unwrap();
    let out = admin(wrong.path(), Some(&url), &["stats"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "the admin macaroon at {} was refused (HTTP 401: invalid macaroon)",
            path.display()
        )),
        "{}",
        stderr(&out)
    );

    // No macaroon file: says where it looked, sends nothing.
    api.take();
    let empty = tempfile::tempdir().unwrap();
    let out = admin(empty.path(), Some(&url), &["services"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&empty.path().join("admin.macaroon").display().to_string())
            && err.contains("--macaroon"),
        "{err}"
    );
    assert!(api.take().is_empty());
    // ...but health needs none.
    ok(&admin(empty.path(), Some(&url), &["health"]));

    // The server's verdicts: 404 (exit 1), 409 (exit 1), 400 (exit 64), with its message.
    let out = admin(dir.path(), Some(&url), &["services", "delete", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    let out = admin(dir.path(), Some(&url), &["revoke", &"00".repeat(32)]);
    assert_eq!(out.status.code(), Some(1));
    let out = admin(
        dir.path(),
        Some(&url),
        &["services", "create", "echo", "--address", "h:1"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("service already exists"),
        "{}",
        stderr(&out)
    );
    let out = admin(
        dir.path(),
        Some(&url),
        &[
            "services",
            "create",
            "x",
            "--address",
            "h:1",
            "--path-regexp",
            "^/api/admin/",
        ],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("reserved paths"), "{}", stderr(&out));

    // Something that is not the admin API (the data listener answers 404 text).
    let out = admin(dir.path(), Some(&format!("{url}/elsewhere")), &["info"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no admin API at"), "{}", stderr(&out));

    // Usage errors: exit 64 before anything is sent.
    api.take();
    for args in [
        &["transactions", "--state", "paid"][..],
        &["stats", "--from", "last week"],
        &["revoke", "xyz"],
    ] {
        let out = admin(dir.path(), Some(&url), args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
    }
    let out = admin(dir.path(), Some("https://127.0.0.1:1"), &["info"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(api.take().is_empty());
}

/// The real admin API (`aperture::admin`'s server, REST over a `FakeBackend`): the CLI and the
/// server agree on every RPC's wire, the macaroon and the errors.
mod real_api {
    use std::sync::Arc;

    use aperture::admin::fake::FakeBackend;
    use aperture::admin::{Admin, AdminKey, AdminOptions, ApiOptions};

    use super::*;

    struct Api {
        admin: Admin,
        backend: Arc<FakeBackend>,
        dir: tempfile::TempDir,
    }

    impl Api {
        /// The server on a loopback port; its macaroon written to `<basedir>/admin.macaroon`.
        fn start() -> Api {
            let dir = tempfile::tempdir().unwrap();
            let (key, created) = AdminKey::load_or_create(&dir.path().join("admin.macaroon"))
                .expect("admin macaroon");
            assert!(created);
            let backend = Arc::new(FakeBackend::sample());
            let admin = Admin::start_with(AdminOptions {
                addr: "127.0.0.1:0".parse().unwrap(),
                metrics: aperture::metrics::Metrics::new(1),
                ready: Arc::new(|| true),
                extra: Arc::new(|_: &mut String| {}),
                api: Some(ApiOptions {
                    backend: backend.clone(),
                    key,
                    cors_origins: Vec::new(),
                }),
                dashboard: None,
            })
            .expect("admin listener");
            Api {
                admin,
                backend,
                dir,
            }
        }

        fn run(&self, args: &[&str]) -> Output {
            let url = format!("http://{}", self.admin.local_addr());
            admin(self.dir.path(), Some(&url), args)
        }
    }

    #[test]
    fn every_rpc_round_trips() {
        let api = Api::start();
        assert_eq!(ok(&api.run(&["health"])), json!({"status": "ok"}));
        assert_eq!(ok(&api.run(&["info"]))["network"], "regtest");

        let spec = api.dir.path().join("svc.yaml");
        std::fs::write(
            &spec,
            "name: metered\naddress: 127.0.0.1:9100\npathregexp: '^/metered/'\nprice: 5\n\
             timeout: 3600\n",
        )
        .unwrap();
        let created = ok(&api.run(&[
            "services",
            "create",
            "--spec",
            spec.to_str().unwrap(),
            "--auth-scheme",
            "l402+mpp",
        ]));
        assert_eq!(created["name"], "metered");
        assert_eq!(created["price"], "5");
        assert_eq!(created["auth_scheme"], "AUTH_SCHEME_L402_MPP");
        {
            let state = api.backend.state();
            let s = state.services.iter().find(|s| s.name == "metered").unwrap();
            assert_eq!(s.extra.get("timeout"), Some(&json!(3600)), "{s:?}");
        }
        let updated = ok(&api.run(&["services", "update", "metered", "--price", "9"]));
        assert_eq!(updated["price"], "9");
        let list = ok(&api.run(&["services"]));
        let names: Vec<&str> = list["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["name"].as_str())
            .collect();
        assert_eq!(names, ["file-svc", "metered"]);
        ok(&api.run(&["services", "delete", "metered"]));
        let out = api.run(&["services", "delete", "metered"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("not found"), "{}", stderr(&out));

        let txs = ok(&api.run(&["transactions", "--state", "settled", "--limit", "1"]));
        assert_eq!(txs["total_count"], "2");
        assert_eq!(txs["transactions"].as_array().unwrap().len(), 1);
        let all = ok(&api.run(&["transactions"]));
        assert_eq!(all["total_count"], "3");
        let stats = ok(&api.run(&["stats"]));
        assert_eq!(stats["total_revenue_sats"], "35");
        let tokens = ok(&api.run(&["tokens"]));
        let token = tokens["tokens"][0]["token_id"].as_str().unwrap().to_owned();
        ok(&api.run(&["revoke", &token]));
        let tokens = ok(&api.run(&["tokens"]));
        assert!(
            tokens["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["token_id"] != token.as_str()),
            "{tokens}"
        );
    }

    #[test]
    fn the_servers_refusals_read_clearly() {
        let api = Api::start();
        let other = tempfile::tempdir().unwrap();
        AdminKey::load_or_create(&other.path().join("admin.macaroon")).unwrap();
        let url = format!("http://{}", api.admin.local_addr());
        let out = admin(other.path(), Some(&url), &["info"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("the admin macaroon at") && stderr(&out).contains("was refused"),
            "{}",
            stderr(&out)
        );
        let out = api.run(&[
            "services",
            "create",
            "x",
            "--address",
            "h:1",
            "--path-regexp",
            "^/api/admin/",
        ]);
        assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
        assert!(stderr(&out).contains("path_regexp"), "{}", stderr(&out));
        let out = api.run(&[
            "services",
            "create",
            "file-svc",
            "--address",
            "h:1",
            "--path-regexp",
            "^/f/",
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    }
}
