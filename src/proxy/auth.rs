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
use super::meter::Ask;
use super::payment;
use super::price;
use super::session;
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
    /// A Payment credential (charge or session) that verified statelessly: rate limited by
    /// client IP (as Go keys it), then settled ([`settle`]: a charge claimed once, a session
    /// debited, topped up or closed) before it is forwarded or answered.
    Payment(Box<PendingPayment>),
    /// Answer locally.
    Answer(Synthetic),
}

/// What the later phases need from a forwarding decision: the `Authorization` fields to send
/// upstream instead of the client's, the rate-limit key (none: not limited) and a Payment
/// credential to settle after the limit.
pub struct Grant {
    pub upstream: Option<Upstream>,
    pub key: Option<ClientKey>,
    pub payment: Option<Box<PendingPayment>>,
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
                payment: None,
            },
            Decision::Forward(upstream, None) => Grant {
                upstream,
                key: by_ip,
                payment: None,
            },
            // Priced at 0 by the pricer: neither paid for nor rate limited.
            Decision::ForwardFree => Grant {
                upstream: None,
                key: None,
                payment: None,
            },
            Decision::Payment(pending) => Grant {
                upstream: None,
                key: by_ip,
                payment: Some(pending),
            },
        })
    }
}

/// A verified Payment credential and what a fresh challenge needs if it is refused after all.
pub struct PendingPayment {
    intent: PendingIntent,
    resource: Rc<str>,
    price: u64,
    now: u64,
}

impl PendingPayment {
    /// The payment hash of a charge (what a metered pricer knows it by); `None` for a session.
    pub fn charge_hash(&self) -> Option<[u8; 32]> {
        match &self.intent {
            PendingIntent::Charge(charge) => Some(charge.payment_hash()),
            PendingIntent::Session(_) => None,
        }
    }
}

/// The scheme's intent behind a [`PendingPayment`].
enum PendingIntent {
    Charge(payment::Charge),
    Session(session::PendingSession),
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
    let (resource, static_price) = match &service.meter {
        None => (resource, route.pricer.is_none().then_some(service.price)),
        // The built-in meter: a token buys a bundle of the request's model, for that model.
        Some(table) => match super::bundles::priced(table, &service.name, head, input.body) {
            Ok((resource, price)) => (Cow::Owned(resource), Some(price)),
            Err(answer) => return Decision::Answer(answer),
        },
    };
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
        _ => static_price.unwrap_or(service.price),
    };
    if let Some(denied) = limit::limit_challenge(core, peer, path).await {
        return Decision::Answer(denied);
    }
    let ask = Ask {
        head,
        version: input.version,
        body: input.body,
        accept_payment: head.get("accept-payment"),
    };
    if route.metered_tail.is_some() && route.pricer.is_some() {
        // Every challenge of a metered service is booked with its pricer first.
        let minted = super::meter::challenge(core, route, &ask, price, now);
        return Decision::Answer(Box::pin(minted).await);
    }
    // Boxed: minting is rare next to paid requests, and inline its three invoice futures
    // would grow every request's state machine (moved whole when an h2 stream is spawned).
    Decision::Answer(Box::pin(challenge(core, route, &resource, price, now, &ask)).await)
}

