//! Fuzzes the L402 token core from what a client sends: credential carriers (`Authorization:
//! L402|LSAT <mac>[,<mac>]:<preimage>`, `Macaroon`, `Grpc-Metadata-Macaroon`, `Token`,
//! `Grpc-Metadata-Token`), base64, the V2 macaroon codec, the identifier, caveat checks and
//! `Verifier::authenticate`, with a fixed master secret and a fixed `now` (the golden vectors'
//! root keys are tried too, so their seeds reach the caveat checks).
//!
//! Byte 0 picks a mode, byte 1 a few options; the rest is the mode's input. Beyond not
//! panicking it checks that `authenticate` agrees with `parse_credentials` + `verify`, that
//! what we send upstream parses back to the same credential, that the codec round-trips, and
//! (mode `Mint`) that a correctly signed token carrying fuzzed caveats is accepted exactly
//! when `check_caveats` accepts them, whichever carrier brings it.
#![no_main]

use aperture::l402::caveat::{check_caveats, split_caveat, CaveatContext};
use aperture::l402::macaroon::{MAX_CAVEATS, MAX_MACAROON_LEN};
use aperture::l402::{
    macaroon_from_base64, parse_credentials, upstream_authorization, verify_with_root_key,
    AuthOutcome, Credential, Identifier, Macaroon, MacaroonRef, Verifier, VerifyError,
    VerifyRequest, LOCATION,
};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const MASTER: [u8; 32] = [42u8; 32];
/// Golden vector 1's root key (`00 01 … 1f`) and vector 2's (32×`01`), wire-format.md §8.
const VECTOR_KEYS: [[u8; 32]; 2] = [
    [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
        25, 26, 27, 28, 29, 30, 31,
    ],
    [1u8; 32],
];
/// Before vector 2 expires (1700000000), long before vector 1 does (4102444800).
const NOW: u64 = 1_699_999_000;
const SERVICES: [&str; 3] = ["svc1", "service1", "other"];
const CAPABILITIES: [Option<&str>; 3] = [None, Some("add"), Some("multiply")];
const CARRIERS: [&str; 5] = [
    "Macaroon",
    "Grpc-Metadata-Macaroon",
    "Token",
    "Grpc-Metadata-Token",
    "grpc-metadata-macaroon",
];
const PREIMAGE: [u8; 32] = [7u8; 32];

fn request(opts: u8) -> VerifyRequest<'static> {
    VerifyRequest {
        service: SERVICES[usize::from(opts % 3)],
        capability: CAPABILITIES[usize::from(opts / 3 % 3)],
        now_unix: NOW,
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, opts, rest @ ..] = data else {
        return;
    };
    let req = request(*opts);
    match mode % 7 {
        // Request headers, one `name: value` per line.
        0 => {
            let fields: Vec<(&str, &[u8])> = rest
                .split(|&b| b == b'\n')
                .filter_map(|line| {
                    let colon = line.iter().position(|&b| b == b':')?;
                    let name = std::str::from_utf8(&line[..colon]).ok()?;
                    Some((name.trim(), &line[colon + 1..]))
                })
                .collect();
            headers(&fields, &req);
        }
        // One `Authorization` value.
        1 => headers(&[("Authorization", rest)], &req),
        // One hex carrier, and the same bytes as `Authorization` after it.
        2 => {
            let name = CARRIERS[usize::from(opts % 5)];
            headers(&[(name, rest), ("Authorization", rest)], &req)
        }
        3 => v2_bytes(rest),
        4 => {
            if let Ok(id) = Identifier::decode(rest) {
                assert_eq!(&id.encode()[..], rest);
            }
        }
        5 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(m) = macaroon_from_base64(text) {
                    assert_eq!(macaroon_from_base64(&m.to_base64()), Ok(m));
                }
            }
        }
        _ => mint(rest, *opts, &req),
    }
});

/// Parse, authenticate and verify one request's headers; check the three agree.
fn headers(fields: &[(&str, &[u8])], req: &VerifyRequest<'_>) {
    let verifier = Verifier::new(MASTER);
    let creds = parse_credentials(fields.iter().copied());
    let outcome = verifier.authenticate(fields.iter().copied(), req);
    let mut first_ok = None;
    for cred in creds.iter().flatten() {
        round_trip(cred);
        let verdict = verifier.verify(cred, req);
        if let (None, Ok(token_id)) = (&first_ok, verdict) {
            first_ok = Some((token_id, cred.clone()));
        }
        for key in &VECTOR_KEYS {
            let _ = verify_with_root_key(cred, key, req);
        }
    }
    match (&outcome, first_ok) {
        (
            AuthOutcome::Accepted {
                token_id,
                credential,
            },
            Some((id, cred)),
        ) => {
            assert_eq!(*token_id, id);
            assert_eq!(*credential, cred);
        }
        (AuthOutcome::Missing, None) => assert!(creds.is_empty(), "Missing with candidates"),
        (AuthOutcome::Rejected(_), None) => assert!(!creds.is_empty(), "Rejected without any"),
        (outcome, first) => panic!(
            "authenticate says {outcome:?}, parse_credentials + verify say {:?}",
            first.map(|(id, _)| id)
        ),
    }
}

