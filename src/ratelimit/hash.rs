//! Hashing for the limiter: a seeded, non-cryptographic map hasher for client keys, and the
//! owner-core functions that the kernel steering program (`runtime::steer`) mirrors bit for bit.
//! Pure arithmetic only; must not depend on anything outside `std`.

use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Golden-ratio multiplier (32-bit) of the steering hash. The cBPF program in `runtime::steer`
/// multiplies by this same constant; changing it here changes both.
pub const STEER_MUL: u32 = 0x9E37_79B1;

/// Golden-ratio multiplier (64-bit) for the map hasher and token keys.
const MUL64: u64 = 0x9E37_79B9_7F4A_7C15;

/// Maps a 32-bit hash onto `0..cores` from its top 16 bits ("fastrange": `(h >> 16) * n >> 16`).
/// A multiplicative hash mixes best into its high bits, and this needs only 32-bit MUL and RSH,
/// which classic BPF has. Exact for `cores <= 65536`.
#[inline]
fn range16(h: u32, cores: u32) -> u32 {
    ((h >> 16).wrapping_mul(cores)) >> 16
}

fn core_count(cores: usize) -> u32 {
    // The kernel's reuseport group holds at most u16::MAX sockets; clamp rather than panic.
    cores.clamp(1, 65_536) as u32
}

/// The core (reuseport join index) that owns IPv4 `addr`'s /24.
///
/// Exactly: `x = u32(addr) >> 8` (the /24 number, so the low octet is ignored);
/// `h = x * 0x9E3779B1 (mod 2^32)`; `index = ((h >> 16) * cores) >> 16`.
/// `cores == 0` is treated as 1 (returns 0).
pub fn steer_index_v4(addr: Ipv4Addr, cores: usize) -> usize {
    let x = u32::from(addr) >> 8;
    range16(x.wrapping_mul(STEER_MUL), core_count(cores)) as usize
}

/// The core that owns IPv6 `addr`'s /48.
///
/// Exactly: `w` = the first 32 bits of the address, `s` = the next 16 bits (bits 32..48);
/// `x = (w * 0x9E3779B1) ^ s`; `h = x * 0x9E3779B1` (all mod 2^32);
/// `index = ((h >> 16) * cores) >> 16`.
pub fn steer_index_v6(addr: Ipv6Addr, cores: usize) -> usize {
    let o = addr.octets();
    let w = u32::from_be_bytes([o[0], o[1], o[2], o[3]]);
    let s = u32::from(u16::from_be_bytes([o[4], o[5]]));
    let x = w.wrapping_mul(STEER_MUL) ^ s;
    range16(x.wrapping_mul(STEER_MUL), core_count(cores)) as usize
}

/// The core that owns a token key: `h = u64::from_le_bytes(id[0..8]) * 0x9E3779B97F4A7C15
/// (mod 2^64)`; `index = (h as u128 * cores) >> 64`. Token ids are server-chosen random bytes,
/// so eight of them are plenty.
pub fn token_index(id: &[u8; 32], cores: usize) -> usize {
    let mut first = [0u8; 8];
    first.copy_from_slice(&id[..8]);
    let h = u64::from_le_bytes(first).wrapping_mul(MUL64);
    ((u128::from(h) * cores.max(1) as u128) >> 64) as usize
}

/// A fast word-at-a-time multiplicative hasher (FxHash-style) with a per-limiter seed, so that a
/// client cannot precompute colliding keys for every deployment.
#[derive(Clone, Copy, Debug)]
pub struct FastHasher {
    state: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.state = (self.state.rotate_left(5) ^ word).wrapping_mul(MUL64);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // hashbrown takes its control bits from the top 7 bits: fold the low half up.
        self.state ^ (self.state >> 29)
    }
}

/// Builds [`FastHasher`]s from a seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct SeededState {
    seed: u64,
}

impl SeededState {
    /// A builder whose hashers start from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }
}

impl BuildHasher for SeededState {
    type Hasher = FastHasher;

    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher { state: self.seed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_ignores_low_octet_and_stays_in_range() {
        for cores in [1usize, 2, 3, 4, 7, 16, 64] {
            for third in 0..=255u8 {
                let base = steer_index_v4(Ipv4Addr::new(198, 51, third, 0), cores);
                assert!(base < cores);
                for low in [1u8, 77, 255] {
                    let other = steer_index_v4(Ipv4Addr::new(198, 51, third, low), cores);
                    assert_eq!(base, other);
                }
            }
        }
        assert_eq!(steer_index_v4(Ipv4Addr::new(1, 2, 3, 4), 0), 0);
    }

    #[test]
    fn v4_spreads_over_cores() {
        // Every core gets a fair share of 4096 consecutive /24s, and the first octet matters too.
        for cores in [2usize, 4, 6] {
            let mut hits = vec![0usize; cores];
            for n in 0..4096u32 {
                hits[steer_index_v4(Ipv4Addr::from(0x0A00_0000 + (n << 8)), cores)] += 1;
            }
            let fair = 4096 / cores;
            assert!(hits.iter().all(|h| *h > fair * 8 / 10), "{hits:?}");
            let mut first_octet = vec![0usize; cores];
            for a in 0..=255u32 {
                first_octet[steer_index_v4(Ipv4Addr::from((a << 24) | 0x0001_0200), cores)] += 1;
            }
            assert!(first_octet.iter().all(|h| *h > 0), "{first_octet:?}");
        }
    }

    #[test]
    fn v6_depends_only_on_the_48() {
        let a: Ipv6Addr = "2001:db8:1234::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1234:ffff:1:2:3:4".parse().unwrap();
        for cores in [2usize, 3, 8] {
            assert_eq!(steer_index_v6(a, cores), steer_index_v6(b, cores));
        }
        let mut seen = [false; 4];
        for n in 0..64u16 {
            let addr = Ipv6Addr::new(0x2001, 0xdb8, n, 0, 0, 0, 0, 1);
            seen[steer_index_v6(addr, 4)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn token_index_in_range_and_spread() {
        let mut hits = [0usize; 3];
        for n in 0..3000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_le_bytes());
            hits[token_index(&id, 3)] += 1;
        }
        assert!(hits.iter().all(|h| *h > 800), "{hits:?}");
        assert_eq!(token_index(&[9u8; 32], 0), 0);
    }

    #[test]
    fn hasher_seed_changes_hash() {
        let h = |seed: u64| {
            let mut hs = SeededState::new(seed).build_hasher();
            hs.write(b"203.0.113.0");
            hs.finish()
        };
        assert_ne!(h(1), h(2));
        assert_eq!(h(1), h(1));
    }
}
