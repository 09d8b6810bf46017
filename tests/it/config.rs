//! Config loader through its public API: the shipped sample, Go aperture's known pitfalls, and
//! the validation errors an operator is most likely to hit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aperture::config::{self, Auth, Backend, ConfigError, Db, Protocol};

/// A valid minimal file; tests append or splice into it.
const BASE: &str = "listenaddr: \"127.0.0.1:8081\"\ndbbackend: sqlite\nauthenticator:\n  dev: {}\n";

fn with_service(service_yaml: &str) -> String {
    format!("{BASE}services:\n  - name: svc\n    hostregexp: '^a$'\n    address: \"127.0.0.1:9\"\n    price: 5\n{service_yaml}")
}

fn err(text: &str) -> ConfigError {
    match config::parse(text, "test.yaml") {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-conf.yaml")
}

#[test]
fn sample_conf_validates() {
    let c = config::load(&sample_path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listen_addr, "0.0.0.0:8081".parse::<SocketAddr>().unwrap());
    assert_eq!(c.services.len(), 3);
    assert!(matches!(c.authenticator.backend, Backend::Lnd { .. }));
    assert!(matches!(c.db, Db::Sqlite { .. }));
    let rl = &c.services[0].rate_limits;
    assert_eq!(rl.len(), 2);
    assert!(rl[0].path_regexp.is_none());
    assert_eq!(
        (rl[0].requests, rl[0].per, rl[0].burst),
        (100, Duration::from_secs(1), 100)
    );
    assert_eq!(
        rl[1].path_regexp.as_ref().map(|r| r.as_str()),
        Some("^/api/v1/expensive.*$")
    );
    assert_eq!(
        (rl[1].requests, rl[1].per, rl[1].burst),
        (5, Duration::from_secs(60), 5)
    );
    assert_eq!(c.services[1].protocol, Protocol::Https);
    assert_eq!(c.services[1].rewrite_prefix.as_deref(), Some("/openai"));
    assert_eq!(c.services[2].auth, Auth::Freebie(5));
    assert_eq!(c.blocklist.len(), 3);
}

#[test]
fn load_reports_missing_file() {
    let e = config::load(Path::new("/nonexistent/aperture.yaml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    assert_eq!(e.exit_code(), 64);
}

#[test]
fn dbfile_points_to_databasefilename() {
    let e = err(&format!("{BASE}sqlite:\n  dbfile: /var/lib/aperture.db\n"));
    let msg = e.to_string();
    assert!(matches!(e, ConfigError::UnknownKey { .. }), "{msg}");
    assert!(
        msg.contains("`dbfile`") && msg.contains("databasefilename"),
        "{msg}"
    );
    assert!(msg.contains("test.yaml:6"), "{msg}");
    assert_eq!(e.exit_code(), 64);
}

#[test]
fn require_ssl_case_hint_is_security_relevant() {
    let msg = err(&format!("{BASE}postgres:\n  requireSSL: true\n")).to_string();
    assert!(msg.contains("`requiressl`"), "{msg}");
    assert!(msg.contains("sslmode=disable"), "{msg}");
}

#[test]
fn unknown_key_has_line_number_and_suggestion() {
    let text = with_service("    dynamicprice:\n      enbled: true\n");
    let e = err(&text);
    let line = text.lines().position(|l| l.contains("enbled")).unwrap() + 1;
    match &e {
        ConfigError::UnknownKey {
            key, line: Some(l), ..
        } => {
            assert_eq!((key.as_str(), *l), ("enbled", line as u64));
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("did you mean `enabled`"), "{e}");
}

#[test]
fn bad_regex_names_service_and_field() {
    let msg = err(&format!(
        "{BASE}services:\n  - name: broken\n    hostregexp: '^(a$'\n    address: \"127.0.0.1:9\"\n"
    ))
    .to_string();
    assert!(msg.contains("services[0] (broken).hostregexp"), "{msg}");
    let msg = err(&with_service("    authwhitelistpaths: ['^/ok$', '[']\n")).to_string();
    assert!(msg.contains("authwhitelistpaths[1]"), "{msg}");
}

#[test]
fn malformed_freebie_says_the_form() {
    let msg = err(&with_service("    auth: \"freebie x\"\n")).to_string();
    assert!(
        msg.contains("freebie <count>") && msg.contains(".auth"),
        "{msg}"
    );
    let msg = err(&with_service("    auth: \"maybe\"\n")).to_string();
    assert!(msg.contains("not an auth level"), "{msg}");
}

#[test]
fn negative_burst_and_zero_per_are_rejected() {
    let rule = |body: &str| {
        with_service(&format!(
            "    ratelimits:\n      - requests: 1\n        per: 1s\n      - {body}\n"
        ))
    };
    let msg = err(&rule("requests: 5\n        per: 1m\n        burst: -1")).to_string();
    assert!(
        msg.contains("ratelimits[1].burst") && msg.contains("negative"),
        "{msg}"
    );
    let msg = err(&rule("requests: 5\n        per: 0s")).to_string();
    assert!(
        msg.contains("ratelimits[1].per") && msg.contains("greater than 0"),
        "{msg}"
    );
    let msg = err(&rule("requests: 0\n        per: 1s")).to_string();
    assert!(msg.contains("ratelimits[1].requests"), "{msg}");
    let msg = err(&rule(
        "pathregexp: '('\n        requests: 1\n        per: 1s",
    ))
    .to_string();
    assert!(
        msg.contains("services[0] (svc).ratelimits[1].pathregexp"),
        "{msg}"
    );
    let c = config::parse(&rule("requests: 7\n        per: 1m\n        burst: 0"), "t").unwrap();
    assert_eq!(c.services[0].rate_limits[1].burst, 7);
}

#[test]
fn price_zero_becomes_one_with_warning() {
    let text = format!("{BASE}services:\n  - name: free\n    hostregexp: '^a$'\n    address: \"127.0.0.1:9\"\n    price: 0\n");
    let c = config::parse(&text, "t").unwrap();
    assert_eq!(c.services[0].price, 1);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("price") && w.contains("1 sat")),
        "{:?}",
        c.warnings
    );
    let msg = err(&with_service("    price: -3\n").replace("    price: 5\n", "")).to_string();
    assert!(msg.contains("out of range"), "{msg}");
}

#[test]
fn constraints_are_sorted_by_key() {
    let c = config::parse(
        &with_service(
            "    constraints:\n      zeta: \"1\"\n      alpha: \"2\"\n      mid: \"3\"\n",
        ),
        "t",
    )
    .unwrap();
    let keys: Vec<&str> = c.services[0]
        .constraints
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys, ["alpha", "mid", "zeta"]);
    let c = config::parse(
        &with_service("    constraints:\n      valid_until: 1682483169\n"),
        "t",
    )
    .unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("valid_until") && w.contains("past")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn unset_env_header_fails() {
    let msg = err(&with_service(
        "    headers:\n      Authorization: \"Bearer ${APERTURE_IT_SURELY_UNSET_VAR}\"\n",
    ))
    .to_string();
    assert!(
        msg.contains("APERTURE_IT_SURELY_UNSET_VAR") && msg.contains("not set"),
        "{msg}"
    );
    assert!(msg.contains("headers.Authorization"), "{msg}");
}

#[test]
fn file_headers_are_read_and_encoded() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cred.bin");
    std::fs::write(&file, [0xde, 0xad, 0xbe, 0xef]).unwrap();
    let text = with_service(&format!(
        "    headers:\n      X-Hex: \"!file+hex:{0}\"\n      X-B64: \"!file+base64:{0}\"\n",
        file.display()
    ));
    let c = config::parse(&text, "t").unwrap();
    let h = &c.services[0].headers;
    assert!(
        h.contains(&("X-Hex".to_owned(), "deadbeef".to_owned())),
        "{h:?}"
    );
    assert!(
        h.contains(&("X-B64".to_owned(), "3q2+7w==".to_owned())),
        "{h:?}"
    );
    let missing = dir.path().join("missing.pem");
    let e = err(&with_service(&format!(
        "    headers:\n      X-A: \"!file+hex:{}\"\n",
        missing.display()
    )));
    assert!(
        matches!(e, ConfigError::HeaderFile { .. }) && e.to_string().contains("missing.pem"),
        "{e}"
    );
    let msg = err(&with_service(
        "    headers:\n      X-A: \"!file+gzip:/x\"\n",
    ))
    .to_string();
    assert!(msg.contains("unknown prefix"), "{msg}");
}

#[test]
fn address_url_points_to_rewrite_prefix() {
    let text = with_service("").replace(
        "address: \"127.0.0.1:9\"",
        "address: \"https://backend/api\"",
    );
    let msg = err(&text).to_string();
    assert!(msg.contains("rewrite.prefix"), "{msg}");
}

#[test]
fn dev_config_validates() {
    let origin: SocketAddr = "127.0.0.1:40123".parse().unwrap();
    let c = config::dev(Path::new("/tmp/aperture-dev"), origin);
    assert!(c.insecure);
    assert_eq!(
        c.listen_addr,
        "127.0.0.1:8081".parse::<SocketAddr>().unwrap()
    );
    let demo = c.services.iter().find(|s| s.name == "demo").unwrap();
    assert_eq!(demo.address, "127.0.0.1:40123");
    assert_eq!(demo.price, 10);
    assert_eq!(c.basedir, Path::new("/tmp/aperture-dev"));
    assert!(matches!(c.authenticator.backend, Backend::Dev { .. }));
}

#[test]
fn unanchored_host_warns() {
    let text = with_service("").replace("hostregexp: '^a$'", "hostregexp: 'api.example.com'");
    let c = config::parse(&text, "t").unwrap();
    assert!(
        c.warnings.iter().any(|w| w.contains("unanchored")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn payment_scheme_keys() {
    use aperture::config::Schemes;
    let mpp = |extra: &str, scheme: &str| {
        let yaml = format!(
            "listenaddr: \"127.0.0.1:8081\"\ndbbackend: sqlite\nauthenticator:\n  dev: {{}}\n{extra}services:\n  - name: svc\n    hostregexp: '^a$'\n    address: \"127.0.0.1:9\"\n    price: 5\n{scheme}"
        );
        config::parse(&yaml, "t.yaml")
    };
    let both = Schemes {
        l402: true,
        payment: true,
    };
    // enablempp on: unset authscheme takes every scheme; the realm defaults to listenaddr.
    let c = mpp("", "").unwrap();
    assert!(c.authenticator.mpp.is_none());
    assert_eq!(c.services[0].schemes, Schemes::default());
    let c = mpp("", "    authscheme: mpp\n").unwrap();
    assert_eq!(
        c.services[0].schemes,
        Schemes::default(),
        "enablempp is off"
    );
    assert!(
        c.warnings.iter().any(|w| w.contains("enablempp is off")),
        "{:?}",
        c.warnings
    );
    let on = "  enablempp: true\n";
    let c = config::parse(
        &format!("listenaddr: \"127.0.0.1:8081\"\ndbbackend: sqlite\nauthenticator:\n  dev: {{}}\n{on}services:\n  - name: svc\n    hostregexp: '^a$'\n    address: \"127.0.0.1:9\"\n    price: 5\n    authscheme: MPP\n"),
        "t.yaml",
    )
    .unwrap();
    assert_eq!(
        c.authenticator.mpp.as_ref().unwrap().realm,
        "127.0.0.1:8081"
    );
    assert_eq!(
        c.services[0].schemes,
        Schemes {
            l402: false,
            payment: true
        }
    );
    let c = config::parse(
        &format!("listenaddr: \"127.0.0.1:8081\"\ndbbackend: sqlite\nauthenticator:\n  dev: {{}}\n{on}  mpprealm: api.example.com\nservices:\n  - name: svc\n    hostregexp: '^a$'\n    address: \"127.0.0.1:9\"\n    price: 5\n"),
        "t.yaml",
    )
    .unwrap();
    assert_eq!(
        c.authenticator.mpp.as_ref().unwrap().realm,
        "api.example.com"
    );
    assert_eq!(c.services[0].schemes, both);
    // Sessions: Go's defaults (a value <= 0 means the default), and only beside enablempp.
    let sessions = |extra: &str| {
        config::parse(
            &format!("listenaddr: \"127.0.0.1:8081\"\ndbbackend: sqlite\nauthenticator:\n  dev: {{}}\n{extra}"),
            "t.yaml",
        )
    };
    let c = sessions("  enablempp: true\n  enablesessions: true\n").unwrap();
    let s = c.authenticator.mpp.unwrap().sessions.unwrap();
    assert_eq!((s.deposit_multiplier, s.idle_timeout_secs), (20, 300));
    let c = sessions("  enablempp: true\n  enablesessions: true\n  sessiondepositmultiplier: 5\n  sessionidletimeout: -1\n").unwrap();
    let s = c.authenticator.mpp.unwrap().sessions.unwrap();
    assert_eq!((s.deposit_multiplier, s.idle_timeout_secs), (5, 300));
    let c = sessions("  enablempp: true\n").unwrap();
    assert_eq!(c.authenticator.mpp.unwrap().sessions, None);
    let e = sessions("  enablesessions: true\n").unwrap_err();
    assert!(e.to_string().contains("enablempp"), "{e}");
    // A bad scheme names the key.
    let e = mpp("", "    authscheme: bolt12\n").unwrap_err();
    assert!(e.to_string().contains("authscheme"), "{e}");
}

/// Go aperture's own sample (copied from its repository), the keys it shows in comments included.
const GO_SAMPLE: &str = include_str!("../data/go-sample-conf.yaml");

/// `text` with its commented-out settings (`# key: value`, `#   - item`) made live, so that the
/// keys Go's sample documents but leaves off are walked too. Prose comments stay comments.
fn uncomment(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let live = trimmed.strip_prefix('#').and_then(|rest| {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            let body = rest.trim_start();
            let key = body.split_once(':').is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
            (key || body.starts_with("- \"")).then_some(rest)
        });
        out.push_str(indent);
        out.push_str(live.unwrap_or(trimmed));
        out.push('\n');
    }
    out
}

/// Every key path of a parsed YAML document, dotted (`services.dynamicprice.enabled`); list
/// items share their list's path. Map values whose keys are data, not settings (`constraints`,
/// `headers`), are not descended into.
fn key_paths(v: &serde_json::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if !matches!(k.as_str(), "constraints" | "headers") {
                    key_paths(child, &path, out);
                }
                out.insert(path);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                key_paths(item, prefix, out);
            }
        }
        _ => {}
    }
}

