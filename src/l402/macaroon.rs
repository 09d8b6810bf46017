//! Our own macaroon codec and HMAC chain (`wire-format.md` §6.3, §6.4): V2 binary encode/decode
//! and libmacaroons-style signatures. Owns bytes and crypto only; what caveats *mean* lives in
//! `caveat`, and nothing here looks at headers or keys' provenance.
//!
//! Not the `macaroon` crate: it drags in sodiumoxide's C build and its caveat checker cannot
//! capture `now`. Owning the codec also gives a zero-copy parse ([`MacaroonRef`]) for the hot path.

use std::sync::LazyLock;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// The location Go aperture writes; not covered by the HMAC and checked by nobody.
pub const LOCATION: &str = "lsat";
/// Largest macaroon we decode. Real tokens are ~200 bytes; this bounds work per candidate.
pub const MAX_MACAROON_LEN: usize = 16 * 1024;
/// Most caveats we accept: each costs one HMAC, so this caps what a forged token can cost.
pub const MAX_CAVEATS: usize = 128;

const VERSION_V2: u8 = 2;
const FIELD_EOS: u64 = 0;
const FIELD_LOCATION: u64 = 1;
const FIELD_IDENTIFIER: u64 = 2;
const FIELD_VID: u64 = 4;
const FIELD_SIGNATURE: u64 = 6;

/// Why bytes are not a macaroon we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MacaroonError {
    #[error("empty macaroon")]
    Empty,
    #[error("unsupported macaroon version byte {0:#04x} (only V2 binary is accepted)")]
    UnsupportedVersion(u8),
    #[error("macaroon of {0} bytes exceeds the {MAX_MACAROON_LEN}-byte limit")]
    TooLarge(usize),
    #[error("macaroon truncated")]
    Truncated,
    #[error("varint overflows")]
    VarintOverflow,
    #[error("field length runs past the end")]
    LengthPastEnd,
    #[error("unknown field type {0}")]
    UnknownField(u64),
    #[error("fields out of order")]
    OutOfOrder,
    #[error("field type {0} not allowed here")]
    UnexpectedField(u64),
    #[error("missing identifier")]
    MissingIdentifier,
    #[error("location not allowed in a first-party caveat")]
    CaveatLocation,
    #[error("third-party caveat (L402 never uses them)")]
    ThirdPartyCaveat,
    #[error("more than {MAX_CAVEATS} caveats")]
    TooManyCaveats,
    #[error("missing or malformed signature")]
    BadSignatureField,
    #[error("trailing bytes after the signature")]
    TrailingBytes,
    #[error("location is not UTF-8")]
    LocationNotUtf8,
}

/// An owned macaroon (first-party caveats only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macaroon {
    pub location: String,
    pub identifier: Vec<u8>,
    /// Caveat ids in chain order.
    pub caveats: Vec<Vec<u8>>,
    pub signature: [u8; 32],
}

/// A parsed macaroon borrowing the decoded bytes: no allocation. Caveats are re-read lazily
/// from the already validated section.
#[derive(Debug, Clone, Copy)]
pub struct MacaroonRef<'a> {
    pub location: &'a str,
    pub identifier: &'a [u8],
    caveat_section: &'a [u8],
    caveat_count: usize,
    pub signature: [u8; 32],
}

/// The fixed libmacaroons key-generator HMAC, keyed once (saves two compressions per verify).
static KEYGEN: LazyLock<HmacSha256> = LazyLock::new(|| keyed(b"macaroons-key-generator"));

/// An HMAC-SHA256 keyed with `key` (≤ 64 bytes). Zero-padding to the block size is exactly what
/// HMAC does to short keys, and it lets us use the infallible constructor.
fn keyed(key: &[u8]) -> HmacSha256 {
    let mut block = [0u8; 64];
    let n = key.len().min(64);
    block[..n].copy_from_slice(&key[..n]);
    <HmacSha256 as hmac::digest::KeyInit>::new(&block.into())
}

fn finish(mac: HmacSha256) -> [u8; 32] {
    mac.finalize().into_bytes().into()
}

