//! The authenticate phase: decides whether a request is forwarded (with which credential to
//! rewrite upstream) or answered with a challenge. One phase, schemes behind it: an L402 token
//! (verified statelessly on the core) or a Payment charge ([`super::payment`]: verified on the
//! core, then claimed once through the store after the rate-limit phase, [`settle`]). Only
//! minting a challenge (and asking a dynamic pricer) crosses to the bridge, with `try_send` and a
//! deadline, so a slow or saturated Lightning backend costs a 503 (a failing pricer Go aperture's
//! 500), never a blocked core.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Auth;
use crate::error::{Challenge, Synthetic};
use std::net::IpAddr;
use std::rc::Rc;

use crate::l402::{self, AuthOutcome, CredentialSource, TokenId, VerifyRequest};
use crate::metrics::{Counter, Reject};
use crate::ratelimit::ClientKey;

use super::h1::Head;
use super::limit;
use super::payment;
use super::price;
use super::settled;
use super::tokens::{Hit, Upstream};
use super::{CoreCtx, Route, BRIDGE_WAIT};

/// What the authenticate phase decided.
pub enum Decision {
    /// Forward; replace `Authorization` upstream with these fields when there are some. The
    /// token id is set when a credential verified (the rate-limit key).
    Forward(Option<Upstream>, Option<TokenId>),
    /// Forward without payment and without rate limiting: the dynamic pricer priced the
    /// request at 0 (Go aperture skips the limiter on this path too).
    ForwardFree,
    /// A Payment charge that verified: rate limited by client IP (as Go keys it), then claimed
    /// ([`settle`]) before it is forwarded.
    Charge(Box<PendingCharge>),
    /// Answer locally.
    Answer(Synthetic),
}

/// What the later phases need from a forwarding decision: the `Authorization` fields to send
/// upstream instead of the client's, the rate-limit key (none: not limited) and a charge to
/// claim after the limit.
pub struct Grant {
    pub upstream: Option<Upstream>,
    pub key: Option<ClientKey>,
    pub charge: Option<Box<PendingCharge>>,
}

impl Decision {
    /// The grant of a forwarding decision; `Err` with the answer otherwise. Token-paid requests
    /// are limited by token, others by client address (a charge too, as Go aperture keys MPP).
    pub fn into_grant(self, client_ip: IpAddr) -> Result<Grant, Synthetic> {
        let by_ip = Some(ClientKey::ip(client_ip));
        Ok(match self {
            Decision::Answer(answer) => return Err(answer),
            Decision::Forward(upstream, Some(id)) => Grant {
                upstream,
                key: Some(ClientKey::Token(id)),
                charge: None,
            },
            Decision::Forward(upstream, None) => Grant {
                upstream,
                key: by_ip,
                charge: None,
            },
            // Priced at 0 by the pricer: neither paid for nor rate limited.
            Decision::ForwardFree => Grant {
                upstream: None,
                key: None,
                charge: None,
            },
            Decision::Charge(pending) => Grant {
                upstream: None,
                key: by_ip,
                charge: Some(pending),
            },
        })
    }
}

/// A verified charge and what a fresh challenge needs if its claim finds it used.
pub struct PendingCharge {
    charge: payment::Charge,
    resource: Rc<str>,
    price: u64,
    now: u64,
}

/// Seconds since the Unix epoch (the only clock read on the auth path; layer 0 takes it as input).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a dynamic pricer is shown besides the head: the HTTP version (`"1.1"`, `"2.0"`) and the
/// body bytes already at hand (at most [`price::MAX_BODY_PREFIX`] are sent).
#[derive(Clone, Copy)]
pub struct PriceInput<'a> {
    pub version: &'static str,
    pub body: &'a [u8],
}

