//! The rate-limit phase. Every client key is owned by exactly one core
//! (`ratelimit::owner_core`): its buckets live there and nowhere else, so a client gets exactly
//! the configured rate and burst whatever `--cores` is and however many connections it opens.
//! IP-keyed clients are steered to their owner core by the listener group's CBPF program, so
//! their decisions are local; a decision for a key owned by another core (a token used from
//! several addresses, or steering turned off behind a load balancer) is a message to the owner's
//! peer inbox and a reply on a oneshot: no lock is shared between cores.
//!
//! With `ratelimitbackend: redis` the owner core decides from the tokens it holds on lease from
//! the fleet's shared buckets ([`super::lease`]) and falls back to its own buckets only while
//! Redis gives no answer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::config::RateLimitRule;
use crate::error::Synthetic;
use crate::metrics::RuleStats;
use crate::ratelimit::{self, ClientKey, Decision, Limiter, RuleSet};

use super::lease::{FleetLimits, Leased, PendingAsk};
use super::{CoreCtx, Route, Routes};

/// The limiter index of challenge minting (services use their route index).
pub const CHALLENGES: usize = usize::MAX;

/// How long a core waits for the owner core's decision before it lets the request through.
const PEER_WAIT: Duration = Duration::from_secs(1);

/// A question from one core to the core that owns a key.
pub struct PeerCheck {
    /// Route index in the routing snapshot both cores share.
    pub route: usize,
    /// The client.
    pub key: ClientKey,
    /// Indices of the route's rules that match the request path.
    pub rules: Vec<usize>,
    /// When the request arrived (`now_ns`).
    pub now_ns: u64,
    /// Where the decision goes.
    pub reply: oneshot::Sender<Decision>,
}

/// Messages between worker cores.
pub enum PeerMsg {
    /// Decide a rate limit for a key this core owns.
    Check(PeerCheck),
    /// Take one of a client's free requests (`auth: freebie N`); the reply says whether one
    /// was left.
    Freebie {
        /// The service's name (tallies are per service).
        service: String,
        /// The client (masked IP).
        key: ClientKey,
        /// N.
        allowance: u16,
        /// Whether a free request was taken.
        reply: oneshot::Sender<bool>,
    },
    /// Run an operation on a Payment session this core owns.
    Session(super::session::SessionCall),
    /// Reserve or settle a built-in meter bundle this core owns.
    Bundle(super::bundles::BundleCall),
}

/// Free requests tallied per core (for the clients it owns), at most this many clients.
pub const FREEBIE_CAPACITY: usize = 100_000;

/// The limiters of one core: one per route and one for challenge minting, holding the buckets
/// of the keys this core owns.
pub struct CoreLimits {
    limiters: RefCell<Vec<Limiter>>,
    /// The service name of each limiter (to carry buckets across reloads).
    names: RefCell<Vec<String>>,
    challenges: RefCell<Limiter>,
    /// Free requests used, per (service, client). Bounded; like Go aperture's, tallies never
    /// expire, but they survive reloads here.
    freebies: RefCell<HashMap<(String, ClientKey), u16>>,
    /// The leases of the fleet-wide backend (`ratelimitbackend: redis`).
    fleet: Option<Rc<FleetLimits>>,
}

impl CoreLimits {
    /// Limiters for every route of `routes`; with `fleet`, leases of the shared buckets too.
    pub fn new(routes: &Routes, seed: u64, fleet: Option<crate::fleet::FleetHandle>) -> Self {
        let limiters = routes
            .routes
            .iter()
            .map(|route| {
                Limiter::new(
                    rule_set(&route.service.rate_limits),
                    ratelimit::DEFAULT_CAPACITY,
                    seed,
                )
            })
            .collect();
        let challenges = Limiter::new(
            rule_set(&routes.challenge_rate_limits),
            ratelimit::DEFAULT_CAPACITY,
            seed,
        );
        Self {
            limiters: RefCell::new(limiters),
            names: RefCell::new(
                routes
                    .routes
                    .iter()
                    .map(|r| r.service.name.clone())
                    .collect(),
            ),
            challenges: RefCell::new(challenges),
            freebies: RefCell::new(HashMap::new()),
            fleet: fleet.map(|h| Rc::new(FleetLimits::new(h, routes, seed))),
        }
    }

