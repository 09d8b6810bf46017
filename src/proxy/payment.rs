//! The Payment (MPP) scheme, intent `charge`, on the data path: the challenge a 402 offers
//! beside L402, the check of an `Authorization: Payment …` credential, the durable single-use
//! claim that must commit before the request is forwarded, and the `Payment-Receipt` of the
//! answer. The wire formats are [`crate::mpp`]'s (layer 0); this module only adds the core's
//! secret, the clock, the store round trip and the service binding. It never blocks a core: the
//! claim is a message to the store thread and an awaited reply.
//!
//! **Service binding (a Go aperture defect fixed).** Go's challenge id is an HMAC over the
//! challenge alone, so a cheap challenge minted for one service pays for another in the same
//! realm. Here the HMAC key is derived per resource, `HMAC(secret, "aperture-mpp-resource-v1|"
//! followed by the resource)`, the resource being the service name, or `<name><path>` under
//! dynamic pricing: an id minted for one service never verifies on another. Clients see no difference (the id is
//! opaque to them); challenges Go minted before a cut-over stop verifying, and they expire within
//! 15 minutes anyway.

use std::rc::Rc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::Synthetic;
use crate::mpp::{self, ChallengeParams, ChargeRequest, Credential, Receipt, Rejection};
use crate::store::ChargeClaim;

use super::h1::Head;
use super::{CoreCtx, BRIDGE_WAIT};

/// The Payment settings of a routing snapshot (reloadable): the realm and the network named in
/// challenges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentSettings {
    pub realm: String,
    /// `methodDetails.network` (`authenticator.network`, lower case).
    pub network: String,
    /// The same network, for checking a session's return invoice.
    pub bridge_network: lnd_bridge::Network,
    /// The session intent, when `enablesessions` is on.
    pub sessions: Option<crate::config::Sessions>,
}

/// A charge credential that verified, waiting for its claim (after the rate-limit phase).
#[derive(Debug, Clone)]
pub struct Charge {
    claim: ChargeClaim,
}

impl Charge {
    /// The charge's payment hash, sha256(preimage): its token id for a metered pricer.
    pub fn payment_hash(&self) -> [u8; 32] {
        self.claim.payment_hash
    }
}

/// Why a Payment credential is refused before any claim (each a fresh 402).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("malformed credential: {0}")]
    Malformed(mpp::CredentialError),
    #[error("{0}")]
    Rejected(Rejection),
    #[error("the challenge was for {paid} sats, less than the price {price}")]
    Underpaid { paid: u64, price: u64 },
}

/// Why a verified charge cannot be used.
#[derive(Debug)]
pub enum ClaimError {
    /// Already used: the client gets a fresh challenge.
    Replayed,
    /// The store could not say (no database, behind, down): 503, never a second use.
    Unavailable,
}

/// The HMAC key of `resource`'s challenges.
pub fn resource_secret(secret: &[u8; 32], resource: &str) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC-SHA256 takes any key length");
    mac.update(b"aperture-mpp-resource-v1|");
    mac.update(resource.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The `WWW-Authenticate: Payment …` value of a charge for `price` sats paid by `invoice`.
pub fn charge_challenge(
    secret: &[u8; 32],
    settings: &PaymentSettings,
    resource: &str,
    price: u64,
    invoice: &lnd_bridge::Invoice,
    now: u64,
) -> String {
    let request = ChargeRequest::lightning(
        price,
        &invoice.payment_request,
        &invoice.payment_hash,
        &settings.network,
    );
    let key = resource_secret(secret, resource);
    ChallengeParams::charge(&key, &settings.realm, now, &request).render()
}

/// The request's `Authorization: Payment …` value, when its (single) `Authorization` field
/// carries that scheme. `Err` with two or more `Authorization` fields of which one is a Payment
/// credential (the spec's 400).
pub fn credential_field(head: &Head) -> Option<Result<&[u8], Synthetic>> {
    let mut fields = head
        .fields()
        .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v);
    let first = fields.next()?;
    let is_payment = |v: &[u8]| {
        let v = super::h1::trim(v);
        v.len() > 8 && v[..8].eq_ignore_ascii_case(b"payment ")
    };
    let rest: Vec<&[u8]> = fields.collect();
    if !is_payment(first) && !rest.iter().any(|v| is_payment(v)) {
        return None;
    }
    if !rest.is_empty() {
        return Some(Err(Synthetic::BadRequest(
            "more than one Authorization field with a Payment credential",
        )));
    }
    Some(Ok(first))
}

