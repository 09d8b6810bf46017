//! The `request` auth-param: the Lightning charge and session request JSON, built canonically
//! (JCS, then base64url-nopad) exactly as Go aperture mints it, and decoded from an echoed
//! challenge. Owns the JSON shapes and amount strings; it must not judge payment (no preimage
//! checks here) nor touch invoices beyond carrying their text.
//!
//! Decoding is Go's `json.Unmarshal` into a struct, except that keys match case-sensitively
//! (Go folds case); as in Go, unknown keys are ignored, the last duplicate wins, `null` leaves a
//! field empty and a wrong type is an error. The same rules apply to credentials
//! (`credential::str_field`).

use serde_json::{Map, Value};
use thiserror::Error;

use super::b64::{self, B64Error};
use super::credential::{str_field, JsonShapeError};
use super::jcs;
use super::CURRENCY_SAT;

/// Why an echoed `request` is unusable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    #[error("request is not base64url: {0}")]
    Base64(#[from] B64Error),
    #[error("request is not JSON: {0}")]
    Json(String),
    #[error("request: {0}")]
    Shape(#[from] JsonShapeError),
    #[error("{0} is not 32 bytes of hex")]
    BadHash(&'static str),
    #[error("{0} is not a non-negative decimal amount")]
    BadAmount(&'static str),
    #[error("deposit overflows: unit price {unit} x multiplier {multiplier}")]
    DepositOverflow { unit: u64, multiplier: u64 },
}

/// `methodDetails` of a charge request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChargeMethodDetails {
    pub invoice: String,
    /// Lowercase hex of the invoice's payment hash.
    pub payment_hash: String,
    pub network: String,
}

/// The charge request (`mpp/charge.go`). Empty optional fields are omitted when encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChargeRequest {
    /// Price in sats, decimal.
    pub amount: String,
    pub currency: String,
    pub description: String,
    pub recipient: String,
    pub external_id: String,
    pub method_details: ChargeMethodDetails,
}

/// The session request (`mpp/session.go`). Empty optional fields are omitted when encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionRequest {
    /// Unit price in sats, decimal.
    pub amount: String,
    pub currency: String,
    pub description: String,
    pub unit_type: String,
    pub deposit_invoice: String,
    /// Lowercase hex of the deposit (or top-up) invoice's payment hash.
    pub payment_hash: String,
    pub deposit_amount: String,
    /// Advertised idle timeout in seconds, decimal.
    pub idle_timeout: String,
}

/// Inserts `value` under `key` unless empty (Go's `omitempty`).
fn put(map: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        map.insert(key.to_owned(), Value::String(value.to_owned()));
    }
}

/// JCS of an object whose values are all strings or objects: cannot fail.
fn canonical(map: Map<String, Value>) -> String {
    jcs::canonicalize_value(&Value::Object(map)).unwrap_or_default()
}

/// base64url → JSON object (Go: a non-object is a type error; `null` leaves everything empty).
fn decode_object(encoded: &str) -> Result<Map<String, Value>, RequestError> {
    let bytes = b64::decode(encoded)?;
    match serde_json::from_slice(&bytes).map_err(|e| RequestError::Json(e.to_string()))? {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        _ => Err(JsonShapeError::NotAnObject("request").into()),
    }
}

/// 32 bytes of hex, either case (Go's `lntypes.MakeHashFromStr`).
pub fn parse_hash(hex_str: &str, what: &'static str) -> Result<[u8; 32], RequestError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).map_err(|_| RequestError::BadHash(what))?;
    Ok(out)
}

/// A decimal sat amount as Go's `strconv.ParseInt(s, 10, 64)` reads it (optional `+`), but
/// refusing negatives: we never mint one and none is meaningful.
pub fn parse_sats(s: &str, what: &'static str) -> Result<u64, RequestError> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RequestError::BadAmount(what));
    }
    match digits.parse::<u64>() {
        Ok(v) if i64::try_from(v).is_ok() => Ok(v),
        _ => Err(RequestError::BadAmount(what)),
    }
}

impl ChargeRequest {
    /// What Go aperture's `FreshChallengeHeader` builds for a price and a fresh invoice.
    pub fn lightning(
        amount_sats: u64,
        invoice: &str,
        payment_hash: &[u8; 32],
        network: &str,
    ) -> Self {
        ChargeRequest {
            amount: amount_sats.to_string(),
            currency: CURRENCY_SAT.to_owned(),
            method_details: ChargeMethodDetails {
                invoice: invoice.to_owned(),
                payment_hash: hex::encode(payment_hash),
                network: network.to_owned(),
            },
            ..Default::default()
        }
    }

    /// The canonical (JCS) JSON text.
    pub fn to_canonical_json(&self) -> String {
        let mut details = Map::new();
        // `invoice` is not omitempty in Go; the other two are.
        details.insert(
            "invoice".into(),
            Value::String(self.method_details.invoice.clone()),
        );
        put(
            &mut details,
            "paymentHash",
            &self.method_details.payment_hash,
        );
        put(&mut details, "network", &self.method_details.network);
        let mut map = Map::new();
        map.insert("amount".into(), Value::String(self.amount.clone()));
        map.insert("currency".into(), Value::String(self.currency.clone()));
        put(&mut map, "description", &self.description);
        put(&mut map, "recipient", &self.recipient);
        put(&mut map, "externalId", &self.external_id);
        map.insert("methodDetails".into(), Value::Object(details));
        canonical(map)
    }