/// A parsed credential survives encoding, base64 and the upstream `Authorization` values.
fn round_trip(cred: &Credential) {
    let m = &cred.macaroon;
    assert_eq!(Macaroon::decode_v2(&m.encode_v2()).as_ref(), Ok(m));
    assert_eq!(macaroon_from_base64(&m.to_base64()).as_ref(), Ok(m));
    for value in upstream_authorization(cred) {
        let again = parse_credentials([("Authorization", value.as_bytes())]);
        match again.as_slice() {
            [Ok(c)] => {
                assert_eq!(&c.macaroon, m, "upstream value {value:?}");
                assert_eq!(c.preimage, cred.preimage);
            }
            other => panic!("upstream value {value:?} parses as {other:?}"),
        }
    }
}

/// The V2 codec: borrowed and owned parses agree and round-trip.
fn v2_bytes(bytes: &[u8]) {
    let borrowed = MacaroonRef::parse_v2(bytes);
    let owned = Macaroon::decode_v2(bytes);
    match (borrowed, owned) {
        (Ok(r), Ok(m)) => {
            assert_eq!(r.to_owned(), m);
            assert_eq!(r.caveat_count(), m.caveats.len());
            assert_eq!(r.caveats().count(), m.caveats.len());
            assert!(r.caveats().eq(m.caveat_slices()));
            assert_eq!(Macaroon::decode_v2(&m.encode_v2()).as_ref(), Ok(&m));
            for key in &VECTOR_KEYS {
                assert_eq!(r.verify_signature(key), m.verify_signature(key));
            }
            let _ = Identifier::decode(r.identifier);
            for c in r.caveats() {
                let _ = split_caveat(c);
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("parse_v2 {:?} but decode_v2 {:?}", a.is_ok(), b.is_ok()),
    }
}

/// Caveats (one per line) on a correctly signed token: every carrier must agree with
/// `check_caveats` called directly.
fn mint(rest: &[u8], opts: u8, req: &VerifyRequest<'_>) {
    let caveats: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let payment_hash: [u8; 32] = Sha256::digest(PREIMAGE).into();
    let ctx = CaveatContext {
        service: req.service,
        capability: req.capability,
        now_unix: req.now_unix,
        payment_hash: &payment_hash,
    };
    let direct = check_caveats(caveats.iter().copied(), &ctx);

    let verifier = Verifier::new(MASTER);
    let identifier = Identifier {
        payment_hash,
        token_id: [opts; 32],
    }
    .encode();
    let mac = Macaroon::mint(
        &verifier.root_key(&identifier),
        LOCATION,
        &identifier,
        &caveats,
    );
    let expect = |outcome: AuthOutcome, carrier: &str, fits: bool| match (outcome, direct) {
        (AuthOutcome::Accepted { token_id, .. }, Ok(())) => assert_eq!(token_id, [opts; 32]),
        (AuthOutcome::Rejected(VerifyError::Caveat(e)), Err(d)) => {
            assert_eq!(e, d, "{carrier}")
        }
        (AuthOutcome::Rejected(VerifyError::Malformed(_)), _) if !fits => {}
        (outcome, direct) => {
            panic!("{carrier}: authenticate {outcome:?}, check_caveats {direct:?}")
        }
    };

    let fits =
        |m: &Macaroon| m.caveats.len() <= MAX_CAVEATS && m.encode_v2().len() <= MAX_MACAROON_LEN;
    let b64 = mac.to_base64();
    for scheme in ["L402", "LSAT"] {
        let value = format!("{scheme} {b64}:{}", hex::encode(PREIMAGE));
        let outcome = verifier.authenticate([("Authorization", value.as_bytes())], req);
        expect(outcome, scheme, fits(&mac));
    }
    // The `Macaroon` forms carry the preimage as the last caveat, appended by the client.
    let mut with_preimage = mac.clone();
    with_preimage.add_first_party_caveat(format!("preimage={}", hex::encode(PREIMAGE)));
    let hex_value = hex::encode(with_preimage.encode_v2());
    let carrier = CARRIERS[usize::from(opts % 5)];
    let outcome = verifier.authenticate([(carrier, hex_value.as_bytes())], req);
    expect(outcome, carrier, fits(&with_preimage));
}
