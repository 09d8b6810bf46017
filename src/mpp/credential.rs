//! The `Authorization: Payment <token>` credential (Go aperture's `mpp.ParseCredential`): scheme
//! split, size limit before decoding, strict base64url, the JSON shape with its required
//! non-empty fields, and the charge and session payload shapes. Owns syntax only: it must not
//! check the HMAC, expiry or preimages (that is `verify`), and never panics on network input.
//!
//! JSON rules, shared with `request`: keys match case-sensitively (Go folds case; being stricter
//! is allowed), the last duplicate wins and unknown keys are ignored (as Go), `null` leaves a
//! field empty and any other wrong type is an error (as Go).

use serde_json::{Map, Value};
use thiserror::Error;

use super::b64::{self, B64Error};
use super::challenge::ChallengeParams;
use super::receipt::write_go_string;
use super::SCHEME;

/// Largest decoded credential (64 KiB).
pub const MAX_CREDENTIAL_LEN: usize = 64 * 1024;
/// Largest encoded token: `ceil(65536 / 3) * 4` = 87384, checked before decoding.
pub const MAX_TOKEN_LEN: usize = MAX_CREDENTIAL_LEN.div_ceil(3) * 4;

/// A JSON document whose shape does not fit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JsonShapeError {
    #[error("{0} is not a JSON object")]
    NotAnObject(&'static str),
    #[error("{0} has the wrong JSON type")]
    WrongType(&'static str),
}

/// Why an `Authorization` value is not a usable Payment credential.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CredentialError {
    #[error("not the Payment scheme")]
    NotPayment,
    #[error("empty credential token")]
    Empty,
    #[error("credential token longer than {MAX_TOKEN_LEN} characters")]
    TooLarge,
    #[error("credential token is not base64url: {0}")]
    Base64(#[from] B64Error),
    #[error("credential is not JSON: {0}")]
    Json(String),
    #[error("credential: {0}")]
    Shape(#[from] JsonShapeError),
    #[error("credential missing {0}")]
    Missing(&'static str),
}

/// A decoded (unverified) Payment credential.
#[derive(Debug, Clone, PartialEq)]
pub struct Credential {
    /// The echoed challenge; `id`, `realm`, `method`, `intent` and `request` are non-empty.
    pub challenge: ChallengeParams,
    /// Optional payer identifier; ignored by the server.
    pub source: String,
    /// Method/intent specific proof, any JSON value (Go keeps it raw and only requires it present).
    pub payload: Value,
}

/// A string member: absent or `null` → empty, a string → itself, anything else → error.
pub(crate) fn str_field(
    map: &Map<String, Value>,
    key: &'static str,
) -> Result<String, JsonShapeError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(JsonShapeError::WrongType(key)),
    }
}

/// An object member or the whole document: `null` reads as empty, as Go decodes into a struct.
fn as_object(
    value: Option<&Value>,
    what: &'static str,
) -> Result<Map<String, Value>, JsonShapeError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(JsonShapeError::NotAnObject(what)),
    }
}

/// Parses one `Authorization` field value (only the first such field counts, the caller's job).
/// The scheme is split at the first space and compared case-insensitively; the rest is trimmed.
pub fn parse_credential(authorization: impl AsRef<[u8]>) -> Result<Credential, CredentialError> {
    let value = authorization.as_ref();
    let split = value
        .iter()
        .position(|&b| b == b' ')
        .ok_or(CredentialError::NotPayment)?;
    let (scheme, rest) = (&value[..split], &value[split + 1..]);
    if !scheme.eq_ignore_ascii_case(SCHEME.as_bytes()) {
        return Err(CredentialError::NotPayment);
    }
    // A byte that is not UTF-8 could never be base64url either.
    let token = std::str::from_utf8(rest)
        .map_err(|e| {
            let offset = e.valid_up_to();
            B64Error::InvalidChar {
                byte: rest[offset],
                offset,
            }
        })?
        .trim();
    if token.is_empty() {
        return Err(CredentialError::Empty);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(CredentialError::TooLarge);
    }
    credential_from_json(&b64::decode(token)?)
}