    /// The `request` auth-param value.
    pub fn encode(&self) -> String {
        b64::encode(self.to_canonical_json().as_bytes())
    }

    /// Decodes an echoed `request`.
    pub fn decode(encoded: &str) -> Result<Self, RequestError> {
        let map = decode_object(encoded)?;
        let details = match map.get("methodDetails") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(d)) => d.clone(),
            Some(_) => return Err(JsonShapeError::WrongType("methodDetails").into()),
        };
        Ok(ChargeRequest {
            amount: str_field(&map, "amount")?,
            currency: str_field(&map, "currency")?,
            description: str_field(&map, "description")?,
            recipient: str_field(&map, "recipient")?,
            external_id: str_field(&map, "externalId")?,
            method_details: ChargeMethodDetails {
                invoice: str_field(&details, "invoice")?,
                payment_hash: str_field(&details, "paymentHash")?,
                network: str_field(&details, "network")?,
            },
        })
    }

    /// `methodDetails.paymentHash` as bytes.
    pub fn payment_hash(&self) -> Result<[u8; 32], RequestError> {
        parse_hash(
            &self.method_details.payment_hash,
            "methodDetails.paymentHash",
        )
    }

    /// `amount` in sats.
    pub fn amount_sats(&self) -> Result<u64, RequestError> {
        parse_sats(&self.amount, "amount")
    }
}

/// Unit price and deposit of a session challenge (Go's `FreshChallengeHeaderWithPrices`): the
/// quoted unit price if > 0, else the charge price; the quoted deposit if > 0, else unit ×
/// multiplier (a multiplier of 0 means the default 20). Overflow is an error, as in Go.
pub fn session_prices(
    charge_price: u64,
    quoted_unit: u64,
    quoted_deposit: u64,
    multiplier: u64,
) -> Result<(u64, u64), RequestError> {
    let unit = if quoted_unit > 0 {
        quoted_unit
    } else {
        charge_price
    };
    let multiplier = if multiplier == 0 { 20 } else { multiplier };
    let product = unit
        .checked_mul(multiplier)
        .filter(|d| i64::try_from(*d).is_ok())
        .ok_or(RequestError::DepositOverflow { unit, multiplier })?;
    Ok((
        unit,
        if quoted_deposit > 0 {
            quoted_deposit
        } else {
            product
        },
    ))
}

impl SessionRequest {
    /// What Go aperture builds for a session challenge with a fresh deposit invoice.
    pub fn lightning(
        unit_sats: u64,
        deposit_sats: u64,
        deposit_invoice: &str,
        payment_hash: &[u8; 32],
        idle_timeout_secs: u64,
    ) -> Self {
        SessionRequest {
            amount: unit_sats.to_string(),
            currency: CURRENCY_SAT.to_owned(),
            deposit_invoice: deposit_invoice.to_owned(),
            payment_hash: hex::encode(payment_hash),
            deposit_amount: deposit_sats.to_string(),
            idle_timeout: idle_timeout_secs.to_string(),
            ..Default::default()
        }
    }

    /// The canonical (JCS) JSON text.
    pub fn to_canonical_json(&self) -> String {
        let mut map = Map::new();
        map.insert("amount".into(), Value::String(self.amount.clone()));
        map.insert("currency".into(), Value::String(self.currency.clone()));
        put(&mut map, "description", &self.description);
        put(&mut map, "unitType", &self.unit_type);
        put(&mut map, "depositInvoice", &self.deposit_invoice);
        // `paymentHash` is not omitempty in Go.
        map.insert(
            "paymentHash".into(),
            Value::String(self.payment_hash.clone()),
        );
        put(&mut map, "depositAmount", &self.deposit_amount);
        put(&mut map, "idleTimeout", &self.idle_timeout);
        canonical(map)
    }

    /// The `request` auth-param value.
    pub fn encode(&self) -> String {
        b64::encode(self.to_canonical_json().as_bytes())
    }

    /// Decodes an echoed `request`.
    pub fn decode(encoded: &str) -> Result<Self, RequestError> {
        let map = decode_object(encoded)?;
        Ok(SessionRequest {
            amount: str_field(&map, "amount")?,
            currency: str_field(&map, "currency")?,
            description: str_field(&map, "description")?,
            unit_type: str_field(&map, "unitType")?,
            deposit_invoice: str_field(&map, "depositInvoice")?,
            payment_hash: str_field(&map, "paymentHash")?,
            deposit_amount: str_field(&map, "depositAmount")?,
            idle_timeout: str_field(&map, "idleTimeout")?,
        })
    }

    /// `paymentHash` (the deposit or top-up invoice's) as bytes.
    pub fn payment_hash(&self) -> Result<[u8; 32], RequestError> {
        parse_hash(&self.payment_hash, "paymentHash")
    }

