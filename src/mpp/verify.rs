//! Pure verification of a parsed Payment credential: the charge intent's steps 1-6 (Go aperture's
//! `MPPAuthenticator.Accept` up to, not including, the invoice lookup and the single-use claim)
//! and each session action's stateless checks. Owns the order of checks and the precise reason
//! for each refusal; it must not touch a database, lnd or a clock (`now_unix` is passed in), so
//! single use, session balances, invoice settlement and BOLT11 return-invoice decoding are the
//! caller's.
//!
//! `realm`: `Some` also requires the echoed realm to equal ours. Go does not check it (the HMAC
//! covers the realm, so only a challenge minted with the shared secret under another realm, e.g.
//! by an instance with a different `listenaddr`, differs); `None` is Go's behaviour.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use super::credential::{ChargePayload, Credential, JsonShapeError, SessionAction, SessionPayload};
use super::problem::ProblemType;
use super::request::{ChargeRequest, RequestError, SessionRequest};
use super::time::parse_rfc3339;
use super::{Intent, METHOD_LIGHTNING};

/// Why a credential was refused. Every one means "answer with a fresh 402" except
/// [`Rejection::is_foreign`] ones, which another authenticator may still accept.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    #[error("method is not lightning")]
    Method,
    #[error("intent is not {0}")]
    Intent(&'static str),
    #[error("challenge id does not verify")]
    ChallengeId,
    #[error("challenge was issued for another realm")]
    Realm,
    #[error("challenge carries no expiry")]
    MissingExpires,
    #[error("challenge expiry is not RFC 3339")]
    BadExpires,
    #[error("challenge has expired")]
    Expired,
    #[error("payload: {0}")]
    Payload(JsonShapeError),
    #[error("unknown session action")]
    UnknownAction,
    #[error("payload has no preimage")]
    MissingPreimage,
    #[error("preimage is not 32 bytes of hex")]
    BadPreimage,
    #[error("payload has no sessionId")]
    MissingSessionId,
    #[error("payload has no returnInvoice")]
    MissingReturnInvoice,
    #[error("request: {0}")]
    BadRequest(RequestError),
    #[error("request paymentHash is not 32 bytes of hex")]
    BadPaymentHash,
    #[error("request amount is not a usable sat amount")]
    BadAmount,
    #[error("sha256(preimage) does not match the payment hash")]
    PreimageMismatch,
}

impl Rejection {
    /// Not a credential for this authenticator (other method or intent): let the next one try.
    pub fn is_foreign(&self) -> bool {
        matches!(self, Self::Method | Self::Intent(_))
    }

    /// The specific problem type to report, for deployments that emit them. `intent` picks the
    /// expiry wording: the charge draft folds it into `expired-invoice`.
    pub fn problem(&self, intent: Intent) -> ProblemType {
        match self {
            Self::Method | Self::Intent(_) => ProblemType::MethodUnsupported,
            Self::ChallengeId | Self::Realm | Self::MissingExpires => {
                ProblemType::LightningUnknownChallenge
            }
            Self::Expired if intent == Intent::Charge => ProblemType::LightningExpiredInvoice,
            Self::Expired => ProblemType::LightningChallengeExpired,
            Self::PreimageMismatch => ProblemType::LightningInvalidPreimage,
            _ => ProblemType::LightningMalformedCredential,
        }
    }
}

/// What a charge credential proved; the caller still settles, then claims `payment_hash` once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeVerified {
    pub challenge_id: String,
    pub payment_hash: [u8; 32],
    pub amount_sats: u64,
    /// Unix seconds of `expires` (the consumed-charge row's `expires_at`).
    pub expires_unix: i64,
}

/// 32 bytes of hex, either case (Go's `lntypes.MakePreimageFromStr`).
pub fn parse_preimage(hex_str: &str) -> Result<[u8; 32], Rejection> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).map_err(|_| Rejection::BadPreimage)?;
    Ok(out)
}

