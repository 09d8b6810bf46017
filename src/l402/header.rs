//! Credential carriers and challenge values (`wire-format.md` §3.1, §3.4, §5): liberal parsing
//! of `Authorization: L402|LSAT …` and the `Macaroon`/`Token` headers into candidates, and the
//! exact `WWW-Authenticate` / upstream `Authorization` values we emit. Owns syntax only: whether
//! a candidate is *valid* is `verify`'s job.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use thiserror::Error;

use super::caveat::{split_caveat, COND_PREIMAGE};
use super::macaroon::{Macaroon, MacaroonError, MacaroonRef, MAX_MACAROON_LEN};
use super::ChallengeShape;

/// Most macaroons accepted in one comma-separated `Authorization` credential.
pub const MAX_MACAROONS_PER_FIELD: usize = 4;
/// Most candidates considered per request: each may cost a full HMAC chain.
pub const MAX_CANDIDATES: usize = 16;
/// Longest header value we look at; anything longer cannot hold a macaroon we would accept.
const MAX_VALUE_LEN: usize = 2 * MAX_MACAROON_LEN + 256;

/// The scheme a credential arrived with (both are always accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    L402,
    Lsat,
}

/// Where a credential came from (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialSource {
    Authorization(Scheme),
    Macaroon,
    GrpcMetadataMacaroon,
    Token,
    GrpcMetadataToken,
}

/// A parsed (not yet verified) credential: one macaroon and the preimage that pays for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub macaroon: Macaroon,
    pub preimage: [u8; 32],
    pub source: CredentialSource,
}

/// Why a carrier with our scheme (or a `Macaroon`/`Token` header) held no usable credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CredentialError {
    #[error("control character or non-ASCII byte in credential")]
    ControlChar,
    #[error("credential has no ':' before the preimage")]
    MissingColon,
    #[error("credential has more than one ':'")]
    ExtraColon,
    #[error("empty macaroon")]
    EmptyMacaroon,
    #[error("more than {MAX_MACAROONS_PER_FIELD} macaroons in one credential")]
    TooManyMacaroons,
    #[error("credential too large")]
    TooLarge,
    #[error("preimage is not 64 hex characters")]
    BadPreimage,
    #[error("macaroon carries no preimage= caveat")]
    MissingPreimage,
    #[error("macaroon is not valid base64")]
    Base64,
    #[error("macaroon is not valid hex")]
    Hex,
    #[error("macaroon: {0}")]
    Macaroon(#[from] MacaroonError),
}

/// Which header a value came from, in the order candidates are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Carrier {
    Authorization,
    Macaroon,
    GrpcMetadataMacaroon,
    Token,
    GrpcMetadataToken,
}

fn carrier(name: &str) -> Option<Carrier> {
    const NAMES: [(&str, Carrier); 5] = [
        ("authorization", Carrier::Authorization),
        ("macaroon", Carrier::Macaroon),
        ("grpc-metadata-macaroon", Carrier::GrpcMetadataMacaroon),
        ("token", Carrier::Token),
        ("grpc-metadata-token", Carrier::GrpcMetadataToken),
    ];
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, c)| c)
}

/// How the macaroon bytes are encoded in the header.
#[derive(Debug, Clone, Copy)]
enum Encoded<'h> {
    Base64(&'h [u8]),
    Hex(&'h [u8]),
}

/// A candidate still borrowing the header value; decoding is deferred so the verifier can reuse
/// one buffer and skip building owned macaroons for candidates that fail.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawCandidate<'h> {
    encoded: Encoded<'h>,
    /// From the `Authorization` value; `None` means "take it from the last `preimage=` caveat".
    preimage: Option<[u8; 32]>,
    pub(crate) source: CredentialSource,
}

impl<'h> RawCandidate<'h> {
    /// Decodes into `buf` and parses the macaroon without copying it out of `buf`.
    pub(crate) fn decode<'b>(
        &self,
        buf: &'b mut Vec<u8>,
    ) -> Result<(MacaroonRef<'b>, [u8; 32]), CredentialError> {
        buf.clear();
        match self.encoded {
            Encoded::Base64(b64) => decode_base64_into(b64, buf)?,
            Encoded::Hex(hex) => {
                buf.resize(hex.len() / 2, 0);
                hex::decode_to_slice(hex, buf).map_err(|_| CredentialError::Hex)?;
            }
        }
        let mac = MacaroonRef::parse_v2(buf)?;
        let preimage = match self.preimage {
            Some(p) => p,
            None => preimage_from_caveats(&mac)?,
        };
        Ok((mac, preimage))
    }

    fn into_credential(self, buf: &mut Vec<u8>) -> Result<Credential, CredentialError> {
        let (mac, preimage) = self.decode(buf)?;
        Ok(Credential {
            macaroon: mac.to_owned(),
            preimage,
            source: self.source,
        })
    }
}

