//! Caveat semantics (`wire-format.md` §7): parsing `condition=value`, the monotonic
//! (attenuate-only) rules and the final checks against a request, plus the minting order.
//! Owns meaning only; it never touches bytes on the wire nor the HMAC chain (`macaroon` does).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

pub const COND_SERVICES: &str = "services";
pub const COND_PREIMAGE: &str = "preimage";
/// Bare expiry understood for every service (§7.2); same rules as `<svc>_valid_until`.
pub const COND_VALID_UNTIL: &str = "valid_until";
pub const SUFFIX_VALID_UNTIL: &str = "_valid_until";
pub const SUFFIX_CAPABILITIES: &str = "_capabilities";

/// What a token is being checked for. `now_unix` is injected: this layer never reads a clock.
#[derive(Debug, Clone, Copy)]
pub struct CaveatContext<'a> {
    pub service: &'a str,
    /// The capability the route declares; `None` skips the final capability check.
    pub capability: Option<&'a str>,
    pub now_unix: u64,
    pub payment_hash: &'a [u8; 32],
}

/// Which caveat rule failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CaveatError {
    #[error("token not valid for this service")]
    WrongService,
    #[error("token expired")]
    Expired,
    #[error("capability not granted")]
    Capability,
    /// A later caveat loosens an earlier one of the same condition.
    #[error("{0} caveat widens an earlier one")]
    Widened(&'static str),
    #[error("malformed {0} caveat")]
    Malformed(&'static str),
    #[error("preimage caveat does not match the payment hash")]
    PreimageMismatch,
}

impl CaveatError {
    /// Stable snake_case label for metrics (part of `VerifyError::reason`'s set).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::WrongService => "wrong_service",
            Self::Expired => "expired",
            Self::Capability => "capability",
            Self::Widened(_) => "widened_caveat",
            Self::Malformed(_) => "bad_caveat",
            Self::PreimageMismatch => "preimage_caveat",
        }
    }
}

/// Splits `condition=value` at the first `=`; `None` when there is no `=` (such caveats are
/// skipped, as Go does).
pub fn split_caveat(caveat: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = caveat.iter().position(|&b| b == b'=')?;
    Some((&caveat[..eq], &caveat[eq + 1..]))
}

/// The caveats Go aperture mints, in its order (`mint/mint.go`); `constraints` are copied in the
/// order given, so callers pass them sorted to keep minting deterministic.
pub fn mint_caveats(
    service: &str,
    capabilities: Option<&str>,
    constraints: &[(String, String)],
    valid_until: Option<u64>,
) -> Vec<String> {
    let mut out = Vec::with_capacity(3 + constraints.len());
    out.push(format!("{COND_SERVICES}={service}:0"));
    if let Some(caps) = capabilities {
        out.push(format!("{service}{SUFFIX_CAPABILITIES}={caps}"));
    }
    for (k, v) in constraints {
        out.push(format!("{k}={v}"));
    }
    if let Some(t) = valid_until {
        out.push(format!("{service}{SUFFIX_VALID_UNTIL}={t}"));
    }
    out
}

enum Kind {
    Services,
    ValidUntil,
    BareValidUntil,
    Capabilities,
    Preimage,
    Other,
}

fn classify(cond: &[u8], service: &str) -> Kind {
    let svc = service.as_bytes();
    if cond == COND_SERVICES.as_bytes() {
        Kind::Services
    } else if cond == COND_PREIMAGE.as_bytes() {
        Kind::Preimage
    } else if cond == COND_VALID_UNTIL.as_bytes() {
        Kind::BareValidUntil
    } else if cond.strip_suffix(SUFFIX_VALID_UNTIL.as_bytes()) == Some(svc) {
        Kind::ValidUntil
    } else if cond.strip_suffix(SUFFIX_CAPABILITIES.as_bytes()) == Some(svc) {
        Kind::Capabilities
    } else {
        // Unknown conditions and other services' caveats must be skipped.
        Kind::Other
    }
}

/// Running state: the previous value of each condition group (the "prev" of Go's
/// `SatisfyPrevious`); only the last one is checked against the request.
#[derive(Default)]
struct State<'c> {
    services: Option<&'c [u8]>,
    valid_until: Option<i64>,
    bare_valid_until: Option<i64>,
    capabilities: Option<&'c [u8]>,
}

