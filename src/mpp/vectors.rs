//! Cross-implementation tests: every vector of Go aperture's `mpp/testdata/vectors.json`
//! (reference §2.13, copied verbatim into `testdata/vectors.jsonl`), the worked end-to-end
//! charge example, and an oracle run of pympp against challenges we render (skipped with a note
//! when pympp is not importable). Test-only; owns no production behaviour.

use serde_json::Value;

use super::*;

const VECTORS: &str = include_str!("testdata/vectors.jsonl");
const SECRET: &[u8] = b"mpp-test-vector-secret";

/// (category, vector) for every JSON line; `// name` lines set the category.
fn vectors() -> Vec<(String, Value)> {
    let mut category = String::new();
    let mut out = Vec::new();
    for line in VECTORS.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(name) = line.strip_prefix("//") {
            category = name.trim().to_owned();
            continue;
        }
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        out.push((category.clone(), v));
    }
    out
}

fn of(category: &str) -> Vec<Value> {
    vectors()
        .into_iter()
        .filter(|(c, _)| c == category)
        .map(|(_, v)| v)
        .collect()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn is_error(v: &Value) -> bool {
    v["error"].as_bool().unwrap_or(false)
}

fn params(v: &Value) -> ChallengeParams {
    ChallengeParams {
        id: s(v, "id").into(),
        realm: s(v, "realm").into(),
        method: s(v, "method").into(),
        intent: s(v, "intent").into(),
        request: s(v, "request").into(),
        expires: s(v, "expires").into(),
        digest: s(v, "digest").into(),
        description: s(v, "description").into(),
        opaque: s(v, "opaque").into(),
    }
}

#[test]
fn vector_counts() {
    let mut counts = std::collections::BTreeMap::new();
    for (c, _) in vectors() {
        *counts.entry(c).or_insert(0) += 1;
    }
    let expected = [
        ("base64url", 17),
        ("canonicalization", 22),
        ("challengeHeaders", 6),
        ("challengeIds", 4),
        ("challengeLists", 11),
        ("credentials", 11),
        ("receipts", 8),
    ];
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        expected.map(|(c, n)| (c.to_owned(), n))
    );
}

#[test]
fn base64url_vectors() {
    for v in of("base64url") {
        let enc = s(&v, "encoded");
        let got = b64::decode(enc);
        if is_error(&v) {
            assert!(got.is_err(), "{enc:?} must be refused");
            continue;
        }
        let bytes = got.unwrap_or_else(|e| panic!("{enc:?}: {e}"));
        assert_eq!(hex::encode(&bytes), s(&v, "decodedHex"), "{enc:?}");
        if v["canonical"].as_bool() == Some(true) {
            assert_eq!(b64::encode(&bytes), enc);
        }
    }
}

#[test]
fn canonicalization_vectors() {
    for v in of("canonicalization") {
        let got = jcs::canonicalize(s(&v, "input").as_bytes());
        if is_error(&v) {
            assert!(got.is_err(), "{}", s(&v, "name"));
        } else {
            assert_eq!(got.as_deref(), Ok(s(&v, "canonical")), "{}", s(&v, "name"));
        }
    }
}

#[test]
fn challenge_id_vectors() {
    for v in of("challengeIds") {
        let p = params(&v["params"]);
        assert_eq!(p.hmac_input(), s(&v, "hmacInput"));
        assert_eq!(p.compute_id(SECRET), p.id);
        assert!(p.verify_id(SECRET));
    }
}

#[test]
fn credential_vectors() {
    for v in of("credentials") {
        let header = s(&v, "header");
        let got = parse_credential(header);
        if is_error(&v) {
            assert!(got.is_err(), "{}", s(&v, "name"));
            continue;
        }
        let cred = got.unwrap_or_else(|e| panic!("{}: {e}", s(&v, "name")));
        let token = header.split_once(' ').map(|(_, t)| t).unwrap_or_default();
        let json = s(&v, "credentialJson");
        assert_eq!(b64::decode(token).unwrap(), json.as_bytes());
        let doc: Value = serde_json::from_str(json).unwrap();
        assert_eq!(cred.challenge, params(&doc["challenge"]));
        assert_eq!(cred.payload, doc["payload"]);
        assert_eq!(cred.source, s(&doc, "source"));
    }
}