/// Runs the authenticate phase for `head` on `route`.
pub async fn authorize(
    core: &CoreCtx,
    route: &Route,
    head: &Head,
    peer: IpAddr,
    input: PriceInput<'_>,
) -> Decision {
    let service = &route.service;
    let path = std::str::from_utf8(head.path()).unwrap_or("");
    let whitelisted = service
        .auth_whitelist_paths
        .iter()
        .any(|r| r.is_match(path));
    if matches!(service.auth, Auth::Off) || whitelisted {
        // Go aperture rewrites a parseable credential whatever the auth level.
        let first = l402::parse_credentials(head.fields())
            .into_iter()
            .find_map(Result::ok);
        let upstream = first.map(|c| Rc::new(l402::upstream_authorization(&c)));
        return Decision::Forward(upstream, None);
    }
    let now = now_unix();
    // With dynamic pricing a token buys one path: Go aperture names the resource
    // `<service><URL path>` in the `services` caveat it mints and checks.
    let url_path = route
        .pricer
        .as_ref()
        .map(|_| price::decoded_path(head.path()));
    let resource: Cow<'_, str> = match &url_path {
        Some(p) => Cow::Owned(format!("{}{p}", service.name)),
        None => Cow::Borrowed(&service.name),
    };
    let static_price = route.pricer.is_none().then_some(service.price);
    match payment_credential(core, route, head, &resource, static_price, now) {
        Some(Ok(decision)) => return decision,
        Some(Err(())) => {} // refused: a fresh challenge below
        None if !service.schemes.l402 => {}
        None => {
            if let Some(paid) = paid(core, route, head, &resource, now).await {
                return paid;
            }
        }
    }
    if let Auth::Freebie(allowance) = service.auth {
        // Go aperture: a client without a valid token gets N free requests per /24 (/48),
        // rate-limited by IP; once they are used up it pays (the skip-invoice list does not
        // apply on this path).
        if limit::take_freebie(core, route, peer, allowance).await {
            return Decision::Forward(None, None);
        }
    } else if service
        .auth_skip_invoice_creation_paths
        .iter()
        .any(|r| r.is_match(path))
    {
        return Decision::Answer(Synthetic::Unauthorized);
    }
    let price = match (&route.pricer, url_path) {
        (Some(target), Some(url_path)) => {
            let text = price::request_text(head, input.version, input.body);
            match price::ask(core, &service.name, target, url_path, text).await {
                Ok(0) => return Decision::ForwardFree,
                Ok(p) => p,
                Err(answer) => return Decision::Answer(answer),
            }
        }
        _ => service.price,
    };
    if let Some(denied) = limit::limit_challenge(core, peer, path).await {
        return Decision::Answer(denied);
    }
    let accept = head.get("accept-payment");
    Decision::Answer(challenge(core, route, &resource, price, now, accept).await)
}

/// The Payment path: `None` when the request carries no Payment credential (or the service
/// takes none); `Some(Err)` when it carries one that is refused (counted, logged at debug).
fn payment_credential(
    core: &CoreCtx,
    route: &Route,
    head: &Head,
    resource: &str,
    price: Option<u64>,
    now: u64,
) -> Option<Result<Decision, ()>> {
    let secret = core.payment_secret.as_ref()?;
    if !route.service.schemes.payment {
        return None;
    }
    let value = match payment::credential_field(head)? {
        Ok(value) => value,
        Err(answer) => return Some(Ok(Decision::Answer(answer))),
    };
    // Under dynamic pricing the price is the pricer's and not known here: any amount that the
    // HMAC vouches for (minted for this very resource) is accepted, as in Go.
    match payment::verify(secret, resource, value, price.unwrap_or(0), now) {
        // Boxed: the decision travels by value through the request path, and a charge is rare.
        Ok(charge) => Some(Ok(Decision::Charge(Box::new(PendingCharge {
            charge,
            resource: resource.into(),
            price: price.unwrap_or(route.service.price),
            now,
        })))),
        Err(why) => {
            core.counters().incr(Counter::PaymentRejected);
            tracing::debug!(core = core.id, service = %route.service.name, "payment credential refused: {why}");
            Some(Err(()))
        }
    }
}