/// `HMAC-SHA256(key, msg)` for a 32-byte key.
pub(crate) fn hmac32(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut mac = keyed(key);
    mac.update(msg);
    finish(mac)
}

/// `HMAC-SHA256(mac's key, msg)` reusing a pre-keyed state.
pub(crate) fn hmac_prekeyed(mac: &HmacSha256, msg: &[u8]) -> [u8; 32] {
    let mut mac = mac.clone();
    mac.update(msg);
    finish(mac)
}

/// A pre-keyed HMAC for callers that reuse one key (the verifier's master secret).
pub(crate) fn prekey(key: &[u8; 32]) -> HmacSha256 {
    keyed(key)
}

/// The libmacaroons derivation: `k = HMAC("macaroons-key-generator", root_key)`.
pub fn derive_macaroon_key(root_key: &[u8]) -> [u8; 32] {
    hmac_prekeyed(&KEYGEN, root_key)
}

/// The full signature chain over `identifier` and first-party `caveats` (§6.3).
pub fn signature_chain<'c>(
    root_key: &[u8],
    identifier: &[u8],
    caveats: impl IntoIterator<Item = &'c [u8]>,
) -> [u8; 32] {
    let k = derive_macaroon_key(root_key);
    let mut sig = hmac32(&k, identifier);
    for caveat in caveats {
        sig = hmac32(&sig, caveat);
    }
    sig
}

impl Macaroon {
    /// Mints a macaroon: derived key, then the chain over `identifier` and `caveats`.
    pub fn mint<C: AsRef<[u8]>>(
        root_key: &[u8; 32],
        location: &str,
        identifier: &[u8],
        caveats: &[C],
    ) -> Macaroon {
        let caveats: Vec<Vec<u8>> = caveats.iter().map(|c| c.as_ref().to_vec()).collect();
        let signature = signature_chain(root_key, identifier, caveats.iter().map(Vec::as_slice));
        Macaroon {
            location: location.to_owned(),
            identifier: identifier.to_vec(),
            caveats,
            signature,
        }
    }

    /// Attenuates: appends a first-party caveat and extends the chain, as a client appending
    /// `preimage=<hex>` does. Needs no key.
    pub fn add_first_party_caveat(&mut self, caveat: impl AsRef<[u8]>) {
        let caveat = caveat.as_ref();
        self.signature = hmac32(&self.signature, caveat);
        self.caveats.push(caveat.to_vec());
    }

    /// True when the chain from `root_key` reproduces the signature (constant-time compare).
    pub fn verify_signature(&self, root_key: &[u8; 32]) -> bool {
        let sig = signature_chain(
            root_key,
            &self.identifier,
            self.caveats.iter().map(Vec::as_slice),
        );
        bool::from(sig.ct_eq(&self.signature))
    }

    /// V2 binary (go-macaroon's layout; an empty location is omitted, as go-macaroon does).
    pub fn encode_v2(&self) -> Vec<u8> {
        let cav_len: usize = self.caveats.iter().map(|c| c.len() + 12).sum();
        let mut out = Vec::with_capacity(
            1 + self.location.len() + self.identifier.len() + cav_len + 2 * 10 + 36,
        );
        out.push(VERSION_V2);
        if !self.location.is_empty() {
            put_packet(&mut out, FIELD_LOCATION, self.location.as_bytes());
        }
        put_packet(&mut out, FIELD_IDENTIFIER, &self.identifier);
        out.push(0);
        for caveat in &self.caveats {
            put_packet(&mut out, FIELD_IDENTIFIER, caveat);
            out.push(0);
        }
        out.push(0);
        put_packet(&mut out, FIELD_SIGNATURE, &self.signature);
        out
    }

    /// Strict V2 decode into an owned macaroon.
    pub fn decode_v2(bytes: &[u8]) -> Result<Macaroon, MacaroonError> {
        MacaroonRef::parse_v2(bytes).map(|m| m.to_owned())
    }

