//! Huffman coding of HPACK strings (RFC 7541 §5.2, Appendix B) for [`super::hpack`].
//!
//! Owns the code table (the RFC's Appendix B, as laid out by the `h2` crate's generated
//! `table.rs`, MIT, Copyright (c) 2017 h2 authors), a decoder (a 12-bit lookup for codes of up
//! to 12 bits, the canonical code's per-length ranges above that) and an encoder. Pure; errors
//! on EOS, padding over 7 bits or padding that is not a prefix of EOS; never panics.

use super::hpack::HpackError;

/// 12-bit lookup for every code of 12 bits or fewer: `len << 8 | symbol`, 0 for longer codes.
const FAST_BITS: u32 = 12;
static FAST: [u16; 1 << FAST_BITS] = build_fast();

const fn build_fast() -> [u16; 1 << FAST_BITS] {
    let mut t = [0u16; 1 << FAST_BITS];
    let mut s = 0;
    while s < 256 {
        let len = ENCODE_CODE_LENGTHS[s] as u32;
        if len <= FAST_BITS {
            let base = (ENCODE_CODES[s] << (FAST_BITS - len)) as usize;
            let mut i = 0;
            while i < (1 << (FAST_BITS - len)) {
                t[base + i] = ((len as u16) << 8) | s as u16;
                i += 1;
            }
        }
        s += 1;
    }
    t
}

/// The canonical code's layout by length: first code, symbol count and offset into `SORTED`.
struct Canon {
    first: [u32; 31],
    count: [u32; 31],
    offset: [u32; 31],
    sorted: [u8; 256],
}

static CANON: Canon = build_canon();

const fn build_canon() -> Canon {
    let mut c = Canon {
        first: [u32::MAX; 31],
        count: [0; 31],
        offset: [0; 31],
        sorted: [0; 256],
    };
    let mut s = 0;
    while s < 256 {
        let l = ENCODE_CODE_LENGTHS[s] as usize;
        c.count[l] += 1;
        if ENCODE_CODES[s] < c.first[l] {
            c.first[l] = ENCODE_CODES[s];
        }
        s += 1;
    }
    let mut l = 1;
    while l < 31 {
        c.offset[l] = c.offset[l - 1] + c.count[l - 1];
        l += 1;
    }
    // Codes of one length are consecutive integers (a canonical code; the tests check it).
    let mut s = 0;
    while s < 256 {
        let l = ENCODE_CODE_LENGTHS[s] as usize;
        c.sorted[(c.offset[l] + ENCODE_CODES[s] - c.first[l]) as usize] = s as u8;
        s += 1;
    }
    c
}

/// Decodes a Huffman string (RFC 7541 §5.2) onto `out`. EOS in the data, padding longer than
/// 7 bits, and padding that is not a prefix of EOS are errors.
pub fn huffman_decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    // The shortest code is 5 bits, so `src` decodes to at most this many bytes: symbols are
    // written into the reserved spare capacity without a capacity check each.
    let start = out.len();
    out.reserve(src.len() * 8 / 5 + 1);
    let spare = out.spare_capacity_mut();
    let mut w = 0;
    let r = huffman_decode_into(src, |sym| {
        if let Some(slot) = spare.get_mut(w) {
            slot.write(sym);
            w += 1;
        }
    });
    // SAFETY: the first `w` bytes of the spare capacity were written just above.
    unsafe { out.set_len(start + w) };
    r
}

fn huffman_decode_into(src: &[u8], mut emit: impl FnMut(u8)) -> Result<(), HpackError> {
    const BAD: HpackError = HpackError::Compression("invalid huffman string");
    // `acc` holds `nbits` unread bits, left-aligned.
    let (mut acc, mut nbits, mut i) = (0u64, 0u32, 0usize);
    loop {
        while nbits <= 56 && i < src.len() {
            acc |= (src[i] as u64) << (56 - nbits);
            nbits += 8;
            i += 1;
        }
        if nbits == 0 {
            return Ok(());
        }
        let fast = FAST[(acc >> (64 - FAST_BITS)) as usize];
        let (len, sym) = if fast != 0 {
            ((fast >> 8) as u32, fast as u8)
        } else {
            let mut l = FAST_BITS as usize + 1;
            loop {
                if l > 30 {
                    return Err(BAD); // EOS, or no code
                }
                let code = (acc >> (64 - l)) as u32;
                if CANON.count[l] != 0 && code.wrapping_sub(CANON.first[l]) < CANON.count[l] {
                    let at = CANON.offset[l] + code - CANON.first[l];
                    break (l as u32, CANON.sorted[at as usize]);
                }
                l += 1;
            }
        };
        if len > nbits {
            // Only padding may be left: under 8 bits, all ones.
            let ones = (!acc) >> (64 - nbits) == 0;
            return if nbits < 8 && ones { Ok(()) } else { Err(BAD) };
        }
        emit(sym);
        acc <<= len;
        nbits -= len;
    }
}

/// The Huffman-coded length of `src` in bytes.
pub(super) fn huffman_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&b| ENCODE_CODE_LENGTHS[b as usize] as usize)
        .sum();
    bits.div_ceil(8)
}

/// Appends the Huffman code of `src`, padded with ones.
pub fn huffman_encode(src: &[u8], out: &mut Vec<u8>) {
    let (mut acc, mut nbits) = (0u64, 0u32);
    for &b in src {
        let len = ENCODE_CODE_LENGTHS[b as usize] as u32;
        acc = (acc << len) | ENCODE_CODES[b as usize] as u64;
        nbits += len;
        while nbits >= 8 {
            nbits -= 8;
            out.push((acc >> nbits) as u8);
        }
        acc &= (1u64 << nbits) - 1;
    }
    if nbits > 0 {
        let pad = 8 - nbits;
        out.push(((acc << pad) | ((1 << pad) - 1)) as u8);
    }
}

/// The code of each octet, right-aligned.
pub const ENCODE_CODES: [u32; 256] = [
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, 0xfffffe8,
    0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, 0xfffffed,
    0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, 0xffffff4,
    0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb, 0x14, 0x3f8,
    0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
    0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb,
    0x3fc, 0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0,
    0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75,
    0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7ffe,
    0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4,
    0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb,
    0x7fffdf, 0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
    0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda,
    0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd,
    0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0, 0x1fffe1, 0x3fffe0,
    0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4,
    0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7,
    0x7ffff2, 0x3fffe8, 0x1ffffec, 0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf,
    0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7,
    0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4,
    0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
    0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb,
    0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb,
    0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
];

/// The length in bits of each octet's code.
pub const ENCODE_CODE_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

const _: [(); 1024] = [(); std::mem::size_of::<[u32; 256]>()];
const _: [(); 256] = [(); std::mem::size_of::<[u8; 256]>()];