/// After the rate-limit phase: claims a verified charge's single use and returns the
/// `Payment-Receipt` for its answer, or the answer instead (a replay gets a fresh 402; a store
/// that cannot say gets 503 `Retry-After: 1`, never a second use).
pub async fn settle(
    core: &CoreCtx,
    route: &Route,
    pending: Box<PendingCharge>,
    accept: Option<&[u8]>,
) -> Result<Rc<str>, Synthetic> {
    let pending = *pending;
    match payment::claim(core, pending.charge, pending.now).await {
        Ok(receipt) => {
            route.counters(core.id).accepted();
            Ok(receipt)
        }
        Err(payment::ClaimError::Replayed) => {
            core.counters().incr(Counter::PaymentRejected);
            tracing::debug!(core = core.id, service = %route.service.name, "payment credential refused: already used");
            let (resource, price, now) = (&*pending.resource, pending.price, pending.now);
            Err(challenge(core, route, resource, price, now, accept).await)
        }
        Err(payment::ClaimError::Unavailable) => {
            tracing::warn!(core = core.id, service = %route.service.name, "cannot claim a payment charge: the token database did not answer");
            Err(Synthetic::Unavailable { retry_after: 1 })
        }
    }
}

/// The paid path: a credential that verifies for `resource`, is not revoked and (with
/// `strictverify`) whose invoice is known settled forwards; `None` otherwise.
async fn paid(
    core: &CoreCtx,
    route: &Route,
    head: &Head,
    resource: &str,
    now: u64,
) -> Option<Decision> {
    let service = &route.service;
    let hit = verified(core, route, head, resource, now).filter(|hit| {
        let revoked = core.revoked.borrow().contains(&hit.token_id);
        if revoked {
            route.counters(core.id).rejected(Reject::Revoked);
            tracing::debug!(core = core.id, service = %service.name, "token rejected: revoked");
        }
        !revoked
    })?;
    let settled =
        !core.routes().strict_verify || settled::require_settled(core, hit.payment_hash).await;
    if settled {
        route.counters(core.id).accepted();
        return Some(Decision::Forward(Some(hit.upstream), Some(hit.token_id)));
    }
    route.counters(core.id).rejected(Reject::NotSettled);
    tracing::debug!(core = core.id, service = %service.name, "token rejected: invoice not settled (strictverify)");
    None
}

/// Finds a credential that verifies for `route`: from the per-core cache when the request's one
/// `Authorization` value verified before, else by full verification (then cached).
fn verified(core: &CoreCtx, route: &Route, head: &Head, resource: &str, now: u64) -> Option<Hit> {
    let service = &route.service;
    let single = single_authorization(head);
    if let Some(hit) = single.and_then(|v| core.tokens.get(v, resource, now)) {
        core.counters().incr(Counter::TokenCacheHits);
        return Some(hit);
    }
    let req = VerifyRequest {
        service: resource,
        capability: None,
        now_unix: now,
    };
    match core.verifier.authenticate(head.fields(), &req) {
        AuthOutcome::Accepted {
            credential,
            token_id,
        } => {
            // Only a credential that came from that one Authorization value may be cached
            // under it (a valid Macaroon header next to a Bearer value must not be).
            let hit = match (single, credential.source) {
                (Some(value), CredentialSource::Authorization(_)) => {
                    core.tokens.insert(value, resource, token_id, &credential)
                }
                _ => Hit::new(&credential, token_id),
            };
            Some(hit)
        }
        AuthOutcome::Rejected(reason) => {
            route.counters(core.id).rejected(Reject::from(&reason));
            tracing::debug!(core = core.id, service = %service.name, reason = reason.reason(), "token rejected");
            None
        }
        AuthOutcome::Missing => None,
    }
}

/// The value of the request's `Authorization` field when there is exactly one.
fn single_authorization(head: &Head) -> Option<&[u8]> {
    let mut fields = head
        .fields()
        .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"));
    let first = fields.next()?.1;
    fields.next().is_none().then_some(first)
}