/// The JSON half of [`parse_credential`], on already decoded bytes.
pub fn credential_from_json(json: &[u8]) -> Result<Credential, CredentialError> {
    let doc: Value =
        serde_json::from_slice(json).map_err(|e| CredentialError::Json(e.to_string()))?;
    let root = as_object(Some(&doc), "credential")?;
    let ch = as_object(root.get("challenge"), "challenge")?;
    let challenge = ChallengeParams {
        id: str_field(&ch, "id")?,
        realm: str_field(&ch, "realm")?,
        method: str_field(&ch, "method")?,
        intent: str_field(&ch, "intent")?,
        request: str_field(&ch, "request")?,
        expires: str_field(&ch, "expires")?,
        digest: str_field(&ch, "digest")?,
        description: str_field(&ch, "description")?,
        opaque: str_field(&ch, "opaque")?,
    };
    let required = [
        (&challenge.id, "challenge.id"),
        (&challenge.realm, "challenge.realm"),
        (&challenge.method, "challenge.method"),
        (&challenge.intent, "challenge.intent"),
        (&challenge.request, "challenge.request"),
    ];
    if let Some((_, name)) = required.iter().find(|(v, _)| v.is_empty()) {
        return Err(CredentialError::Missing(name));
    }
    let source = str_field(&root, "source")?;
    let payload = root
        .get("payload")
        .cloned()
        .ok_or(CredentialError::Missing("payload"))?;
    Ok(Credential {
        challenge,
        source,
        payload,
    })
}

impl Credential {
    /// The credential JSON in Go's `EncodeCredential` field order (challenge: id, realm, method,
    /// intent, request, then non-empty expires, description, opaque, digest; source if set;
    /// payload). Payload members come out in serde_json's (sorted) order.
    pub fn to_json(&self) -> String {
        let c = &self.challenge;
        let mut out = String::from("{\"challenge\":{");
        let required = [
            ("id", &c.id),
            ("realm", &c.realm),
            ("method", &c.method),
            ("intent", &c.intent),
            ("request", &c.request),
        ];
        let optional = [
            ("expires", &c.expires),
            ("description", &c.description),
            ("opaque", &c.opaque),
            ("digest", &c.digest),
        ];
        let fields = required
            .into_iter()
            .chain(optional.into_iter().filter(|(_, v)| !v.is_empty()));
        for (i, (name, value)) in fields.enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(name);
            out.push_str("\":");
            write_go_string(&mut out, value, false);
        }
        out.push('}');
        if !self.source.is_empty() {
            out.push_str(",\"source\":");
            write_go_string(&mut out, &self.source, false);
        }
        out.push_str(",\"payload\":");
        out.push_str(&self.payload.to_string());
        out.push('}');
        out
    }

    /// The `Authorization` field value, `Payment <base64url-nopad JSON>`.
    pub fn to_header(&self) -> String {
        format!("{SCHEME} {}", b64::encode(self.to_json().as_bytes()))
    }
}

/// The charge payload, `{"preimage":"<64 hex>"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChargePayload {
    pub preimage: String,
}

impl ChargePayload {
    pub fn from_value(payload: &Value) -> Result<Self, JsonShapeError> {
        let map = as_object(Some(payload), "payload")?;
        Ok(ChargePayload {
            preimage: str_field(&map, "preimage")?,
        })
    }
}

/// The four session actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionAction {
    Open,
    Bearer,
    TopUp,
    Close,
}

impl SessionAction {
    /// Case-sensitive, as Go compares.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "bearer" => Some(Self::Bearer),
            "topUp" => Some(Self::TopUp),
            "close" => Some(Self::Close),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Bearer => "bearer",
            Self::TopUp => "topUp",
            Self::Close => "close",
        }
    }
}

/// The session payload, `{action, preimage?, sessionId?, returnInvoice?, topUpPreimage?}`. The
/// action stays text here; an unknown one is a verification failure, not a syntax error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionPayload {
    pub action: String,
    pub preimage: String,
    pub session_id: String,
    pub return_invoice: String,
    pub top_up_preimage: String,
}

impl SessionPayload {
    pub fn from_value(payload: &Value) -> Result<Self, JsonShapeError> {
        let map = as_object(Some(payload), "payload")?;
        Ok(SessionPayload {
            action: str_field(&map, "action")?,
            preimage: str_field(&map, "preimage")?,
            session_id: str_field(&map, "sessionId")?,
            return_invoice: str_field(&map, "returnInvoice")?,
            top_up_preimage: str_field(&map, "topUpPreimage")?,
        })
    }

