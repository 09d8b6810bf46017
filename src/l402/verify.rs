//! Verification and minting with derived root keys: identifier → preimage → root key → HMAC
//! chain → caveats, plus `authenticate`, which tries every candidate in a request's headers.
//! Owns the order of checks and the failure reasons; it does no I/O and reads no clock.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use hmac::Hmac;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use super::caveat::{check_caveats, CaveatContext, CaveatError};
use super::header::{raw_candidates, Credential, CredentialError};
use super::identifier::{Identifier, IdentifierError};
use super::macaroon::{hmac_prekeyed, prekey, signature_chain, Macaroon, MacaroonError, LOCATION};

/// The random per-token id from the identifier (the rate-limit and metering key).
pub type TokenId = [u8; 32];

/// What the request asks the token for. `now_unix` is injected by the caller.
#[derive(Debug, Clone, Copy)]
pub struct VerifyRequest<'a> {
    pub service: &'a str,
    pub capability: Option<&'a str>,
    pub now_unix: u64,
}

/// Why a credential was rejected; [`VerifyError::reason`] names it for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VerifyError {
    #[error("malformed credential: {0}")]
    Malformed(CredentialError),
    #[error("bad identifier: {0}")]
    BadIdentifier(IdentifierError),
    #[error("third-party caveat")]
    ThirdPartyCaveat,
    #[error("preimage does not match the payment hash")]
    BadPreimage,
    #[error("signature does not verify")]
    BadSignature,
    /// A first-party caveat failed (the caveat module's own error, not restated here).
    #[error(transparent)]
    Caveat(#[from] CaveatError),
}

impl VerifyError {
    /// Stable snake_case label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::BadIdentifier(_) => "bad_identifier",
            Self::ThirdPartyCaveat => "third_party_caveat",
            Self::BadPreimage => "bad_preimage",
            Self::BadSignature => "bad_signature",
            Self::Caveat(c) => c.reason(),
        }
    }

    /// How far verification got before failing; `authenticate` reports the deepest failure.
    fn depth(&self) -> u8 {
        match self {
            Self::Malformed(_) => 0,
            Self::BadIdentifier(_) | Self::ThirdPartyCaveat => 1,
            Self::BadPreimage => 2,
            Self::BadSignature => 3,
            _ => 4,
        }
    }
}

impl From<CredentialError> for VerifyError {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::Macaroon(MacaroonError::ThirdPartyCaveat) => Self::ThirdPartyCaveat,
            other => Self::Malformed(other),
        }
    }
}

impl From<IdentifierError> for VerifyError {
    fn from(e: IdentifierError) -> Self {
        Self::BadIdentifier(e)
    }
}

/// Result of looking for a valid credential in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No carrier with our scheme (a foreign `Authorization` scheme counts as missing).
    Missing,
    /// Candidates were present; none verified. Carries the deepest failure.
    Rejected(VerifyError),
    Accepted {
        token_id: TokenId,
        credential: Credential,
    },
}

/// `HMAC-SHA256(master_secret, identifier)`: per-token root keys are derived, never stored.
pub fn derive_root_key(master_secret: &[u8; 32], identifier: &[u8]) -> [u8; 32] {
    hmac_prekeyed(&prekey(master_secret), identifier)
}

/// Verifies `cred` against an explicit root key (e.g. one imported from Go aperture's store).
pub fn verify_with_root_key(
    cred: &Credential,
    root_key: &[u8; 32],
    req: &VerifyRequest<'_>,
) -> Result<TokenId, VerifyError> {
    let m = &cred.macaroon;
    check_token(
        m.identifier.as_slice(),
        m.caveat_slices(),
        &m.signature,
        &cred.preimage,
        |_| *root_key,
        req,
    )
}

