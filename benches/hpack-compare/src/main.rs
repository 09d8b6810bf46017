// HPACK decode cost of a paid request block: ours vs maintained crates.
// Our modules as siblings at the crate root, as they are in src/proxy/h2n (`super::`).
// The crate `hpack` is `::hpack` below; ours is `crate::hpack`.
#[allow(dead_code)]
#[path = "../../../src/proxy/h2n/hpack.rs"]
mod hpack;
#[allow(dead_code)]
#[path = "../../../src/proxy/h2n/huffman.rs"]
mod huffman;
use std::hint::black_box;
use std::time::Instant;

fn time(label: &str, iters: u32, mut f: impl FnMut()) {
    if iters > 1000 {
        for _ in 0..iters / 10 {
            f();
        }
    }
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    let ns = t.elapsed().as_nanos() as f64 / iters as f64;
    println!("{label:40} {ns:8.1} ns/decode");
}

fn main() {
    let first = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/first.bin")).unwrap();
    let repeat = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/repeat.bin")).unwrap();
    let which = std::env::args().nth(1).unwrap_or_default();
    let n: u32 = std::env::var("ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let run = |w: &str| which.is_empty() || which == w;
    if run("ours-first") {
        let mut out = crate::hpack::HeaderList::default();
        time("ours first (fresh decoder)", n, || {
            let mut d = crate::hpack::Decoder::new(4096, 16384);
            d.decode(black_box(&first), &mut out).unwrap();
            black_box(&out);
        });
    }
    if run("ours-repeat") {
        let mut out = crate::hpack::HeaderList::default();
        let mut d = crate::hpack::Decoder::new(4096, 16384);
        d.decode(&first, &mut out).unwrap();
        time("ours repeat (table hits)", n, || {
            d.decode(black_box(&repeat), &mut out).unwrap();
            black_box(&out);
        });
    }
    if run("loona-first") {
        time("loona-hpack first (callback)", n, || {
            let mut d = loona_hpack::Decoder::new();
            d.decode_with_cb(black_box(&first), |a, b| {
                black_box((a, b));
            })
            .unwrap();
        });
    }
    if run("loona-repeat") {
        let mut d = loona_hpack::Decoder::new();
        d.decode(&first).unwrap();
        time("loona-hpack repeat (callback)", n, || {
            d.decode_with_cb(black_box(&repeat), |a, b| {
                black_box((a, b));
            })
            .unwrap();
        });
    }
    if run("loona-copy-repeat") {
        let mut d = loona_hpack::Decoder::new();
        d.decode(&first).unwrap();
        let mut bytes: Vec<u8> = Vec::new();
        let mut fields: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> = Vec::new();
        time("loona-hpack repeat + copy into ranges", n, || {
            bytes.clear();
            fields.clear();
            d.decode_with_cb(black_box(&repeat), |a, b| {
                let s = bytes.len();
                bytes.extend_from_slice(&a);
                let m = bytes.len();
                bytes.extend_from_slice(&b);
                fields.push((s..m, m..bytes.len()));
            })
            .unwrap();
            black_box((&bytes, &fields));
        });
    }
    if run("hpack-first") {
        time("hpack 0.3 first (callback)", n, || {
            let mut d = ::hpack::Decoder::new();
            d.decode_with_cb(black_box(&first), |a, b| {
                black_box((a, b));
            })
            .unwrap();
        });
    }
    if run("hpack-repeat") {
        let mut d = ::hpack::Decoder::new();
        d.decode(&first).unwrap();
        time("hpack 0.3 repeat (callback)", n, || {
            d.decode_with_cb(black_box(&repeat), |a, b| {
                black_box((a, b));
            })
            .unwrap();
        });
    }
    if run("httlib-first") {
        time("httlib-hpack first (Vec per field)", n, || {
            let mut d = httlib_hpack::Decoder::default();
            let mut buf = first.clone();
            let mut dst = Vec::new();
            d.decode(&mut buf, &mut dst).unwrap();
            black_box(dst);
        });
    }
    if run("httlib-repeat") {
        let mut d = httlib_hpack::Decoder::default();
        let mut dst = Vec::new();
        d.decode(&mut first.clone(), &mut dst).unwrap();
        time("httlib-hpack repeat (Vec per field)", n, || {
            let mut buf = repeat.clone();
            let mut dst = Vec::new();
            d.decode(&mut buf, &mut dst).unwrap();
            black_box(dst);
        });
    }
}
