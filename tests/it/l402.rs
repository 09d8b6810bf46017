//! L402 token core from the outside: the golden vectors of `wire-format.md` §8 byte for byte,
//! pymacaroons 0.13.0 interop in both directions, and a seeded fuzz of every parser.

use std::path::PathBuf;
use std::process::Command;

use aperture::l402::macaroon::signature_chain;
use aperture::l402::{
    derive_root_key, macaroon_from_base64, mint_caveats, parse_credentials, verify_with_root_key,
    AuthOutcome, CaveatError, Credential, CredentialSource, Identifier, Macaroon, MacaroonRef,
    Verifier, VerifyError, VerifyRequest, LOCATION,
};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

const STD: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

const V1_SIG: &str = "549de7139a8177c558e71166f0408b086c733a368eab7073711f18f1d0d7acd5";
const V1_B64: &str = "AgEEbHNhdAJCAABLsG+OTjp3FdIB1XPQqkI3YuVdq9YaLAInj6VsxtKU4Kurq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urAAIPc2VydmljZXM9c3ZjMTowAAIbc3ZjMV92YWxpZF91bnRpbD00MTAyNDQ0ODAwAAAGIFSd5xOagXfFWOcRZvBAiwhsczo2jqtwc3EfGPHQ16zV";
const V2_B64: &str = "AgEEbHNhdAJCAAB1h3u0HTk7X7hFXOYOzY3aAB0GMWSWsU36f4lWVu7KSgMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAAITc2VydmljZXM9c2VydmljZTE6MAACInNlcnZpY2UxX2NhcGFiaWxpdGllcz1hZGQsc3VidHJhY3QAAh9zZXJ2aWNlMV92YWxpZF91bnRpbD0xNzAwMDAwMDAwAAAGIIyT/ng3b4GEWaFfSvxvUs9nsmSxMHNbxwRbDWXHURl8";

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).expect("test hex")
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn v1_root() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

fn v1_identifier() -> Vec<u8> {
    let payment_hash = sha(&[7u8; 32]);
    assert_eq!(
        hex::encode(payment_hash),
        "4bb06f8e4e3a7715d201d573d0aa423762e55dabd61a2c02278fa56cc6d294e0"
    );
    Identifier {
        payment_hash,
        token_id: [0xab; 32],
    }
    .encode()
    .to_vec()
}

fn req(service: &str, now_unix: u64) -> VerifyRequest<'_> {
    VerifyRequest {
        service,
        capability: None,
        now_unix,
    }
}

fn credential_from_header(value: &str) -> Credential {
    let mut creds = parse_credentials([("Authorization", value.as_bytes())]);
    assert_eq!(creds.len(), 1);
    creds.remove(0).expect("golden header parses")
}

#[test]
fn golden_vector_1_byte_for_byte() {
    let id = v1_identifier();
    let m = Macaroon::mint(
        &v1_root(),
        LOCATION,
        &id,
        &["services=svc1:0", "svc1_valid_until=4102444800"],
    );
    assert_eq!(hex::encode(m.signature), V1_SIG);
    let expected = h(&format!(
        "02 0104 6c736174 0242 0000 {} {} 00 \
         020f 73657276696365733d737663313a30 00 \
         021b 737663315f76616c69645f756e74696c3d34313032343434383030 00 \
         00 0620 {V1_SIG}",
        "4bb06f8e4e3a7715d201d573d0aa423762e55dabd61a2c02278fa56cc6d294e0",
        "ab".repeat(32)
    ));
    let bytes = m.encode_v2();
    assert_eq!(bytes.len(), 159);
    assert_eq!(bytes, expected);
    assert_eq!(m.to_base64(), V1_B64);
    assert_eq!(
        hex::encode(sha(&id)),
        "f9e059cf24d086a5cbcfb17f3fdf7eea38819366e820ce6dd6e4990b5db584cf"
    );
    assert!(m.verify_signature(&v1_root()));

    // The raw root key (no libmacaroons derivation) does not produce this signature.
    let mut raw = <Hmac<Sha256>>::new_from_slice(&v1_root()).expect("hmac key");
    raw.update(&id);
    let mut sig: [u8; 32] = raw.finalize().into_bytes().into();
    for c in &m.caveats {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&sig).expect("hmac key");
        mac.update(c);
        sig = mac.finalize().into_bytes().into();
    }
    assert_ne!(hex::encode(sig), V1_SIG);

    let header = format!("L402 {V1_B64}:{}", "07".repeat(32));
    let cred = credential_from_header(&header);
    assert_eq!(cred.macaroon, m);
    assert_eq!(
        verify_with_root_key(&cred, &v1_root(), &req("svc1", 1_700_000_000)),
        Ok([0xab; 32])
    );
    assert_eq!(
        verify_with_root_key(&cred, &v1_root(), &req("svc1", 4_102_444_799)),
        Ok([0xab; 32])
    );
    assert_eq!(
        verify_with_root_key(&cred, &v1_root(), &req("svc1", 4_102_444_800)),
        Err(VerifyError::Caveat(CaveatError::Expired))
    );
    assert_eq!(
        verify_with_root_key(&cred, &v1_root(), &req("svc2", 0)),
        Err(VerifyError::Caveat(CaveatError::WrongService))
    );
}

