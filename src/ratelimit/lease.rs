//! Fleet-wide limits, the owner core's side (pure): the tokens a core holds on lease from the
//! fleet's shared buckets, and the plan for one request. A core spends its leases locally; only
//! when a matching rule has none left does the request need the shared bucket (a lease round
//! trip, made by the caller). A lease is a *slice* of the bucket: [`slice_for`] tokens, taken
//! out of the shared bucket when granted, so every token a core spends was granted to it once,
//! and a client passes no more often than the shared bucket allows plus what cores hold unspent
//! (at most one slice per rule per instance: the exactness bound).
//!
//! A denial from the shared bucket is remembered until the wait it named has passed, so a client
//! hammering a denied rule costs no round trips. No I/O, no clock: `now` is passed in.

use std::collections::HashMap;

use super::hash::SeededState;
use super::{retry_after_secs, ClientKey, Decision};

/// The largest slice: a core holds at most this many tokens of one rule for one client.
pub const MAX_SLICE: u32 = 1024;

/// The lease size of a rule with capacity `burst`: 1/32 of the burst, 1 to [`MAX_SLICE`]. Rules
/// with a burst under 64 get slice 1, which no core ever holds (the request that asked spends
/// it), so they are exact fleet-wide; larger ones let a core answer most requests alone.
pub fn slice_for(burst: u32) -> u32 {
    (burst / 32).clamp(1, MAX_SLICE)
}

/// One rule's lease for one client on this core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// Tokens granted to this core and not yet spent.
    pub held: u32,
    /// The shared bucket said "no token before this instant" (ns; 0: no denial known).
    pub denied_until_ns: u64,
    /// A top-up for this rule is in flight.
    pub refilling: bool,
}

/// What a request needs after looking at this core's leases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Decided here: allowed from local leases (tokens taken), or denied by a remembered denial.
    /// `refill` lists rules whose lease ran low: top them up in the background.
    Local {
        /// The answer.
        decision: Decision,
        /// Rules to top up (their `refilling` flag is now set).
        refill: Vec<usize>,
    },
    /// Some matching rule holds nothing: ask the shared buckets of `need` for one token each
    /// (and a slice while at it). The `reserved` rules' tokens were taken locally already; hand
    /// the answer to [`LeaseTable::settle`].
    Ask {
        /// Rules that hold nothing here.
        need: Vec<usize>,
        /// Rules whose token was taken from the local lease.
        reserved: Vec<usize>,
    },
}

/// The shared buckets' answer to an [`Plan::Ask`] or a top-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Tokens granted, one count per asked rule (in the order asked).
    Granted(Vec<u32>),
    /// Nothing taken; for each asked rule, how long until it has a token (ns; 0: it has one).
    Denied(Vec<u64>),
}

/// The leases this core holds for the clients it owns, for one service's rules. Bounded: past
/// `capacity` clients an arbitrary one is forgotten (its unspent tokens are lost, which only
/// ever under-serves that client).
#[derive(Debug)]
pub struct LeaseTable {
    rules: usize,
    capacity: usize,
    map: HashMap<ClientKey, Box<[Lease]>, SeededState>,
}

impl LeaseTable {
    /// A table for `rules` rules holding at most `capacity` clients.
    pub fn new(rules: usize, capacity: usize, seed: u64) -> Self {
        Self {
            rules,
            capacity: capacity.max(1),
            map: HashMap::with_hasher(SeededState::new(seed)),
        }
    }

    /// Clients held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no client is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The leases of `key`, for tests and metrics.
    pub fn leases(&self, key: &ClientKey) -> Option<&[Lease]> {
        self.map.get(key).map(|l| &l[..])
    }

    /// Plans one request from `key` under the rules at `matching` (indices below the rule
    /// count; others are ignored). `slices[r]` is rule `r`'s slice.
    pub fn plan(&mut self, key: &ClientKey, matching: &[usize], slices: &[u32], now: u64) -> Plan {
        let n = self.rules;
        let leases = self.entry(key);
        let mut wait = 0u64;
        for &r in matching.iter().filter(|&&r| r < n) {
            wait = wait.max(leases[r].denied_until_ns.saturating_sub(now));
        }
        if wait > 0 {
            let decision = Decision::Deny {
                retry_after_secs: retry_after_secs(wait),
            };
            return Plan::Local {
                decision,
                refill: Vec::new(),
            };
        }
        // The common case, without allocating: every matching rule holds a token.
        if matching.iter().all(|&r| r >= n || leases[r].held > 0) {
            let mut refill = Vec::new();
            for &r in matching.iter().filter(|&&r| r < n) {
                let slice = slices.get(r).copied().unwrap_or(1);
                let lease = &mut leases[r];
                lease.held -= 1;
                if slice > 1 && !lease.refilling && lease.held <= slice / 2 {
                    lease.refilling = true;
                    refill.push(r);
                }
            }
            return Plan::Local {
                decision: Decision::Allow,
                refill,
            };
        }
        let (mut need, mut reserved) = (Vec::new(), Vec::new());
        for &r in matching.iter().filter(|&&r| r < n) {
            if leases[r].held > 0 {
                leases[r].held -= 1;
                reserved.push(r);
            } else {
                need.push(r);
            }
        }
        Plan::Ask { need, reserved }
    }