/// Re-renders a receipt vector's JSON with our types: the Go struct each one came from is told
/// apart by its keys (close receipts open with `method`; serde_json's map is sorted, so that is
/// read from the text).
fn render_receipt(json: &str) -> String {
    let doc: Value = serde_json::from_str(json).unwrap();
    let doc = &doc;
    let i = |k: &str| doc[k].as_i64().unwrap_or(0);
    if doc.get("sessionId").is_some() {
        NeedTopUpEvent {
            session_id: s(doc, "sessionId").into(),
            balance_spent: i("balanceSpent"),
            balance_required: i("balanceRequired"),
        }
        .to_json()
    } else if json.starts_with(r#"{"method""#) {
        let refund_status = [
            RefundStatus::Succeeded,
            RefundStatus::Failed,
            RefundStatus::Skipped,
        ]
        .into_iter()
        .find(|r| r.as_str() == s(doc, "refundStatus"));
        CloseReceipt {
            timestamp: s(doc, "timestamp").into(),
            session_id: s(doc, "reference").into(),
            refund_sats: i("refundSats"),
            refund_status,
        }
        .to_json()
    } else {
        Receipt {
            timestamp: s(doc, "timestamp").into(),
            reference: s(doc, "reference").into(),
            challenge_id: s(doc, "challengeId").into(),
        }
        .to_json()
    }
}

#[test]
fn receipt_vectors() {
    for v in of("receipts") {
        let json = s(&v, "json");
        assert_eq!(
            b64::encode(json.as_bytes()),
            s(&v, "header"),
            "{}",
            s(&v, "name")
        );
        assert_eq!(render_receipt(json), json, "{}", s(&v, "name"));
    }
}

