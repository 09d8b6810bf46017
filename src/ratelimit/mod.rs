//! Per-service request rate limiting (layer 0, pure): token buckets with Go aperture's
//! reservation semantics (`/work/shared/reference/rate-limiting.md` §2), client keys (§3) and a
//! bounded per-core store (§5). No I/O, no threads, no clock reads: time arrives as a `u64`
//! nanosecond count from an arbitrary epoch, and path matching is the caller's job (rules are
//! plain numbers; the caller passes the indices of the rules whose regex matched). It must not
//! import `config` or anything above layer 0.
//!
//! One [`Limiter`] per service per core; with a fleet backend, one [`LeaseTable`] beside it (the
//! tokens this core holds on lease from the fleet's shared buckets). The steering helpers ([`owner_core`],
//! [`steer_index_v4`]) say which core owns a key so that one key's buckets live on one core.

mod bucket;
mod hash;
mod lease;
mod limiter;
#[cfg(test)]
mod model;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use bucket::{retry_after_secs, Bucket, Rule};
pub use hash::{steer_index_v4, steer_index_v6, token_index, FastHasher, SeededState, STEER_MUL};
pub use lease::{slice_for, Answer, Lease, LeaseTable, Plan, MAX_SLICE};
pub use limiter::{Limiter, RuleSet, DEFAULT_CAPACITY};

/// IPv4 clients are keyed by their /24.
pub const V4_PREFIX: u8 = 24;
/// IPv6 clients are keyed by their /48.
pub const V6_PREFIX: u8 = 48;

/// Rule construction errors (config validation normally catches these first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    #[error("rate limit `requests` must be greater than 0")]
    ZeroRequests,
    #[error("rate limit `per` must be greater than 0")]
    ZeroPeriod,
}

/// Whose buckets a request draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKey {
    /// A verified L402 token, by token id (`token:<hex>` in Go aperture).
    Token([u8; 32]),
    /// Everyone else, by masked peer address (`ip:<addr>`); build it with [`ClientKey::ip`].
    Ip(IpAddr),
}

impl ClientKey {
    /// The key of a peer address: masked to /24 (IPv4, including IPv4-mapped IPv6) or /48.
    pub fn ip(peer: IpAddr) -> Self {
        ClientKey::Ip(mask_ip(peer, V4_PREFIX, V6_PREFIX))
    }
}

impl Hash for ClientKey {
    // Hand-written so the hot path feeds the hasher whole words, not a length prefix and bytes.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            ClientKey::Token(id) => {
                for chunk in id.chunks_exact(8) {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(chunk);
                    state.write_u64(u64::from_le_bytes(w));
                }
            }
            ClientKey::Ip(IpAddr::V4(a)) => state.write_u32(u32::from(*a)),
            ClientKey::Ip(IpAddr::V6(a)) => {
                let bits = u128::from(*a);
                state.write_u64((bits >> 64) as u64 ^ 0x6);
                state.write_u64(bits as u64);
            }
        }
    }
}

impl fmt::Display for ClientKey {
    /// Go aperture's key text: `token:<hex token id>` or `ip:<masked address>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Token(id) => {
                f.write_str("token:")?;
                id.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            ClientKey::Ip(ip) => write!(f, "ip:{ip}"),
        }
    }
}

/// The outcome of [`Limiter::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve it; one token was taken from every matching bucket.
    Allow,
    /// 429 / gRPC 8 with this `Retry-After` (whole seconds, rounded up, at least 1). Nothing was
    /// taken from any bucket.
    Deny { retry_after_secs: u64 },
}

