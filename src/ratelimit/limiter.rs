//! The per-service, per-core limiter: client key -> one bucket per rule, in a bounded LRU.
//! Storage is a slab of nodes (intrusive doubly linked recency list) plus one flat bucket array
//! (`slot * rules + rule`), so a check on a known key hashes once and allocates nothing, and a
//! new key reuses an evicted slot once the limiter is full.
//!
//! Eviction (when full and a new key arrives): among the [`EVICT_SCAN`] least recently used
//! keys, the least recent one whose buckets are all full at `now` (indistinguishable from a new
//! client, so forgetting it changes no decision); if none is, the least recently used key. Each
//! slot carries the instant its buckets are all full again, refreshed on every check, so the
//! scan reads one 16-byte record per candidate rather than the buckets.

use std::collections::HashMap;

use super::bucket::{retry_after_secs, Bucket, Rule};
use super::hash::SeededState;
use super::{ClientKey, Decision, RateLimitError};

/// Go aperture's LRU size: keys per service (here: per service per core).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// How many least-recently-used keys eviction inspects for one whose buckets are all full
/// (forgetting those loses nothing). Bounded so a full limiter stays O(1) per new key.
pub(super) const EVICT_SCAN: usize = 16;

const NIL: u32 = u32::MAX;

/// A service's rules, in config order. The index is the rule's identity inside a limiter (two
/// rules with the same regex are two buckets); the identity string, e.g. the regex text plus
/// the numbers, only matters to [`Limiter::reconfigure`].
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    identities: Vec<String>,
}

impl RuleSet {
    /// No rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a rule: `requests` per `per_ns` nanoseconds, capacity `burst`. Returns its index.
    pub fn push(
        &mut self,
        identity: impl Into<String>,
        requests: u32,
        per_ns: u64,
        burst: u32,
    ) -> Result<usize, RateLimitError> {
        self.rules.push(Rule::new(requests, per_ns, burst)?);
        self.identities.push(identity.into());
        Ok(self.rules.len() - 1)
    }

    /// How many rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rule `i`.
    pub fn rule(&self, i: usize) -> Option<&Rule> {
        self.rules.get(i)
    }

    /// The identity of rule `i`.
    pub fn identity(&self, i: usize) -> Option<&str> {
        self.identities.get(i).map(String::as_str)
    }
}

/// Recency links and the eviction hint of one slot, kept apart from the key and buckets so the
/// eviction scan reads one small record per candidate.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// Towards the most recently used end.
    prev: u32,
    /// Towards the least recently used end.
    next: u32,
    /// When every bucket of this slot is full again (max of [`Bucket::full_at`]).
    full_at: f64,
}

/// One service's buckets on one core. Not `Sync` by design: each core owns its own.
#[derive(Debug)]
pub struct Limiter {
    rules: RuleSet,
    map: HashMap<ClientKey, u32, SeededState>,
    /// The key of each slot.
    keys: Vec<ClientKey>,
    nodes: Vec<Node>,
    /// `nodes.len() * rules.len()` buckets; node `s` owns `s * rules.len()..`.
    buckets: Vec<Bucket>,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
    capacity: usize,
    evictions: u64,
}

