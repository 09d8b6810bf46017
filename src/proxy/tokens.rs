//! Per-core cache of verified credentials, keyed by the exact `Authorization` field value and
//! the service. A repeat request from a paying client then skips base64 decoding, the HMAC chain,
//! the caveat checks and the re-serialisation of the upstream header: identical bytes are an
//! identical credential, so the only things that can change the verdict are time (the expiry is
//! kept and checked on every hit) and revocation (the cache is cleared when that arrives).
//! Core-local (`RefCell`), bounded (cleared whole when full: cheap, and a cold miss only costs
//! one ordinary verification).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::l402::caveat::{COND_VALID_UNTIL, SUFFIX_VALID_UNTIL};
use crate::l402::{self, Credential, TokenId};
use crate::ratelimit::SeededState;

/// Entries kept per core before the cache is cleared.
pub const CAPACITY: usize = 4096;

/// The `Authorization` fields rendered for the upstream (`LSAT …`, `L402 …`).
pub type Upstream = Rc<[String; 2]>;

/// A verified credential: what goes upstream, the token (the rate-limit key) and the payment
/// hash (for `strictverify`).
#[derive(Clone)]
pub struct Hit {
    /// The `Authorization` fields for the upstream.
    pub upstream: Upstream,
    /// The token id.
    pub token_id: TokenId,
    /// The payment hash from the identifier.
    pub payment_hash: [u8; 32],
}

impl Hit {
    /// Renders the upstream fields of a credential that verified (its identifier parsed then).
    pub fn new(credential: &Credential, token_id: TokenId) -> Hit {
        let payment_hash = l402::Identifier::decode(&credential.macaroon.identifier)
            .map(|id| id.payment_hash)
            .unwrap_or_default();
        Hit {
            upstream: Rc::new(l402::upstream_authorization(credential)),
            token_id,
            payment_hash,
        }
    }
}

struct Entry {
    service: Rc<str>,
    hit: Hit,
    /// The token stops verifying at this Unix second (exclusive), if it expires.
    expires: Option<u64>,
}

/// The cache of one core.
pub struct TokenCache {
    // A keyed fast hash instead of SipHash: keys are ~250-byte header values hashed on every
    // paid request; the random per-core seed keeps clients from crafting collisions.
    map: RefCell<HashMap<Box<[u8]>, Entry, SeededState>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            map: RefCell::new(HashMap::with_hasher(SeededState::new(rand::random()))),
        }
    }
}

impl TokenCache {
    /// The upstream fields of a credential verified before for `service`, still valid at `now`.
    pub fn get(&self, value: &[u8], service: &str, now: u64) -> Option<Hit> {
        let map = self.map.borrow();
        let entry = map.get(value)?;
        let fresh = entry.expires.is_none_or(|t| now < t);
        (fresh && &*entry.service == service).then(|| entry.hit.clone())
    }

    /// Remembers a credential that just verified for `service` from the field value `value`.
    pub fn insert(
        &self,
        value: &[u8],
        service: &str,
        token_id: TokenId,
        credential: &Credential,
    ) -> Hit {
        let hit = Hit::new(credential, token_id);
        let mut map = self.map.borrow_mut();
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(
            value.into(),
            Entry {
                service: service.into(),
                hit: hit.clone(),
                expires: expiry(credential, service),
            },
        );
        hit
    }

    /// Forgets everything (revocation, reload).
    pub fn clear(&self) {
        self.map.borrow_mut().clear();
    }

    /// Entries now.
    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The earliest `<service>_valid_until` or bare `valid_until` of a verified credential: verification
/// already enforced that later values only tighten, so the minimum is the one in force.
fn expiry(credential: &Credential, service: &str) -> Option<u64> {
    credential
        .macaroon
        .caveat_slices()
        .filter_map(l402::split_caveat)
        .filter(|(cond, _)| {
            *cond == COND_VALID_UNTIL.as_bytes()
                || cond
                    .strip_suffix(SUFFIX_VALID_UNTIL.as_bytes())
                    .is_some_and(|svc| svc == service.as_bytes())
        })
        .filter_map(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l402::{CredentialSource, Macaroon, Scheme};

    fn cred(caveats: &[&str]) -> Credential {
        Credential {
            macaroon: Macaroon::mint(&[1; 32], "lsat", &[0; 66], caveats),
            preimage: [2; 32],
            source: CredentialSource::Authorization(Scheme::L402),
        }
    }

    #[test]
    fn hits_only_for_the_same_service_and_before_expiry() {
        let cache = TokenCache::default();
        let c = cred(&[
            "services=svc:0",
            "svc_valid_until=100",
            "valid_until=90",
            "other_valid_until=5",
        ]);
        let hit = cache.insert(b"L402 x:y", "svc", [7; 32], &c);
        assert!(hit.upstream[1].starts_with("L402 "));
        assert_eq!(hit.token_id, [7; 32]);
        assert!(cache.get(b"L402 x:y", "svc", 89).is_some());
        assert!(
            cache.get(b"L402 x:y", "svc", 90).is_none(),
            "bare valid_until applies"
        );
        assert!(cache.get(b"L402 x:y", "other", 10).is_none());
        assert!(cache.get(b"L402 x:z", "svc", 10).is_none());
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn stays_bounded() {
        let cache = TokenCache::default();
        let c = cred(&[]);
        for i in 0..CAPACITY + 10 {
            cache.insert(format!("v{i}").as_bytes(), "svc", [7; 32], &c);
        }
        assert!(cache.len() <= CAPACITY);
        assert!(cache
            .get(format!("v{}", CAPACITY + 9).as_bytes(), "svc", 0)
            .is_some());
    }
}