#[test]
fn golden_vector_2_with_injected_clock() {
    let preimage = [2u8; 32];
    let payment_hash = sha(&preimage);
    assert_eq!(
        hex::encode(payment_hash),
        "75877bb41d393b5fb8455ce60ecd8dda001d06316496b14dfa7f895656eeca4a"
    );
    let id = Identifier {
        payment_hash,
        token_id: [3u8; 32],
    }
    .encode();
    assert_eq!(
        hex::encode(sha(&id)),
        "002b3039613d2b94bb1a864563058d8521305f8b73c986ef1d100c9914a72559"
    );
    let caveats = mint_caveats("service1", Some("add,subtract"), &[], Some(1_700_000_000));
    let m = Macaroon::mint(&[1u8; 32], LOCATION, &id, &caveats);
    let bytes = m.encode_v2();
    assert_eq!(bytes.len(), 204);
    assert_eq!(m.to_base64(), V2_B64);
    assert_eq!(
        hex::encode(m.signature),
        "8c93fe78376f818459a15f4afc6f52cf67b264b130735bc7045b0d65c751197c"
    );

    let decoded = STD.decode(V2_B64).expect("vector base64");
    let parsed = MacaroonRef::parse_v2(&decoded).expect("vector parses");
    let lens: Vec<usize> = parsed.caveats().map(<[u8]>::len).collect();
    assert_eq!(lens, vec![0x13, 0x22, 0x1f]);

    let header = format!("L402 {V2_B64}:{}", "02".repeat(32));
    let cred = credential_from_header(&header);
    let root = [1u8; 32];
    assert_eq!(
        verify_with_root_key(&cred, &root, &req("service1", 1_699_999_999)),
        Ok([3u8; 32])
    );
    assert_eq!(
        verify_with_root_key(&cred, &root, &req("service1", 1_700_000_000)),
        Err(VerifyError::Caveat(CaveatError::Expired))
    );
    assert_eq!(
        verify_with_root_key(&cred, &root, &req("service1", 1_800_000_000)),
        Err(VerifyError::Caveat(CaveatError::Expired))
    );
    let add = VerifyRequest {
        capability: Some("add"),
        ..req("service1", 1_699_999_999)
    };
    assert_eq!(verify_with_root_key(&cred, &root, &add), Ok([3u8; 32]));
    let mul = VerifyRequest {
        capability: Some("multiply"),
        ..add
    };
    assert_eq!(
        verify_with_root_key(&cred, &root, &mul),
        Err(VerifyError::Caveat(CaveatError::Capability))
    );
}

