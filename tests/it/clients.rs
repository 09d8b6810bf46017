//! Real third-party clients against the proxy, each driven by a small script in tests/clients/
//! that prints one JSON line: `l402-requests` 0.9.0 (PyPI) pays L402 where it is offered and
//! the Payment charge on an MPP-only service, skipping a session challenge; Alby's
//! `@getalby/lightning-tools` 9.0.1 (npm) pays the charge with `fetchWithMpp` and `fetch402`, and
//! L402 with `fetch402`; `mppx` 0.11.0 (npm, the reference SDK) parses our 402 with its charge and
//! session challenges, and the credential it serializes from its own echo is accepted. Wallets pay
//! at the proxy's dev wallet over HTTP.
//!
//! scripts/test.sh installs the clients (pip, and `npm ci` in tests/clients). A client that is
//! not installed skips its test, except when `CI` is set: then it fails.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use aperture::mpp;
use serde_json::Value;

use crate::support::{service, Origin, Proxy};

/// The Payment scheme on (sessions optional) with the dev backend and SQLite in the basedir;
/// `authscheme` unset offers every enabled scheme.
fn start(origin: &Origin, authscheme: Option<&str>, sessions: bool) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let sessions = if sessions {
        "  enablesessions: true\n"
    } else {
        ""
    };
    let top = format!(
        "authenticator:\n  network: regtest\n  enablempp: true\n{sessions}  mpprealm: \"api.example.com\"\n  dev:\n    listenaddr: \"127.0.0.1:0\"\nsqlite:\n  databasefilename: \"{}\"\n",
        dir.path().join("aperture.db").display()
    );
    let extra = authscheme.map_or(String::new(), |s| format!("    authscheme: \"{s}\"\n"));
    Proxy::start_in(dir, &service("svc", origin.addr, &extra), 1, &top, 4096)
}

fn url(proxy: &Proxy) -> String {
    format!("http://{}/paid", proxy.addr)
}

fn wallet_url(proxy: &Proxy) -> String {
    format!("http://{}", proxy.wallet)
}

/// A client that is not installed: skip, unless CI is set.
pub(crate) fn missing(why: &str) -> Option<Value> {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but {why}: scripts/test.sh installs the third-party clients");
    }
    eprintln!("skipping: {why} (scripts/test.sh installs it)");
    None
}

/// Runs `program tests/clients/<script> args…` and returns the JSON line it printed; `None`
/// (skip) when the program or the client library is missing (the script exits 3).
pub(crate) fn drive(program: &str, script: &str, args: &[String]) -> Option<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let mut child = match Command::new(program)
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return missing(&format!("`{program}` cannot run ({e})")),
    };
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut o, mut e) = (String::new(), String::new());
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        let _ = tx.send((o, e));
    });
    let Ok((stdout, stderr)) = rx.recv_timeout(Duration::from_secs(120)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{script} did not finish within 120 s");
    };
    let status = child.wait().unwrap();
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty());
    let json: Option<Value> = line.and_then(|l| serde_json::from_str(l).ok());
    if status.code() == Some(3) {
        let why = json.as_ref().and_then(|j| j["missing"].as_str());
        return missing(why.unwrap_or("the client is not installed"));
    }
    assert!(
        status.success(),
        "{script} {args:?} failed ({status}):\n{stdout}\n{stderr}"
    );
    let json = json.unwrap_or_else(|| panic!("{script}: no JSON line in\n{stdout}\n{stderr}"));
    eprintln!("{script}: {json}");
    Some(json)
}

fn l402_requests(proxy: &Proxy) -> Option<Value> {
    drive(
        "python3",
        "l402_requests_client.py",
        &[url(proxy), wallet_url(proxy)],
    )
}

fn alby(mode: &str, proxy: &Proxy) -> Option<Value> {
    drive(
        "node",
        "alby_client.mjs",
        &[mode.into(), url(proxy), wallet_url(proxy)],
    )
}

