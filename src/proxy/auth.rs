//! The authenticate phase: decides whether a request is forwarded (with which credential to
//! rewrite upstream) or answered with a challenge. Verification is stateless and runs on the core;
//! only minting a challenge (and asking a dynamic pricer) crosses to the bridge, with `try_send`
//! and a deadline, so a slow or saturated Lightning backend costs a 503 (a failing pricer Go
//! aperture's 500), never a blocked core.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Auth;
use crate::error::{Challenge, Synthetic};
use std::net::IpAddr;
use std::rc::Rc;

use crate::l402::{self, AuthOutcome, CredentialSource, TokenId, VerifyRequest};
use crate::metrics::{Counter, Reject};

use super::h1::Head;
use super::limit;
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
    /// Answer locally.
    Answer(Synthetic),
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
    if let Some(paid) = paid(core, route, head, &resource, now).await {
        return paid;
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
    Decision::Answer(challenge(core, route, &resource, price, now).await)
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

/// Asks the bridge for an invoice of `price` sats and mints the macaroon bound to its payment
/// hash, for `resource` (the service name, or `<name><path>` under dynamic pricing).
pub async fn challenge(
    core: &CoreCtx,
    route: &Route,
    resource: &str,
    price: u64,
    now: u64,
) -> Synthetic {
    let service = &route.service;
    let unavailable = |why: &str| {
        core.counters().incr(Counter::BridgeUnavailable);
        tracing::warn!(core = core.id, service = %service.name, "cannot mint a challenge: {why}");
        Synthetic::Unavailable { retry_after: 1 }
    };
    let rx = match core.bridge.try_create_invoice(price) {
        Ok(rx) => rx,
        Err(e) => return unavailable(&e.to_string()),
    };
    let invoice = match monoio::time::timeout(BRIDGE_WAIT, rx).await {
        Ok(Ok(Ok(invoice))) => invoice,
        Ok(Ok(Err(e))) => return unavailable(&e.to_string()),
        Ok(Err(_)) => return unavailable("the bridge dropped the request"),
        Err(_) => return unavailable("the bridge did not answer in time"),
    };
    let mut token_id = [0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut token_id[..]);
    let caveats = l402::mint_caveats(
        resource,
        service.capabilities.as_deref(),
        &service.constraints,
        service.timeout.map(|t| now.saturating_add(t)),
    );
    let macaroon = core.verifier.mint(invoice.payment_hash, token_id, &caveats);
    let values = l402::challenge_values(
        core.routes().challenge_shape,
        &macaroon.to_base64(),
        &invoice.payment_request,
    );
    route.counters(core.id).minted();
    if let Some(store) = &core.store {
        // Non-blocking: a full store queue drops the ledger row (counted), never the request.
        store.try_record_challenge(token_id, invoice.payment_hash, &service.name, price, now);
    }
    Synthetic::PaymentRequired(Challenge {
        www_authenticate: values,
    })
}