#[test]
fn derivation_sanity_vector() {
    let sig = signature_chain(
        b"this is our super secret key; only we should know it",
        b"we used our secret key",
        std::iter::empty(),
    );
    assert_eq!(
        hex::encode(sig),
        "e3d9e02908526c4c0039ae15114115d97fdd68bf2ba379b342aaf0f617d0552f"
    );
}

#[test]
fn golden_base64_decodes_and_reencodes_identically() {
    for b64 in [V1_B64, V2_B64] {
        let m = macaroon_from_base64(b64).expect("golden decodes");
        assert_eq!(m.location, "lsat");
        assert_eq!(m.to_base64(), b64);
        let raw = STD.decode(b64).expect("std base64");
        assert_eq!(Macaroon::decode_v2(&raw).expect("decodes").encode_v2(), raw);
        // Unpadded url-safe (pymacaroons' form) decodes to the same macaroon.
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(macaroon_from_base64(&url), Ok(m));
    }
}

// ---------- pymacaroons interop ----------

fn oracle() -> Option<PathBuf> {
    if std::env::var("APERTURE_SKIP_PY").as_deref() == Ok("1") {
        eprintln!("APERTURE_SKIP_PY=1: skipping pymacaroons interop");
        return None;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/pymac_oracle.py");
    let ok = Command::new("python3")
        .arg(&script)
        .arg("check")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 with pymacaroons 0.13.0 is required: run tests/py/setup.sh \
         (or set APERTURE_SKIP_PY=1 to skip the interop tests)"
    );
    Some(script)
}

/// Runs the oracle; returns (success, stdout).
fn py(script: &PathBuf, args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("Traceback"), "oracle crashed: {stderr}");
    (out.status.success(), stdout)
}

