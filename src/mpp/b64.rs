//! Strict base64url (RFC 4648 §5) for the Payment scheme: the no-padding encoder every value we
//! emit uses, and the one decoder every value we read goes through (credential tokens, echoed
//! `request` params). Owns the alphabet and padding rules only; what the bytes mean is not its
//! business. Must not panic or allocate more than the output on hostile input.
//!
//! Strictness is the point (Go aperture's `Base64URLDecode`): encoded forms are hashed and
//! compared as strings elsewhere, so two spellings of one payload must not both be accepted.
//! Hence: at most two trailing `=`, and only when they pad to a multiple of four; nothing outside
//! `A-Za-z0-9-_` (no CR/LF, no `+`/`/`, no inner `=`); and the bits a final partial character
//! cannot carry must be zero (`AB` is refused, `AA` is not).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use thiserror::Error;

/// Why a string is not strict base64url.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum B64Error {
    #[error("more than two padding characters")]
    TooMuchPadding,
    #[error("padded input whose length is not a multiple of 4")]
    PaddedLength,
    #[error("byte {byte:#04x} at offset {offset} is not in the base64url alphabet")]
    InvalidChar { byte: u8, offset: usize },
    #[error("length leaves a single dangling character")]
    DanglingChar,
    #[error("non-zero bits after the last whole byte")]
    TrailingBits,
}

/// base64url without padding, the only spelling the scheme emits.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The 6-bit value of one alphabet character, or `None` outside the alphabet.
fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Decodes strict base64url, padded or not (see the module doc for what "strict" refuses).
pub fn decode(s: &str) -> Result<Vec<u8>, B64Error> {
    let bytes = s.as_bytes();
    let unpadded = bytes.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let padding = bytes.len() - unpadded;
    if padding > 2 {
        return Err(B64Error::TooMuchPadding);
    }
    if padding > 0 && bytes.len() % 4 != 0 {
        return Err(B64Error::PaddedLength);
    }
    let body = &bytes[..unpadded];
    if body.len() % 4 == 1 {
        return Err(B64Error::DanglingChar);
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    // Accumulate sextets big-endian; emit a byte whenever 8 or more bits are pending.
    let (mut acc, mut bits) = (0u32, 0u32);
    for (offset, &byte) in body.iter().enumerate() {
        let v = sextet(byte).ok_or(B64Error::InvalidChar { byte, offset })?;
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Whatever is left (0, 2 or 4 bits) is padding inside the last character and must be zero.
    if acc != 0 {
        return Err(B64Error::TrailingBits);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length() {
        let data: Vec<u8> = (0..=255u8).collect();
        for n in 0..64 {
            let enc = encode(&data[..n]);
            assert!(!enc.contains('='));
            assert_eq!(decode(&enc).unwrap(), &data[..n]);
        }
    }

    #[test]
    fn precise_errors() {
        assert_eq!(decode("AAAA==="), Err(B64Error::TooMuchPadding));
        assert_eq!(decode("AAA=="), Err(B64Error::PaddedLength));
        assert_eq!(decode("AAAAA"), Err(B64Error::DanglingChar));
        assert_eq!(decode("AB"), Err(B64Error::TrailingBits));
        assert_eq!(decode("AAB"), Err(B64Error::TrailingBits));
        assert_eq!(
            decode("A+A"),
            Err(B64Error::InvalidChar {
                byte: b'+',
                offset: 1
            })
        );
        assert_eq!(decode("=="), Err(B64Error::PaddedLength));
        assert_eq!(decode("===="), Err(B64Error::TooMuchPadding));
        assert_eq!(decode("AAA=").unwrap(), vec![0, 0]);
        assert_eq!(decode("AA==").unwrap(), vec![0]);
        assert_eq!(
            decode("é").unwrap_err(),
            B64Error::InvalidChar {
                byte: 0xc3,
                offset: 0
            }
        );
    }
}