    /// Standard, padded base64 of the V2 bytes: what challenges and credentials emit.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.encode_v2())
    }

    /// The borrowed form is not available for an owned macaroon (caveats are separate
    /// allocations), so callers that need the caveat iterator use this.
    pub fn caveat_slices(&self) -> impl Iterator<Item = &[u8]> + Clone {
        self.caveats.iter().map(Vec::as_slice)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_packet(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    put_varint(out, field);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// Cursor over V2 packets.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// The fields of one section, each at most once, in increasing type order.
#[derive(Default)]
struct Section<'a> {
    location: Option<&'a [u8]>,
    identifier: Option<&'a [u8]>,
    vid: Option<&'a [u8]>,
}

impl Section<'_> {
    fn is_empty(&self) -> bool {
        self.location.is_none() && self.identifier.is_none() && self.vid.is_none()
    }
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, MacaroonError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or(MacaroonError::Truncated)?;
            self.pos += 1;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(MacaroonError::VarintOverflow);
            }
            v |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(MacaroonError::VarintOverflow)
    }

    /// One packet; `None` for EOS (a lone 0x00 with no length).
    fn packet(&mut self) -> Result<Option<(u64, &'a [u8])>, MacaroonError> {
        let field = self.varint()?;
        if field == FIELD_EOS {
            return Ok(None);
        }
        let len = self.varint()?;
        let rest = self.buf.len() - self.pos;
        if len > rest as u64 {
            return Err(MacaroonError::LengthPastEnd);
        }
        let data = &self.buf[self.pos..self.pos + len as usize];
        self.pos += len as usize;
        Ok(Some((field, data)))
    }

    /// Packets up to EOS; types strictly increasing, only location/identifier/vid allowed.
    fn section(&mut self) -> Result<Section<'a>, MacaroonError> {
        let mut section = Section::default();
        let mut last = FIELD_EOS;
        while let Some((field, data)) = self.packet()? {
            if field <= last {
                return Err(MacaroonError::OutOfOrder);
            }
            last = field;
            match field {
                FIELD_LOCATION => section.location = Some(data),
                FIELD_IDENTIFIER => section.identifier = Some(data),
                FIELD_VID => section.vid = Some(data),
                FIELD_SIGNATURE => return Err(MacaroonError::UnexpectedField(field)),
                other => return Err(MacaroonError::UnknownField(other)),
            }
        }
        Ok(section)
    }
}

impl Reader<'_> {
    /// Validates the caveat sections up to their closing EOS; returns how many there were.
    /// Only plain first-party caveats (an identifier, nothing else) are accepted.
    fn caveat_sections(&mut self) -> Result<usize, MacaroonError> {
        let mut count = 0usize;
        loop {
            let section = self.section()?;
            if section.is_empty() {
                return Ok(count);
            }
            if section.vid.is_some() {
                return Err(MacaroonError::ThirdPartyCaveat);
            }
            if section.identifier.is_none() {
                return Err(MacaroonError::MissingIdentifier);
            }
            if section.location.is_some() {
                return Err(MacaroonError::CaveatLocation);
            }
            count += 1;
            if count > MAX_CAVEATS {
                return Err(MacaroonError::TooManyCaveats);
            }
        }
    }
}

impl<'a> MacaroonRef<'a> {
    /// Strict V2 parse without copying. Rejects V1, out-of-order or unknown fields, third-party
    /// caveats, lengths past the end, oversized input and trailing bytes.
    pub fn parse_v2(bytes: &'a [u8]) -> Result<MacaroonRef<'a>, MacaroonError> {
        match bytes.first() {
            None => return Err(MacaroonError::Empty),
            Some(&VERSION_V2) => {}
            Some(&other) => return Err(MacaroonError::UnsupportedVersion(other)),
        }
        if bytes.len() > MAX_MACAROON_LEN {
            return Err(MacaroonError::TooLarge(bytes.len()));
        }
        let mut r = Reader { buf: bytes, pos: 1 };
        let header = r.section()?;
        if header.vid.is_some() {
            return Err(MacaroonError::UnexpectedField(FIELD_VID));
        }
        let identifier = header.identifier.ok_or(MacaroonError::MissingIdentifier)?;
        let location = std::str::from_utf8(header.location.unwrap_or_default())
            .map_err(|_| MacaroonError::LocationNotUtf8)?;

        let caveats_start = r.pos;
        let caveat_count = r.caveat_sections()?;
        // Excludes the closing EOS so the lazy iterator stops at the section's end.
        let caveat_section = &bytes[caveats_start..r.pos - 1];

        let signature = match r.packet()? {
            Some((FIELD_SIGNATURE, sig)) => {
                <[u8; 32]>::try_from(sig).map_err(|_| MacaroonError::BadSignatureField)?
            }
            _ => return Err(MacaroonError::BadSignatureField),
        };
        if r.pos != bytes.len() {
            return Err(MacaroonError::TrailingBytes);
        }
        Ok(MacaroonRef {
            location,
            identifier,
            caveat_section,
            caveat_count,
            signature,
        })
    }

    /// First-party caveat ids in chain order.
    pub fn caveats(&self) -> CaveatIter<'a> {
        CaveatIter {
            reader: Reader {
                buf: self.caveat_section,
                pos: 0,
            },
            remaining: self.caveat_count,
        }
    }