fn py_verifies(script: &PathBuf, root: &[u8; 32], m: &Macaroon) {
    let (ok, out) = py(script, &["verify", &hex::encode(root), &m.to_base64()]);
    assert!(ok, "pymacaroons rejected our macaroon: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("oracle json");
    assert_eq!(v["verified"], true);
    assert_eq!(v["location"], "lsat");
    assert_eq!(v["identifier"], hex::encode(&m.identifier));
    assert_eq!(v["signature"], hex::encode(m.signature));
    let caveats: Vec<String> = m
        .caveats
        .iter()
        .map(|c| String::from_utf8(c.clone()).expect("utf8 caveat"))
        .collect();
    assert_eq!(v["caveats"], serde_json::json!(caveats));
}

#[test]
fn pymacaroons_verifies_our_macaroons() {
    let Some(script) = oracle() else { return };
    let master = [0x5au8; 32];
    let verifier = Verifier::new(master);
    let preimage = [0x11u8; 32];
    let caveats = mint_caveats(
        "svc",
        Some("read,write"),
        &[("svc_max_volume".into(), "10".into())],
        Some(4_102_444_800),
    );
    let mut m = verifier.mint(sha(&preimage), [0x22; 32], &caveats);
    let root = derive_root_key(&master, &m.identifier);
    py_verifies(&script, &root, &m);

    m.add_first_party_caveat(format!("preimage={}", hex::encode(preimage)));
    py_verifies(&script, &root, &m);

    // The oracle can fail: a wrong key and a dropped caveat are both refused.
    let (ok, _) = py(
        &script,
        &["verify", &hex::encode([0u8; 32]), &m.to_base64()],
    );
    assert!(!ok, "pymacaroons accepted a wrong root key");
    let mut dropped = m.clone();
    dropped.caveats.remove(1);
    let (ok, _) = py(
        &script,
        &["verify", &hex::encode(root), &dropped.to_base64()],
    );
    assert!(!ok, "pymacaroons accepted a macaroon with a removed caveat");

    // And the golden vector, whose signature pymacaroons is said to agree with.
    let v1 = macaroon_from_base64(V1_B64).expect("golden");
    py_verifies(&script, &v1_root(), &v1);
}

#[test]
fn we_verify_pymacaroons_macaroons() {
    let Some(script) = oracle() else { return };
    let master = [0x77u8; 32];
    let verifier = Verifier::new(master);
    let preimage = [0x44u8; 32];
    let id = Identifier {
        payment_hash: sha(&preimage),
        token_id: [0x55; 32],
    }
    .encode();
    let root = derive_root_key(&master, &id);
    let caveats = ["services=svc:0", "svc_valid_until=4102444800"];
    let mint = |extra: &[&str], key: &[u8; 32]| {
        let mut args = vec!["mint", "", ""];
        let (k, i) = (hex::encode(key), hex::encode(id));
        args[1] = &k;
        args[2] = &i;
        args.extend_from_slice(extra);
        args.extend_from_slice(&caveats);
        let (ok, out) = py(&script, &args);
        assert!(ok, "pymacaroons mint failed: {out}");
        out
    };
    let request = req("svc", 1_800_000_000);

    // Plain: unpadded base64url in Authorization (liberal parsing) verifies.
    let b64 = mint(&[], &root);
    assert!(!b64.contains('=') && !b64.contains('+') && !b64.contains('/'));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&b64)
        .expect("pymacaroons base64url");
    let ours = Macaroon::decode_v2(&raw).expect("we decode pymacaroons V2");
    assert_eq!(ours.encode_v2(), raw, "our encoder is byte-compatible");
    let header = format!("L402 {b64}:{}", hex::encode(preimage));
    match verifier.authenticate([("Authorization", header.as_bytes())], &request) {
        AuthOutcome::Accepted { token_id, .. } => assert_eq!(token_id, [0x55; 32]),
        other => panic!("pymacaroons token rejected: {other:?}"),
    }

    // With the client's appended preimage caveat, carried in the Macaroon header.
    let pre_hex = hex::encode(preimage);
    let b64 = mint(&["--preimage", &pre_hex], &root);
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&b64)
        .expect("pymacaroons base64url");
    let hexmac = hex::encode(&raw);
    match verifier.authenticate([("Macaroon", hexmac.as_bytes())], &request) {
        AuthOutcome::Accepted {
            token_id,
            credential,
        } => {
            assert_eq!(token_id, [0x55; 32]);
            assert_eq!(credential.preimage, preimage);
            assert_eq!(credential.source, CredentialSource::Macaroon);
            assert_eq!(credential.macaroon.caveats.len(), 3);
        }
        other => panic!("pymacaroons token with preimage caveat rejected: {other:?}"),
    }

    // A pymacaroons token under another key is refused.
    let b64 = mint(&[], &[9u8; 32]);
    let header = format!("LSAT {b64}:{}", hex::encode(preimage));
    assert_eq!(
        verifier.authenticate([("Authorization", header.as_bytes())], &request),
        AuthOutcome::Rejected(VerifyError::BadSignature)
    );
}

// ---------- seeded fuzz ----------

const INTERESTING: &[u8] = b":, =\t\0\x7f\xff-_+/0aZfF";

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.gen_range(1..4) {
        let pos = rng.gen_range(0..=v.len());
        match rng.gen_range(0..6) {
            0 if pos < v.len() => v[pos] = rng.gen(),
            1 if pos < v.len() => v[pos] = INTERESTING[rng.gen_range(0..INTERESTING.len())],
            2 => v.truncate(pos),
            3 => v.insert(pos, rng.gen()),
            4 if pos < v.len() => {
                v.remove(pos);
            }
            _ => {
                let end = rng.gen_range(pos..=v.len());
                let chunk = v[pos..end].to_vec();
                v.splice(pos..pos, chunk);
            }
        }
    }
    v
}