    /// Takes a new routing snapshot: a service's limiter (found by service name) keeps the
    /// buckets of its unchanged rules; new services start empty.
    pub fn reload(&self, routes: &Routes) {
        let mut old: Vec<Option<Limiter>> =
            self.limiters.borrow_mut().drain(..).map(Some).collect();
        let names = self.names.borrow().clone();
        let mut limiters = Vec::with_capacity(routes.routes.len());
        for route in &routes.routes {
            let rules = rule_set(&route.service.rate_limits);
            let reused = names
                .iter()
                .position(|n| *n == route.service.name)
                .and_then(|i| old.get_mut(i).and_then(Option::take));
            limiters.push(match reused {
                Some(mut limiter) => {
                    limiter.reconfigure(rules);
                    limiter
                }
                None => Limiter::new(rules, ratelimit::DEFAULT_CAPACITY, rand::random()),
            });
        }
        *self.limiters.borrow_mut() = limiters;
        *self.names.borrow_mut() = routes
            .routes
            .iter()
            .map(|r| r.service.name.clone())
            .collect();
        self.challenges
            .borrow_mut()
            .reconfigure(rule_set(&routes.challenge_rate_limits));
        if let Some(fleet) = &self.fleet {
            fleet.reload(routes);
        }
    }

    /// Takes one free request for a client this core owns; false when none is left.
    pub fn take_freebie(&self, service: &str, key: ClientKey, allowance: u16) -> bool {
        let mut tallies = self.freebies.borrow_mut();
        let id = (service.to_owned(), key);
        let used = tallies.get(&id).copied().unwrap_or(0);
        if used >= allowance {
            return false;
        }
        if used == 0 && tallies.len() >= FREEBIE_CAPACITY {
            // Forgetting an arbitrary tally hands that client its free requests again: a
            // bounded gift, where an unbounded map would be a memory leak under attack.
            if let Some(victim) = tallies.keys().next().cloned() {
                tallies.remove(&victim);
            }
        }
        tallies.insert(id, used + 1);
        true
    }

    /// Decides for a key this core owns.
    pub fn check_local(
        &self,
        route: usize,
        key: &ClientKey,
        rules: &[usize],
        now_ns: u64,
    ) -> Decision {
        if route == CHALLENGES {
            return self.challenges.borrow_mut().check(key, rules, now_ns);
        }
        match self.limiters.borrow_mut().get_mut(route) {
            Some(limiter) => limiter.check(key, rules, now_ns),
            None => Decision::Allow,
        }
    }

    /// Keys held and keys evicted so far by a route's limiter on this core.
    pub fn occupancy(&self, route: usize) -> Option<(usize, u64)> {
        let limiters = self.limiters.borrow();
        let limiter = limiters.get(route)?;
        Some((limiter.len(), limiter.evictions()))
    }
}

/// A decision for a key this core owns: now, or after a lease round trip.
enum Owned {
    Now(Decision),
    Later(PendingAsk),
}

/// Decides for a key this core owns: from the fleet leases when the fleet backend answers,
/// else from this core's buckets.
fn check_owned(
    core: &CoreCtx,
    route: usize,
    key: &ClientKey,
    rules: &[usize],
    now_ns: u64,
) -> Owned {
    if let Some(fleet) = &core.limits.fleet {
        match fleet.plan(route, key, rules, now_ns) {
            Leased::Decided(decision) => return Owned::Now(decision),
            Leased::Pending(ask) => return Owned::Later(ask),
            Leased::Local => {}
        }
    }
    Owned::Now(check_here(core, route, key, rules, now_ns))
}

