//! The authenticate phase: decides whether a request is forwarded (with which credential to
//! rewrite upstream) or answered with a challenge. Verification is stateless and runs on the core;
//! only minting a challenge crosses to the bridge, with `try_send` and a deadline, so a slow or
//! saturated Lightning backend costs a 503, never a blocked core.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Auth;
use crate::error::{Challenge, Synthetic};
use std::net::IpAddr;
use std::rc::Rc;

use crate::l402::{self, AuthOutcome, CredentialSource, TokenId, VerifyRequest};
use crate::metrics::{Counter, Reject};

use super::h1::Head;
use super::limit;
use super::settled;
use super::tokens::{Hit, Upstream};
use super::{CoreCtx, Route, BRIDGE_WAIT};

/// What the authenticate phase decided.
pub enum Decision {
    /// Forward; replace `Authorization` upstream with these fields when there are some. The
    /// token id is set when a credential verified (the rate-limit key).
    Forward(Option<Upstream>, Option<TokenId>),
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

/// Runs the authenticate phase for `head` on `route`.
pub async fn authorize(core: &CoreCtx, route: &Route, head: &Head, peer: IpAddr) -> Decision {
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
    let hit = verified(core, route, head, now).filter(|hit| {
        let revoked = core.revoked.borrow().contains(&hit.token_id);
        if revoked {
            route.counters(core.id).rejected(Reject::Revoked);
            tracing::debug!(core = core.id, service = %service.name, "token rejected: revoked");
        }
        !revoked
    });
    if let Some(hit) = hit {
        let settled =
            !core.routes().strict_verify || settled::require_settled(core, hit.payment_hash).await;
        if settled {
            route.counters(core.id).accepted();
            return Decision::Forward(Some(hit.upstream), Some(hit.token_id));
        }
        route.counters(core.id).rejected(Reject::NotSettled);
        tracing::debug!(core = core.id, service = %service.name, "token rejected: invoice not settled (strictverify)");
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
    if let Some(denied) = limit::limit_challenge(core, peer, path).await {
        return Decision::Answer(denied);
    }
    Decision::Answer(challenge(core, route, now).await)
}

/// Finds a credential that verifies for `route`: from the per-core cache when the request's one
/// `Authorization` value verified before, else by full verification (then cached).
fn verified(core: &CoreCtx, route: &Route, head: &Head, now: u64) -> Option<Hit> {
    let service = &route.service;
    let single = single_authorization(head);
    if let Some(hit) = single.and_then(|v| core.tokens.get(v, &service.name, now)) {
        core.counters().incr(Counter::TokenCacheHits);
        return Some(hit);
    }
    let req = VerifyRequest {
        service: &service.name,
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
                    core.tokens
                        .insert(value, &service.name, token_id, &credential)
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

/// Asks the bridge for an invoice and mints the macaroon bound to its payment hash.
pub async fn challenge(core: &CoreCtx, route: &Route, now: u64) -> Synthetic {
    let service = &route.service;
    let unavailable = |why: &str| {
        core.counters().incr(Counter::BridgeUnavailable);
        tracing::warn!(core = core.id, service = %service.name, "cannot mint a challenge: {why}");
        Synthetic::Unavailable { retry_after: 1 }
    };
    let rx = match core.bridge.try_create_invoice(service.price) {
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
        &service.name,
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
        store.try_record_challenge(
            token_id,
            invoice.payment_hash,
            &service.name,
            service.price,
            now,
        );
    }
    Synthetic::PaymentRequired(Challenge {
        www_authenticate: values,
    })
}