/// The ordered checks, generic over where the caveats live (owned or borrowed) and over how the
/// root key is found, so the cheap checks run before any key work.
fn check_token<'c, I>(
    identifier: &[u8],
    caveats: I,
    signature: &[u8; 32],
    preimage: &[u8; 32],
    root_key: impl FnOnce(&[u8]) -> [u8; 32],
    req: &VerifyRequest<'_>,
) -> Result<TokenId, VerifyError>
where
    I: Iterator<Item = &'c [u8]> + Clone,
{
    let id = Identifier::decode(identifier)?;
    let hash: [u8; 32] = Sha256::digest(preimage).into();
    if !bool::from(hash.ct_eq(&id.payment_hash)) {
        return Err(VerifyError::BadPreimage);
    }
    let key = root_key(identifier);
    let sig = signature_chain(&key, identifier, caveats.clone());
    if !bool::from(sig.ct_eq(signature)) {
        return Err(VerifyError::BadSignature);
    }
    let ctx = CaveatContext {
        service: req.service,
        capability: req.capability,
        now_unix: req.now_unix,
        payment_hash: &id.payment_hash,
    };
    check_caveats(caveats, &ctx)?;
    Ok(id.token_id)
}

/// Mints and verifies tokens whose root keys derive from one master secret.
#[derive(Clone)]
pub struct Verifier {
    /// The master secret, kept only as a pre-keyed HMAC state (saves two compressions per key).
    master: Hmac<Sha256>,
    /// Root keys of tokens minted by Go aperture (random per token, imported from its `secrets`
    /// table), by sha256(identifier). Empty unless an import was done.
    legacy: Option<Arc<HashMap<[u8; 32], [u8; 32]>>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier { master_secret: <redacted> }")
    }
}

impl Verifier {
    pub fn new(master_secret: [u8; 32]) -> Verifier {
        Verifier {
            master: prekey(&master_secret),
            legacy: None,
        }
    }

    /// Also verifies tokens minted by Go aperture, whose root keys were imported (keyed by
    /// sha256(identifier), as in Go aperture's `secrets` table).
    pub fn with_legacy_keys(mut self, keys: Arc<HashMap<[u8; 32], [u8; 32]>>) -> Verifier {
        self.legacy = (!keys.is_empty()).then_some(keys);
        self
    }

    /// The root key of the token with this (encoded) identifier: an imported Go aperture key
    /// when there is one, else derived from the master secret.
    pub fn root_key(&self, identifier: &[u8]) -> [u8; 32] {
        if let Some(legacy) = &self.legacy {
            let hash: [u8; 32] = Sha256::digest(identifier).into();
            if let Some(key) = legacy.get(&hash) {
                return *key;
            }
        }
        hmac_prekeyed(&self.master, identifier)
    }

    /// Mints a token: identifier built, root key derived, location `lsat`.
    pub fn mint(&self, payment_hash: [u8; 32], token_id: [u8; 32], caveats: &[String]) -> Macaroon {
        let identifier = Identifier {
            payment_hash,
            token_id,
        }
        .encode();
        Macaroon::mint(&self.root_key(&identifier), LOCATION, &identifier, caveats)
    }

    /// Full verification of one parsed credential.
    pub fn verify(
        &self,
        cred: &Credential,
        req: &VerifyRequest<'_>,
    ) -> Result<TokenId, VerifyError> {
        let m = &cred.macaroon;
        check_token(
            m.identifier.as_slice(),
            m.caveat_slices(),
            &m.signature,
            &cred.preimage,
            |id| self.root_key(id),
            req,
        )
    }