/// Checks every caveat: monotonicity within each condition, then the last of each against
/// `ctx`. Allocation-free.
pub fn check_caveats<'c>(
    caveats: impl IntoIterator<Item = &'c [u8]>,
    ctx: &CaveatContext<'_>,
) -> Result<(), CaveatError> {
    let mut st = State::default();
    for caveat in caveats {
        let Some((cond, value)) = split_caveat(caveat) else {
            continue;
        };
        match classify(cond, ctx.service) {
            Kind::Services => {
                check_services_syntax(value)?;
                if let Some(prev) = st.services {
                    if !services_subset(value, prev) {
                        return Err(CaveatError::Widened(COND_SERVICES));
                    }
                }
                st.services = Some(value);
            }
            Kind::ValidUntil => tighten(&mut st.valid_until, value)?,
            Kind::BareValidUntil => tighten(&mut st.bare_valid_until, value)?,
            Kind::Capabilities => {
                if let Some(prev) = st.capabilities {
                    if !list_items(value).all(|c| list_items(prev).any(|p| p == c)) {
                        return Err(CaveatError::Widened("capabilities"));
                    }
                }
                st.capabilities = Some(value);
            }
            Kind::Preimage => check_preimage(value, ctx.payment_hash)?,
            Kind::Other => {}
        }
    }
    final_checks(&st, ctx)
}

fn final_checks(st: &State<'_>, ctx: &CaveatContext<'_>) -> Result<(), CaveatError> {
    if let Some(services) = st.services {
        let target = ctx.service.as_bytes();
        if !service_entries(services).any(|(name, _)| name == target) {
            return Err(CaveatError::WrongService);
        }
    }
    let now = i128::from(ctx.now_unix);
    for expiry in [st.valid_until, st.bare_valid_until].into_iter().flatten() {
        // Strictly after now, as Go's `expiry > now`.
        if i128::from(expiry) <= now {
            return Err(CaveatError::Expired);
        }
    }
    if let (Some(caps), Some(target)) = (st.capabilities, ctx.capability) {
        if !list_items(caps).any(|c| c == target.as_bytes()) {
            return Err(CaveatError::Capability);
        }
    }
    Ok(())
}

/// Expiry group: a later value may only be earlier or equal. Go's `strconv.ParseInt` rules.
fn tighten(slot: &mut Option<i64>, value: &[u8]) -> Result<(), CaveatError> {
    let t = parse_i64(value).ok_or(CaveatError::Malformed(COND_VALID_UNTIL))?;
    if matches!(*slot, Some(prev) if t > prev) {
        return Err(CaveatError::Widened(COND_VALID_UNTIL));
    }
    *slot = Some(t);
    Ok(())
}