    /// Applies the answer to a [`Plan::Ask`] made at `now`: granted, the request spends one token
    /// of each needed rule and the rest stays on lease; denied, the reserved tokens go back and
    /// the denial is remembered. `None` (no answer: the shared buckets are unreachable) puts the
    /// reserved tokens back; the caller decides by other means.
    pub fn settle(
        &mut self,
        key: &ClientKey,
        need: &[usize],
        reserved: &[usize],
        answer: Option<&Answer>,
        now: u64,
    ) -> Option<Decision> {
        let leases = self.entry(key);
        let give_back = |leases: &mut [Lease]| {
            for &r in reserved {
                leases[r].held = leases[r].held.saturating_add(1);
            }
        };
        match answer {
            Some(Answer::Granted(grants)) => {
                for (&r, &g) in need.iter().zip(grants) {
                    leases[r].held = leases[r].held.saturating_add(g.saturating_sub(1));
                }
                Some(Decision::Allow)
            }
            Some(Answer::Denied(waits)) => {
                give_back(leases);
                let mut longest = 0;
                for (&r, &w) in need.iter().zip(waits) {
                    if w > 0 {
                        leases[r].denied_until_ns = now.saturating_add(w);
                        longest = longest.max(w);
                    }
                }
                Some(Decision::Deny {
                    retry_after_secs: retry_after_secs(longest),
                })
            }
            None => {
                give_back(leases);
                None
            }
        }
    }

    /// Applies the answer to a top-up of `rules`: grants join the leases (a denial grants
    /// nothing; the next request that finds a lease empty asks for itself).
    pub fn refilled(&mut self, key: &ClientKey, rules: &[usize], answer: Option<&Answer>) {
        let leases = self.entry(key);
        for (i, &r) in rules.iter().enumerate() {
            leases[r].refilling = false;
            if let Some(Answer::Granted(grants)) = answer {
                let g = grants.get(i).copied().unwrap_or(0);
                leases[r].held = leases[r].held.saturating_add(g);
            }
        }
    }

    /// How many tokens of rule `r` a top-up asks for: what brings the lease back to a slice.
    pub fn top_up(&self, key: &ClientKey, r: usize, slice: u32) -> u32 {
        let held = self
            .map
            .get(key)
            .and_then(|l| l.get(r))
            .map_or(0, |l| l.held);
        slice.saturating_sub(held).max(1)
    }