/// Waits for a lease round trip; without an answer, decides from this core's buckets.
async fn finish_owned(
    core: &CoreCtx,
    route: usize,
    key: &ClientKey,
    rules: &[usize],
    now_ns: u64,
    ask: PendingAsk,
) -> Decision {
    if let Some(fleet) = &core.limits.fleet {
        if let Some(decision) = fleet.settle(ask).await {
            return decision;
        }
    }
    check_here(core, route, key, rules, now_ns)
}

/// Decides from this core's own buckets, then publishes the route's limiter occupancy to this
/// core's block of the service's counters (Go aperture's cache size and evictions).
fn check_here(
    core: &CoreCtx,
    route: usize,
    key: &ClientKey,
    rules: &[usize],
    now_ns: u64,
) -> Decision {
    let decision = core.limits.check_local(route, key, rules, now_ns);
    if let Some((keys, evictions)) = core.limits.occupancy(route) {
        if let Some(r) = core.routes.borrow().routes.get(route) {
            r.counters(core.id).ratelimit_occupancy(keys, evictions);
        }
    }
    decision
}

fn rule_set(rules: &[RateLimitRule]) -> RuleSet {
    let mut set = RuleSet::new();
    for rule in rules {
        let regex = rule.path_regexp.as_ref().map_or("", |r| r.as_str());
        let identity = format!("{regex}|{}|{:?}|{}", rule.requests, rule.per, rule.burst);
        let per_ns = u64::try_from(rule.per.as_nanos()).unwrap_or(u64::MAX);
        // Config validation already refused zero requests and periods.
        let _ = set.push(identity, rule.requests, per_ns, rule.burst);
    }
    set
}

/// Nanoseconds on a process-wide monotonic clock shared by every core.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Runs the rate-limit phase: `Some(429)` when any matching rule denies.
pub async fn limit(core: &CoreCtx, route: &Route, key: ClientKey, path: &str) -> Option<Synthetic> {
    let rules = (&route.service.rate_limits[..], &route.rule_stats[..]);
    decide(core, route.index, rules, key, path).await
}

/// Limits minting challenges per client IP (`challengeratelimits`): `Some(429)` when denied.
pub async fn limit_challenge(
    core: &CoreCtx,
    peer: std::net::IpAddr,
    path: &str,
) -> Option<Synthetic> {
    let routes = core.routes();
    if routes.challenge_rate_limits.is_empty() {
        return None;
    }
    let rules = (
        &routes.challenge_rate_limits[..],
        &routes.challenge_rule_stats[..],
    );
    decide(core, CHALLENGES, rules, ClientKey::ip(peer), path).await
}

/// Decides for `key` under the rules that match `path`; `rule_cfg` pairs the rules with their
/// counters (in the same order; no counters when the snapshot was never bound).
async fn decide(
    core: &CoreCtx,
    limiter: usize,
    (rule_cfg, stats): (&[RateLimitRule], &[Arc<RuleStats>]),
    key: ClientKey,
    path: &str,
) -> Option<Synthetic> {
    let rules: Vec<usize> = rule_cfg
        .iter()
        .enumerate()
        .filter(|(_, r)| r.path_regexp.as_ref().is_none_or(|re| re.is_match(path)))
        .map(|(i, _)| i)
        .collect();
    if rules.is_empty() {
        return None;
    }
    let now = now_ns();
    let owner = ratelimit::owner_core(&key, core.peers.len());
    let decision = if owner == core.id {
        match check_owned(core, limiter, &key, &rules, now) {
            Owned::Now(decision) => decision,
            // Rare (an empty lease): boxed so the hot future stays small.
            Owned::Later(ask) => {
                Box::pin(finish_owned(core, limiter, &key, &rules, now, ask)).await
            }
        }
    } else {
        // The message owns its rule list; a copy stays here for the counters.
        ask_owner(core, owner, limiter, key, rules.clone(), now).await
    };
    // As Go aperture: every matching rule counts the request, as allowed when all allowed it
    // and as denied when any denied it.
    let allowed = matches!(decision, Decision::Allow);
    for block in rules.iter().filter_map(|&i| stats.get(i)?.core(core.id)) {
        if allowed {
            block.allowed();
        } else {
            block.denied();
        }
    }
    match decision {
        Decision::Allow => None,
        Decision::Deny { retry_after_secs } => Some(Synthetic::TooManyRequests {
            retry_after: retry_after_secs,
        }),
    }
}