/// The Payment path: `None` when the request carries no Payment credential (or the service
/// takes none); `Some(Err)` when it carries one that is refused (counted, logged at debug).
/// `Some(Ok(Answer))` for a refusal with its own answer (400, a bearer challenge).
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
    let refused = |why: &dyn std::fmt::Display| {
        core.counters().incr(Counter::PaymentRejected);
        tracing::debug!(core = core.id, service = %route.service.name, "payment credential refused: {why}");
    };
    let credential = match crate::mpp::parse_credential(value) {
        Ok(c) => c,
        Err(e) => {
            refused(&payment::Refusal::Malformed(e));
            return Some(Err(()));
        }
    };
    let pending = |intent| {
        // Boxed: the decision travels by value through the request path, and a payment is rare.
        Decision::Payment(Box::new(PendingPayment {
            intent,
            resource: resource.into(),
            price: price.unwrap_or(route.service.price),
            now,
        }))
    };
    let routes = core.routes();
    let sessions = routes.payment.as_ref().and_then(|p| p.sessions);
    if credential.challenge.intent == crate::mpp::Intent::Session.as_str() && sessions.is_some() {
        return Some(
            match session::verify(secret, resource, &credential, price.unwrap_or(0), now) {
                Ok(s) => Ok(pending(PendingIntent::Session(s))),
                Err((why, session::Offer::Bearer)) => {
                    refused(&why);
                    let settings = routes.payment.as_ref()?;
                    let price = price.unwrap_or(route.service.price);
                    let value = session::challenge(
                        secret,
                        settings,
                        sessions.as_ref()?,
                        resource,
                        price,
                        None,
                        now,
                    );
                    Ok(Decision::Answer(Synthetic::PaymentRequired(Challenge {
                        www_authenticate: vec![value],
                    })))
                }
                Err((why, _)) => {
                    refused(&why);
                    Err(())
                }
            },
        );
    }
    // Under dynamic pricing the price is the pricer's and not known here: any amount that the
    // HMAC vouches for (minted for this very resource) is accepted, as in Go.
    match payment::verify(secret, resource, &credential, price.unwrap_or(0), now) {
        Ok(charge) => Some(Ok(pending(PendingIntent::Charge(charge)))),
        Err(why) => {
            refused(&why);
            Some(Err(()))
        }
    }
}

/// After the rate-limit phase: settles a verified Payment credential and returns the
/// `Payment-Receipt` for its forwarded answer (with a session bearer's debit, for its
/// settlement with a pricer), or the answer instead. A charge is claimed once (a
/// replay gets a fresh 402; a store that cannot say gets 503 `Retry-After: 1`, never a second
/// use); a session is debited (or topped up, or closed: answered here, `Err` with a 200).
pub async fn settle(
    core: &CoreCtx,
    route: &Route,
    pending: Box<PendingPayment>,
    ask: &Ask<'_>,
) -> Result<(Rc<str>, Option<Box<session::Bearer>>), Synthetic> {
    let PendingPayment {
        intent,
        resource,
        price,
        now,
    } = *pending;
    let unavailable = || {
        tracing::warn!(core = core.id, service = %route.service.name, "cannot settle a Payment credential: the token database did not answer");
        Synthetic::Unavailable { retry_after: 1 }
    };
    let refused = |why: &str| {
        core.counters().incr(Counter::PaymentRejected);
        tracing::debug!(core = core.id, service = %route.service.name, "payment credential refused: {why}");
    };
    let charge = match intent {
        PendingIntent::Charge(charge) => charge,
        PendingIntent::Session(pending) => {
            let routes = core.routes();
            let Some(settings) = routes.payment.as_ref() else {
                return Err(Box::pin(rechallenge(core, route, ask, &resource, price, now)).await);
            };
            // Boxed, like every rare path here: a session's store round trips are a deep
            // state machine that must not grow the paid request's future.
            return match Box::pin(session::settle(core, settings, pending)).await {
                session::Outcome::Forward(receipt, bearer) => {
                    route.counters(core.id).accepted();
                    Ok((receipt, bearer))
                }
                session::Outcome::Answer(answer) => Err(answer),
                session::Outcome::Unavailable => Err(unavailable()),
                session::Outcome::Challenge(offer) => {
                    refused("session refused");
                    let offer = session_offer(core, route, &resource, price, now, ask, offer);
                    Err(Box::pin(offer).await)
                }
            };
        }
    };
    match payment::claim(core, charge, now).await {
        Ok(receipt) => {
            route.counters(core.id).accepted();
            Ok((receipt, None))
        }
        Err(payment::ClaimError::Replayed) => {
            refused("already used");
            Err(Box::pin(rechallenge(core, route, ask, &resource, price, now)).await)
        }
        Err(payment::ClaimError::Unavailable) => Err(unavailable()),
    }
}