#[test]
fn fuzz_parsers_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x1402);
    let master = [0x33u8; 32];
    let verifier = Verifier::new(master);
    let preimage = [0x66u8; 32];
    let mut mac = verifier.mint(
        sha(&preimage),
        [0x77; 32],
        &mint_caveats("svc", Some("a,b"), &[], Some(4_102_444_800)),
    );
    let plain_b64 = mac.to_base64();
    mac.add_first_party_caveat(format!("preimage={}", hex::encode(preimage)));
    let mac_bytes = mac.encode_v2();
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "Authorization",
            format!("L402 {plain_b64}:{}", hex::encode(preimage)).into_bytes(),
        ),
        (
            "Authorization",
            format!("LSAT {plain_b64},{plain_b64}:{}", hex::encode(preimage)).into_bytes(),
        ),
        ("Macaroon", hex::encode(&mac_bytes).into_bytes()),
        (
            "Grpc-Metadata-Token",
            hex::encode_upper(&mac_bytes).into_bytes(),
        ),
    ];
    let request = req("svc", 1_800_000_000);
    let mut accepted = 0usize;
    for (name, value) in &seeds {
        assert!(matches!(
            verifier.authenticate([(*name, value.as_slice())], &request),
            AuthOutcome::Accepted { .. }
        ));
    }
    for i in 0..20_000 {
        // Random bytes into every parser.
        let len = rng.gen_range(0..300);
        let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let _ = Identifier::decode(&junk);
        let _ = Macaroon::decode_v2(&junk);
        let mut with_version = junk.clone();
        with_version.insert(0, 2);
        if let Ok(m) = MacaroonRef::parse_v2(&with_version) {
            assert_eq!(m.caveats().count(), m.caveat_count());
        }

        // Mutated macaroons: whatever parses must round-trip through our encoder.
        let mutated = mutate(&mut rng, &mac_bytes);
        if let Ok(m) = Macaroon::decode_v2(&mutated) {
            assert_eq!(Macaroon::decode_v2(&m.encode_v2()), Ok(m));
        }

        // Mutated headers through the full path.
        let (name, value) = &seeds[i % seeds.len()];
        let value = mutate(&mut rng, value);
        let _ = parse_credentials([(*name, value.as_slice())]);
        if let AuthOutcome::Accepted { token_id, .. } = verifier.authenticate(
            [(*name, value.as_slice()), ("Authorization", &junk)],
            &request,
        ) {
            assert_eq!(token_id, [0x77; 32]);
            accepted += 1;
        }
    }
    // Big junk and many fields stay bounded and typed.
    let big = vec![b'A'; 64 * 1024];
    let big_l402 = [b"L402 ".as_slice(), &big, b":00"].concat();
    let fields = vec![("Authorization", big_l402.as_slice()); 200];
    assert!(matches!(
        verifier.authenticate(fields, &request),
        AuthOutcome::Rejected(VerifyError::Malformed(_))
    ));
    assert!(accepted < 20_000, "mutations must mostly break tokens");
}

#[test]
fn go_aperture_tokens_verify_once_their_root_keys_are_imported() {
    // Vector 2 was minted the Go way: a random per-token root key (32 x 01), stored under
    // sha256(identifier) = 002b30…2559 in Go aperture's `secrets` table.
    let header = format!("L402 {V2_B64}:{}", "02".repeat(32));
    let headers = [("Authorization", header.as_bytes())];
    let request = req("service1", 1_699_999_999);
    let ours = aperture::l402::Verifier::new([9u8; 32]);
    assert!(matches!(
        ours.authenticate(headers, &request),
        aperture::l402::AuthOutcome::Rejected(VerifyError::BadSignature)
    ));
    let mut keys = std::collections::HashMap::new();
    let hash: [u8; 32] =
        hex::decode("002b3039613d2b94bb1a864563058d8521305f8b73c986ef1d100c9914a72559")
            .unwrap()
            .try_into()
            .unwrap();
    keys.insert(hash, [1u8; 32]);
    let with_legacy = ours.clone().with_legacy_keys(std::sync::Arc::new(keys));
    assert!(matches!(
        with_legacy.authenticate(headers, &request),
        aperture::l402::AuthOutcome::Accepted { .. }
    ));
    // Our own tokens still verify with the derived key.
    let own = with_legacy.mint(sha(&[6u8; 32]), [5; 32], &[]);
    let value = format!("L402 {}:{}", own.to_base64(), "06".repeat(32));
    assert!(with_legacy
        .verify(&credential_from_header(&value), &request)
        .is_ok());
}
