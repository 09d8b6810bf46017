//! Hot-path costs of the L402 core: header parsing, full verification (parse + HMAC chain +
//! caveats) and minting. Run: `cargo bench --bench l402 -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use aperture::l402::{mint_caveats, parse_credentials, AuthOutcome, Verifier, VerifyRequest};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sha2::{Digest, Sha256};

const PREIMAGE: [u8; 32] = [2u8; 32];

fn setup() -> (Verifier, String, String, Vec<String>) {
    let verifier = Verifier::new([0x42; 32]);
    // Go aperture's three caveats, as in golden vector 2.
    let caveats = mint_caveats("service1", Some("add,subtract"), &[], Some(4_102_444_800));
    let hash: [u8; 32] = Sha256::digest(PREIMAGE).into();
    let mut mac = verifier.mint(hash, [3u8; 32], &caveats);
    let auth = format!("L402 {}:{}", mac.to_base64(), hex::encode(PREIMAGE));
    mac.add_first_party_caveat(format!("preimage={}", hex::encode(PREIMAGE)));
    let grpc = hex::encode(mac.encode_v2());
    (verifier, auth, grpc, caveats)
}

fn benches(c: &mut Criterion) {
    let (verifier, auth, grpc, caveats) = setup();
    let req = VerifyRequest {
        service: "service1",
        capability: Some("add"),
        now_unix: 1_800_000_000,
    };
    fn headers(v: &str) -> [(&str, &[u8]); 4] {
        [
            ("host", &b"api.example.com"[..]),
            ("user-agent", &b"bench/1.0"[..]),
            ("accept", &b"*/*"[..]),
            ("authorization", v.as_bytes()),
        ]
    }

    let mut g = c.benchmark_group("l402");
    g.throughput(Throughput::Elements(1));
    g.bench_function("header_parse", |b| {
        b.iter(|| parse_credentials(black_box(headers(&auth))))
    });
    g.bench_function("full_verify_authorization", |b| {
        b.iter(|| {
            let out = verifier.authenticate(black_box(headers(&auth)), &req);
            assert!(matches!(out, AuthOutcome::Accepted { .. }));
            out
        })
    });
    g.bench_function("full_verify_grpc_macaroon", |b| {
        let h = [
            ("content-type", &b"application/grpc"[..]),
            ("macaroon", grpc.as_bytes()),
        ];
        b.iter(|| verifier.authenticate(black_box(h), &req))
    });
    let cred = parse_credentials(headers(&auth))
        .pop()
        .and_then(Result::ok)
        .expect("bench credential parses");
    g.bench_function("verify_parsed", |b| {
        b.iter(|| verifier.verify(black_box(&cred), &req))
    });
    g.bench_function("reject_forged_signature", |b| {
        let forged = Verifier::new([1u8; 32]);
        b.iter(|| forged.authenticate(black_box(headers(&auth)), &req))
    });
    g.bench_function("mint_and_encode", |b| {
        let hash: [u8; 32] = Sha256::digest(PREIMAGE).into();
        b.iter(|| {
            verifier
                .mint(black_box(hash), [3u8; 32], &caveats)
                .to_base64()
        })
    });
    g.finish();
}

criterion_group!(l402, benches);
criterion_main!(l402);