/// The 402 for a refused session request: a top-up invoice for a short balance, else the
/// usual challenge.
async fn session_offer(
    core: &CoreCtx,
    route: &Route,
    resource: &str,
    price: u64,
    now: u64,
    ask: &Ask<'_>,
    offer: session::Offer,
) -> Synthetic {
    let routes = core.routes();
    let (Some(settings), Some(secret)) = (routes.payment.as_ref(), core.payment_secret.as_ref())
    else {
        return rechallenge(core, route, ask, resource, price, now).await;
    };
    let Some(sessions) = settings.sessions else {
        return rechallenge(core, route, ask, resource, price, now).await;
    };
    if offer == session::Offer::Fresh {
        return rechallenge(core, route, ask, resource, price, now).await;
    }
    // A session challenge on a service with a pricer carries its quote, like the first 402's.
    let deposit_of = |unit| session::deposit_of(unit, &sessions);
    let (price, deposit) = match route.pricer {
        Some(_) => super::session_meter::quote(core, route, ask, price, deposit_of).await,
        None => (price, deposit_of(price)),
    };
    let value = match offer {
        session::Offer::Fresh => return rechallenge(core, route, ask, resource, price, now).await,
        session::Offer::Bearer => {
            session::challenge(secret, settings, &sessions, resource, price, None, now)
        }
        session::Offer::TopUp { .. } => match invoice(core, deposit).await {
            Ok(inv) => {
                let kind = crate::store::TxKind::TopUp;
                let name = &route.service.name;
                record_payment_challenge(core, kind, name, &inv, deposit, now);
                session::challenge(
                    secret,
                    settings,
                    &sessions,
                    resource,
                    price,
                    Some((&inv, deposit)),
                    now,
                )
            }
            Err(why) => {
                core.counters().incr(Counter::BridgeUnavailable);
                tracing::warn!(core = core.id, service = %route.service.name, "cannot mint a top-up invoice: {why}");
                return Synthetic::Unavailable { retry_after: 1 };
            }
        },
    };
    core.counters().incr(Counter::PaymentChallenges);
    Synthetic::PaymentRequired(Challenge {
        www_authenticate: vec![value],
    })
}