/// Sets `value` at the dotted `path` (a list step goes into its first item), creating what is
/// missing.
fn set_path(doc: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let mut at = doc;
    let steps: Vec<&str> = path.split('.').collect();
    for (i, step) in steps.iter().enumerate() {
        if let serde_json::Value::Array(items) = at {
            if items.is_empty() {
                items.push(serde_json::json!({}));
            }
            at = &mut items[0];
        }
        let map = at.as_object_mut().expect("a mapping on the path");
        if i + 1 == steps.len() {
            map.insert((*step).to_owned(), value);
            return;
        }
        at = map
            .entry((*step).to_owned())
            .or_insert_with(|| serde_json::json!({}));
    }
}

/// The keys (and values) a probed key needs to matter.
type Context = Vec<(&'static str, serde_json::Value)>;

/// How loading a file that sets one key came out.
#[derive(Debug)]
enum Outcome {
    /// The validated config differs from the one without the key.
    Honoured,
    /// A warning (or the error) names the key.
    Reported(String),
    /// Accepted with no effect and no word: what this test exists to catch.
    Silent,
}

/// The validated config without its warnings, to compare two loads.
fn effect(c: &config::Config) -> String {
    let mut c = c.clone();
    c.warnings.clear();
    format!("{c:?}")
}

fn outcome(doc: &serde_json::Value, key: &str, value: serde_json::Value) -> Outcome {
    let leaf = key.rsplit('.').next().unwrap();
    let mentions = |text: &str| text.contains(leaf);
    let without = config::parse(&doc.to_string(), "go.yaml");
    let mut with = doc.clone();
    set_path(&mut with, key, value);
    let c = match config::parse(&with.to_string(), "go.yaml") {
        Err(e) if mentions(&e.to_string()) => return Outcome::Reported(e.to_string()),
        Err(e) => panic!("{key}: an error that does not name the key: {e}"),
        Ok(c) => c,
    };
    // The context alone is incomplete (`dbbackend: postgres` without `postgres:`): the key
    // completed it.
    let Ok(base) = without else {
        return Outcome::Honoured;
    };
    let new_warning = c
        .warnings
        .iter()
        .find(|w| mentions(w) && !base.warnings.contains(w));
    if let Some(w) = new_warning {
        return Outcome::Reported(w.clone());
    }
    if effect(&base) != effect(&c) {
        return Outcome::Honoured;
    }
    // The context's own warning covers the key (`tor.v3` reports the whole `tor` section).
    match c.warnings.iter().find(|w| mentions(w)) {
        Some(w) => Outcome::Reported(w.clone()),
        None => Outcome::Silent,
    }
}

/// Every key of Go aperture's sample is honoured (it changes the validated config) or reported
/// (a warning or an error names it): none is accepted and silently dropped, as Go aperture does
/// with unknown keys. Each key is set to a value that is not Go's default, in the context where
/// Go uses it (a Payment session key with `enablesessions` on, a `tor` key with `v3` on, ...).
/// A key of a newer Go sample that this table does not know fails the test until it is decided.
#[test]
fn no_key_of_go_apertures_sample_is_silently_ignored() {
    use serde_json::{json, Value};
    let live = uncomment(GO_SAMPLE);
    let parsed: Value = serde_saphyr::from_str(&live).expect("Go's sample, uncommented, parses");
    let mut keys = std::collections::BTreeSet::new();
    key_paths(&parsed, "", &mut keys);
    for commented in [
        "enablempp",
        "enablesessions",
        "admin.macaroonpath",
        "rewrite.prefix",
    ] {
        assert!(
            keys.iter().any(|k| k.ends_with(commented)),
            "the commented-out {commented} was not found: {keys:?}"
        );
    }
    let static_dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let static_root = |i: usize| json!(static_dirs[i].path().to_str().unwrap());
    let on = json!(true);
    let sessions = [
        ("authenticator.enablempp", on.clone()),
        ("authenticator.enablesessions", on.clone()),
    ];
    let lnc = [
        ("authenticator.lndhost", Value::Null),
        ("authenticator.passphrase", json!("one two three")),
    ];
    let pricer = [
        ("services.dynamicprice.enabled", on.clone()),
        (
            "services.dynamicprice.grpcaddress",
            json!("127.0.0.1:10010"),
        ),
        ("services.dynamicprice.insecure", on.clone()),
    ];
    let limit = [("services.ratelimits", json!([{"requests": 5, "per": "1s"}]))];
    // key, a value other than Go's default, the keys it needs to matter.
    #[rustfmt::skip]
    let table: Vec<(&str, Value, Context)> = vec![
        ("listenaddr", json!("127.0.0.1:9999"), vec![]),
        ("staticroot", static_root(1), vec![("servestatic", on.clone()), ("staticroot", static_root(0))]),
        ("servestatic", on.clone(), vec![("staticroot", static_root(0))]),
        ("debuglevel", json!("debug"), vec![]),
        ("configfile", json!("/etc/other.yaml"), vec![]),
        ("basedir", json!("/var/lib/other"), vec![]),
        ("autocert", on.clone(), vec![("servername", json!("aperture.example.com"))]),
        ("servername", json!("aperture.example.com"), vec![]),
        ("insecure", on.clone(), vec![]),
        ("strictverify", on.clone(), vec![]),
        ("invoicebatchsize", json!(500), vec![]),
        ("profile", json!(9999), vec![]),
        ("idletimeout", json!("1m"), vec![]),
        ("readtimeout", json!("5s"), vec![]),
        ("writetimeout", json!("10s"), vec![]),
        ("wspinginterval", json!("60s"), vec![("hashmail.enabled", on.clone())]),
        ("wspongwait", json!("5s"), vec![("hashmail.enabled", on.clone())]),
        ("authenticator", json!({"disable": true}), vec![]),
        ("authenticator.network", json!("testnet"), vec![]),
        ("authenticator.disable", on.clone(), vec![]),
        ("authenticator.lndhost", json!("lnd.example.com:10009"), vec![]),
        ("authenticator.tlspath", json!("/etc/lnd/tls.cert"), vec![]),
        ("authenticator.macdir", json!("/etc/lnd/macaroons"), vec![]),
        ("authenticator.passphrase", json!("one two three"), vec![("authenticator.lndhost", Value::Null)]),
        ("authenticator.mailboxaddress", json!("mailbox.example.com:443"), lnc.to_vec()),
        ("authenticator.devserver", on.clone(), lnc.to_vec()),
        ("authenticator.wavelengthgateway", json!("http://localhost:10061"), vec![("authenticator.lndhost", Value::Null)]),
        ("authenticator.wavelengthmacaroonpath", json!("/w.macaroon"), vec![("authenticator.lndhost", Value::Null), ("authenticator.wavelengthgateway", json!("http://localhost:10061"))]),
        ("authenticator.enablempp", on.clone(), vec![]),
        ("authenticator.mpprealm", json!("api.example.com"), vec![("authenticator.enablempp", on.clone())]),
        ("authenticator.enablesessions", on.clone(), vec![("authenticator.enablempp", on.clone())]),
        ("authenticator.sessiondepositmultiplier", json!(30), sessions.to_vec()),
        ("authenticator.sessionidletimeout", json!(600), sessions.to_vec()),
        ("admin", json!({"enabled": true}), vec![]),
        ("admin.enabled", on.clone(), vec![]),
        ("admin.macaroonpath", json!("/a.macaroon"), vec![("admin.enabled", on.clone())]),
        ("admin.corsorigin", json!(["https://x.example"]), vec![("admin.enabled", on.clone())]),
        ("admin.corsorigins", json!(["https://x.example"]), vec![("admin.enabled", on.clone())]),
        ("blocklist", json!(["192.0.2.1"]), vec![]),
        ("dbbackend", json!("postgres"), vec![("postgres.host", json!("db"))]),
        ("sqlite", json!({"skipmigrations": true}), vec![]),
        ("sqlite.dbfile", json!("/var/lib/a.db"), vec![]),
        ("sqlite.databasefilename", json!("/var/lib/a.db"), vec![]),
        ("sqlite.skipmigrations", on.clone(), vec![]),
        ("postgres", json!({"host": "db"}), vec![("dbbackend", json!("postgres"))]),
        ("postgres.host", json!("db.example.com"), vec![("dbbackend", json!("postgres"))]),
        ("postgres.port", json!(5433), vec![("dbbackend", json!("postgres"))]),
        ("postgres.user", json!("u"), vec![("dbbackend", json!("postgres"))]),
        ("postgres.password", json!("p"), vec![("dbbackend", json!("postgres"))]),
        ("postgres.dbname", json!("d"), vec![("dbbackend", json!("postgres"))]),
        ("postgres.maxconnections", json!(5), vec![("dbbackend", json!("postgres"))]),
        ("postgres.maxopenconnections", json!(5), vec![("dbbackend", json!("postgres"))]),
        ("postgres.requireSSL", on.clone(), vec![("dbbackend", json!("postgres"))]),
        ("postgres.requiressl", on.clone(), vec![("dbbackend", json!("postgres"))]),
        ("postgres.skipmigrations", on.clone(), vec![("dbbackend", json!("postgres"))]),
        ("etcd", json!({"host": "etcd:2379"}), vec![("dbbackend", json!("etcd")), ("etcd.host", json!("e:2379"))]),
        ("etcd.host", json!("etcd.example.com:2379"), vec![("dbbackend", json!("etcd")), ("etcd.host", json!("e:2379"))]),
        ("etcd.user", json!("u"), vec![("dbbackend", json!("etcd")), ("etcd.host", json!("e:2379"))]),
        ("etcd.password", json!("p"), vec![("dbbackend", json!("etcd")), ("etcd.host", json!("e:2379"))]),
        ("services", json!([]), vec![]),
        ("services.name", json!("other"), vec![]),
        ("services.hostregexp", json!("^b$"), vec![]),
        ("services.pathregexp", json!("^/x.*$"), vec![]),
        ("services.address", json!("127.0.0.1:10"), vec![]),
        ("services.protocol", json!("https"), vec![]),
        ("services.authscheme", json!("l402+mpp"), vec![("authenticator.enablempp", on.clone())]),
        ("services.headers", json!({"X-Api-Key": "k"}), vec![]),
        ("services.rewrite", json!({"prefix": "/api"}), vec![]),
        ("services.rewrite.prefix", json!("/api"), vec![]),
        ("services.tlscertpath", json!("/etc/aperture/ca.pem"), vec![("services.protocol", json!("https"))]),
        ("services.capabilities", json!("add,subtract"), vec![]),
        ("services.constraints", json!({"tier": "gold"}), vec![]),
        ("services.timeout", json!(31557600), vec![]),
        ("services.price", json!(7), vec![]),
        ("services.authwhitelistpaths", json!(["^/free.*$"]), vec![]),
        ("services.authskipinvoicecreationpaths", json!(["^/stream.*$"]), vec![]),
        ("services.ratelimits", json!([{"requests": 5, "per": "1s"}]), vec![]),
        ("services.ratelimits.pathregexp", json!("^/x.*$"), limit.to_vec()),
        ("services.ratelimits.requests", json!(7), limit.to_vec()),
        ("services.ratelimits.per", json!("2s"), limit.to_vec()),
        ("services.ratelimits.burst", json!(9), limit.to_vec()),
        ("services.dynamicprice", json!({"enabled": true, "grpcaddress": "127.0.0.1:10010", "insecure": true}), vec![]),
        ("services.dynamicprice.enabled", on.clone(), pricer[1..].to_vec()),
        ("services.dynamicprice.enbled", on.clone(), pricer[1..].to_vec()),
        ("services.dynamicprice.grpcaddress", json!("127.0.0.1:10011"), pricer.to_vec()),
        ("services.dynamicprice.insecure", on.clone(), vec![pricer[0].clone(), pricer[1].clone(), ("services.dynamicprice.tlscertpath", json!("/p.cert"))]),
        ("services.dynamicprice.tlscertpath", json!("/p.cert"), pricer[..2].to_vec()),
        ("services.dynamicprice.metered", on.clone(), pricer.to_vec()),
        ("services.dynamicprice.usagetailbytes", json!(1024), pricer.to_vec()),
        ("tor", json!({"v3": true}), vec![]),
        ("tor.control", json!("localhost:9052"), vec![("tor.v3", on.clone())]),
        ("tor.listenport", json!(8083), vec![("tor.v3", on.clone())]),
        ("tor.virtualport", json!(8083), vec![("tor.v3", on.clone())]),
        ("tor.v3", on.clone(), vec![]),
        ("hashmail", json!({"enabled": true}), vec![]),
        ("hashmail.enabled", on.clone(), vec![]),
        ("hashmail.messagerate", json!("20ms"), vec![("hashmail.enabled", on.clone())]),
        ("hashmail.messageburstallowance", json!(1000), vec![("hashmail.enabled", on.clone())]),
        ("hashmail.staletimeout", json!("5m"), vec![("hashmail.enabled", on.clone())]),
        ("prometheus", json!({"enabled": true}), vec![]),
        ("prometheus.enabled", on.clone(), vec![]),
        ("prometheus.listenaddr", json!("127.0.0.1:9100"), vec![("prometheus.enabled", on.clone())]),
        ("logging", json!({"console": {"level": "warn"}}), vec![]),
        ("logging.console", json!({"level": "warn"}), vec![]),
        ("logging.console.style", json!(false), vec![]),
        ("logging.console.disable", on.clone(), vec![]),
        ("logging.console.callsite", json!("long"), vec![]),
        ("logging.console.notimestamps", on.clone(), vec![]),
        ("logging.console.level", json!("warn"), vec![]),
        ("logging.file", json!({"level": "debug"}), vec![]),
        ("logging.file.disable", json!(false), vec![]),
        ("logging.file.callsite", json!("long"), vec![]),
        ("logging.file.level", json!("debug"), vec![]),
    ];
    let known: std::collections::BTreeSet<&str> = table.iter().map(|(k, _, _)| *k).collect();
    let unknown: Vec<&String> = keys
        .iter()
        .filter(|k| !known.contains(k.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "Go aperture's sample has keys this test does not know; decide for each whether it is \
         honoured or reported and add it to the table: {unknown:?}"
    );
    // An lnd-backed file like Go's sample, with one plain service.
    let base = json!({
        "listenaddr": "127.0.0.1:8081",
        "dbbackend": "sqlite",
        "authenticator": {
            "network": "regtest",
            "lndhost": "localhost:10009",
            "tlspath": "/lnd/tls.cert",
            "macdir": "/lnd/macaroons",
        },
        "services": [{
            "name": "svc",
            "hostregexp": "^a$",
            "address": "127.0.0.1:9",
            "protocol": "http",
            "price": 5,
        }],
    });
    let mut silent = Vec::new();
    for (key, value, context) in table {
        let mut doc = base.clone();
        for (k, v) in context {
            set_path(&mut doc, k, v);
        }
        match outcome(&doc, key, value) {
            Outcome::Honoured => eprintln!("{key}: honoured"),
            Outcome::Reported(why) => eprintln!("{key}: reported: {why}"),
            Outcome::Silent => silent.push(key),
        }
    }
    assert!(
        silent.is_empty(),
        "accepted and silently ignored: {silent:?}"
    );
}

/// Database services (the admin API's) apply over the file's: same name replaces, a new name
/// appends, every service key is allowed and every rule applies; `source` says which is which.
#[test]
fn database_services_replace_file_services_by_name_and_are_validated() {
    use aperture::config::{DbService, ServiceSource};
    let file = "listenaddr: \"127.0.0.1:8081\"\ndbbackend: sqlite\nauthenticator:\n  dev: {}\nservices:\n  - name: a\n    hostregexp: '.*'\n    pathregexp: '^/a'\n    address: \"127.0.0.1:9\"\n    price: 5\n";
    let db = [
        DbService {
            name: "a".into(),
            spec: "hostregexp: '.*'\npathregexp: '^/a'\naddress: \"127.0.0.1:10\"\nprice: 7\n".into(),
        },
        DbService {
            name: "b".into(),
            spec: r#"{"hostregexp": ".*", "pathregexp": "^/b", "address": "127.0.0.1:11", "price": 3, "ratelimits": [{"requests": 1, "per": "1s"}]}"#.into(),
        },
    ];
    let c = aperture::config::parse_with_db(file, "t.yaml", &db).unwrap();
    let by = |n: &str| c.services.iter().find(|s| s.name == n).unwrap();
    assert_eq!(c.services.len(), 2);
    assert_eq!((by("a").price, by("a").source), (7, ServiceSource::Db));
    assert_eq!((by("b").price, by("b").source), (3, ServiceSource::Db));
    // A bad database service is refused with the field named, like a file's.
    let bad = [DbService {
        name: "c".into(),
        spec: "hostregexp: '('\naddress: \"127.0.0.1:12\"\n".into(),
    }];
    let e = aperture::config::parse_with_db(file, "t.yaml", &bad).unwrap_err();
    assert!(e.to_string().contains("hostregexp"), "{e}");
    let unknown = [DbService {
        name: "c".into(),
        spec: "adress: \"127.0.0.1:12\"\n".into(),
    }];
    let e = aperture::config::parse_with_db(file, "t.yaml", &unknown).unwrap_err();
    assert!(e.to_string().contains("adress"), "{e}");
}
