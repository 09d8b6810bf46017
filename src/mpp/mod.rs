//! MPP, the "Payment" HTTP authentication scheme with the Lightning method (layer 0), byte
//! compatible with Go aperture where clients see it: challenges (`challenge`, with the canonical
//! `request` JSON of `request` and `jcs`), credentials (`credential`), stateless verification
//! (`verify`), receipts (`receipt`), problem bodies (`problem`), `Accept-Payment` ranking
//! (`accept`), strict base64url (`b64`) and RFC 3339 time (`time`). Pure: no I/O, no threads, no
//! clock reads (`now_unix` is always passed in); never panics on network input. Single use of
//! charges, session balances, invoices and the HMAC secret's storage belong to higher layers.
//!
//! Reference: `mpp-metering-admin.md` §2; vectors in `testdata/vectors.jsonl` (§2.13, verbatim).

pub mod accept;
pub mod b64;
pub mod challenge;
pub mod credential;
pub mod jcs;
pub mod problem;
pub mod receipt;
pub mod request;
pub mod time;
pub mod verify;

#[cfg(test)]
mod vectors;

pub use accept::{parse_accept_payment, preference_order, AcceptError, PaymentRange};
pub use b64::B64Error;
pub use challenge::{
    parse_challenge_fields, parse_challenge_list, ChallengeListError, ChallengeParams,
};
pub use credential::{
    parse_credential, ChargePayload, Credential, CredentialError, JsonShapeError, SessionAction,
    SessionPayload, MAX_TOKEN_LEN,
};
pub use jcs::JcsError;
pub use problem::{ProblemType, PAYMENT_REQUIRED_BODY, PROBLEM_CONTENT_TYPE};
pub use receipt::{CloseReceipt, NeedTopUpEvent, Receipt, RefundStatus};
pub use request::{session_prices, ChargeRequest, RequestError, SessionRequest};
pub use time::{
    challenge_expires, format_rfc3339, parse_rfc3339, TimeError, Timestamp, CHALLENGE_TTL_SECS,
};
pub use verify::{
    preimage_matches, verify_charge, verify_session, ChargeVerified, Rejection, SessionStep,
    SessionVerified,
};

/// The auth-scheme token (matched case-insensitively on input).
pub const SCHEME: &str = "Payment";
/// The only payment method we speak.
pub const METHOD_LIGHTNING: &str = "lightning";
/// The currency of every amount.
pub const CURRENCY_SAT: &str = "sat";
/// The response header carrying a receipt.
pub const RECEIPT_HEADER: &str = "Payment-Receipt";
/// Key of the 32-byte HMAC secret in Go aperture's secrets store:
/// hex of sha256("aperture-mpp-hmac-secret-v1"). An import must carry this row; `token list`
/// must skip it.
pub const HMAC_SECRET_STORE_KEY_HEX: &str =
    "a3f0d96ff00ab30fad9bb73a02e02c0102c6909139b06f04dd7b3e7c0ef231bd";

/// The two Lightning intents, in the order Go aperture offers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intent {
    Charge,
    Session,
}

impl Intent {
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Charge => "charge",
            Intent::Session => "session",
        }
    }

    /// Case-sensitive, as Go compares.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "charge" => Some(Intent::Charge),
            "session" => Some(Intent::Session),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn secret_store_key_is_the_labelled_hash() {
        let key = Sha256::digest(b"aperture-mpp-hmac-secret-v1");
        assert_eq!(hex::encode(key), HMAC_SECRET_STORE_KEY_HEX);
    }

    /// Every parser that sees network input, fed deterministic garbage built from the bytes
    /// that matter to them: none may panic.
    #[test]
    fn parsers_never_panic_on_garbage() {
        const ALPHABET: &[u8] = b"Payment id=\",\\ \t;q/*.0123456789-_+:TZaAbB{}[]\x7f\x00";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 48) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| ALPHABET[((state >> (i % 58)) as usize + i * 7) % ALPHABET.len()])
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_challenge_list(&text);
            let _ = parse_credential(&bytes);
            let _ = parse_rfc3339(&text);
            let _ = parse_accept_payment(&text);
            let _ = b64::decode(&text);
            let _ = jcs::canonicalize(&bytes);
            let _ = ChargeRequest::decode(&text);
        }
    }

    #[test]
    fn intents() {
        for i in [Intent::Charge, Intent::Session] {
            assert_eq!(Intent::parse(i.as_str()), Some(i));
        }
        assert_eq!(Intent::parse("Charge"), None);
    }
}