/// Go's rule for the `Macaroon` forms: the **last** `preimage=` caveat is the preimage.
fn preimage_from_caveats(mac: &MacaroonRef<'_>) -> Result<[u8; 32], CredentialError> {
    let value = mac
        .caveats()
        .filter_map(split_caveat)
        .filter(|(cond, _)| *cond == COND_PREIMAGE.as_bytes())
        .last()
        .map(|(_, v)| v)
        .ok_or(CredentialError::MissingPreimage)?;
    parse_preimage(value)
}

fn parse_preimage(hex_text: &[u8]) -> Result<[u8; 32], CredentialError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).map_err(|_| CredentialError::BadPreimage)?;
    Ok(out)
}

const LIBERAL: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LIBERAL);
const URL_ANY_PAD: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LIBERAL);

/// Base64 in either alphabet, padded or not (pymacaroons clients send unpadded base64url).
/// Mixing the two alphabets in one value is refused.
fn decode_base64_into(b64: &[u8], buf: &mut Vec<u8>) -> Result<(), CredentialError> {
    let engine = if b64.iter().any(|&b| b == b'-' || b == b'_') {
        &URL_ANY_PAD
    } else {
        &STD_ANY_PAD
    };
    engine
        .decode_vec(b64, buf)
        .map_err(|_| CredentialError::Base64)
}

/// Decodes a macaroon from base64 in any alphabet, padded or not.
pub fn macaroon_from_base64(b64: &str) -> Result<Macaroon, CredentialError> {
    let mut buf = Vec::new();
    decode_base64_into(b64.as_bytes(), &mut buf)?;
    Ok(Macaroon::decode_v2(&buf)?)
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn has_control(v: &[u8]) -> bool {
    v.iter().any(|b| !(0x20..0x7f).contains(b))
}

/// Parses one `Authorization` value. `None`: a foreign scheme (Bearer, Payment…), which must not
/// hide other carriers. Candidates (one per comma-separated macaroon) go to `out`.
fn parse_authorization<'h>(
    value: &'h [u8],
    out: &mut Vec<Result<RawCandidate<'h>, CredentialError>>,
) {
    let value = trim_ows(value);
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(sp) => (&value[..sp], &value[sp..]),
        None => (value, &value[value.len()..]),
    };
    let scheme = if scheme.eq_ignore_ascii_case(b"L402") {
        Scheme::L402
    } else if scheme.eq_ignore_ascii_case(b"LSAT") {
        Scheme::Lsat
    } else {
        return;
    };
    let source = CredentialSource::Authorization(scheme);
    match split_authorization(rest) {
        Ok((macs, preimage)) => {
            for mac in macs.split(|&b| b == b',').map(trim_ows) {
                out.push(if mac.is_empty() {
                    Err(CredentialError::EmptyMacaroon)
                } else {
                    Ok(RawCandidate {
                        encoded: Encoded::Base64(mac),
                        preimage: Some(preimage),
                        source,
                    })
                });
            }
        }
        Err(e) => out.push(Err(e)),
    }
}

/// `1*SP <mac>[,<mac>…]:<64 hex>` → (macaroon list, preimage).
fn split_authorization(rest: &[u8]) -> Result<(&[u8], [u8; 32]), CredentialError> {
    let rest = trim_ows(rest);
    if rest.len() > MAX_VALUE_LEN {
        return Err(CredentialError::TooLarge);
    }
    if has_control(rest) {
        return Err(CredentialError::ControlChar);
    }
    let colon = rest
        .iter()
        .position(|&b| b == b':')
        .ok_or(CredentialError::MissingColon)?;
    let (macs, preimage) = (&rest[..colon], &rest[colon + 1..]);
    if preimage.contains(&b':') {
        return Err(CredentialError::ExtraColon);
    }
    let preimage = parse_preimage(preimage)?;
    if macs.iter().filter(|&&b| b == b',').count() >= MAX_MACAROONS_PER_FIELD {
        return Err(CredentialError::TooManyMacaroons);
    }
    Ok((macs, preimage))
}

