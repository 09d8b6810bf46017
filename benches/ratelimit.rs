//! Per-request cost of the rate limiter: the per-core `Limiter` (fast hasher, slab + intrusive
//! LRU, no lock) against a Go-aperture-shaped baseline (one `Mutex<HashMap>` with SipHash and a
//! lazily stamped LRU queue), single thread, same rules, same key stream, same clock.
//! Run: `cargo bench --bench ratelimit -- --warm-up-time 1 --measurement-time 3`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use aperture::ratelimit::{
    retry_after_secs, Bucket, ClientKey, Decision, Limiter, Rule, RuleSet, DEFAULT_CAPACITY,
};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Counts allocations, to show that checks on known keys allocate nothing.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SEC: u64 = 1_000_000_000;
/// The sample config: global 100/s burst 100, and a 5/min rule for an expensive path.
const RULES: [(u32, u64, u32); 2] = [(100, SEC, 100), (5, 60 * SEC, 5)];
const STREAM: usize = 1 << 20;

fn rule_set() -> RuleSet {
    let mut rs = RuleSet::new();
    for (i, (req, per, burst)) in RULES.iter().enumerate() {
        rs.push(format!("rule{i}"), *req, *per, *burst).unwrap();
    }
    rs
}

/// Keys drawn from `distinct` /24s: uniformly, or zipf-ish (u^4 skews towards low indices).
fn stream(distinct: u32, skew: bool) -> Vec<ClientKey> {
    let mut rng = StdRng::seed_from_u64(42);
    (0..STREAM)
        .map(|_| {
            let u: f64 = rng.gen();
            let n = if skew { u.powi(4) } else { u };
            let idx = ((n * f64::from(distinct)) as u32).min(distinct - 1);
            ClientKey::Ip(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + (idx << 8))))
        })
        .collect()
}

/// Key -> (buckets, last-use stamp); the LRU queue of (key, stamp); the stamp counter.
type BaselineState = (
    HashMap<ClientKey, (Vec<Bucket>, u64)>,
    VecDeque<(ClientKey, u64)>,
    u64,
);

/// Go aperture's shape: one lock, SipHash, LRU by key (here a queue of stamped keys, skipping
/// stale stamps), full buckets on eviction.
struct Baseline {
    rules: Vec<Rule>,
    inner: Mutex<BaselineState>,
    capacity: usize,
}

impl Baseline {
    fn check(&self, key: &ClientKey, matching: &[usize], now: u64) -> Decision {
        let mut guard = self.inner.lock().unwrap();
        let (map, queue, stamp) = &mut *guard;
        *stamp += 1;
        if !map.contains_key(key) {
            while map.len() >= self.capacity {
                let Some((old, s)) = queue.pop_front() else {
                    break;
                };
                if map.get(&old).is_some_and(|(_, cur)| *cur == s) {
                    map.remove(&old);
                }
            }
            let fresh = self.rules.iter().map(|r| Bucket::full(r, now)).collect();
            map.insert(*key, (fresh, 0));
        }
        queue.push_back((*key, *stamp));
        if queue.len() > 4 * self.capacity {
            queue.retain(|(k, s)| map.get(k).is_some_and(|(_, cur)| cur == s));
        }
        let Some((buckets, cur)) = map.get_mut(key) else {
            return Decision::Allow;
        };
        *cur = *stamp;
        let mut wait = 0;
        for &r in matching {
            buckets[r].refill(&self.rules[r], now);
            wait = wait.max(buckets[r].wait_ns(&self.rules[r]));
        }
        if wait > 0 {
            return Decision::Deny {
                retry_after_secs: retry_after_secs(wait),
            };
        }
        for &r in matching {
            buckets[r].take();
        }
        Decision::Allow
    }
}

fn benches(c: &mut Criterion) {
    let cases = [
        ("hot_5k", stream(5_000, false)),
        ("uniform_100k", stream(100_000, false)),
        ("zipf_100k", stream(100_000, true)),
    ];
    let matching: [&[usize]; 2] = [&[0], &[0, 1]];
    for (name, keys) in &cases {
        let mut limiter = Limiter::new(rule_set(), DEFAULT_CAPACITY, 0x5eed);
        // Warm up (fills the limiter and grows its storage), then count.
        for (i, k) in keys.iter().enumerate() {
            limiter.check(k, matching[i & 1], i as u64 * 1_000);
        }
        let before = ALLOCS.load(Ordering::Relaxed);
        for (i, k) in keys.iter().enumerate() {
            limiter.check(k, matching[i & 1], (STREAM + i) as u64 * 1_000);
        }
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        println!(
            "ratelimit/per_core/{name}: {allocs} allocations in {STREAM} checks after warm-up"
        );
    }
    let mut g = c.benchmark_group("ratelimit");
    for (name, keys) in &cases {
        let mut limiter = Limiter::new(rule_set(), DEFAULT_CAPACITY, 0x5eed);
        let (mut i, mut now) = (0usize, 0u64);
        g.bench_function(format!("per_core/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) & (STREAM - 1);
                now += 1_000;
                black_box(limiter.check(&keys[i], matching[i & 1], now))
            })
        });
        let baseline = Baseline {
            rules: RULES
                .iter()
                .map(|(req, per, burst)| Rule::new(*req, *per, *burst).unwrap())
                .collect(),
            inner: Mutex::new((HashMap::new(), VecDeque::new(), 0)),
            capacity: DEFAULT_CAPACITY,
        };
        let (mut i, mut now) = (0usize, 0u64);
        g.bench_function(format!("mutex_hashmap/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) & (STREAM - 1);
                now += 1_000;
                black_box(baseline.check(&keys[i], matching[i & 1], now))
            })
        });
    }
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