    fn entry(&mut self, key: &ClientKey) -> &mut [Lease] {
        if !self.map.contains_key(key) && self.map.len() >= self.capacity {
            if let Some(victim) = self.map.keys().next().copied() {
                self.map.remove(&victim);
            }
        }
        let n = self.rules;
        self.map
            .entry(*key)
            .or_insert_with(|| vec![Lease::default(); n].into_boxed_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    const SEC: u64 = 1_000_000_000;

    fn key(n: u8) -> ClientKey {
        ClientKey::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, n, 0)))
    }

    fn ask(plan: Plan) -> (Vec<usize>, Vec<usize>) {
        match plan {
            Plan::Ask { need, reserved } => (need, reserved),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn slices() {
        assert_eq!(slice_for(0), 1);
        assert_eq!(slice_for(10), 1);
        assert_eq!(slice_for(63), 1);
        assert_eq!(slice_for(64), 2);
        assert_eq!(slice_for(1000), 31);
        assert_eq!(slice_for(u32::MAX), MAX_SLICE);
    }

    #[test]
    fn slice_one_never_holds_a_token() {
        let mut t = LeaseTable::new(1, 10, 0);
        for _ in 0..3 {
            let (need, reserved) = ask(t.plan(&key(1), &[0], &[1], 0));
            assert_eq!((need.as_slice(), reserved.as_slice()), (&[0][..], &[][..]));
            let d = t.settle(
                &key(1),
                &need,
                &reserved,
                Some(&Answer::Granted(vec![1])),
                0,
            );
            assert_eq!(d, Some(Decision::Allow));
            assert_eq!(t.leases(&key(1)).unwrap()[0].held, 0);
        }
    }

    #[test]
    fn a_slice_is_spent_locally_and_topped_up_at_half() {
        let mut t = LeaseTable::new(1, 10, 0);
        let (need, reserved) = ask(t.plan(&key(1), &[0], &[8], 0));
        t.settle(
            &key(1),
            &need,
            &reserved,
            Some(&Answer::Granted(vec![8])),
            0,
        );
        assert_eq!(t.leases(&key(1)).unwrap()[0].held, 7);
        for held in (4..7).rev() {
            let plan = t.plan(&key(1), &[0], &[8], 0);
            let refill = if held == 4 { vec![0] } else { vec![] };
            assert_eq!(
                plan,
                Plan::Local {
                    decision: Decision::Allow,
                    refill
                }
            );
            assert_eq!(t.leases(&key(1)).unwrap()[0].held, held);
        }
        // In flight: no second top-up.
        assert!(
            matches!(t.plan(&key(1), &[0], &[8], 0), Plan::Local { refill, .. } if refill.is_empty())
        );
        assert_eq!(t.top_up(&key(1), 0, 8), 5);
        t.refilled(&key(1), &[0], Some(&Answer::Granted(vec![5])));
        assert_eq!(
            t.leases(&key(1)).unwrap()[0],
            Lease {
                held: 8,
                denied_until_ns: 0,
                refilling: false
            }
        );
    }

    #[test]
    fn denial_gives_reserved_tokens_back_and_is_remembered() {
        let mut t = LeaseTable::new(2, 10, 0);
        // Rule 0 holds 3; rule 1 holds nothing.
        let (need, reserved) = ask(t.plan(&key(1), &[0], &[4, 1], 0));
        t.settle(
            &key(1),
            &need,
            &reserved,
            Some(&Answer::Granted(vec![4])),
            0,
        );
        let (need, reserved) = ask(t.plan(&key(1), &[0, 1], &[4, 1], 0));
        assert_eq!((need.clone(), reserved.clone()), (vec![1], vec![0]));
        assert_eq!(t.leases(&key(1)).unwrap()[0].held, 2);
        let d = t.settle(
            &key(1),
            &need,
            &reserved,
            Some(&Answer::Denied(vec![12 * SEC])),
            SEC,
        );
        assert_eq!(
            d,
            Some(Decision::Deny {
                retry_after_secs: 12
            })
        );
        assert_eq!(t.leases(&key(1)).unwrap()[0].held, 3);
        // Remembered: denied here with the remaining wait, nothing taken, no round trip.
        let plan = t.plan(&key(1), &[0, 1], &[4, 1], 5 * SEC);
        assert_eq!(
            plan,
            Plan::Local {
                decision: Decision::Deny {
                    retry_after_secs: 8
                },
                refill: vec![]
            }
        );
        assert_eq!(t.leases(&key(1)).unwrap()[0].held, 3);
        // Rule 0 alone is unaffected, and after the wait rule 1 asks again.
        assert!(matches!(
            t.plan(&key(1), &[0], &[4, 1], 5 * SEC),
            Plan::Local {
                decision: Decision::Allow,
                ..
            }
        ));
        assert!(matches!(
            t.plan(&key(1), &[1], &[4, 1], 13 * SEC),
            Plan::Ask { .. }
        ));
    }

    #[test]
    fn no_answer_gives_reserved_tokens_back() {
        let mut t = LeaseTable::new(2, 10, 0);
        let (need, reserved) = ask(t.plan(&key(1), &[0], &[4, 4], 0));
        t.settle(
            &key(1),
            &need,
            &reserved,
            Some(&Answer::Granted(vec![2])),
            0,
        );
        let (need, reserved) = ask(t.plan(&key(1), &[0, 1], &[4, 4], 0));
        assert_eq!(t.settle(&key(1), &need, &reserved, None, 0), None);
        assert_eq!(t.leases(&key(1)).unwrap()[0].held, 1);
        t.refilled(&key(1), &[0], None);
        assert!(!t.leases(&key(1)).unwrap()[0].refilling);
    }

    #[test]
    fn bounded() {
        let mut t = LeaseTable::new(1, 3, 0);
        for k in 0..10 {
            let _ = t.plan(&key(k), &[0], &[1], 0);
            assert!(t.len() <= 3);
        }
        // Out-of-range rules are ignored; no matching rule allows.
        assert!(matches!(
            t.plan(&key(1), &[7], &[1], 0),
            Plan::Local {
                decision: Decision::Allow,
                ..
            }
        ));
    }
}