/// Checks a Payment credential for `resource` priced at `price` (0: any amount, under dynamic
/// pricing). `Err` names why it is refused (the caller counts it and answers a fresh 402).
pub fn verify(
    secret: &[u8; 32],
    resource: &str,
    credential: &Credential,
    price: u64,
    now: u64,
) -> Result<Charge, Refusal> {
    let key = resource_secret(secret, resource);
    let ok = mpp::verify_charge(&key, credential, None, now).map_err(Refusal::Rejected)?;
    if ok.amount_sats < price {
        // A challenge for less than the price now (minted before a price rise) is refused; Go
        // checks no amount at all.
        return Err(Refusal::Underpaid {
            paid: ok.amount_sats,
            price,
        });
    }
    Ok(Charge {
        claim: ChargeClaim {
            payment_hash: ok.payment_hash,
            challenge_id: ok.challenge_id,
            expires_at: u64::try_from(ok.expires_unix).unwrap_or(0),
            consumed_at: now,
        },
    })
}

/// Claims the charge's single use, durably, and returns the `Payment-Receipt` value for its
/// answer. Runs after the rate-limit phase, so a 429 never spends a charge (Go consumes first).
pub async fn claim(core: &CoreCtx, charge: Charge, now: u64) -> Result<Rc<str>, ClaimError> {
    let store = core.store.as_ref().ok_or(ClaimError::Unavailable)?;
    let reference = hex::encode(charge.claim.payment_hash);
    let challenge_id = charge.claim.challenge_id.clone();
    let rx = store
        .try_claim_charge(charge.claim)
        .ok_or(ClaimError::Unavailable)?;
    match monoio::time::timeout(BRIDGE_WAIT, rx).await {
        Ok(Ok(Ok(true))) => {}
        Ok(Ok(Ok(false))) => return Err(ClaimError::Replayed),
        _ => return Err(ClaimError::Unavailable),
    }
    let receipt = Receipt {
        timestamp: mpp::time::format_rfc3339(now),
        reference,
        challenge_id,
    };
    Ok(receipt.to_header().into())
}

/// The Payment intents to offer, in the client's order of preference: charge, and session
/// when `sessions` is on, filtered and ordered by `Accept-Payment` (absent or unparseable: all,
/// charge first, as Go orders them).
pub fn offered_intents(accept_payment: Option<&[u8]>, sessions: bool) -> Vec<mpp::Intent> {
    let ours: &[mpp::Intent] = if sessions {
        &[mpp::Intent::Charge, mpp::Intent::Session]
    } else {
        &[mpp::Intent::Charge]
    };
    let admitted: Vec<mpp::Intent> = ours
        .iter()
        .copied()
        .filter(|&i| admits(accept_payment, i))
        .collect();
    if admitted.is_empty() {
        return admitted;
    }
    let value = accept_payment.and_then(|v| std::str::from_utf8(v).ok());
    mpp::preference_order(value, &admitted)
}

/// Whether a client's `Accept-Payment` (absent: anything) admits a Lightning `intent`. An
/// unparseable header is ignored, as if absent.
pub fn admits(accept_payment: Option<&[u8]>, intent: mpp::Intent) -> bool {
    let Some(value) = accept_payment.and_then(|v| std::str::from_utf8(v).ok()) else {
        return true;
    };
    let Ok(ranges) = mpp::parse_accept_payment(value) else {
        return true;
    };
    // The most specific matching range decides (the first of equally specific ones).
    let mut best: Option<(u8, u16)> = None;
    for r in &ranges {
        if let Some(s) = r.specificity(mpp::METHOD_LIGHTNING, intent.as_str()) {
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, r.q));
            }
        }
    }
    match best {
        None => ranges.is_empty(),
        Some((_, q)) => q > 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpp::Intent::{Charge, Session};

    #[test]
    fn intents_follow_accept_payment() {
        assert_eq!(offered_intents(None, true), [Charge, Session]);
        assert_eq!(offered_intents(None, false), [Charge]);
        let pick = |h: &str| offered_intents(Some(h.as_bytes()), true);
        assert_eq!(
            pick("lightning/session, lightning/charge;q=0.5"),
            [Session, Charge]
        );
        assert_eq!(pick("lightning/session"), [Session]);
        assert_eq!(pick("lightning/*, lightning/charge;q=0"), [Session]);
        assert_eq!(pick("tempo/charge"), Vec::<mpp::Intent>::new());
        assert_eq!(pick("%%% not a header"), [Charge, Session]);
    }
}