/// `sha256(preimage) == payment_hash`, in constant time.
pub fn preimage_matches(preimage: &[u8; 32], payment_hash: &[u8; 32]) -> bool {
    let digest: [u8; 32] = Sha256::digest(preimage).into();
    digest.ct_eq(payment_hash).into()
}

/// Method, intent, HMAC id, realm. Shared first steps of every intent.
fn check_challenge(
    secret: &[u8],
    cred: &Credential,
    intent: Intent,
    realm: Option<&str>,
) -> Result<(), Rejection> {
    let c = &cred.challenge;
    if c.method != METHOD_LIGHTNING {
        return Err(Rejection::Method);
    }
    if c.intent != intent.as_str() {
        return Err(Rejection::Intent(intent.as_str()));
    }
    if !c.verify_id(secret) {
        return Err(Rejection::ChallengeId);
    }
    if realm.is_some_and(|r| r != c.realm) {
        return Err(Rejection::Realm);
    }
    Ok(())
}

/// Parses `expires` and refuses it once `now_unix` is strictly past it.
fn check_expiry(expires: &str, now_unix: u64) -> Result<i64, Rejection> {
    let t = parse_rfc3339(expires).map_err(|_| Rejection::BadExpires)?;
    if t.has_passed(now_unix) {
        return Err(Rejection::Expired);
    }
    Ok(t.unix)
}

fn non_empty(s: &str, missing: Rejection) -> Result<&str, Rejection> {
    if s.is_empty() {
        Err(missing)
    } else {
        Ok(s)
    }
}

/// Charge verification, Go's order: method and intent; HMAC id; `expires` present, RFC 3339
/// and not passed; preimage 32-byte hex; request decodes with a 32-byte `paymentHash`;
/// `sha256(preimage) == paymentHash`; finally the amount parses (always true for what we mint).
pub fn verify_charge(
    secret: &[u8],
    cred: &Credential,
    realm: Option<&str>,
    now_unix: u64,
) -> Result<ChargeVerified, Rejection> {
    check_challenge(secret, cred, Intent::Charge, realm)?;
    let expires = non_empty(&cred.challenge.expires, Rejection::MissingExpires)?;
    let expires_unix = check_expiry(expires, now_unix)?;
    let payload = ChargePayload::from_value(&cred.payload).map_err(Rejection::Payload)?;
    let preimage = parse_preimage(non_empty(&payload.preimage, Rejection::MissingPreimage)?)?;
    let request = ChargeRequest::decode(&cred.challenge.request).map_err(Rejection::BadRequest)?;
    let payment_hash = request
        .payment_hash()
        .map_err(|_| Rejection::BadPaymentHash)?;
    if !preimage_matches(&preimage, &payment_hash) {
        return Err(Rejection::PreimageMismatch);
    }
    let amount_sats = request.amount_sats().map_err(|_| Rejection::BadAmount)?;
    Ok(ChargeVerified {
        challenge_id: cred.challenge.id.clone(),
        payment_hash,
        amount_sats,
        expires_unix,
    })
}

/// What a session action proved statelessly, and what the caller must still check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStep {
    /// Preimage matches the deposit hash. Caller: invoice settled (strict), decode
    /// `return_invoice` (BOLT11, no amount, unexpired), then create the session
    /// (`session_id` = hex of `payment_hash`) crediting `deposit_sats` once.
    Open {
        payment_hash: [u8; 32],
        deposit_sats: u64,
        return_invoice: String,
    },
    /// Caller: session exists and is open, `preimage_matches(preimage, session hash)`, then
    /// debit `amount_sats` (> 0) if the balance covers it.
    Bearer {
        session_id: String,
        preimage: [u8; 32],
        amount_sats: u64,
    },
    /// Top-up preimage matches the request's hash. Caller: session open, invoice settled
    /// (strict), credit `deposit_sats` (> 0) under `payment_hash` once.
    TopUp {
        session_id: String,
        payment_hash: [u8; 32],
        deposit_sats: u64,
    },
    /// Caller: session open, `preimage_matches(preimage, session hash)`, then close and refund.
    Close {
        session_id: String,
        preimage: [u8; 32],
    },
}