/// A `Macaroon`/`Token` header value: hex of V2 bytes, either case.
fn parse_hex_carrier(
    value: &[u8],
    source: CredentialSource,
) -> Result<RawCandidate<'_>, CredentialError> {
    let value = trim_ows(value);
    if value.is_empty() {
        return Err(CredentialError::EmptyMacaroon);
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(CredentialError::TooLarge);
    }
    if has_control(value) {
        return Err(CredentialError::ControlChar);
    }
    if value.len() % 2 != 0 {
        return Err(CredentialError::Hex);
    }
    Ok(RawCandidate {
        encoded: Encoded::Hex(value),
        preimage: None,
        source,
    })
}

/// All candidates from the request headers, in trial order: every `Authorization` field (in
/// request order), then `Macaroon`, `Grpc-Metadata-Macaroon`, `Token`, `Grpc-Metadata-Token`.
/// At most [`MAX_CANDIDATES`]. Foreign `Authorization` schemes yield nothing.
pub(crate) fn raw_candidates<'h>(
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
) -> Vec<Result<RawCandidate<'h>, CredentialError>> {
    let mut carriers: Vec<(Carrier, &'h [u8])> = headers
        .into_iter()
        .filter_map(|(name, value)| carrier(name).map(|c| (c, value)))
        .collect();
    carriers.sort_by_key(|&(c, _)| c); // stable: keeps request order within a carrier
    let mut out = Vec::new();
    for (c, value) in carriers {
        if out.len() >= MAX_CANDIDATES {
            break;
        }
        let source = match c {
            Carrier::Authorization => {
                parse_authorization(value, &mut out);
                continue;
            }
            Carrier::Macaroon => CredentialSource::Macaroon,
            Carrier::GrpcMetadataMacaroon => CredentialSource::GrpcMetadataMacaroon,
            Carrier::Token => CredentialSource::Token,
            Carrier::GrpcMetadataToken => CredentialSource::GrpcMetadataToken,
        };
        out.push(parse_hex_carrier(value, source));
    }
    out.truncate(MAX_CANDIDATES);
    out
}

/// Every credential candidate in the headers (names compared case-insensitively), parsed but
/// not verified. Empty when no carrier with our scheme is present.
pub fn parse_credentials<'h>(
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
) -> Vec<Result<Credential, CredentialError>> {
    let mut buf = Vec::new();
    raw_candidates(headers)
        .into_iter()
        .map(|c| c.and_then(|raw| raw.into_credential(&mut buf)))
        .collect()
}

/// The exact `WWW-Authenticate` field values, in order, for a challenge shape (§3.1, §3.4).
/// `macaroon_b64` is std padded base64 (its alphabet needs no quoting).
pub fn challenge_values(shape: ChallengeShape, macaroon_b64: &str, invoice: &str) -> Vec<String> {
    let (m, i) = (macaroon_b64, invoice);
    let lsat = format!("LSAT macaroon=\"{m}\", invoice=\"{i}\"");
    let token_form = format!("L402 version=\"0\", token=\"{m}\", invoice=\"{i}\"");
    match shape {
        ChallengeShape::Aperture => vec![lsat, format!("L402 macaroon=\"{m}\", invoice=\"{i}\"")],
        ChallengeShape::Superset => vec![
            lsat,
            format!("L402 macaroon=\"{m}\", invoice=\"{i}\", version=\"0\", token=\"{m}\""),
        ],
        ChallengeShape::Pr208 => vec![lsat, token_form],
        ChallengeShape::SpecStrict => vec![token_form],
    }
}

