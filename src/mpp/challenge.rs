//! The `WWW-Authenticate: Payment …` challenge: its params, the exact field value Go aperture
//! emits (param order, quoting), the RFC 9110 challenge-list parser (the one the proxy uses on
//! its own header set and clients need), and the stateless 7-slot HMAC-SHA256 challenge id.
//! Owns syntax and the id binding; it must not decide whether a credential is acceptable
//! (that is `verify`) nor build the `request` JSON (that is `request`).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

use super::request::{ChargeRequest, SessionRequest};
use super::time::challenge_expires;
use super::{b64, Intent, METHOD_LIGHTNING, SCHEME};

/// The auth-params of one Payment challenge. As in Go, an empty optional field is absent: it is
/// not emitted and its HMAC slot is the empty string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChallengeParams {
    /// base64url-nopad HMAC-SHA256 over the other slots (43 characters when we mint it).
    pub id: String,
    pub realm: String,
    pub method: String,
    pub intent: String,
    /// base64url-nopad of the JCS request JSON.
    pub request: String,
    /// RFC 3339; always set on what we mint.
    pub expires: String,
    pub digest: String,
    /// Not covered by the HMAC.
    pub description: String,
    pub opaque: String,
}

/// Why a `WWW-Authenticate` value yielded no usable Payment challenge.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChallengeListError {
    #[error("malformed WWW-Authenticate value at offset {0}")]
    Malformed(usize),
    #[error("auth-param before any auth-scheme")]
    ParamBeforeScheme,
    #[error("no Payment challenge")]
    NoPaymentChallenge,
    #[error("Payment challenge missing the {0} parameter")]
    MissingParam(&'static str),
}

impl ChallengeParams {
    /// A Lightning challenge bound to `secret`: the id is computed over the other fields.
    pub fn mint(
        secret: &[u8],
        realm: &str,
        intent: Intent,
        request: String,
        expires: String,
    ) -> Self {
        let mut p = ChallengeParams {
            realm: realm.to_owned(),
            method: METHOD_LIGHTNING.to_owned(),
            intent: intent.as_str().to_owned(),
            request,
            expires,
            ..Default::default()
        };
        p.id = p.compute_id(secret);
        p
    }

    /// Go aperture's charge challenge: the canonical charge request for `amount_sats` and a
    /// fresh invoice, `expires` = now + 15 min.
    pub fn charge(secret: &[u8], realm: &str, now_unix: u64, request: &ChargeRequest) -> Self {
        Self::mint(
            secret,
            realm,
            Intent::Charge,
            request.encode(),
            challenge_expires(now_unix),
        )
    }

    /// Go aperture's session challenge: the canonical session request, `expires` = now + 15 min.
    pub fn session(secret: &[u8], realm: &str, now_unix: u64, request: &SessionRequest) -> Self {
        Self::mint(
            secret,
            realm,
            Intent::Session,
            request.encode(),
            challenge_expires(now_unix),
        )
    }

    /// `realm|method|intent|request|expires|digest|opaque`. The delimiter is not escaped, so
    /// a `|` inside a value can collide with another split; that is Go's binding and we keep it.
    pub fn hmac_input(&self) -> String {
        [
            self.realm.as_str(),
            &self.method,
            &self.intent,
            &self.request,
            &self.expires,
            &self.digest,
            &self.opaque,
        ]
        .join("|")
    }

    /// The id this challenge must carry under `secret`.
    pub fn compute_id(&self, secret: &[u8]) -> String {
        b64::encode(&self.hmac(secret))
    }

    fn hmac(&self, secret: &[u8]) -> [u8; 32] {
        // HMAC accepts keys of any length; the error arm cannot happen.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return [0; 32];
        };
        mac.update(self.hmac_input().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `self.id` is the HMAC of the other fields, compared in constant time (the length
    /// of a wrong id is not secret).
    pub fn verify_id(&self, secret: &[u8]) -> bool {
        let expected = self.compute_id(secret);
        expected.as_bytes().ct_eq(self.id.as_bytes()).into()
    }

    /// The `WWW-Authenticate` field value: `Payment id="…", realm="…", method="…", intent="…",
    /// request="…"` then, when non-empty, `expires`, `digest`, `description`, `opaque`.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(96 + self.request.len() + self.realm.len());
        out.push_str(SCHEME);
        out.push(' ');
        let required = [
            ("id", &self.id),
            ("realm", &self.realm),
            ("method", &self.method),
            ("intent", &self.intent),
            ("request", &self.request),
        ];
        let optional = [
            ("expires", &self.expires),
            ("digest", &self.digest),
            ("description", &self.description),
            ("opaque", &self.opaque),
        ];
        let params = required
            .into_iter()
            .chain(optional.into_iter().filter(|(_, v)| !v.is_empty()));
        for (i, (name, value)) in params.enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(name);
            out.push('=');
            quote_param(&mut out, value);
        }
        out
    }