/// Asks the bridge for one invoice per offered scheme (concurrently; separate payment hashes,
/// so an L402 preimage never pays a charge) and renders the 402: L402 (and LSAT) for a macaroon
/// bound to its invoice, then a Payment charge challenge, each only where `route` accepts that
/// scheme and `Accept-Payment` (when sent) asks for it. `resource` is the service name, or
/// `<name><path>` under dynamic pricing.
pub async fn challenge(
    core: &CoreCtx,
    route: &Route,
    resource: &str,
    price: u64,
    now: u64,
    accept_payment: Option<&[u8]>,
) -> Synthetic {
    let service = &route.service;
    let unavailable = |why: &str| {
        core.counters().incr(Counter::BridgeUnavailable);
        tracing::warn!(core = core.id, service = %service.name, "cannot mint a challenge: {why}");
        Synthetic::Unavailable { retry_after: 1 }
    };
    let routes = core.routes();
    let charge = match (&routes.payment, core.payment_secret.as_ref()) {
        (Some(settings), Some(secret)) if service.schemes.payment => {
            payment::offers_charge(accept_payment).then_some((settings, secret))
        }
        _ => None,
    };
    let l402 = service.schemes.l402 || charge.is_none();
    let (macaroon, payment) = match (l402, charge) {
        (true, None) => (invoice(core, price).await.map(Some), Ok(None)),
        (false, Some(_)) => (Ok(None), invoice(core, price).await.map(Some)),
        (true, Some(_)) => {
            let (a, b) = futures_join(invoice(core, price), invoice(core, price)).await;
            (a.map(Some), b.map(Some))
        }
        (false, None) => unreachable!("l402 is on when no charge is offered"),
    };
    let (macaroon, payment) = match (macaroon, payment) {
        (Ok(m), Ok(p)) => (m, p),
        (Err(why), _) | (_, Err(why)) => return unavailable(&why),
    };
    let mut values = Vec::with_capacity(3);
    if let Some(invoice) = macaroon {
        values.extend(l402_values(core, route, resource, price, now, &invoice));
    }
    if let (Some(invoice), Some((settings, secret))) = (payment, charge) {
        core.counters().incr(Counter::PaymentChallenges);
        values.push(payment::charge_challenge(
            secret, settings, resource, price, &invoice, now,
        ));
        if let Some(store) = &core.store {
            // The charge in the ledger too (Go records it as `mpp_charge`): its payment hash is
            // its token id.
            let hash = invoice.payment_hash;
            store.try_record_challenge(hash, hash, &service.name, price, now);
        }
    }
    route.counters(core.id).minted();
    Synthetic::PaymentRequired(Challenge {
        www_authenticate: values,
    })
}

/// One invoice of `price` sats from the bridge, within [`BRIDGE_WAIT`].
async fn invoice(core: &CoreCtx, price: u64) -> Result<lnd_bridge::Invoice, String> {
    let rx = core
        .bridge
        .try_create_invoice(price)
        .map_err(|e| e.to_string())?;
    match monoio::time::timeout(BRIDGE_WAIT, rx).await {
        Ok(Ok(Ok(invoice))) => Ok(invoice),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(_)) => Err("the bridge dropped the request".into()),
        Err(_) => Err("the bridge did not answer in time".into()),
    }
}

/// Both futures to completion, polled together (two invoices in flight at once).
async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    match (ra, rb) {
        (Some(a), Some(b)) => (a, b),
        _ => unreachable!("both completed"),
    }
}

/// Mints the macaroon bound to `invoice` and renders the L402 (and LSAT) values.
fn l402_values(
    core: &CoreCtx,
    route: &Route,
    resource: &str,
    price: u64,
    now: u64,
    invoice: &lnd_bridge::Invoice,
) -> Vec<String> {
    let service = &route.service;
    let mut token_id = [0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut token_id[..]);
    let caveats = l402::mint_caveats(
        resource,
        service.capabilities.as_deref(),
        &service.constraints,
        service.timeout.map(|t| now.saturating_add(t)),
    );
    let macaroon = core.verifier.mint(invoice.payment_hash, token_id, &caveats);
    if let Some(store) = &core.store {
        // Non-blocking: a full store queue drops the ledger row (counted), never the request.
        store.try_record_challenge(token_id, invoice.payment_hash, &service.name, price, now);
    }
    l402::challenge_values(
        core.routes().challenge_shape,
        &macaroon.to_base64(),
        &invoice.payment_request,
    )
}