/// The two `Authorization` values forwarded upstream (Go's `l402.SetHeader`): `LSAT …` then
/// `L402 …`, std base64 of the re-serialized V2 macaroon and the lowercase hex preimage.
pub fn upstream_authorization(cred: &Credential) -> [String; 2] {
    let body = format!(
        "{}:{}",
        cred.macaroon.to_base64(),
        hex::encode(cred.preimage)
    );
    [format!("LSAT {body}"), format!("L402 {body}")]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l402::macaroon::LOCATION;

    const PRE: [u8; 32] = [7u8; 32];

    fn mac() -> Macaroon {
        Macaroon::mint(&[1u8; 32], LOCATION, b"ident", &["services=svc:0"])
    }

    fn ok(results: Vec<Result<Credential, CredentialError>>) -> Vec<Credential> {
        results
            .into_iter()
            .map(|r| r.expect("candidate parses"))
            .collect()
    }

    fn auth(value: &str) -> Vec<Result<Credential, CredentialError>> {
        parse_credentials([("Authorization", value.as_bytes())])
    }

    #[test]
    fn canonical_authorization() {
        let m = mac();
        let creds = ok(auth(&format!(
            "L402 {}:{}",
            m.to_base64(),
            hex::encode(PRE)
        )));
        assert_eq!(creds.len(), 1);
        assert_eq!(creds[0].macaroon, m);
        assert_eq!(creds[0].preimage, PRE);
        assert_eq!(
            creds[0].source,
            CredentialSource::Authorization(Scheme::L402)
        );
    }

    #[test]
    fn every_base64_variant_and_scheme_spelling() {
        let m = mac();
        let bytes = m.encode_v2();
        let variants = [
            base64::engine::general_purpose::STANDARD.encode(&bytes),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes),
            base64::engine::general_purpose::URL_SAFE.encode(&bytes),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes),
        ];
        for b64 in &variants {
            for scheme in ["L402 ", "LSAT ", "l402 ", "lsat   ", "LsAt "] {
                for pre in [hex::encode(PRE), hex::encode_upper(PRE)] {
                    let creds = ok(auth(&format!("{scheme}{b64}:{pre}")));
                    assert_eq!(creds.len(), 1, "{scheme}{b64}");
                    assert_eq!(creds[0].macaroon, m);
                }
            }
        }
        let lsat = ok(auth(&format!("LSAT {}:{}", variants[0], hex::encode(PRE))));
        assert_eq!(
            lsat[0].source,
            CredentialSource::Authorization(Scheme::Lsat)
        );
    }

    #[test]
    fn comma_separated_macaroons_are_separate_candidates() {
        let (a, b) = (
            mac(),
            Macaroon::mint(&[2u8; 32], LOCATION, b"other", &["x=1"]),
        );
        let creds = ok(auth(&format!(
            "L402 {},{}:{}",
            a.to_base64(),
            b.to_base64(),
            hex::encode(PRE)
        )));
        assert_eq!(creds.len(), 2);
        assert_eq!((&creds[0].macaroon, &creds[1].macaroon), (&a, &b));
        let too_many = format!(
            "L402 {0},{0},{0},{0},{0}:{1}",
            a.to_base64(),
            hex::encode(PRE)
        );
        assert_eq!(
            auth(&too_many),
            vec![Err(CredentialError::TooManyMacaroons)]
        );
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let m = mac().to_base64();
        let p = hex::encode(PRE);
        let cases: Vec<(String, CredentialError)> = vec![
            (format!("L402 LSAT {m}:{p}"), CredentialError::Base64),
            ("L402 LSAT x:y".into(), CredentialError::BadPreimage),
            (format!("L402 {m}:{p}:{p}"), CredentialError::ExtraColon),
            (format!("L402 {m}"), CredentialError::MissingColon),
            ("L402".into(), CredentialError::MissingColon),
            (format!("L402 {m}\u{1}:{p}"), CredentialError::ControlChar),
            (
                format!("L402 {m}:{}", &p[..62]),
                CredentialError::BadPreimage,
            ),
            (
                format!("L402 {}:{p}", &m[..m.len() - 8]),
                CredentialError::Macaroon(MacaroonError::LengthPastEnd),
            ),
            (format!("L402 :{p}"), CredentialError::EmptyMacaroon),
            (format!("L402 AgEE+bHN-hdA:{p}"), CredentialError::Base64),
            (
                format!("L402 {}:{p}", "A".repeat(64 * 1024)),
                CredentialError::TooLarge,
            ),
        ];
        for (value, want) in cases {
            let got = auth(&value);
            assert_eq!(got.len(), 1, "{value:.80}");
            assert_eq!(got[0].as_ref().err(), Some(&want), "{value:.80}");
        }
    }

    #[test]
    fn foreign_schemes_yield_nothing_and_hide_nothing() {
        assert!(auth("Bearer abc").is_empty());
        assert!(auth("Payment id=\"x\"").is_empty());
        assert!(auth("L402X abc:def").is_empty());
        let mut m = mac();
        m.add_first_party_caveat(format!("preimage={}", hex::encode(PRE)));
        let hexmac = hex::encode(m.encode_v2());
        let creds = ok(parse_credentials([
            ("Authorization", &b"Bearer abc"[..]),
            ("Macaroon", hexmac.as_bytes()),
        ]));
        assert_eq!(creds.len(), 1);
        assert_eq!(creds[0].source, CredentialSource::Macaroon);
        assert_eq!(creds[0].preimage, PRE);
    }

    #[test]
    fn every_authorization_field_in_any_order() {
        let good = format!("L402 {}:{}", mac().to_base64(), hex::encode(PRE));
        for fields in [
            [good.as_str(), "L402 junk:zz"],
            ["L402 junk:zz", good.as_str()],
        ] {
            let got = parse_credentials(fields.iter().map(|v| ("authorization", v.as_bytes())));
            assert_eq!(got.len(), 2);
            assert_eq!(got.iter().filter(|r| r.is_ok()).count(), 1);
        }
    }

    #[test]
    fn hex_carriers_and_preimage_caveat() {
        let mut m = mac();
        m.add_first_party_caveat(format!("preimage={}", hex::encode([9u8; 32])));
        m.add_first_party_caveat(format!("preimage={}", hex::encode_upper(PRE)));
        let lower = hex::encode(m.encode_v2());
        let upper = hex::encode_upper(m.encode_v2());
        for (name, src) in [
            ("Macaroon", CredentialSource::Macaroon),
            (
                "grpc-metadata-macaroon",
                CredentialSource::GrpcMetadataMacaroon,
            ),
            ("TOKEN", CredentialSource::Token),
            ("Grpc-Metadata-Token", CredentialSource::GrpcMetadataToken),
        ] {
            for v in [&lower, &upper] {
                let creds = ok(parse_credentials([(name, v.as_bytes())]));
                assert_eq!(creds[0].source, src);
                // The last preimage= caveat wins.
                assert_eq!(creds[0].preimage, PRE);
                assert_eq!(creds[0].macaroon, m);
            }
        }
        let bare = hex::encode(mac().encode_v2());
        assert_eq!(
            parse_credentials([("Macaroon", bare.as_bytes())]),
            vec![Err(CredentialError::MissingPreimage)]
        );
        assert_eq!(
            parse_credentials([("Macaroon", &b"abc"[..])]),
            vec![Err(CredentialError::Hex)]
        );
        assert_eq!(
            parse_credentials([("Macaroon", &b"zz"[..])]),
            vec![Err(CredentialError::Hex)]
        );
        assert_eq!(
            parse_credentials([("Token", &b"  "[..])]),
            vec![Err(CredentialError::EmptyMacaroon)]
        );
    }

    #[test]
    fn authorization_first_regardless_of_request_order() {
        let mut m = mac();
        m.add_first_party_caveat(format!("preimage={}", hex::encode(PRE)));
        let hexmac = hex::encode(m.encode_v2());
        let good = format!("L402 {}:{}", mac().to_base64(), hex::encode(PRE));
        let creds = ok(parse_credentials([
            ("Token", hexmac.as_bytes()),
            ("Macaroon", hexmac.as_bytes()),
            ("Authorization", good.as_bytes()),
        ]));
        let sources: Vec<_> = creds.iter().map(|c| c.source).collect();
        assert_eq!(
            sources,
            vec![
                CredentialSource::Authorization(Scheme::L402),
                CredentialSource::Macaroon,
                CredentialSource::Token
            ]
        );
    }

    #[test]
    fn candidates_are_capped() {
        let good = format!("L402 {}:{}", mac().to_base64(), hex::encode(PRE));
        let got = parse_credentials((0..100).map(|_| ("Authorization", good.as_bytes())));
        assert_eq!(got.len(), MAX_CANDIDATES);
    }

    #[test]
    fn challenge_shapes_exact() {
        let v = |s| challenge_values(s, "M", "I");
        let lsat = "LSAT macaroon=\"M\", invoice=\"I\"";
        assert_eq!(
            v(ChallengeShape::Aperture),
            vec![lsat, "L402 macaroon=\"M\", invoice=\"I\""]
        );
        assert_eq!(
            v(ChallengeShape::Superset),
            vec![
                lsat,
                "L402 macaroon=\"M\", invoice=\"I\", version=\"0\", token=\"M\""
            ]
        );
        assert_eq!(
            v(ChallengeShape::Pr208),
            vec![lsat, "L402 version=\"0\", token=\"M\", invoice=\"I\""]
        );
        assert_eq!(
            v(ChallengeShape::SpecStrict),
            vec!["L402 version=\"0\", token=\"M\", invoice=\"I\""]
        );
    }

    #[test]
    fn upstream_authorization_reserializes() {
        let m = mac();
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.encode_v2());
        let creds = ok(auth(&format!("lsat  {url}:{}", hex::encode_upper(PRE))));
        let body = format!("{}:{}", m.to_base64(), hex::encode(PRE));
        assert_eq!(
            upstream_authorization(&creds[0]),
            [format!("LSAT {body}"), format!("L402 {body}")]
        );
    }
}