    pub fn caveat_count(&self) -> usize {
        self.caveat_count
    }

    /// Constant-time signature check against `root_key`.
    pub fn verify_signature(&self, root_key: &[u8; 32]) -> bool {
        let sig = signature_chain(root_key, self.identifier, self.caveats());
        bool::from(sig.ct_eq(&self.signature))
    }

    pub fn to_owned(&self) -> Macaroon {
        Macaroon {
            location: self.location.to_owned(),
            identifier: self.identifier.to_vec(),
            caveats: self.caveats().map(<[u8]>::to_vec).collect(),
            signature: self.signature,
        }
    }
}

/// Iterator over a validated caveat section (each caveat is `02 len id 00`).
#[derive(Clone)]
pub struct CaveatIter<'a> {
    reader: Reader<'a>,
    remaining: usize,
}

impl Clone for Reader<'_> {
    fn clone(&self) -> Self {
        Reader {
            buf: self.buf,
            pos: self.pos,
        }
    }
}

impl<'a> Iterator for CaveatIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // The section was validated by `parse_v2`, so this cannot fail; stop quietly if it did.
        let section = self.reader.section().ok()?;
        section.identifier
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Macaroon {
        Macaroon::mint(&[9u8; 32], LOCATION, b"id-bytes", &["a=1", "b=2"])
    }

    #[test]
    fn libmacaroons_derivation_sanity_vector() {
        let sig = signature_chain(
            b"this is our super secret key; only we should know it",
            b"we used our secret key",
            std::iter::empty(),
        );
        assert_eq!(
            hex::encode(sig),
            "e3d9e02908526c4c0039ae15114115d97fdd68bf2ba379b342aaf0f617d0552f"
        );
    }

    #[test]
    fn round_trip_and_verify() {
        let m = sample();
        let bytes = m.encode_v2();
        assert_eq!(Macaroon::decode_v2(&bytes), Ok(m.clone()));
        assert!(m.verify_signature(&[9u8; 32]));
        assert!(!m.verify_signature(&[8u8; 32]));
        let r = MacaroonRef::parse_v2(&bytes).expect("parses");
        assert_eq!(r.caveats().collect::<Vec<_>>(), vec![&b"a=1"[..], b"b=2"]);
        assert!(r.verify_signature(&[9u8; 32]));
    }

    #[test]
    fn attenuation_extends_the_chain() {
        let mut m = sample();
        m.add_first_party_caveat("preimage=00");
        assert!(m.verify_signature(&[9u8; 32]));
        let mut forged = m.clone();
        forged.caveats.pop();
        assert!(!forged.verify_signature(&[9u8; 32]));
        let mut swapped = sample();
        swapped.caveats.swap(0, 1);
        assert!(!swapped.verify_signature(&[9u8; 32]));
    }

    #[test]
    fn empty_location_is_omitted_and_round_trips() {
        let m = Macaroon::mint(&[1u8; 32], "", b"x", &[] as &[&str]);
        let bytes = m.encode_v2();
        assert_eq!(&bytes[..4], &[2, 2, 1, b'x']);
        assert_eq!(Macaroon::decode_v2(&bytes), Ok(m));
    }

    #[test]
    fn long_fields_use_multibyte_varints() {
        let cav = vec![b'z'; 300];
        let m = Macaroon::mint(&[1u8; 32], LOCATION, &[7u8; 200], &[cav]);
        assert_eq!(Macaroon::decode_v2(&m.encode_v2()), Ok(m));
    }

    #[test]
    fn rejects_trailing_and_truncated() {
        let bytes = sample().encode_v2();
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            Macaroon::decode_v2(&trailing),
            Err(MacaroonError::TrailingBytes)
        );
        for cut in 0..bytes.len() {
            assert!(Macaroon::decode_v2(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn rejects_bad_versions_and_sizes() {
        assert_eq!(Macaroon::decode_v2(&[]), Err(MacaroonError::Empty));
        assert_eq!(
            Macaroon::decode_v2(b"MDAxY2xvY2F0aW9u"),
            Err(MacaroonError::UnsupportedVersion(b'M'))
        );
        let big = vec![2u8; MAX_MACAROON_LEN + 1];
        assert_eq!(
            Macaroon::decode_v2(&big),
            Err(MacaroonError::TooLarge(MAX_MACAROON_LEN + 1))
        );
        // identifier claiming 2^63 bytes
        let absurd = [2u8, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(
            Macaroon::decode_v2(&absurd),
            Err(MacaroonError::LengthPastEnd)
        );
        let overflow = [
            2u8, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert_eq!(
            Macaroon::decode_v2(&overflow),
            Err(MacaroonError::VarintOverflow)
        );
    }

    fn build(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn rejects_out_of_order_and_unknown_fields() {
        let sig: &[u8] = &[[6u8, 32].as_slice(), &[0u8; 32]].concat();
        // identifier before location
        let bad = build(&[&[2, 2, 1, b'x', 1, 1, b'l', 0, 0], sig]);
        assert_eq!(Macaroon::decode_v2(&bad), Err(MacaroonError::OutOfOrder));
        // duplicate identifier
        let dup = build(&[&[2, 2, 1, b'x', 2, 1, b'y', 0, 0], sig]);
        assert_eq!(Macaroon::decode_v2(&dup), Err(MacaroonError::OutOfOrder));
        let unknown = build(&[&[2, 2, 1, b'x', 3, 1, b'y', 0, 0], sig]);
        assert_eq!(
            Macaroon::decode_v2(&unknown),
            Err(MacaroonError::UnknownField(3))
        );
        let no_id = build(&[&[2, 1, 1, b'l', 0, 0], sig]);
        assert_eq!(
            Macaroon::decode_v2(&no_id),
            Err(MacaroonError::MissingIdentifier)
        );
        let ok = build(&[&[2, 2, 1, b'x', 0, 0], sig]);
        assert!(Macaroon::decode_v2(&ok).is_ok());
        let short_sig = build(&[&[2, 2, 1, b'x', 0, 0, 6, 1, 0]]);
        assert_eq!(
            Macaroon::decode_v2(&short_sig),
            Err(MacaroonError::BadSignatureField)
        );
    }

    #[test]
    fn rejects_third_party_and_located_caveats() {
        let sig: &[u8] = &[[6u8, 32].as_slice(), &[0u8; 32]].concat();
        let third = build(&[&[2, 2, 1, b'x', 0, 2, 1, b'c', 4, 1, b'v', 0, 0], sig]);
        assert_eq!(
            Macaroon::decode_v2(&third),
            Err(MacaroonError::ThirdPartyCaveat)
        );
        let located = build(&[&[2, 2, 1, b'x', 0, 1, 1, b'l', 2, 1, b'c', 0, 0], sig]);
        assert_eq!(
            Macaroon::decode_v2(&located),
            Err(MacaroonError::CaveatLocation)
        );
    }

    #[test]
    fn caps_caveat_count() {
        let caveats: Vec<String> = (0..=MAX_CAVEATS).map(|i| format!("c{i}")).collect();
        let m = Macaroon::mint(&[1u8; 32], LOCATION, b"x", &caveats);
        assert_eq!(
            Macaroon::decode_v2(&m.encode_v2()),
            Err(MacaroonError::TooManyCaveats)
        );
    }
}