async fn ask_owner(
    core: &CoreCtx,
    owner: usize,
    route: usize,
    key: ClientKey,
    rules: Vec<usize>,
    now_ns: u64,
) -> Decision {
    let (reply, answer) = oneshot::channel();
    let msg = PeerMsg::Check(PeerCheck {
        route,
        key,
        rules,
        now_ns,
        reply,
    });
    if let Some(decision) = ask_peer(core, owner, msg, answer).await {
        return decision;
    }
    // The owner is draining or stuck: failing open keeps paid traffic flowing.
    tracing::warn!(
        core = core.id,
        owner,
        "no rate-limit decision from the owner core; allowing"
    );
    Decision::Allow
}

/// Takes one of the client's `allowance` free requests on `route` from the core that owns it.
pub async fn take_freebie(
    core: &CoreCtx,
    route: &Route,
    peer: std::net::IpAddr,
    allowance: u16,
) -> bool {
    let key = ClientKey::ip(peer);
    let owner = ratelimit::owner_core(&key, core.peers.len());
    let service = &route.service.name;
    if owner == core.id {
        return core.limits.take_freebie(service, key, allowance);
    }
    let (reply, answer) = oneshot::channel();
    let msg = PeerMsg::Freebie {
        service: service.clone(),
        key,
        allowance,
        reply,
    };
    // No answer: the client pays rather than getting something for free by accident.
    ask_peer(core, owner, msg, answer).await.unwrap_or(false)
}

/// Sends `msg` to the owner core's peer inbox and waits at most [`PEER_WAIT`] for its answer;
/// `None` when the owner is gone, draining or stuck.
async fn ask_peer<T>(
    core: &CoreCtx,
    owner: usize,
    msg: PeerMsg,
    answer: oneshot::Receiver<T>,
) -> Option<T> {
    let sent = core
        .peers
        .get(owner)
        .is_some_and(|tx| tx.unbounded_send(msg).is_ok());
    if !sent {
        return None;
    }
    monoio::time::timeout(PEER_WAIT, answer).await.ok()?.ok()
}

/// Serves the decisions other cores ask this core for, until every sender is gone.
pub async fn serve_peers(
    core: std::rc::Rc<CoreCtx>,
    mut inbox: futures_channel::mpsc::UnboundedReceiver<PeerMsg>,
) {
    while let Some(msg) = super::recv(&mut inbox).await {
        match msg {
            PeerMsg::Check(c) => match check_owned(&core, c.route, &c.key, &c.rules, c.now_ns) {
                Owned::Now(decision) => {
                    let _ = c.reply.send(decision);
                }
                Owned::Later(ask) => {
                    let core = core.clone();
                    monoio::spawn(async move {
                        let d = finish_owned(&core, c.route, &c.key, &c.rules, c.now_ns, ask);
                        let _ = c.reply.send(d.await);
                    });
                }
            },
            PeerMsg::Freebie {
                service,
                key,
                allowance,
                reply,
            } => {
                let _ = reply.send(core.limits.take_freebie(&service, key, allowance));
            }
            PeerMsg::Session(call) => super::session::serve_call(&core, call),
            PeerMsg::Bundle(call) => super::bundles::serve_call(&core, call),
        }
    }
}