#[test]
fn challenge_list_vectors() {
    for v in of("challengeLists") {
        let got = parse_challenge_list(s(&v, "header"));
        if is_error(&v) {
            assert!(got.is_err(), "{}", s(&v, "name"));
            continue;
        }
        let ids: Vec<String> = got
            .unwrap()
            .iter()
            .map(|p| format!("{}/{}", p.id, p.intent))
            .collect();
        let want: Vec<&str> = v["ids"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(ids, want, "{}", s(&v, "name"));
    }
}

#[test]
fn challenge_header_vectors() {
    for v in of("challengeHeaders") {
        let p = params(&v["params"]);
        assert_eq!(p.render(), s(&v, "header"), "{}", s(&v, "name"));
        assert_eq!(
            parse_challenge_list(s(&v, "header")),
            Ok(vec![p]),
            "{}",
            s(&v, "name")
        );
    }
}

// The worked end-to-end charge example at the end of §2.13.
const PREIMAGE: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const HASH: &str = "02d449a31fbb267c8f352e9968a79e3e5fc95c1bbeaa502fd6454ebde5a4bedc";
const REQUEST_B64: &str = "eyJhbW91bnQiOiIxMDAiLCJjdXJyZW5jeSI6InNhdCIsIm1ldGhvZERldGFpbHMiOnsiaW52b2ljZSI6ImxuYmNydDF1MXBleGFtcGxlIiwibmV0d29yayI6InJlZ3Rlc3QiLCJwYXltZW50SGFzaCI6IjAyZDQ0OWEzMWZiYjI2N2M4ZjM1MmU5OTY4YTc5ZTNlNWZjOTVjMWJiZWFhNTAyZmQ2NDU0ZWJkZTVhNGJlZGMifX0";
const ID: &str = "b_0BNUldz29Gih1BWsAgjTM2wdkQNGobjxxPocoDNJU";
/// 2026-08-13T12:00:00Z: the challenge is minted then and expires at 12:15.
const MINTED: u64 = 1_786_622_400;

fn hash() -> [u8; 32] {
    request::parse_hash(HASH, "hash").unwrap()
}

fn example_challenge() -> ChallengeParams {
    let req = ChargeRequest::lightning(100, "lnbcrt1u1pexample", &hash(), "regtest");
    ChallengeParams::charge(SECRET, "api.example.com", MINTED, &req)
}

#[test]
fn worked_example_charge() {
    assert_eq!(
        hex::encode(sha2::Sha256::digest(hex::decode(PREIMAGE).unwrap())),
        HASH
    );
    let ch = example_challenge();
    assert_eq!(ch.request, REQUEST_B64);
    assert_eq!(ch.expires, "2026-08-13T12:15:00Z");
    assert_eq!(ch.id, ID);
    assert_eq!(
        ch.render(),
        format!(
            r#"Payment id="{ID}", realm="api.example.com", method="lightning", intent="charge", request="{REQUEST_B64}", expires="2026-08-13T12:15:00Z""#
        )
    );

    let json = format!(
        r#"{{"challenge":{{"id":"{ID}","realm":"api.example.com","method":"lightning","intent":"charge","request":"{REQUEST_B64}","expires":"2026-08-13T12:15:00Z"}},"payload":{{"preimage":"{PREIMAGE}"}}}}"#
    );
    let cred = Credential {
        challenge: ch,
        source: String::new(),
        payload: serde_json::json!({ "preimage": PREIMAGE }),
    };
    assert_eq!(cred.to_json(), json);
    let parsed = parse_credential(format!("Payment {}", b64::encode(json.as_bytes()))).unwrap();
    assert_eq!(parsed, cred);

    let ok = verify_charge(SECRET, &parsed, Some("api.example.com"), MINTED + 60).unwrap();
    assert_eq!(
        ok,
        ChargeVerified {
            challenge_id: ID.into(),
            payment_hash: hash(),
            amount_sats: 100,
            expires_unix: MINTED as i64 + 900
        }
    );

    let receipt = Receipt {
        timestamp: format_rfc3339(MINTED + 60),
        reference: HASH.into(),
        challenge_id: ok.challenge_id,
    };
    assert_eq!(
        receipt.to_json(),
        format!(
            r#"{{"status":"success","method":"lightning","timestamp":"2026-08-13T12:01:00Z","reference":"{HASH}","challengeId":"{ID}"}}"#
        )
    );
    assert_eq!(receipt.to_header(), "eyJzdGF0dXMiOiJzdWNjZXNzIiwibWV0aG9kIjoibGlnaHRuaW5nIiwidGltZXN0YW1wIjoiMjAyNi0wOC0xM1QxMjowMTowMFoiLCJyZWZlcmVuY2UiOiIwMmQ0NDlhMzFmYmIyNjdjOGYzNTJlOTk2OGE3OWUzZTVmYzk1YzFiYmVhYTUwMmZkNjQ1NGViZGU1YTRiZWRjIiwiY2hhbGxlbmdlSWQiOiJiXzBCTlVsZHoyOUdpaDFCV3NBZ2pUTTJ3ZGtRTkdvYmp4eFBvY29ETkpVIn0");
}

#[test]
fn worked_example_session_id() {
    let req = SessionRequest::lightning(5, 100, "lnbcrt1u1pdeposit", &hash(), 300);
    let ch = ChallengeParams::session(SECRET, "api.example.com", MINTED, &req);
    assert_eq!(ch.id, "hC3f3GP7BVQknmEqrFlZYV8xBbt99B7DsRLs2W3eCus");
}

use sha2::Digest as _;

const ORACLE: &str = r#"
import json, sys
try:
    import mpp
except ImportError:
    sys.exit(77)
secret, realm, charge, session, preimage, receipt = sys.argv[1:7]
out = {"verify": [], "authorization": None}
for h in (charge, session):
    out["verify"].append(mpp.parse_www_authenticate(h).verify(secret, realm))
c = mpp.parse_www_authenticate(charge)
out["authorization"] = mpp.format_authorization(mpp.Credential(c.to_echo(), {"preimage": preimage}))
out["reference"] = mpp.parse_payment_receipt(receipt).reference
print(json.dumps(out))
"#;

/// pympp 0.16.0 (`python3 -m pip install pympp==0.16.0`) verifies the challenges we render,
/// builds a credential we accept, and reads our receipt.
#[test]
fn pympp_oracle() {
    let realm = "127.0.0.1:8081";
    let charge = ChallengeParams::charge(
        SECRET,
        realm,
        MINTED,
        &ChargeRequest::lightning(21, "lnbcrt210n1pexample", &hash(), "regtest"),
    );
    let session = ChallengeParams::session(
        SECRET,
        realm,
        MINTED,
        &SessionRequest::lightning(2, 40, "lnbcrt400n1pdeposit", &hash(), 300),
    );
    let receipt = Receipt {
        timestamp: format_rfc3339(MINTED),
        reference: HASH.into(),
        challenge_id: charge.id.clone(),
    };
    let secret = std::str::from_utf8(SECRET).unwrap();
    let run = std::process::Command::new("python3")
        .args([
            "-c",
            ORACLE,
            secret,
            realm,
            &charge.render(),
            &session.render(),
            PREIMAGE,
            &receipt.to_header(),
        ])
        .output();
    let out = match run {
        Ok(out) if out.status.code() == Some(77) => {
            eprintln!("pympp_oracle skipped: pympp is not importable (python3 -m pip install pympp==0.16.0)");
            return;
        }
        Ok(out) => out,
        Err(e) => {
            eprintln!("pympp_oracle skipped: python3 not runnable: {e}");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verify"], serde_json::json!([true, true]));
    assert_eq!(v["reference"], HASH);
    let cred = parse_credential(v["authorization"].as_str().unwrap()).unwrap();
    let ok = verify_charge(SECRET, &cred, Some(realm), MINTED + 1).unwrap();
    assert_eq!((ok.amount_sats, ok.payment_hash), (21, hash()));
}