/// (Authorization scheme sent, status answered) of every request a client made.
fn exchanges(out: &Value) -> Vec<(Option<String>, u64)> {
    out["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["authorization"].as_str().map(str::to_owned),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn scheme(s: &str) -> Option<String> {
    Some(s.to_owned())
}

/// The decoded `request` of the challenge a Payment credential echoes.
fn echoed_request(credential: &Value) -> Value {
    let request = credential["challenge"]["request"].as_str().unwrap();
    serde_json::from_slice(&mpp::b64::decode(request).unwrap()).unwrap()
}

/// Asserts a paid Payment charge: the credential echoes a lightning charge challenge of our
/// realm, the receipt names it and its payment hash, and the origin was reached once.
fn assert_charge_paid(out: &Value, receipt: &Value, origin: &Origin) {
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["body"], "origin saw /paid");
    assert_eq!(out["invoices_paid"], 1);
    let credential = &out["exchanges"][1]["credential"];
    let challenge = &credential["challenge"];
    assert_eq!(challenge["method"], "lightning", "{credential}");
    assert_eq!(challenge["intent"], "charge", "{credential}");
    assert_eq!(challenge["realm"], "api.example.com", "{credential}");
    assert_eq!(
        credential["payload"]["preimage"].as_str().unwrap().len(),
        64
    );
    assert_eq!(receipt["status"], "success", "{receipt}");
    assert_eq!(receipt["method"], "lightning", "{receipt}");
    assert_eq!(receipt["challengeId"], challenge["id"], "{receipt}");
    assert_eq!(
        receipt["reference"],
        echoed_request(credential)["methodDetails"]["paymentHash"],
        "{receipt}"
    );
    assert_eq!(origin.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn l402_requests_pays_l402_when_a_service_offers_both_schemes() {
    let origin = Origin::start();
    let proxy = start(&origin, None, false);
    let Some(out) = l402_requests(&proxy) else {
        return;
    };
    assert_eq!(out["version"], "0.9.0");
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["body"], "origin saw /paid");
    let offered: Vec<&str> = out["exchanges"][0]["www_authenticate"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().split(' ').next().unwrap())
        .collect();
    assert_eq!(offered, ["LSAT", "L402", "Payment"]);
    // It prefers L402 over Payment; an L402 answer carries no Payment-Receipt.
    assert_eq!(exchanges(&out), [(None, 402), (scheme("L402"), 200)]);
    assert_eq!(out["invoices_paid"], 1);
    assert_eq!(out["receipt"], Value::Null);
    assert_eq!(origin.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn l402_requests_pays_the_payment_charge_of_an_mpp_only_service() {
    let origin = Origin::start();
    let proxy = start(&origin, Some("mpp"), false);
    let Some(out) = l402_requests(&proxy) else {
        return;
    };
    assert_eq!(exchanges(&out), [(None, 402), (scheme("Payment"), 200)]);
    assert_charge_paid(&out, &out["receipt"], &origin);
    assert!(out["receipt"]["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn l402_requests_skips_the_session_challenge_and_pays_the_charge() {
    let origin = Origin::start();
    let proxy = start(&origin, Some("mpp"), true);
    let Some(out) = l402_requests(&proxy) else {
        return;
    };
    let offered = out["exchanges"][0]["www_authenticate"].as_array().unwrap();
    let intents: Vec<&str> = offered
        .iter()
        .map(|v| {
            let v = v.as_str().unwrap();
            assert!(v.starts_with("Payment "), "{v}");
            v.split("intent=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(intents, ["charge", "session"]);
    assert_eq!(exchanges(&out), [(None, 402), (scheme("Payment"), 200)]);
    assert_charge_paid(&out, &out["receipt"], &origin);
}

#[test]
fn alby_fetch_with_mpp_and_fetch402_pay_the_charge_of_an_mpp_only_service() {
    let origin = Origin::start();
    let proxy = start(&origin, Some("mpp"), false);
    let Some(out) = alby("mpp", &proxy) else {
        return;
    };
    assert_eq!(out["version"], "9.0.1");
    assert_eq!(exchanges(&out), [(None, 402), (scheme("Payment"), 200)]);
    assert_charge_paid(&out, &out["receipt"], &origin);
    // Its echo is exactly the six challenge fields.
    let echoed: Vec<&String> = out["exchanges"][1]["credential"]["challenge"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        echoed,
        ["expires", "id", "intent", "method", "realm", "request"]
    );
    assert_eq!(out["payment"]["paid"], true);
    assert_eq!(out["payment"]["amountSat"], 10);

    // fetch402 takes the same single Payment challenge.
    let out = alby("402", &proxy).expect("installed a moment ago");
    assert_eq!(exchanges(&out), [(None, 402), (scheme("Payment"), 200)]);
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["receipt"]["status"], "success");
    assert_eq!(origin.hits.load(Ordering::SeqCst), 2);
}

#[test]
fn alby_fetch402_pays_l402() {
    // A plain L402 proxy, and one that offers Payment after LSAT and L402 (Go's default order).
    for mpp in [false, true] {
        let origin = Origin::start();
        let proxy = if mpp {
            start(&origin, None, false)
        } else {
            Proxy::start(&service("svc", origin.addr, ""), 1)
        };
        let Some(out) = alby("402", &proxy) else {
            return;
        };
        let sent = exchanges(&out);
        assert_eq!(sent.len(), 2, "{out}");
        assert_eq!(sent[0], (None, 402));
        assert!(
            matches!(sent[1].0.as_deref(), Some("L402" | "LSAT")),
            "{out}"
        );
        assert_eq!(sent[1].1, 200, "{out}");
        assert_eq!(out["status"], 200, "{out}");
        assert_eq!(out["body"], "origin saw /paid");
        assert_eq!(out["invoices_paid"], 1);
        assert_eq!(out["receipt"], Value::Null);
        assert_eq!(out["payment"]["paid"], true);
        assert_eq!(origin.hits.load(Ordering::SeqCst), 1);
    }
}

#[test]
fn mppx_parses_charge_and_session_challenges_and_its_credential_is_accepted() {
    let origin = Origin::start();
    let proxy = start(&origin, None, true);
    let Some(out) = drive(
        "node",
        "mppx_oracle.mjs",
        &[url(&proxy), wallet_url(&proxy)],
    ) else {
        return;
    };
    assert_eq!(out["version"], "0.11.0");
    assert_eq!(out["first_status"], 402);
    // LSAT, L402, Payment charge, Payment session joined in one value: two Payment challenges.
    let challenges = out["challenges"].as_array().unwrap();
    let intents: Vec<&str> = challenges
        .iter()
        .map(|c| c["intent"].as_str().unwrap())
        .collect();
    assert_eq!(intents, ["charge", "session"], "{out}");
    for c in challenges {
        assert_eq!(c["method"], "lightning");
        assert_eq!(c["realm"], "api.example.com");
        assert!(c["expires"].as_str().unwrap().ends_with('Z'), "{c}");
        // Our request JSON is canonical: mppx's JCS re-encoding gives back the same bytes.
        assert_eq!(c["request_reencoded_identical"], true, "{c}");
    }
    let charge = &challenges[0]["request"];
    assert_eq!(charge["amount"], "10", "{charge}");
    assert!(charge["methodDetails"]["invoice"]
        .as_str()
        .unwrap()
        .starts_with("lnbcrt"));
    let session = &challenges[1]["request"];
    assert!(session["depositInvoice"].as_str().is_some(), "{session}");
    // mppx's own credential for the charge is accepted, its receipt passes mppx's schema, and
    // the same credential again is refused.
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["body"], "origin saw /paid");
    assert_eq!(out["receipt_error"], Value::Null, "{out}");
    let receipt = &out["receipt"];
    assert_eq!(receipt["status"], "success");
    assert_eq!(receipt["method"], "lightning");
    assert_eq!(receipt["challengeId"], challenges[0]["id"]);
    assert_eq!(receipt["reference"], charge["methodDetails"]["paymentHash"]);
    assert_eq!(out["replay_status"], 402);
    assert_eq!(origin.hits.load(Ordering::SeqCst), 1);
}
