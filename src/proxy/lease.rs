//! Fleet-wide limits on the owner core (`ratelimitbackend: redis`): the leases this core holds
//! for the keys it owns, per limiter (route, and challenge minting), and the round trips to the
//! fleet thread when a lease is empty (the request waits for it) or low (in the background).
//! A request whose lease round trip gets no answer (Redis down, queue full, timeout) is decided
//! by the per-instance limiter instead, so an outage degrades to per-instance limits.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::config::RateLimitRule;
use crate::fleet::{BucketAsk, FleetHandle};
use crate::ratelimit::{self, Answer, ClientKey, Decision, LeaseTable, Plan};

/// One rule as the shared bucket sees it.
#[derive(Debug)]
struct SharedRule {
    /// The Redis key up to the client part: `<prefix>rl:<scope>:<rule fingerprint>:`.
    key_head: String,
    rate: f64,
    burst: u32,
}

/// One limiter's leases and rules.
struct FleetLimiter {
    table: LeaseTable,
    rules: Rc<[SharedRule]>,
    slices: Box<[u32]>,
}

/// A request waiting for a lease.
pub struct PendingAsk {
    limiter: usize,
    key: ClientKey,
    need: Vec<usize>,
    reserved: Vec<usize>,
    now_ns: u64,
    generation: u64,
    answer: futures_channel::oneshot::Receiver<Option<Answer>>,
}

/// What the leases say about one request.
pub enum Leased {
    /// Decided from the leases.
    Decided(Decision),
    /// Waiting for a lease round trip: see [`FleetLimits::settle`].
    Pending(PendingAsk),
    /// No fleet answer possible now: decide per instance.
    Local,
}

/// The leases of one core. Shared (`Rc`) with the background top-up tasks.
pub struct FleetLimits {
    handle: FleetHandle,
    limiters: RefCell<Vec<FleetLimiter>>,
    challenges: RefCell<FleetLimiter>,
    /// Bumped on reload, so an answer for the previous routes is not applied to the new ones.
    generation: Cell<u64>,
    seed: u64,
}

/// The limiter index of challenge minting (same as `limit::CHALLENGES`).
const CHALLENGES: usize = usize::MAX;

impl FleetLimits {
    /// Leases for every route of `routes` (no tokens held yet).
    pub fn new(handle: FleetHandle, routes: &super::Routes, seed: u64) -> Self {
        let challenges = limiter(&handle, "challenge", &routes.challenge_rate_limits, seed);
        let this = Self {
            handle,
            limiters: RefCell::new(Vec::new()),
            challenges: RefCell::new(challenges),
            generation: Cell::new(0),
            seed,
        };
        this.reload(routes);
        this
    }

    /// Takes a new routing snapshot. Leases held are dropped (at most one slice per rule and
    /// client: the client is under-served by that much, never over).
    pub fn reload(&self, routes: &super::Routes) {
        let limiters = routes
            .routes
            .iter()
            .map(|r| {
                let scope = format!("svc:{}", r.service.name);
                limiter(&self.handle, &scope, &r.service.rate_limits, self.seed)
            })
            .collect();
        *self.limiters.borrow_mut() = limiters;
        *self.challenges.borrow_mut() = limiter(
            &self.handle,
            "challenge",
            &routes.challenge_rate_limits,
            self.seed,
        );
        self.generation.set(self.generation.get() + 1);
    }

    /// Plans one request from `key` on `limiter` under the matching `rules`.
    pub fn plan(
        self: &Rc<Self>,
        limiter: usize,
        key: &ClientKey,
        rules: &[usize],
        now_ns: u64,
    ) -> Leased {
        if !self.handle.is_up() {
            return Leased::Local;
        }
        let (plan, asks) = {
            let mut all = self.limiters.borrow_mut();
            let mut ch = self.challenges.borrow_mut();
            let Some(l) = (if limiter == CHALLENGES {
                Some(&mut *ch)
            } else {
                all.get_mut(limiter)
            }) else {
                return Leased::Decided(Decision::Allow);
            };
            let plan = l.table.plan(key, rules, &l.slices, now_ns);
            let asks = match &plan {
                Plan::Local { refill, .. } if !refill.is_empty() => refill
                    .iter()
                    .map(|&r| ask(l, key, r, false, l.table.top_up(key, r, l.slices[r])))
                    .collect(),
                Plan::Ask { need, .. } => need
                    .iter()
                    .map(|&r| ask(l, key, r, true, l.slices[r]))
                    .collect(),
                Plan::Local { .. } => Vec::new(),
            };
            (plan, asks)
        };
        match plan {
            Plan::Local { decision, refill } => {
                if !refill.is_empty() {
                    self.top_up(limiter, *key, refill, asks);
                }
                Leased::Decided(decision)
            }
            Plan::Ask { need, reserved } => match self.handle.lease(asks) {
                Some(answer) => Leased::Pending(PendingAsk {
                    limiter,
                    key: *key,
                    need,
                    reserved,
                    now_ns,
                    generation: self.generation.get(),
                    answer,
                }),
                None => {
                    self.with(limiter, |t| t.settle(key, &need, &reserved, None, now_ns));
                    Leased::Local
                }
            },
        }
    }