    /// Tries every credential candidate in the headers and accepts the first that verifies.
    /// Only the accepted candidate is copied into an owned [`Credential`].
    pub fn authenticate<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        req: &VerifyRequest<'_>,
    ) -> AuthOutcome {
        let candidates = raw_candidates(headers);
        let mut buf = Vec::new();
        let mut worst: Option<VerifyError> = None;
        for candidate in candidates {
            let err = match candidate {
                Err(e) => VerifyError::from(e),
                Ok(raw) => match raw.decode(&mut buf) {
                    Err(e) => VerifyError::from(e),
                    Ok((mac, preimage)) => {
                        let root = |id: &[u8]| self.root_key(id);
                        match check_token(
                            mac.identifier,
                            mac.caveats(),
                            &mac.signature,
                            &preimage,
                            root,
                            req,
                        ) {
                            Ok(token_id) => {
                                let credential = Credential {
                                    macaroon: mac.to_owned(),
                                    preimage,
                                    source: raw.source,
                                };
                                return AuthOutcome::Accepted {
                                    token_id,
                                    credential,
                                };
                            }
                            Err(e) => e,
                        }
                    }
                },
            };
            // Deepest failure wins; on ties the later one.
            if worst.is_none_or(|w| err.depth() >= w.depth()) {
                worst = Some(err);
            }
        }
        worst.map_or(AuthOutcome::Missing, AuthOutcome::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l402::caveat::mint_caveats;

    const PRE: [u8; 32] = [5u8; 32];
    const NOW: u64 = 1_000;

    fn hash() -> [u8; 32] {
        Sha256::digest(PRE).into()
    }

    fn verifier() -> Verifier {
        Verifier::new([42u8; 32])
    }

    fn req(service: &str) -> VerifyRequest<'_> {
        VerifyRequest {
            service,
            capability: None,
            now_unix: NOW,
        }
    }

    fn token(caveats: &[String]) -> Macaroon {
        verifier().mint(hash(), [3u8; 32], caveats)
    }

    fn header(m: &Macaroon, pre: &[u8; 32]) -> String {
        format!("L402 {}:{}", m.to_base64(), hex::encode(pre))
    }

    fn authenticate(fields: &[(&str, &str)], service: &str) -> AuthOutcome {
        verifier().authenticate(
            fields.iter().map(|(n, v)| (*n, v.as_bytes())),
            &req(service),
        )
    }

    #[test]
    fn accepts_and_returns_token_id() {
        let m = token(&mint_caveats("svc", None, &[], Some(NOW + 1)));
        let cred = Credential {
            macaroon: m.clone(),
            preimage: PRE,
            source: super::super::header::CredentialSource::Macaroon,
        };
        assert_eq!(verifier().verify(&cred, &req("svc")), Ok([3u8; 32]));
        let root = derive_root_key(&[42u8; 32], &m.identifier);
        assert_eq!(root, verifier().root_key(&m.identifier));
        assert_eq!(
            verify_with_root_key(&cred, &root, &req("svc")),
            Ok([3u8; 32])
        );
        assert_eq!(
            verify_with_root_key(&cred, &[0u8; 32], &req("svc")),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn each_failure_has_its_reason() {
        let m = token(&mint_caveats("svc", Some("read"), &[], Some(NOW + 10)));
        let check = |m: &Macaroon, pre: &[u8; 32], r: VerifyRequest<'_>| {
            verifier().authenticate([("Authorization", header(m, pre).as_bytes())], &r)
        };
        let rejected = |e: VerifyError| AuthOutcome::Rejected(e);
        assert_eq!(
            check(&m, &[6u8; 32], req("svc")),
            rejected(VerifyError::BadPreimage)
        );
        assert_eq!(
            check(&m, &PRE, req("other")),
            rejected(VerifyError::Caveat(CaveatError::WrongService))
        );
        let late = VerifyRequest {
            now_unix: NOW + 10,
            ..req("svc")
        };
        assert_eq!(
            check(&m, &PRE, late),
            rejected(VerifyError::Caveat(CaveatError::Expired))
        );
        let write = VerifyRequest {
            capability: Some("write"),
            ..req("svc")
        };
        assert_eq!(
            check(&m, &PRE, write),
            rejected(VerifyError::Caveat(CaveatError::Capability))
        );
        let read = VerifyRequest {
            capability: Some("read"),
            ..req("svc")
        };
        assert!(matches!(
            check(&m, &PRE, read),
            AuthOutcome::Accepted { .. }
        ));

        let forged = Verifier::new([1u8; 32]).mint(hash(), [3u8; 32], &[]);
        assert_eq!(
            check(&forged, &PRE, req("svc")),
            rejected(VerifyError::BadSignature)
        );

        let mut widened = m.clone();
        widened.add_first_party_caveat(format!("svc_valid_until={}", NOW + 99));
        assert_eq!(
            check(&widened, &PRE, req("svc")),
            rejected(VerifyError::Caveat(CaveatError::Widened("valid_until")))
        );
        let mut wrong_pre = m.clone();
        wrong_pre.add_first_party_caveat(format!("preimage={}", hex::encode([6u8; 32])));
        assert_eq!(
            check(&wrong_pre, &PRE, req("svc")),
            rejected(VerifyError::Caveat(CaveatError::PreimageMismatch))
        );

        let short_id = Macaroon::mint(&[0u8; 32], LOCATION, &[0u8; 65], &[] as &[&str]);
        assert_eq!(
            check(&short_id, &PRE, req("svc")),
            rejected(VerifyError::BadIdentifier(IdentifierError::Length(65)))
        );
    }

    #[test]
    fn third_party_caveat_is_its_own_reason() {
        let m = token(&[]);
        let mut bytes = m.encode_v2();
        // Splice a caveat with a vid packet before the closing EOS of the caveat section.
        let sig_at = bytes.len() - 34;
        bytes.splice(sig_at - 1..sig_at - 1, [2u8, 1, b'c', 4, 1, b'v', 0]);
        let value = format!(
            "L402 {}:{}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes),
            hex::encode(PRE)
        );
        assert_eq!(
            authenticate(&[("Authorization", &value)], "svc"),
            AuthOutcome::Rejected(VerifyError::ThirdPartyCaveat)
        );
    }

    #[test]
    fn missing_vs_rejected() {
        assert_eq!(authenticate(&[], "svc"), AuthOutcome::Missing);
        assert_eq!(
            authenticate(&[("Authorization", "Bearer x"), ("Host", "a")], "svc"),
            AuthOutcome::Missing
        );
        assert_eq!(
            authenticate(&[("Authorization", "L402 LSAT x:y")], "svc"),
            AuthOutcome::Rejected(VerifyError::Malformed(CredentialError::BadPreimage))
        );
    }

    #[test]
    fn any_verifying_candidate_wins_regardless_of_order() {
        let good = header(&token(&mint_caveats("svc", None, &[], None)), &PRE);
        let bad_sig = header(&Verifier::new([9u8; 32]).mint(hash(), [3u8; 32], &[]), &PRE);
        for fields in [
            vec![
                ("Authorization", good.as_str()),
                ("Authorization", "L402 junk:00"),
            ],
            vec![
                ("Authorization", "L402 junk:00"),
                ("authorization", good.as_str()),
            ],
            vec![
                ("Authorization", bad_sig.as_str()),
                ("Authorization", good.as_str()),
            ],
        ] {
            match authenticate(&fields, "svc") {
                AuthOutcome::Accepted {
                    token_id,
                    credential,
                } => {
                    assert_eq!(token_id, [3u8; 32]);
                    assert_eq!(credential.preimage, PRE);
                }
                other => panic!("not accepted: {other:?}"),
            }
        }
        // The deepest failure is reported, not the last.
        assert_eq!(
            authenticate(
                &[("Authorization", bad_sig.as_str()), ("Macaroon", "zz")],
                "svc"
            ),
            AuthOutcome::Rejected(VerifyError::BadSignature)
        );
    }

    #[test]
    fn bearer_does_not_hide_macaroon_header() {
        let mut m = token(&mint_caveats("svc", None, &[], None));
        m.add_first_party_caveat(format!("preimage={}", hex::encode(PRE)));
        let hexmac = hex::encode(m.encode_v2());
        let outcome = authenticate(
            &[
                ("Authorization", "Bearer abc"),
                ("Grpc-Metadata-Macaroon", &hexmac),
            ],
            "svc",
        );
        assert!(matches!(outcome, AuthOutcome::Accepted { token_id, .. } if token_id == [3u8; 32]));
    }

    #[test]
    fn reasons_are_distinct() {
        let all = [
            VerifyError::Malformed(CredentialError::Hex),
            VerifyError::BadIdentifier(IdentifierError::Version(1)),
            VerifyError::ThirdPartyCaveat,
            VerifyError::BadPreimage,
            VerifyError::BadSignature,
            VerifyError::Caveat(CaveatError::WrongService),
            VerifyError::Caveat(CaveatError::Expired),
            VerifyError::Caveat(CaveatError::Capability),
            VerifyError::Caveat(CaveatError::Widened("services")),
            VerifyError::Caveat(CaveatError::Malformed("services")),
            VerifyError::Caveat(CaveatError::PreimageMismatch),
        ];
        let mut reasons: Vec<_> = all.iter().map(VerifyError::reason).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len());
        assert!(!format!("{:?}", verifier()).contains("42"));
    }
}