    /// The action, if it is one of the four.
    pub fn action(&self) -> Option<SessionAction> {
        SessionAction::parse(&self.action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(json: &str) -> String {
        format!("Payment {}", b64::encode(json.as_bytes()))
    }

    const OK: &str = r#"{"challenge":{"id":"i","realm":"r","method":"lightning","intent":"charge","request":"cQ"},"payload":{"preimage":"aa"}}"#;

    #[test]
    fn scheme_split_and_limits() {
        assert!(parse_credential(token(OK)).is_ok());
        assert!(parse_credential(format!("PAYMENT  {} \t", &token(OK)[8..])).is_ok());
        assert_eq!(
            parse_credential("Payment"),
            Err(CredentialError::NotPayment)
        );
        assert_eq!(
            parse_credential(format!("Payment\t{}", &token(OK)[8..])),
            Err(CredentialError::NotPayment)
        );
        assert_eq!(
            parse_credential("Payments x"),
            Err(CredentialError::NotPayment)
        );
        assert_eq!(
            parse_credential("Payment  \t "),
            Err(CredentialError::Empty)
        );
        assert_eq!(
            parse_credential(format!("Payment {}", "A".repeat(MAX_TOKEN_LEN + 1))),
            Err(CredentialError::TooLarge)
        );
        // At the limit the size check passes and decoding decides.
        assert!(matches!(
            parse_credential(format!("Payment {}", "A".repeat(MAX_TOKEN_LEN))),
            Err(CredentialError::Json(_))
        ));
        assert!(matches!(
            parse_credential(b"Payment \xff"),
            Err(CredentialError::Base64(_))
        ));
        assert_eq!(MAX_TOKEN_LEN, 87384);
    }

    #[test]
    fn shape_rules() {
        let missing = |json: &str| parse_credential(token(json)).unwrap_err();
        assert_eq!(missing("null"), CredentialError::Missing("challenge.id"));
        assert_eq!(
            missing("[]"),
            CredentialError::Shape(JsonShapeError::NotAnObject("credential"))
        );
        assert_eq!(
            missing(r#"{"challenge":1}"#),
            CredentialError::Shape(JsonShapeError::NotAnObject("challenge"))
        );
        assert_eq!(
            missing(&OK.replace(r#""realm":"r""#, r#""realm":"""#)),
            CredentialError::Missing("challenge.realm")
        );
        assert_eq!(
            missing(&OK.replace(r#""request":"cQ""#, r#""request":null"#)),
            CredentialError::Missing("challenge.request")
        );
        assert_eq!(
            missing(&OK.replace(r#""id":"i""#, r#""id":7"#)),
            CredentialError::Shape(JsonShapeError::WrongType("id"))
        );
        assert_eq!(
            missing(&OK.replace('}', r#","source":1}"#)),
            CredentialError::Shape(JsonShapeError::WrongType("source"))
        );
        assert_eq!(
            missing(&OK.replace(r#""id":"i""#, r#""ID":"i""#)),
            CredentialError::Missing("challenge.id")
        );
        // Present-but-null payload passes the shape check (Go keeps the raw `null`).
        let c = parse_credential(token(&OK.replace(r#"{"preimage":"aa"}"#, "null"))).unwrap();
        assert_eq!(c.payload, Value::Null);
        assert_eq!(ChargePayload::from_value(&c.payload).unwrap().preimage, "");
        assert!(ChargePayload::from_value(&Value::from("x")).is_err());
    }

    #[test]
    fn session_payload_and_actions() {
        let v: Value =
            serde_json::from_str(r#"{"action":"topUp","sessionId":"s","topUpPreimage":"t","x":1}"#)
                .unwrap();
        let p = SessionPayload::from_value(&v).unwrap();
        assert_eq!(
            (
                p.action(),
                p.session_id.as_str(),
                p.top_up_preimage.as_str()
            ),
            (Some(SessionAction::TopUp), "s", "t")
        );
        for a in [
            SessionAction::Open,
            SessionAction::Bearer,
            SessionAction::TopUp,
            SessionAction::Close,
        ] {
            assert_eq!(SessionAction::parse(a.as_str()), Some(a));
        }
        assert_eq!(SessionAction::parse("topup"), None);
    }

    #[test]
    fn encode_round_trips() {
        let c = parse_credential(token(OK)).unwrap();
        assert_eq!(c.to_json(), OK);
        assert_eq!(parse_credential(c.to_header()).unwrap(), c);
    }
}