/// A session credential that passed the stateless checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionVerified {
    pub challenge_id: String,
    /// `None` when the challenge carried no expiry (Go then skips the check).
    pub expires_unix: Option<i64>,
    pub step: SessionStep,
}

/// Session verification: method and intent; payload shape and a known action (Go decodes the
/// payload first); HMAC id; expiry only if present; then the action's own checks (see
/// [`SessionStep`]). Request amounts must parse; bearer's `amount` and topUp's `depositAmount`
/// must be > 0, as in Go; an empty `depositAmount` on open reads as 0.
pub fn verify_session(
    secret: &[u8],
    cred: &Credential,
    realm: Option<&str>,
    now_unix: u64,
) -> Result<SessionVerified, Rejection> {
    let c = &cred.challenge;
    if c.method != METHOD_LIGHTNING {
        return Err(Rejection::Method);
    }
    if c.intent != Intent::Session.as_str() {
        return Err(Rejection::Intent(Intent::Session.as_str()));
    }
    let payload = SessionPayload::from_value(&cred.payload).map_err(Rejection::Payload)?;
    let action = payload.action().ok_or(Rejection::UnknownAction)?;
    check_challenge(secret, cred, Intent::Session, realm)?;
    let expires_unix = match c.expires.as_str() {
        "" => None,
        e => Some(check_expiry(e, now_unix)?),
    };
    let step = match action {
        SessionAction::Open => open_step(cred, &payload)?,
        SessionAction::Bearer => {
            let session_id =
                non_empty(&payload.session_id, Rejection::MissingSessionId)?.to_owned();
            let preimage =
                parse_preimage(non_empty(&payload.preimage, Rejection::MissingPreimage)?)?;
            let request = SessionRequest::decode(&c.request).map_err(Rejection::BadRequest)?;
            let amount_sats = request
                .amount_sats()
                .ok()
                .filter(|a| *a > 0)
                .ok_or(Rejection::BadAmount)?;
            SessionStep::Bearer {
                session_id,
                preimage,
                amount_sats,
            }
        }
        SessionAction::TopUp => top_up_step(cred, &payload)?,
        SessionAction::Close => {
            let session_id =
                non_empty(&payload.session_id, Rejection::MissingSessionId)?.to_owned();
            let preimage =
                parse_preimage(non_empty(&payload.preimage, Rejection::MissingPreimage)?)?;
            SessionStep::Close {
                session_id,
                preimage,
            }
        }
    };
    Ok(SessionVerified {
        challenge_id: c.id.clone(),
        expires_unix,
        step,
    })
}

/// Request decode plus `paymentHash` match against `preimage_hex`; returns (hash, deposit).
fn deposit_match(cred: &Credential, preimage_hex: &str) -> Result<([u8; 32], u64), Rejection> {
    let preimage = parse_preimage(preimage_hex)?;
    let request = SessionRequest::decode(&cred.challenge.request).map_err(Rejection::BadRequest)?;
    let payment_hash = request
        .payment_hash()
        .map_err(|_| Rejection::BadPaymentHash)?;
    if !preimage_matches(&preimage, &payment_hash) {
        return Err(Rejection::PreimageMismatch);
    }
    let deposit_sats = request.deposit_sats().map_err(|_| Rejection::BadAmount)?;
    Ok((payment_hash, deposit_sats))
}

fn open_step(cred: &Credential, payload: &SessionPayload) -> Result<SessionStep, Rejection> {
    let (payment_hash, deposit_sats) = deposit_match(
        cred,
        non_empty(&payload.preimage, Rejection::MissingPreimage)?,
    )?;
    let return_invoice =
        non_empty(&payload.return_invoice, Rejection::MissingReturnInvoice)?.to_owned();
    Ok(SessionStep::Open {
        payment_hash,
        deposit_sats,
        return_invoice,
    })
}