/// Masks `ip` to a prefix: IPv4 (and IPv4-mapped IPv6, which becomes plain IPv4) to `v4_prefix`
/// bits, IPv6 to `v6_prefix` bits. Prefixes longer than the address keep it whole.
pub fn mask_ip(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> IpAddr {
    let v4 = |a: Ipv4Addr| {
        let bits = u32::from(a);
        let mask = u32::MAX
            .checked_shl(32 - u32::from(v4_prefix.min(32)))
            .unwrap_or(0);
        IpAddr::V4(Ipv4Addr::from(bits & mask))
    };
    match ip {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(mapped) => v4(mapped),
            None => {
                let bits = u128::from(a);
                let shift = 128 - u32::from(v6_prefix.min(128));
                let mask = u128::MAX.checked_shl(shift).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
        },
    }
}

/// The core that owns `key` among `cores` (0 is treated as 1).
///
/// - IPv4 keys: [`steer_index_v4`], the same function the kernel steering program computes
///   for the connection's source address, so an IP-keyed request is always checked on the core
///   that accepted it (it ignores the low octet, so masked and unmasked addresses agree).
/// - IPv6 keys: [`steer_index_v6`] (the /48), likewise mirrored by the program.
/// - Token keys: [`token_index`], a multiplicative hash of the first 8 bytes of the token id.
pub fn owner_core(key: &ClientKey, cores: usize) -> usize {
    match key {
        ClientKey::Ip(IpAddr::V4(a)) => steer_index_v4(*a, cores),
        ClientKey::Ip(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => steer_index_v4(v4, cores),
            None => steer_index_v6(*a, cores),
        },
        ClientKey::Token(id) => token_index(id, cores),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mask_ip_defaults() {
        assert_eq!(mask_ip(ip("203.0.113.77"), 24, 48), ip("203.0.113.0"));
        assert_eq!(
            mask_ip(ip("2001:db8:1234:5678::1"), 24, 48),
            ip("2001:db8:1234::")
        );
        assert_eq!(
            mask_ip(ip("::ffff:203.0.113.77"), 24, 48),
            ip("203.0.113.0")
        );
        assert_eq!(ClientKey::ip(ip("10.1.2.3")), ClientKey::Ip(ip("10.1.2.0")));
    }

    #[test]
    fn mask_ip_edge_prefixes() {
        assert_eq!(mask_ip(ip("10.1.2.3"), 0, 0), ip("0.0.0.0"));
        assert_eq!(mask_ip(ip("10.1.2.3"), 32, 128), ip("10.1.2.3"));
        assert_eq!(mask_ip(ip("10.1.2.3"), 200, 200), ip("10.1.2.3"));
        assert_eq!(mask_ip(ip("10.1.2.3"), 20, 48), ip("10.1.0.0"));
        assert_eq!(mask_ip(ip("2001:db8::1"), 24, 0), ip("::"));
        assert_eq!(mask_ip(ip("2001:db8::1"), 24, 128), ip("2001:db8::1"));
    }

    #[test]
    fn key_text_matches_go() {
        assert_eq!(
            ClientKey::ip(ip("203.0.113.9")).to_string(),
            "ip:203.0.113.0"
        );
        assert_eq!(
            ClientKey::ip(ip("2001:db8:1234:1::9")).to_string(),
            "ip:2001:db8:1234::"
        );
        let mut id = [0u8; 32];
        id[0] = 0xab;
        id[31] = 0x01;
        let text = ClientKey::Token(id).to_string();
        assert_eq!(text.len(), 6 + 64);
        assert!(text.starts_with("token:ab00") && text.ends_with("01"));
    }

    #[test]
    fn owner_core_agrees_with_steering() {
        for cores in [1usize, 2, 4, 5] {
            for third in 0..64u8 {
                let peer = Ipv4Addr::new(192, 0, third, 200);
                let key = ClientKey::ip(IpAddr::V4(peer));
                assert_eq!(owner_core(&key, cores), steer_index_v4(peer, cores));
                let mapped = ClientKey::Ip(IpAddr::V6(peer.to_ipv6_mapped()));
                assert_eq!(owner_core(&mapped, cores), steer_index_v4(peer, cores));
            }
            let v6: Ipv6Addr = "2001:db8:77:1::5".parse().unwrap();
            let key = ClientKey::ip(IpAddr::V6(v6));
            assert_eq!(owner_core(&key, cores), steer_index_v6(v6, cores));
            let tok = ClientKey::Token([7; 32]);
            assert_eq!(owner_core(&tok, cores), token_index(&[7; 32], cores));
            assert!(owner_core(&tok, cores) < cores);
        }
    }
}