/// A fresh 402 after a Payment credential was refused; on a metered service it is booked with
/// the pricer like every other ([`super::meter::challenge`]).
async fn rechallenge(
    core: &CoreCtx,
    route: &Route,
    ask: &Ask<'_>,
    resource: &str,
    price: u64,
    now: u64,
) -> Synthetic {
    if route.metered_tail.is_some() && route.pricer.is_some() {
        return super::meter::challenge(core, route, ask, price, now).await;
    }
    challenge(core, route, resource, price, now, ask).await
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
/// so an L402 preimage never pays a charge and a charge's never opens a session) and renders
/// the 402: L402 (and LSAT) for a macaroon bound to its invoice, then the Payment challenges
/// (charge, then session with its deposit invoice), each only where `route` accepts that scheme
/// and `Accept-Payment` (when sent) admits it, the Payment ones in the client's order of
/// preference. `resource` is the service name, or `<name><path>` under dynamic pricing; `ask`
/// is the request (its `Accept-Payment`, and what a pricer's `QuoteSession` is shown).
pub async fn challenge(
    core: &CoreCtx,
    route: &Route,
    resource: &str,
    price: u64,
    now: u64,
    ask: &Ask<'_>,
) -> Synthetic {
    mint(core, route, resource, price, now, ask, &mut Vec::new()).await
}

/// [`challenge`], naming in `minted` what a metered pricer books: the L402 token id and each
/// Payment charge's payment hash (a session's deposit is not booked, as in Go). A session
/// challenge on a service with a pricer carries the pricer's quote (`QuoteSession`).
pub async fn mint(
    core: &CoreCtx,
    route: &Route,
    resource: &str,
    price: u64,
    now: u64,
    ask: &Ask<'_>,
    minted: &mut Vec<[u8; 32]>,
) -> Synthetic {
    let service = &route.service;
    let routes = core.routes();
    let payment = match (&routes.payment, core.payment_secret.as_ref()) {
        (Some(settings), Some(secret)) if service.schemes.payment => Some((settings, secret)),
        _ => None,
    };
    let intents = payment.map_or_else(Vec::new, |(settings, _)| {
        payment::offered_intents(ask.accept_payment, settings.sessions.is_some())
    });
    let l402 = service.schemes.l402 || intents.is_empty();
    let wants = |intent| intents.contains(&intent);
    let sessions = payment.and_then(|(s, _)| s.sessions);
    let (unit, deposit) = match sessions {
        Some(s) if route.pricer.is_some() && wants(crate::mpp::Intent::Session) => {
            let deposit_of = |unit| session::deposit_of(unit, &s);
            Box::pin(super::session_meter::quote(
                core, route, ask, price, deposit_of,
            ))
            .await
        }
        Some(s) => (price, session::deposit_of(price, &s)),
        None => (price, 0),
    };
    let (macaroon, charge, deposit_invoice) = join3(
        maybe_invoice(core, l402, price),
        maybe_invoice(core, wants(crate::mpp::Intent::Charge), price),
        maybe_invoice(core, wants(crate::mpp::Intent::Session), deposit),
    )
    .await;
    let (macaroon, charge, deposit_invoice) = match (macaroon, charge, deposit_invoice) {
        (Ok(m), Ok(c), Ok(d)) => (m, c, d),
        (Err(why), _, _) | (_, Err(why), _) | (_, _, Err(why)) => {
            core.counters().incr(Counter::BridgeUnavailable);
            tracing::warn!(core = core.id, service = %service.name, "cannot mint a challenge: {why}");
            return Synthetic::Unavailable { retry_after: 1 };
        }
    };
    let mut values = Vec::with_capacity(4);
    if let Some(invoice) = macaroon {
        let (token_id, l402) = l402_values(core, route, resource, price, now, &invoice);
        minted.push(token_id);
        values.extend(l402);
    }
    if let Some((settings, secret)) = payment {
        for intent in intents {
            let value = match (intent, &charge, &deposit_invoice, settings.sessions) {
                (crate::mpp::Intent::Charge, Some(invoice), _, _) => {
                    let kind = crate::store::TxKind::Charge;
                    record_payment_challenge(core, kind, &service.name, invoice, price, now);
                    minted.push(invoice.payment_hash);
                    payment::charge_challenge(secret, settings, resource, price, invoice, now)
                }
                (crate::mpp::Intent::Session, _, Some(invoice), Some(sessions)) => {
                    let kind = crate::store::TxKind::SessionDeposit;
                    record_payment_challenge(core, kind, &service.name, invoice, deposit, now);
                    session::challenge(
                        secret,
                        settings,
                        &sessions,
                        resource,
                        unit,
                        Some((invoice, deposit)),
                        now,
                    )
                }
                _ => continue,
            };
            core.counters().incr(Counter::PaymentChallenges);
            values.push(value);
        }
    }
    route.counters(core.id).minted();
    Synthetic::PaymentRequired(Challenge {
        www_authenticate: values,
    })
}

/// A Payment challenge in the ledger too (Go records it as `mpp_charge`): its payment hash is
/// its token id.
fn record_payment_challenge(
    core: &CoreCtx,
    kind: crate::store::TxKind,
    service: &str,
    invoice: &lnd_bridge::Invoice,
    price: u64,
    now: u64,
) {
    if let Some(store) = &core.store {
        let hash = invoice.payment_hash;
        store.try_record_transaction(kind, hash, hash, service, price, now);
    }
}

/// An invoice of `price` sats when `wanted`.
async fn maybe_invoice(
    core: &CoreCtx,
    wanted: bool,
    price: u64,
) -> Result<Option<lnd_bridge::Invoice>, String> {
    if !wanted {
        return Ok(None);
    }
    invoice(core, price).await.map(Some)
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

/// Three futures to completion, polled together (the invoices of one 402 in flight at once).
async fn join3<A: std::future::Future, B: std::future::Future, C: std::future::Future>(
    a: A,
    b: B,
    c: C,
) -> (A::Output, B::Output, C::Output) {
    let (mut a, mut b, mut c) = (std::pin::pin!(a), std::pin::pin!(b), std::pin::pin!(c));
    let (mut ra, mut rb, mut rc) = (None, None, None);
    std::future::poll_fn(|cx| {
        poll_into(a.as_mut(), &mut ra, cx);
        poll_into(b.as_mut(), &mut rb, cx);
        poll_into(c.as_mut(), &mut rc, cx);
        if ra.is_some() && rb.is_some() && rc.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    match (ra, rb, rc) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => unreachable!("all three completed"),
    }
}

/// Polls `f` unless its output is already in `slot`.
fn poll_into<F: std::future::Future>(
    f: std::pin::Pin<&mut F>,
    slot: &mut Option<F::Output>,
    cx: &mut std::task::Context<'_>,
) {
    if slot.is_none() {
        if let std::task::Poll::Ready(v) = f.poll(cx) {
            *slot = Some(v);
        }
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
) -> ([u8; 32], Vec<String>) {
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
    let values = l402::challenge_values(
        core.routes().challenge_shape,
        &macaroon.to_base64(),
        &invoice.payment_request,
    );
    (token_id, values)
}