fn top_up_step(cred: &Credential, payload: &SessionPayload) -> Result<SessionStep, Rejection> {
    let session_id = non_empty(&payload.session_id, Rejection::MissingSessionId)?.to_owned();
    let (payment_hash, deposit_sats) = deposit_match(
        cred,
        non_empty(&payload.top_up_preimage, Rejection::MissingPreimage)?,
    )?;
    if deposit_sats == 0 {
        return Err(Rejection::BadAmount);
    }
    Ok(SessionStep::TopUp {
        session_id,
        payment_hash,
        deposit_sats,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::mpp::challenge::ChallengeParams;

    const SECRET: &[u8] = b"mpp-test-vector-secret";
    const REALM: &str = "api.example.com";
    const NOW: u64 = 1_786_622_400;
    const PRE: [u8; 32] = [0x11; 32];
    const TOP_UP_PRE: [u8; 32] = [0x22; 32];

    fn hash_of(pre: &[u8; 32]) -> [u8; 32] {
        Sha256::digest(pre).into()
    }

    fn charge_cred(payload: Value) -> Credential {
        let req = ChargeRequest::lightning(100, "lnbcrt1u1p", &hash_of(&PRE), "regtest");
        Credential {
            challenge: ChallengeParams::charge(SECRET, REALM, NOW, &req),
            source: String::new(),
            payload,
        }
    }

    fn good_charge() -> Credential {
        charge_cred(json!({ "preimage": hex::encode(PRE) }))
    }

    /// Re-mints `c` after `edit` so the HMAC still verifies: isolates the later checks.
    fn remint(mut c: Credential, edit: impl FnOnce(&mut ChallengeParams)) -> Credential {
        edit(&mut c.challenge);
        c.challenge.id = c.challenge.compute_id(SECRET);
        c
    }

    #[test]
    fn charge_accepts_and_reports_what_it_proved() {
        let ok = verify_charge(SECRET, &good_charge(), Some(REALM), NOW + 900).unwrap();
        assert_eq!(
            (ok.payment_hash, ok.amount_sats, ok.expires_unix),
            (hash_of(&PRE), 100, NOW as i64 + 900)
        );
        assert_eq!(ok.challenge_id, good_charge().challenge.id);
        // Upper-case hex preimage is accepted, as in Go.
        let upper = charge_cred(json!({ "preimage": hex::encode_upper(PRE) }));
        assert!(verify_charge(SECRET, &upper, None, NOW).is_ok());
    }

    #[test]
    fn charge_rejections() {
        let check =
            |c: &Credential, now: u64| verify_charge(SECRET, c, Some(REALM), now).unwrap_err();
        let mut c = good_charge();
        c.challenge.method = "Lightning".into();
        assert_eq!(check(&c, NOW), Rejection::Method);
        let mut c = good_charge();
        c.challenge.intent = "session".into();
        assert_eq!(check(&c, NOW), Rejection::Intent("charge"));
        assert!(check(&c, NOW).is_foreign());
        let mut c = good_charge();
        c.challenge.request.push('A');
        assert_eq!(check(&c, NOW), Rejection::ChallengeId);
        let c = remint(good_charge(), |p| p.realm = "other".into());
        assert_eq!(check(&c, NOW), Rejection::Realm);
        assert!(
            verify_charge(SECRET, &c, None, NOW).is_ok(),
            "no realm check without one"
        );
        assert_eq!(
            check(&remint(good_charge(), |p| p.expires.clear()), NOW),
            Rejection::MissingExpires
        );
        assert_eq!(
            check(
                &remint(good_charge(), |p| p.expires = "tomorrow".into()),
                NOW
            ),
            Rejection::BadExpires
        );
        assert_eq!(check(&good_charge(), NOW + 901), Rejection::Expired);
        assert!(matches!(
            check(&charge_cred(json!("x")), NOW),
            Rejection::Payload(_)
        ));
        assert!(matches!(
            check(&charge_cred(json!({ "preimage": 1 })), NOW),
            Rejection::Payload(_)
        ));
        assert_eq!(
            check(&charge_cred(json!({})), NOW),
            Rejection::MissingPreimage
        );
        assert_eq!(
            check(&charge_cred(json!({ "preimage": "abcd" })), NOW),
            Rejection::BadPreimage
        );
        assert_eq!(
            check(
                &charge_cred(json!({ "preimage": hex::encode(TOP_UP_PRE) })),
                NOW
            ),
            Rejection::PreimageMismatch
        );
        let c = remint(good_charge(), |p| p.request = "AB".into());
        assert!(matches!(
            check(&c, NOW),
            Rejection::BadRequest(RequestError::Base64(_))
        ));
        let bad_hash = ChargeRequest::lightning(1, "i", &[0; 32], "n");
        let bad_hash = ChargeRequest {
            method_details: request::ChargeMethodDetails {
                payment_hash: "zz".into(),
                ..bad_hash.method_details
            },
            ..bad_hash
        };
        assert_eq!(
            check(
                &remint(good_charge(), |p| p.request = bad_hash.encode()),
                NOW
            ),
            Rejection::BadPaymentHash
        );
        let neg = ChargeRequest {
            amount: "-1".into(),
            ..ChargeRequest::lightning(1, "i", &hash_of(&PRE), "n")
        };
        assert_eq!(
            check(&remint(good_charge(), |p| p.request = neg.encode()), NOW),
            Rejection::BadAmount
        );
    }

    use crate::mpp::request;

    fn session_cred(payload: Value, deposit: u64) -> Credential {
        let req = SessionRequest::lightning(5, deposit, "lnbcrt1u1pdeposit", &hash_of(&PRE), 300);
        Credential {
            challenge: ChallengeParams::session(SECRET, REALM, NOW, &req),
            source: String::new(),
            payload,
        }
    }

    #[test]
    fn session_actions() {
        let v = |p: Value| verify_session(SECRET, &session_cred(p, 100), Some(REALM), NOW);
        let open = v(
            json!({ "action": "open", "preimage": hex::encode(PRE), "returnInvoice": "lnbcrt1p" }),
        )
        .unwrap();
        assert_eq!(
            open.step,
            SessionStep::Open {
                payment_hash: hash_of(&PRE),
                deposit_sats: 100,
                return_invoice: "lnbcrt1p".into()
            }
        );
        assert_eq!(open.expires_unix, Some(NOW as i64 + 900));
        let bearer =
            v(json!({ "action": "bearer", "sessionId": "s", "preimage": hex::encode(PRE) }))
                .unwrap();
        assert_eq!(
            bearer.step,
            SessionStep::Bearer {
                session_id: "s".into(),
                preimage: PRE,
                amount_sats: 5
            }
        );
        let close = v(json!({ "action": "close", "sessionId": "s", "preimage": hex::encode(PRE) }))
            .unwrap();
        assert_eq!(
            close.step,
            SessionStep::Close {
                session_id: "s".into(),
                preimage: PRE
            }
        );
        let req = SessionRequest::lightning(5, 50, "lnbcrt1u1ptopup", &hash_of(&TOP_UP_PRE), 300);
        let c = Credential {
            challenge: ChallengeParams::session(SECRET, REALM, NOW, &req),
            source: String::new(),
            payload: json!({ "action": "topUp", "sessionId": "s", "topUpPreimage": hex::encode(TOP_UP_PRE) }),
        };
        let top = verify_session(SECRET, &c, None, NOW).unwrap();
        assert_eq!(
            top.step,
            SessionStep::TopUp {
                session_id: "s".into(),
                payment_hash: hash_of(&TOP_UP_PRE),
                deposit_sats: 50
            }
        );
        assert!(
            preimage_matches(&PRE, &hash_of(&PRE))
                && !preimage_matches(&PRE, &hash_of(&TOP_UP_PRE))
        );
    }

    #[test]
    fn session_rejections() {
        let v =
            |p: Value| verify_session(SECRET, &session_cred(p, 100), Some(REALM), NOW).unwrap_err();
        let pre = hex::encode(PRE);
        assert_eq!(v(json!({ "action": "refund" })), Rejection::UnknownAction);
        assert!(matches!(v(json!([])), Rejection::Payload(_)));
        assert_eq!(
            v(json!({ "action": "open", "returnInvoice": "x" })),
            Rejection::MissingPreimage
        );
        assert_eq!(
            v(json!({ "action": "open", "preimage": pre })),
            Rejection::MissingReturnInvoice
        );
        assert_eq!(
            v(
                json!({ "action": "open", "preimage": hex::encode(TOP_UP_PRE), "returnInvoice": "x" })
            ),
            Rejection::PreimageMismatch
        );
        assert_eq!(
            v(json!({ "action": "bearer", "preimage": pre })),
            Rejection::MissingSessionId
        );
        assert_eq!(
            v(json!({ "action": "bearer", "sessionId": "s" })),
            Rejection::MissingPreimage
        );
        assert_eq!(
            v(json!({ "action": "close", "sessionId": "s", "preimage": "xyz" })),
            Rejection::BadPreimage
        );
        assert_eq!(
            v(json!({ "action": "topUp", "sessionId": "s", "preimage": pre })),
            Rejection::MissingPreimage
        );
        // topUp needs a positive depositAmount; bearer a positive amount.
        let c = session_cred(
            json!({ "action": "topUp", "sessionId": "s", "topUpPreimage": pre }),
            0,
        );
        assert_eq!(
            verify_session(SECRET, &c, None, NOW).unwrap_err(),
            Rejection::BadAmount
        );
        let zero = SessionRequest {
            amount: "0".into(),
            ..SessionRequest::lightning(0, 0, "i", &hash_of(&PRE), 1)
        };
        let c = remint(
            session_cred(
                json!({ "action": "bearer", "sessionId": "s", "preimage": pre }),
                1,
            ),
            |p| p.request = zero.encode(),
        );
        assert_eq!(
            verify_session(SECRET, &c, None, NOW).unwrap_err(),
            Rejection::BadAmount
        );
        // Expiry is only checked when present; a forged id fails; other intents are foreign.
        let c = remint(
            session_cred(
                json!({ "action": "close", "sessionId": "s", "preimage": pre }),
                1,
            ),
            |p| p.expires.clear(),
        );
        assert_eq!(
            verify_session(SECRET, &c, None, NOW + 10_000)
                .unwrap()
                .expires_unix,
            None
        );
        let c = session_cred(
            json!({ "action": "close", "sessionId": "s", "preimage": pre }),
            1,
        );
        assert_eq!(
            verify_session(SECRET, &c, None, NOW + 901).unwrap_err(),
            Rejection::Expired
        );
        assert_eq!(
            verify_session(b"wrong", &c, None, NOW).unwrap_err(),
            Rejection::ChallengeId
        );
        assert_eq!(
            verify_session(SECRET, &c, Some("elsewhere"), NOW).unwrap_err(),
            Rejection::Realm
        );
        assert_eq!(
            verify_session(SECRET, &good_charge(), None, NOW).unwrap_err(),
            Rejection::Intent("session")
        );
    }

    #[test]
    fn problem_mapping() {
        assert_eq!(
            Rejection::Expired.problem(Intent::Charge),
            ProblemType::LightningExpiredInvoice
        );
        assert_eq!(
            Rejection::Expired.problem(Intent::Session),
            ProblemType::LightningChallengeExpired
        );
        assert_eq!(
            Rejection::ChallengeId.problem(Intent::Charge),
            ProblemType::LightningUnknownChallenge
        );
        assert_eq!(
            Rejection::PreimageMismatch.problem(Intent::Charge),
            ProblemType::LightningInvalidPreimage
        );
        assert_eq!(
            Rejection::BadPreimage.problem(Intent::Charge),
            ProblemType::LightningMalformedCredential
        );
        assert_eq!(
            Rejection::Method.problem(Intent::Charge),
            ProblemType::MethodUnsupported
        );
    }
}
