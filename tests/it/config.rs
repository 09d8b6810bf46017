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
    assert_eq!(c.services[0].address, "127.0.0.1:40123");
    assert_eq!(c.services[0].price, 10);
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
