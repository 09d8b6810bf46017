//! Seeded property test: [`Limiter`] against a naive reference model (a recency-ordered `Vec`
//! scanned linearly) over random sequences of keys, rule subsets and clock steps.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::{IpAddr, Ipv4Addr};

use super::bucket::{retry_after_secs, Bucket, Rule};
use super::limiter::EVICT_SCAN;
use super::{ClientKey, Decision, Limiter, RuleSet};

/// Index 0 is the most recently used key.
struct Model {
    rules: Vec<Rule>,
    entries: Vec<(ClientKey, Vec<Bucket>)>,
    capacity: usize,
}

impl Model {
    fn check(&mut self, key: &ClientKey, matching: &[usize], now: u64) -> Decision {
        let matching: Vec<usize> = matching
            .iter()
            .copied()
            .filter(|&r| r < self.rules.len())
            .collect();
        if matching.is_empty() {
            return Decision::Allow;
        }
        let entry = match self.entries.iter().position(|(k, _)| k == key) {
            Some(i) => self.entries.remove(i),
            None => {
                if self.entries.len() == self.capacity {
                    let victim = self.victim(now);
                    self.entries.remove(victim);
                }
                let fresh = self.rules.iter().map(|r| Bucket::full(r, now)).collect();
                (*key, fresh)
            }
        };
        self.entries.insert(0, entry);
        let buckets = &mut self.entries[0].1;
        for &r in &matching {
            buckets[r].refill(&self.rules[r], now);
        }
        let wait = matching
            .iter()
            .map(|&r| buckets[r].wait_ns(&self.rules[r]))
            .max()
            .unwrap_or(0);
        if wait > 0 {
            return Decision::Deny {
                retry_after_secs: retry_after_secs(wait),
            };
        }
        for &r in &matching {
            buckets[r].take();
        }
        Decision::Allow
    }

    fn victim(&self, now: u64) -> usize {
        let last = self.entries.len() - 1;
        (0..EVICT_SCAN.min(self.entries.len()))
            .map(|back| last - back)
            .find(|&i| {
                let bs = &self.entries[i].1;
                bs.iter()
                    .zip(&self.rules)
                    .all(|(b, r)| b.is_full_at(r, now))
            })
            .unwrap_or(last)
    }
}

fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rs = RuleSet::new();
    let mut rules = Vec::new();
    for i in 0..rng.gen_range(1..=4) {
        let (req, per, burst) = (
            rng.gen_range(1..=20),
            rng.gen_range(1..=5_000u64) * 1_000_000,
            rng.gen_range(0..=6),
        );
        rs.push(format!("r{i}"), req, per, burst).unwrap();
        rules.push(Rule::new(req, per, burst).unwrap());
    }
    let nrules = rules.len();
    let capacity = rng.gen_range(1..=24);
    let mut limiter = Limiter::new(rs, capacity, seed);
    let mut model = Model {
        rules,
        entries: Vec::new(),
        capacity,
    };
    let pool = rng.gen_range(1..=40u8);
    let mut now = rng.gen_range(0..1_000_000_000u64);
    for step in 0..3000 {
        let key = if rng.gen_bool(0.1) {
            ClientKey::Token([rng.gen_range(0..pool); 32])
        } else {
            ClientKey::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, rng.gen_range(0..pool), 0)))
        };
        let matching: Vec<usize> = (0..nrules + 1).filter(|_| rng.gen_bool(0.5)).collect();
        now = match rng.gen_range(0..10) {
            0 => now.saturating_sub(rng.gen_range(0..50_000_000)),
            1..=5 => now,
            _ => now + rng.gen_range(0..400_000_000),
        };
        let got = limiter.check(&key, &matching, now);
        let want = model.check(&key, &matching, now);
        assert_eq!(
            got, want,
            "seed {seed} step {step} key {key} rules {matching:?}"
        );
        let order: Vec<ClientKey> = limiter.keys_by_recency().copied().collect();
        let model_order: Vec<ClientKey> = model.entries.iter().map(|(k, _)| *k).collect();
        assert_eq!(order, model_order, "seed {seed} step {step}");
        for (k, bs) in &model.entries {
            assert_eq!(limiter.buckets(k), Some(&bs[..]), "seed {seed} step {step}");
        }
    }
}

#[test]
fn limiter_matches_reference_model() {
    for seed in 0..64 {
        run(seed);
    }
}