    /// `amount` (the unit price) in sats.
    pub fn amount_sats(&self) -> Result<u64, RequestError> {
        parse_sats(&self.amount, "amount")
    }

    /// `depositAmount` in sats; empty reads as 0, as in Go.
    pub fn deposit_sats(&self) -> Result<u64, RequestError> {
        if self.deposit_amount.is_empty() {
            return Ok(0);
        }
        parse_sats(&self.deposit_amount, "depositAmount")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "02d449a31fbb267c8f352e9968a79e3e5fc95c1bbeaa502fd6454ebde5a4bedc";

    fn hash() -> [u8; 32] {
        parse_hash(HASH, "h").unwrap()
    }

    #[test]
    fn worked_example_request() {
        let r = ChargeRequest::lightning(100, "lnbcrt1u1pexample", &hash(), "regtest");
        assert_eq!(
            r.to_canonical_json(),
            format!(
                r#"{{"amount":"100","currency":"sat","methodDetails":{{"invoice":"lnbcrt1u1pexample","network":"regtest","paymentHash":"{HASH}"}}}}"#
            )
        );
        assert_eq!(r.encode(), "eyJhbW91bnQiOiIxMDAiLCJjdXJyZW5jeSI6InNhdCIsIm1ldGhvZERldGFpbHMiOnsiaW52b2ljZSI6ImxuYmNydDF1MXBleGFtcGxlIiwibmV0d29yayI6InJlZ3Rlc3QiLCJwYXltZW50SGFzaCI6IjAyZDQ0OWEzMWZiYjI2N2M4ZjM1MmU5OTY4YTc5ZTNlNWZjOTVjMWJiZWFhNTAyZmQ2NDU0ZWJkZTVhNGJlZGMifX0");
        let back = ChargeRequest::decode(&r.encode()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.payment_hash().unwrap(), hash());
        assert_eq!(back.amount_sats().unwrap(), 100);
    }

    #[test]
    fn session_request_is_canonical_and_round_trips() {
        let r = SessionRequest::lightning(5, 100, "lnbcrt1u1pdeposit", &hash(), 300);
        assert_eq!(
            r.to_canonical_json(),
            format!(
                r#"{{"amount":"5","currency":"sat","depositAmount":"100","depositInvoice":"lnbcrt1u1pdeposit","idleTimeout":"300","paymentHash":"{HASH}"}}"#
            )
        );
        let back = SessionRequest::decode(&r.encode()).unwrap();
        assert_eq!(back, r);
        assert_eq!((back.amount_sats(), back.deposit_sats()), (Ok(5), Ok(100)));
    }

    #[test]
    fn decode_rules() {
        let enc = |s: &str| b64::encode(s.as_bytes());
        let r = ChargeRequest::decode(&enc(
            r#"{"amount":"1","amount":"2","Extra":[1],"methodDetails":null}"#,
        ))
        .unwrap();
        assert_eq!(r.amount, "2");
        assert_eq!(
            ChargeRequest::decode(&enc("null")).unwrap(),
            ChargeRequest::default()
        );
        assert!(matches!(
            ChargeRequest::decode(&enc(r#"{"amount":1}"#)),
            Err(RequestError::Shape(_))
        ));
        assert!(matches!(
            ChargeRequest::decode(&enc(r#"{"methodDetails":"x"}"#)),
            Err(RequestError::Shape(_))
        ));
        assert!(matches!(
            ChargeRequest::decode(&enc("[]")),
            Err(RequestError::Shape(_))
        ));
        assert!(matches!(
            ChargeRequest::decode(&enc("{")),
            Err(RequestError::Json(_))
        ));
        assert!(matches!(
            ChargeRequest::decode("AB"),
            Err(RequestError::Base64(_))
        ));
        let upper = ChargeRequest {
            method_details: ChargeMethodDetails {
                payment_hash: HASH.to_uppercase(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(upper.payment_hash().unwrap(), hash());
        assert!(parse_hash(&HASH[2..], "h").is_err());
        assert_eq!(SessionRequest::default().deposit_sats(), Ok(0));
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_sats("+7", "a"), Ok(7));
        assert_eq!(parse_sats("007", "a"), Ok(7));
        assert_eq!(parse_sats("9223372036854775807", "a"), Ok(i64::MAX as u64));
        for bad in [
            "",
            "+",
            "-1",
            "9223372036854775808",
            "1.0",
            " 1",
            "1e3",
            "0x10",
        ] {
            assert!(parse_sats(bad, "a").is_err(), "{bad}");
        }
    }

    #[test]
    fn deposit_rules() {
        assert_eq!(session_prices(10, 0, 0, 0), Ok((10, 200)));
        assert_eq!(session_prices(10, 3, 0, 5), Ok((3, 15)));
        assert_eq!(session_prices(10, 3, 77, 5), Ok((3, 77)));
        assert!(session_prices(u64::MAX / 4, 0, 0, 20).is_err());
        assert!(session_prices(i64::MAX as u64, 0, 0, 2).is_err());
    }
}