fn parse_i64(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn check_preimage(value: &[u8], payment_hash: &[u8; 32]) -> Result<(), CaveatError> {
    let mut preimage = [0u8; 32];
    hex::decode_to_slice(value, &mut preimage)
        .map_err(|_| CaveatError::Malformed(COND_PREIMAGE))?;
    let hash: [u8; 32] = Sha256::digest(preimage).into();
    if bool::from(hash.ct_eq(payment_hash)) {
        Ok(())
    } else {
        Err(CaveatError::PreimageMismatch)
    }
}

/// `name:tier` entries of a (validated) services value.
fn service_entries(value: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    value.split(|&b| b == b',').map(|entry| {
        let colon = entry.iter().position(|&b| b == b':').unwrap_or(entry.len());
        (&entry[..colon], entry.get(colon + 1..).unwrap_or_default())
    })
}

/// Go's `decodeServicesCaveatValue`: non-empty, each entry exactly one `:`, a non-empty name
/// and an integer tier.
fn check_services_syntax(value: &[u8]) -> Result<(), CaveatError> {
    const BAD: CaveatError = CaveatError::Malformed(COND_SERVICES);
    if value.is_empty() {
        return Err(BAD);
    }
    for entry in value.split(|&b| b == b',') {
        if entry.iter().filter(|&&b| b == b':').count() != 1 {
            return Err(BAD);
        }
        let (name, tier) = service_entries(entry).next().ok_or(BAD)?;
        if name.is_empty() || parse_i64(tier).is_none() {
            return Err(BAD);
        }
    }
    Ok(())
}

/// Every service name in `cur` was allowed by `prev`; tiers are ignored, as in Go.
fn services_subset(cur: &[u8], prev: &[u8]) -> bool {
    service_entries(cur).all(|(name, _)| service_entries(prev).any(|(p, _)| p == name))
}

/// Comma-list items; empty items carry no capability, so narrowing to "" is allowed.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREIMAGE: [u8; 32] = [7u8; 32];

    fn hash() -> [u8; 32] {
        Sha256::digest(PREIMAGE).into()
    }

    fn check_with(
        caveats: &[&str],
        service: &str,
        cap: Option<&str>,
        now: u64,
    ) -> Result<(), CaveatError> {
        let h = hash();
        let ctx = CaveatContext {
            service,
            capability: cap,
            now_unix: now,
            payment_hash: &h,
        };
        check_caveats(caveats.iter().map(|c| c.as_bytes()), &ctx)
    }

    fn check(caveats: &[&str]) -> Result<(), CaveatError> {
        check_with(caveats, "svc", None, 1000)
    }

    #[test]
    fn split_at_first_equals() {
        assert_eq!(split_caveat(b"a=b=c"), Some((&b"a"[..], &b"b=c"[..])));
        assert_eq!(split_caveat(b"a="), Some((&b"a"[..], &b""[..])));
        assert_eq!(split_caveat(b"noequals"), None);
    }

    #[test]
    fn no_caveats_means_every_service() {
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(check_with(&[], "other", Some("x"), u64::MAX), Ok(()));
    }

    #[test]
    fn services_last_must_name_target() {
        assert_eq!(check(&["services=svc:0"]), Ok(()));
        assert_eq!(check(&["services=a:0,svc:1"]), Ok(()));
        assert_eq!(check(&["services=other:0"]), Err(CaveatError::WrongService));
        // Prefix of the name is not the name.
        assert_eq!(check(&["services=svc2:0"]), Err(CaveatError::WrongService));
        // Narrowing to exclude the target fails on the final check.
        assert_eq!(
            check(&["services=svc:0,b:0", "services=b:0"]),
            Err(CaveatError::WrongService)
        );
        assert_eq!(check(&["services=svc:0,b:0", "services=svc:0"]), Ok(()));
    }

    #[test]
    fn services_cannot_widen() {
        assert_eq!(
            check(&["services=other:0", "services=other:0,svc:0"]),
            Err(CaveatError::Widened(COND_SERVICES))
        );
        assert_eq!(
            check(&["services=other:0", "services=svc:0"]),
            Err(CaveatError::Widened(COND_SERVICES))
        );
        // Tiers are ignored in the subset check, as in Go.
        assert_eq!(check(&["services=svc:0", "services=svc:5"]), Ok(()));
    }

    #[test]
    fn services_malformed_fails() {
        for bad in [
            "services=",
            "services=svc",
            "services=svc:",
            "services=:0",
            "services=svc:x",
            "services=svc:0:1",
            "services=svc:0,",
            "services=svc:0,other",
        ] {
            assert_eq!(
                check(&[bad]),
                Err(CaveatError::Malformed(COND_SERVICES)),
                "{bad}"
            );
        }
        // A malformed earlier one fails too, even when the last is fine.
        assert_eq!(
            check(&["services=junk", "services=svc:0"]),
            Err(CaveatError::Malformed(COND_SERVICES))
        );
    }

    #[test]
    fn valid_until_strictly_after_now() {
        assert_eq!(check(&["svc_valid_until=1001"]), Ok(()));
        assert_eq!(check(&["svc_valid_until=1000"]), Err(CaveatError::Expired));
        assert_eq!(check(&["svc_valid_until=-5"]), Err(CaveatError::Expired));
        assert_eq!(
            check(&["svc_valid_until=soon"]),
            Err(CaveatError::Malformed(COND_VALID_UNTIL))
        );
        assert_eq!(
            check(&["svc_valid_until=1.5e9"]),
            Err(CaveatError::Malformed(COND_VALID_UNTIL))
        );
        // Other services' expiry is ignored.
        assert_eq!(check(&["other_valid_until=1"]), Ok(()));
        assert_eq!(check(&["svcx_valid_until=1"]), Ok(()));
    }

    #[test]
    fn valid_until_may_only_tighten() {
        assert_eq!(
            check(&["svc_valid_until=2000", "svc_valid_until=1500"]),
            Ok(())
        );
        assert_eq!(
            check(&["svc_valid_until=2000", "svc_valid_until=2000"]),
            Ok(())
        );
        assert_eq!(
            check(&["svc_valid_until=1001", "svc_valid_until=999999"]),
            Err(CaveatError::Widened(COND_VALID_UNTIL))
        );
        // An expired token cannot be revived by a later caveat either.
        assert_eq!(
            check(&["svc_valid_until=10", "svc_valid_until=5000"]),
            Err(CaveatError::Widened(COND_VALID_UNTIL))
        );
        assert_eq!(
            check(&["svc_valid_until=5000", "svc_valid_until=10"]),
            Err(CaveatError::Expired)
        );
    }

    #[test]
    fn bare_valid_until_applies_to_every_service() {
        assert_eq!(check(&["valid_until=1001"]), Ok(()));
        assert_eq!(check(&["valid_until=999"]), Err(CaveatError::Expired));
        assert_eq!(
            check(&["valid_until=1001", "valid_until=2000"]),
            Err(CaveatError::Widened(COND_VALID_UNTIL))
        );
        assert_eq!(
            check(&["valid_until=5000", "svc_valid_until=900"]),
            Err(CaveatError::Expired)
        );
    }

    #[test]
    fn capabilities_rules() {
        let caps = ["svc_capabilities=add,subtract"];
        assert_eq!(check_with(&caps, "svc", Some("add"), 0), Ok(()));
        assert_eq!(check_with(&caps, "svc", Some("subtract"), 0), Ok(()));
        assert_eq!(
            check_with(&caps, "svc", Some("multiply"), 0),
            Err(CaveatError::Capability)
        );
        assert_eq!(
            check_with(&caps, "svc", Some("ad"), 0),
            Err(CaveatError::Capability)
        );
        // No declared capability: nothing to check.
        assert_eq!(check_with(&caps, "svc", None, 0), Ok(()));
        // Absent caveat: everything allowed.
        assert_eq!(check_with(&[], "svc", Some("anything"), 0), Ok(()));
        // Other services' capabilities are ignored.
        assert_eq!(
            check_with(&["other_capabilities=x"], "svc", Some("add"), 0),
            Ok(())
        );
        // Empty list grants nothing.
        assert_eq!(
            check_with(&["svc_capabilities="], "svc", Some("add"), 0),
            Err(CaveatError::Capability)
        );
    }

    #[test]
    fn capabilities_only_narrow() {
        let narrowed = ["svc_capabilities=add,subtract", "svc_capabilities=add"];
        assert_eq!(check_with(&narrowed, "svc", Some("add"), 0), Ok(()));
        assert_eq!(
            check_with(&narrowed, "svc", Some("subtract"), 0),
            Err(CaveatError::Capability)
        );
        let widened = ["svc_capabilities=add", "svc_capabilities=add,subtract"];
        assert_eq!(
            check_with(&widened, "svc", Some("add"), 0),
            Err(CaveatError::Widened("capabilities"))
        );
        // Widening is refused even when the route declares no capability.
        assert_eq!(
            check_with(&widened, "svc", None, 0),
            Err(CaveatError::Widened("capabilities"))
        );
        let emptied = ["svc_capabilities=add", "svc_capabilities="];
        assert_eq!(check_with(&emptied, "svc", None, 0), Ok(()));
    }

    #[test]
    fn preimage_caveat_must_match_hash() {
        let good = format!("preimage={}", hex::encode(PREIMAGE));
        let upper = format!("preimage={}", hex::encode_upper(PREIMAGE));
        assert_eq!(check(&[&good]), Ok(()));
        assert_eq!(check(&[&upper]), Ok(()));
        let wrong = format!("preimage={}", hex::encode([8u8; 32]));
        assert_eq!(check(&[&wrong]), Err(CaveatError::PreimageMismatch));
        assert_eq!(
            check(&["preimage=abcd"]),
            Err(CaveatError::Malformed(COND_PREIMAGE))
        );
        // Caveats are conjunctive: a wrong one anywhere fails.
        assert_eq!(check(&[&wrong, &good]), Err(CaveatError::PreimageMismatch));
    }

    #[test]
    fn unknown_and_equals_less_caveats_are_skipped() {
        assert_eq!(
            check(&["foo=bar", "noequals", "services=svc:0", "svc_max_volume=10"]),
            Ok(())
        );
        assert_eq!(check(&["\u{0}\u{ff}=\u{1}"]), Ok(()));
    }

    #[test]
    fn mint_order_matches_go_aperture() {
        let constraints = vec![
            ("a_key".to_string(), "1".to_string()),
            ("b_key".to_string(), "x=y".to_string()),
        ];
        assert_eq!(
            mint_caveats(
                "service1",
                Some("add,subtract"),
                &constraints,
                Some(1700000000)
            ),
            vec![
                "services=service1:0",
                "service1_capabilities=add,subtract",
                "a_key=1",
                "b_key=x=y",
                "service1_valid_until=1700000000",
            ]
        );
        assert_eq!(mint_caveats("s", None, &[], None), vec!["services=s:0"]);
        assert_eq!(
            mint_caveats("s", Some(""), &[], None),
            vec!["services=s:0", "s_capabilities="]
        );
    }
}