    /// Lifts one parsed auth-param set, requiring the five mandatory params (empty is allowed).
    fn from_params(params: Vec<(String, String)>) -> Result<Self, ChallengeListError> {
        let mut p = ChallengeParams::default();
        let mut seen = [false; 5];
        for (name, value) in params {
            let slot = match name.as_str() {
                "id" => (Some(0), &mut p.id),
                "realm" => (Some(1), &mut p.realm),
                "method" => (Some(2), &mut p.method),
                "intent" => (Some(3), &mut p.intent),
                "request" => (Some(4), &mut p.request),
                "expires" => (None, &mut p.expires),
                "digest" => (None, &mut p.digest),
                "description" => (None, &mut p.description),
                "opaque" => (None, &mut p.opaque),
                _ => continue,
            };
            if let Some(i) = slot.0 {
                seen[i] = true;
            }
            *slot.1 = value;
        }
        const NAMES: [&str; 5] = ["id", "realm", "method", "intent", "request"];
        match seen.iter().position(|s| !s) {
            Some(i) => Err(ChallengeListError::MissingParam(NAMES[i])),
            None => Ok(p),
        }
    }
}

/// Appends `s` as an RFC 9110 quoted-string the way Go's `quoteAuthParam` does: `\` and `"`
/// become quoted-pairs; HTAB, 0x20-0x7E and obs-text pass; other controls (DEL included) are
/// dropped, so a value can never split the header.
pub fn quote_param(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' | '"' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push(c),
            c if c.is_ascii_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_ows(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn read_token(s: &[u8], pos: usize) -> (&[u8], usize) {
    let end = pos + s[pos..].iter().take_while(|&&c| is_tchar(c)).count();
    (&s[pos..end], end)
}

/// The value half of an auth-param, from just past the `=`: a token, or a quoted-string in
/// which `\x` is `x` and a missing closing quote takes the rest.
fn read_value(s: &[u8], mut pos: usize) -> (Vec<u8>, usize) {
    while pos < s.len() && is_ows(s[pos]) {
        pos += 1;
    }
    if pos >= s.len() || s[pos] != b'"' {
        let (token, end) = read_token(s, pos);
        return (token.to_vec(), end);
    }
    let mut value = Vec::new();
    pos += 1;
    while pos < s.len() {
        match s[pos] {
            b'\\' if pos + 1 < s.len() => {
                value.push(s[pos + 1]);
                pos += 2;
            }
            b'"' => return (value, pos + 1),
            c => {
                value.push(c);
                pos += 1;
            }
        }
    }
    (value, pos)
}

/// Only ASCII bytes are ever removed from the (valid UTF-8) input, so this never loses data.
fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// One auth-param list per Payment challenge in a field value (Go's `parseChallengeParamSets`).
/// A token followed by `=` is an auth-param, any other token opens a challenge; names are
/// lowercased and a repeated name keeps its first value; other schemes' params are discarded.
fn param_sets(s: &str) -> Result<Vec<Vec<(String, String)>>, ChallengeListError> {
    let s = s.as_bytes();
    let mut sets: Vec<Vec<(String, String)>> = Vec::new();
    // None: no scheme yet; Some(false): another scheme (params discarded); Some(true): Payment.
    let mut current: Option<bool> = None;
    let mut pos = 0;
    loop {
        while pos < s.len() && (s[pos] == b',' || is_ows(s[pos])) {
            pos += 1;
        }
        if pos >= s.len() {
            break;
        }
        let (token, next) = read_token(s, pos);
        if token.is_empty() {
            return Err(ChallengeListError::Malformed(pos));
        }
        let after_token = next;
        pos = next;
        while pos < s.len() && is_ows(s[pos]) {
            pos += 1;
        }
        if pos < s.len() && s[pos] == b'=' {
            let (value, end) = read_value(s, pos + 1);
            pos = end;
            match (current, sets.last_mut()) {
                (None, _) => return Err(ChallengeListError::ParamBeforeScheme),
                (Some(true), Some(params)) => {
                    let name = utf8(token.to_ascii_lowercase());
                    if !params.iter().any(|(n, _)| *n == name) {
                        params.push((name, utf8(value)));
                    }
                }
                _ => {}
            }
            continue;
        }
        pos = after_token;
        let is_payment = token.eq_ignore_ascii_case(SCHEME.as_bytes());
        current = Some(is_payment);
        if is_payment {
            sets.push(Vec::new());
        }
    }
    Ok(sets)
}

/// Every usable Payment challenge in one `WWW-Authenticate` field value, in order. Incomplete
/// ones are skipped; it is an error only when none is left (the first problem is reported).
/// token68 is not supported (it reads as a further scheme, which is harmless here).
pub fn parse_challenge_list(value: &str) -> Result<Vec<ChallengeParams>, ChallengeListError> {
    let sets = param_sets(value)?;
    if sets.is_empty() {
        return Err(ChallengeListError::NoPaymentChallenge);
    }
    let mut first_err = None;
    let mut out = Vec::with_capacity(sets.len());
    for set in sets {
        match ChallengeParams::from_params(set) {
            Ok(p) => out.push(p),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) if out.is_empty() => Err(e),
        _ => Ok(out),
    }
}

/// Every usable Payment challenge across several `WWW-Authenticate` field lines (Go's
/// `ParseChallengeHeaders`): a line that fails to parse is skipped.
pub fn parse_challenge_fields<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<ChallengeParams>, ChallengeListError> {
    let mut out = Vec::new();
    let mut first_err = None;
    for value in values {
        match parse_challenge_list(value) {
            Ok(list) => out.extend(list),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) if out.is_empty() => Err(e),
        None if out.is_empty() => Err(ChallengeListError::NoPaymentChallenge),
        _ => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"mpp-test-vector-secret";

    #[test]
    fn quoting_drops_controls_and_escapes_quotes() {
        let mut out = String::new();
        quote_param(&mut out, "a\r\nb\u{7f}c\t\"\\é\u{0}");
        assert_eq!(out, "\"abc\t\\\"\\\\é\"");
    }

    #[test]
    fn mint_verifies_and_any_change_breaks_the_id() {
        let p = ChallengeParams::mint(SECRET, "r", Intent::Charge, "cQ".into(), "x".into());
        assert_eq!(p.id.len(), 43);
        assert!(p.verify_id(SECRET));
        assert!(!p.verify_id(b"other"));
        let mut q = p.clone();
        q.description = "not covered".into();
        assert!(q.verify_id(SECRET));
        for f in [
            |q: &mut ChallengeParams| q.expires.clear(),
            |q: &mut ChallengeParams| q.digest.push('x'),
        ] {
            let mut q = p.clone();
            f(&mut q);
            assert!(!q.verify_id(SECRET));
        }
        let mut q = p.clone();
        q.id.pop();
        assert!(!q.verify_id(SECRET));
    }

    #[test]
    fn parser_edge_cases() {
        assert_eq!(
            parse_challenge_list("id=a"),
            Err(ChallengeListError::ParamBeforeScheme)
        );
        assert_eq!(
            parse_challenge_list("Payment id=/"),
            Err(ChallengeListError::Malformed(11))
        );
        assert_eq!(
            parse_challenge_list(""),
            Err(ChallengeListError::NoPaymentChallenge)
        );
        let l = parse_challenge_list(r#"Payment id="a", realm="r"#).unwrap_err();
        assert_eq!(l, ChallengeListError::MissingParam("method"));
        // Missing closing quote takes the rest; a trailing backslash stays literal.
        let l = parse_challenge_list("Payment id=i, realm=r, method=m, intent=c, request=\"x\\")
            .unwrap();
        assert_eq!(l[0].request, "x\\");
        let l =
            parse_challenge_list("Payment id=i,realm=r,method=m,intent=c,request=q,extra=1,Basic")
                .unwrap();
        assert_eq!((l.len(), l[0].id.as_str()), (1, "i"));
    }

    #[test]
    fn fields_across_lines() {
        let lines = [
            "L402 macaroon=\"m\", invoice=\"i\"",
            "Payment id=a, realm=r, method=m, intent=c, request=q",
        ];
        assert_eq!(parse_challenge_fields(lines).unwrap().len(), 1);
        assert_eq!(
            parse_challenge_fields(["L402 x=y"]),
            Err(ChallengeListError::NoPaymentChallenge)
        );
        assert_eq!(
            parse_challenge_fields([]),
            Err(ChallengeListError::NoPaymentChallenge)
        );
    }
}
