//! Data-path pieces, one core: a warm verify (the per-core token cache hit that a repeat paid
//! request takes), rendering the 402 answer, and parsing a request head.

use criterion::{criterion_group, criterion_main, Criterion};

use aperture::error::{Challenge, Synthetic};
use aperture::l402::{self, Verifier};
use aperture::proxy::h1::Head;
use aperture::proxy::respond::render_h1;
use aperture::proxy::tokens::TokenCache;

fn paid_header() -> (String, Verifier) {
    let verifier = Verifier::new([7u8; 32]);
    let preimage = [2u8; 32];
    let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(preimage).into();
    let caveats = l402::mint_caveats("svc", Some("add,subtract"), &[], Some(4_102_444_800));
    let mac = verifier.mint(hash, [3u8; 32], &caveats);
    (
        format!("L402 {}:{}", mac.to_base64(), hex::encode(preimage)),
        verifier,
    )
}

fn bench(c: &mut Criterion) {
    let (value, verifier) = paid_header();
    let headers = [("Authorization", value.as_bytes())];
    let req = l402::VerifyRequest {
        service: "svc",
        capability: None,
        now_unix: 1_800_000_000,
    };
    c.bench_function("verify cold (parse + HMAC chain + caveats)", |b| {
        b.iter(|| verifier.authenticate(headers, &req))
    });
    let cache = TokenCache::default();
    let l402::AuthOutcome::Accepted {
        credential,
        token_id,
    } = verifier.authenticate(headers, &req)
    else {
        panic!("the bench token must verify");
    };
    cache.insert(value.as_bytes(), "svc", token_id, &credential);
    c.bench_function("verify warm (per-core cache hit)", |b| {
        b.iter(|| cache.get(value.as_bytes(), "svc", 1_800_000_000).is_some())
    });
    let answer = Synthetic::PaymentRequired(Challenge {
        www_authenticate: l402::challenge_values(l402::ChallengeShape::Superset, &credential.macaroon.to_base64(), "lnbcrt100n1p4s2wypdq8fs6rqvspp55gccennu6x874lsyy0g0vtpha9xlpvs54tatx0dxwr8mh8spll2qsp5m9z0ljjfp35lfh9n36acgqzhqlltrtswrtlqcvfk0mp9pereas4s9qrsgqxqyz5vqcqzzss5n2mmg06sxug0dahnsplkllzpl4lpt3489cvtt7xj7n0wgg5npxpg2ler2q0vkf6hmnx6znq45wwdnjk9ae6ele4fzfg3qhk9t62vgqgmjzkt"),
    });
    let mut out = Vec::with_capacity(2048);
    c.bench_function("render 402 (HTTP/1.1)", |b| {
        b.iter(|| {
            out.clear();
            render_h1(&answer, false, false, &mut out);
            out.len()
        })
    });
    let raw = format!("GET /api/v1/thing?x=1 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\nAuthorization: {value}\r\n\r\n");
    let mut head = Head::default();
    c.bench_function("parse request head", |b| {
        b.iter(|| head.parse_request(raw.as_bytes()).is_ok())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