    /// Waits for a pending lease (at most the fleet's wait) and decides; `None`: no answer,
    /// decide per instance.
    pub async fn settle(&self, ask: PendingAsk) -> Option<Decision> {
        let answer = monoio::time::timeout(self.handle.wait(), ask.answer)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        if ask.generation != self.generation.get() {
            // The routes changed while it waited: the answer is for rules that may be gone.
            return answer.map(|a| match a {
                Answer::Granted(_) => Decision::Allow,
                Answer::Denied(w) => Decision::Deny {
                    retry_after_secs: ratelimit::retry_after_secs(w.into_iter().max().unwrap_or(0)),
                },
            });
        }
        self.with(ask.limiter, |t| {
            t.settle(
                &ask.key,
                &ask.need,
                &ask.reserved,
                answer.as_ref(),
                ask.now_ns,
            )
        })
        .flatten()
    }

    /// Tops up low leases in the background: the request that noticed does not wait.
    fn top_up(
        self: &Rc<Self>,
        limiter: usize,
        key: ClientKey,
        rules: Vec<usize>,
        asks: Vec<BucketAsk>,
    ) {
        let Some(answer) = self.handle.lease(asks) else {
            self.with(limiter, |t| t.refilled(&key, &rules, None));
            return;
        };
        let (this, generation) = (self.clone(), self.generation.get());
        monoio::spawn(async move {
            let got = monoio::time::timeout(this.handle.wait(), answer)
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
            if generation == this.generation.get() {
                this.with(limiter, |t| t.refilled(&key, &rules, got.as_ref()));
            }
        });
    }

    fn with<T>(&self, limiter: usize, f: impl FnOnce(&mut LeaseTable) -> T) -> Option<T> {
        if limiter == CHALLENGES {
            return Some(f(&mut self.challenges.borrow_mut().table));
        }
        self.limiters
            .borrow_mut()
            .get_mut(limiter)
            .map(|l| f(&mut l.table))
    }
}

/// The ask for rule `r` of `key`.
fn ask(l: &FleetLimiter, key: &ClientKey, r: usize, need: bool, want: u32) -> BucketAsk {
    let rule = &l.rules[r];
    BucketAsk {
        key: format!("{}{key}", rule.key_head),
        rate: rule.rate,
        burst: rule.burst,
        need,
        want,
    }
}

fn limiter(handle: &FleetHandle, scope: &str, rules: &[RateLimitRule], seed: u64) -> FleetLimiter {
    let shared: Vec<SharedRule> = rules
        .iter()
        .map(|rule| SharedRule {
            key_head: format!("{}rl:{scope}:{}:", handle.prefix(), fingerprint(rule)),
            rate: f64::from(rule.requests) / rule.per.as_secs_f64(),
            burst: rule.burst,
        })
        .collect();
    FleetLimiter {
        table: LeaseTable::new(rules.len(), ratelimit::DEFAULT_CAPACITY, seed),
        slices: rules
            .iter()
            .map(|r| ratelimit::slice_for(r.burst))
            .collect(),
        rules: shared.into(),
    }
}

/// A rule's identity in Redis: the same rule (path, rate, burst) on every instance shares one
/// bucket per client; a changed rule starts a fresh one.
fn fingerprint(rule: &RateLimitRule) -> String {
    let regex = rule.path_regexp.as_ref().map_or("", |r| r.as_str());
    let text = format!(
        "{regex}|{}|{}|{}",
        rule.requests,
        rule.per.as_nanos(),
        rule.burst
    );
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}