impl Limiter {
    /// A limiter holding at most `capacity` keys (at least 1; [`DEFAULT_CAPACITY`] matches Go).
    /// `seed` keys the map hasher; pass something random per process.
    pub fn new(rules: RuleSet, capacity: usize, seed: u64) -> Self {
        Self {
            rules,
            map: HashMap::with_hasher(SeededState::new(seed)),
            keys: Vec::new(),
            nodes: Vec::new(),
            buckets: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity: capacity.clamp(1, NIL as usize - 1),
            evictions: 0,
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Keys held now (`aperture_ratelimit_cache_size`).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The most keys held at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keys evicted so far (`aperture_ratelimit_evictions_total`).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Checks one request from `key` against the rules at `matching_rules` (indices into the
    /// rule set whose path predicate matched; each at most once; out-of-range ones are ignored).
    ///
    /// Reservation semantics: every matching bucket is refilled to `now_ns`; if each holds a
    /// token, one is taken from each and the request is allowed; otherwise nothing is taken and
    /// the answer carries the longest wait, rounded up to whole seconds (at least 1). No
    /// matching rule allows without creating any state.
    pub fn check(&mut self, key: &ClientKey, matching_rules: &[usize], now_ns: u64) -> Decision {
        let n = self.rules.len();
        if !matching_rules.iter().any(|&r| r < n) {
            return Decision::Allow;
        }
        let slot = self.slot_for(key, now_ns) as usize;
        let buckets = &mut self.buckets[slot * n..(slot + 1) * n];
        let mut wait = 0u64;
        for &r in matching_rules {
            if let (Some(b), Some(rule)) = (buckets.get_mut(r), self.rules.rules.get(r)) {
                b.refill(rule, now_ns);
                wait = wait.max(b.wait_ns(rule));
            }
        }
        if wait == 0 {
            for &r in matching_rules {
                if let Some(b) = buckets.get_mut(r) {
                    b.take();
                }
            }
        }
        // Refills and takes move the full-again time; keep the eviction hint exact.
        self.nodes[slot].full_at = full_at(buckets, &self.rules.rules);
        if wait > 0 {
            return Decision::Deny {
                retry_after_secs: retry_after_secs(wait),
            };
        }
        Decision::Allow
    }

    /// The buckets held for `key` (one per rule), without touching recency. For tests/metrics.
    pub fn buckets(&self, key: &ClientKey) -> Option<&[Bucket]> {
        let n = self.rules.len();
        let s = *self.map.get(key)? as usize;
        self.buckets.get(s * n..(s + 1) * n)
    }

    /// Keys from most to least recently used.
    pub fn keys_by_recency(&self) -> impl Iterator<Item = &ClientKey> + '_ {
        let mut at = self.head;
        std::iter::from_fn(move || {
            let node = self.nodes.get(at as usize)?;
            let key = &self.keys[at as usize];
            at = node.next;
            Some(key)
        })
    }

    /// Swaps in new rules, keeping the buckets of every rule whose identity string also appears
    /// in `rules` (duplicates pair up in order); other rules start full. Keys and recency stay.
    /// Allocates; meant for reloads, not the request path.
    pub fn reconfigure(&mut self, rules: RuleSet) {
        let old_n = self.rules.len();
        let mut used = vec![false; old_n];
        let origin: Vec<Option<usize>> = rules
            .identities
            .iter()
            .map(|id| {
                let i = (0..old_n).find(|&i| !used[i] && self.rules.identities[i] == *id)?;
                used[i] = true;
                Some(i)
            })
            .collect();
        let mut buckets = Vec::with_capacity(self.nodes.len() * rules.len());
        for s in 0..self.nodes.len() {
            for (j, from) in origin.iter().enumerate() {
                buckets.push(match from {
                    Some(i) => self.buckets[s * old_n + i],
                    None => Bucket::full(&rules.rules[j], 0),
                });
            }
        }
        self.buckets = buckets;
        self.rules = rules;
        let n = self.rules.len();
        for (s, node) in self.nodes.iter_mut().enumerate() {
            node.full_at = full_at(&self.buckets[s * n..(s + 1) * n], &self.rules.rules);
        }
    }

    /// The slot of `key`, now the most recently used; created (full buckets) when absent.
    #[inline]
    fn slot_for(&mut self, key: &ClientKey, now_ns: u64) -> u32 {
        if let Some(&s) = self.map.get(key) {
            if self.head != s {
                self.unlink(s);
                self.push_front(s);
            }
            return s;
        }
        let n = self.rules.len();
        let s = if self.nodes.len() < self.capacity {
            let s = self.nodes.len() as u32;
            self.keys.push(*key);
            self.nodes.push(Node {
                prev: NIL,
                next: NIL,
                full_at: now_ns as f64,
            });
            self.buckets
                .extend(self.rules.rules.iter().map(|r| Bucket::full(r, now_ns)));
            s
        } else {
            let s = self.victim(now_ns);
            self.unlink(s);
            self.map.remove(&self.keys[s as usize]);
            self.evictions += 1;
            self.keys[s as usize] = *key;
            self.nodes[s as usize].full_at = now_ns as f64;
            let base = s as usize * n;
            for (b, r) in self.buckets[base..base + n]
                .iter_mut()
                .zip(&self.rules.rules)
            {
                *b = Bucket::full(r, now_ns);
            }
            s
        };
        self.push_front(s);
        self.map.insert(*key, s);
        s
    }

    /// The slot to evict: the least recently used of the last [`EVICT_SCAN`] keys whose buckets
    /// are all full at `now_ns`, else the least recently used key. Only called when full.
    fn victim(&self, now_ns: u64) -> u32 {
        let mut at = self.tail;
        for _ in 0..EVICT_SCAN {
            let Some(node) = self.nodes.get(at as usize) else {
                break;
            };
            if now_ns as f64 >= node.full_at {
                return at;
            }
            at = node.prev;
        }
        self.tail
    }

    fn unlink(&mut self, s: u32) {
        let Node { prev, next, .. } = self.nodes[s as usize];
        match self.nodes.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.nodes.get_mut(next as usize) {
            Some(nx) => nx.prev = prev,
            None => self.tail = prev,
        }
    }

    fn push_front(&mut self, s: u32) {
        let old = self.head;
        self.nodes[s as usize].prev = NIL;
        self.nodes[s as usize].next = old;
        match self.nodes.get_mut(old as usize) {
            Some(h) => h.prev = s,
            None => self.tail = s,
        }
        self.head = s;
    }
}

/// When every one of a slot's buckets is full again.
#[inline]
fn full_at(buckets: &[Bucket], rules: &[Rule]) -> f64 {
    buckets
        .iter()
        .zip(rules)
        .map(|(b, r)| b.full_at(r))
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    const SEC: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn key(n: u8) -> ClientKey {
        ClientKey::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, n, 0)))
    }

    fn rules(spec: &[(u32, u64, u32)]) -> RuleSet {
        let mut rs = RuleSet::new();
        for (i, &(req, per, burst)) in spec.iter().enumerate() {
            rs.push(format!("rule{i}"), req, per, burst).unwrap();
        }
        rs
    }

    fn deny(secs: u64) -> Decision {
        Decision::Deny {
            retry_after_secs: secs,
        }
    }

    #[test]
    fn burst_then_refill() {
        let mut l = Limiter::new(rules(&[(3, SEC, 3)]), DEFAULT_CAPACITY, 1);
        for _ in 0..3 {
            assert_eq!(l.check(&key(1), &[0], 0), Decision::Allow);
        }
        assert_eq!(l.check(&key(1), &[0], 0), deny(1));
        assert_eq!(l.check(&key(1), &[0], SEC / 3 - 1), deny(1));
        assert_eq!(l.check(&key(1), &[0], SEC / 3 + 1), Decision::Allow);
        // Another key is independent.
        assert_eq!(l.check(&key(2), &[0], 0), Decision::Allow);
    }

    #[test]
    fn worked_example_five_per_minute() {
        // The sample config: global 100/s burst 100, then ^/api/v1/expensive.*$ 5/min burst 5.
        let mut l = Limiter::new(rules(&[(100, SEC, 100), (5, 60 * SEC, 5)]), 10, 7);
        for i in 0..5 {
            assert_eq!(l.check(&key(1), &[0, 1], i * MS), Decision::Allow);
        }
        assert_eq!(l.check(&key(1), &[0, 1], 5 * MS), deny(12));
        // The global token of the denied request was refunded: 95 left plus what 5 ms earned.
        let global = l.buckets(&key(1)).unwrap()[0].tokens();
        assert!((global - 95.5).abs() < 1e-9, "{global}");
        // Other paths only use the global bucket.
        assert_eq!(l.check(&key(1), &[0], 6 * MS), Decision::Allow);
    }

    #[test]
    fn denied_request_consumes_nothing() {
        let mut l = Limiter::new(rules(&[(1, 60 * SEC, 1), (1, 60 * SEC, 2)]), 10, 0);
        assert_eq!(l.check(&key(1), &[0], 0), Decision::Allow);
        for _ in 0..5 {
            assert_eq!(l.check(&key(1), &[0, 1], 0), deny(60));
        }
        assert_eq!(l.buckets(&key(1)).unwrap()[1].tokens(), 2.0);
        assert_eq!(l.check(&key(1), &[1], 0), Decision::Allow);
        assert_eq!(l.check(&key(1), &[1], 0), Decision::Allow);
        assert_eq!(l.check(&key(1), &[1], 0), deny(60));
    }

    #[test]
    fn largest_wait_wins() {
        let mut l = Limiter::new(rules(&[(1, 2 * SEC, 1), (1, 30 * SEC, 1)]), 10, 0);
        assert_eq!(l.check(&key(1), &[0, 1], 0), Decision::Allow);
        assert_eq!(l.check(&key(1), &[0, 1], SEC / 2), deny(30));
        assert_eq!(l.check(&key(1), &[0], SEC / 2), deny(2));
    }

    #[test]
    fn same_regex_rules_are_separate_buckets() {
        let mut rs = RuleSet::new();
        rs.push("^/a$ 1/1s burst 2", 1, SEC, 2).unwrap();
        rs.push("^/a$ 1/1s burst 1", 1, SEC, 1).unwrap();
        let mut l = Limiter::new(rs, 10, 0);
        assert_eq!(l.check(&key(1), &[0, 1], 0), Decision::Allow);
        assert_eq!(l.check(&key(1), &[0, 1], 0), deny(1));
        let b = l.buckets(&key(1)).unwrap();
        assert_eq!((b[0].tokens(), b[1].tokens()), (1.0, 0.0));
    }

    #[test]
    fn no_matching_rule_allows_without_state() {
        let mut l = Limiter::new(rules(&[(1, SEC, 1)]), 10, 0);
        assert_eq!(l.check(&key(1), &[], 0), Decision::Allow);
        assert_eq!(l.check(&key(1), &[5, 9], 0), Decision::Allow);
        assert!(l.is_empty());
        let mut none = Limiter::new(RuleSet::new(), 10, 0);
        assert_eq!(none.check(&key(1), &[0], 0), Decision::Allow);
    }

    #[test]
    fn lru_evicts_least_recent_when_none_is_full() {
        let mut l = Limiter::new(rules(&[(1, 3600 * SEC, 5)]), 3, 0);
        for k in 1..=3 {
            assert_eq!(l.check(&key(k), &[0], 0), Decision::Allow);
        }
        l.check(&key(1), &[0], MS); // 1 is now the most recent; 2 the least
        l.check(&key(4), &[0], 2 * MS);
        let order: Vec<ClientKey> = l.keys_by_recency().copied().collect();
        assert_eq!(order, vec![key(4), key(1), key(3)]);
        assert_eq!((l.len(), l.evictions()), (3, 1));
        // 2 comes back with a full bucket (eviction resets a client).
        l.check(&key(2), &[0], 3 * MS);
        assert_eq!(l.buckets(&key(2)).unwrap()[0].tokens(), 4.0);
        assert!(l.buckets(&key(3)).is_none());
    }

    #[test]
    fn lru_evicts_full_keys_first() {
        // Rule 0 refills slowly, rule 1 in 1 ms. Key 2 only uses rule 1, so it is full again
        // soon, and is evicted although key 1 is older.
        let mut l = Limiter::new(rules(&[(1, 3600 * SEC, 5), (1000, SEC, 1)]), 3, 0);
        l.check(&key(1), &[0], 0);
        l.check(&key(2), &[1], 0);
        l.check(&key(3), &[0], 0);
        l.check(&key(4), &[0], 10 * MS);
        let order: Vec<ClientKey> = l.keys_by_recency().copied().collect();
        assert_eq!(order, vec![key(4), key(3), key(1)]);
        assert_eq!(l.evictions(), 1);
    }

    #[test]
    fn reconfigure_keeps_unchanged_rules() {
        let mut l = Limiter::new(rules(&[(1, 60 * SEC, 3), (1, 60 * SEC, 3)]), 10, 0);
        l.check(&key(1), &[0, 1], 0);
        l.check(&key(1), &[0], 0);
        let mut next = RuleSet::new();
        next.push("new", 1, 60 * SEC, 3).unwrap();
        next.push("rule0", 1, 60 * SEC, 3).unwrap();
        l.reconfigure(next);
        let b = l.buckets(&key(1)).unwrap();
        assert_eq!((b[0].tokens(), b[1].tokens()), (3.0, 1.0));
        assert_eq!(l.check(&key(1), &[1], 0), Decision::Allow);
        assert_eq!(l.check(&key(1), &[1], 0), deny(60));
        assert_eq!(l.check(&key(1), &[0], 0), Decision::Allow);
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let mut l = Limiter::new(rules(&[(1, SEC, 1)]), 10, 0);
        assert_eq!(l.check(&key(1), &[0], 10 * SEC), Decision::Allow);
        assert_eq!(l.check(&key(1), &[0], 0), deny(1));
        assert_eq!(l.check(&key(1), &[0], SEC), Decision::Allow);
    }

    #[test]
    fn token_and_ip_keys_do_not_collide() {
        let mut l = Limiter::new(rules(&[(1, SEC, 1)]), 10, 0);
        assert_eq!(
            l.check(&ClientKey::Token([0; 32]), &[0], 0),
            Decision::Allow
        );
        assert_eq!(l.check(&key(0), &[0], 0), Decision::Allow);
        assert_eq!(l.len(), 2);
    }
}
