//! RFC 9457 problem+json bodies for Payment-scheme errors: the exact 140-byte
//! `payment-required` body Go aperture sends on every 402 that carries a Payment challenge, and
//! the specific problem types of the core and Lightning drafts (which Go defines but never
//! emits; we may, behind a flag). Owns the bytes and URIs only; it must not choose the status
//! line or decide which problem applies (see `verify::Rejection::problem`).

use super::receipt::write_go_string;

/// `Content-Type` of every problem body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
/// Base of the core problem type URIs.
pub const PROBLEM_BASE_URI: &str = "https://paymentauth.org/problems/";
/// Base of the Lightning method's problem type URIs.
pub const PROBLEM_LIGHTNING_BASE_URI: &str = "https://paymentauth.org/problems/lightning/";

// The type URIs (core draft §"Error Codes", Lightning charge and session drafts).
pub const PAYMENT_REQUIRED: &str = "https://paymentauth.org/problems/payment-required";
pub const PAYMENT_INSUFFICIENT: &str = "https://paymentauth.org/problems/payment-insufficient";
pub const PAYMENT_EXPIRED: &str = "https://paymentauth.org/problems/payment-expired";
pub const VERIFICATION_FAILED: &str = "https://paymentauth.org/problems/verification-failed";
pub const METHOD_UNSUPPORTED: &str = "https://paymentauth.org/problems/method-unsupported";
pub const MALFORMED_CREDENTIAL: &str = "https://paymentauth.org/problems/malformed-credential";
pub const INVALID_CHALLENGE: &str = "https://paymentauth.org/problems/invalid-challenge";
pub const LIGHTNING_MALFORMED_CREDENTIAL: &str =
    "https://paymentauth.org/problems/lightning/malformed-credential";
pub const LIGHTNING_UNKNOWN_CHALLENGE: &str =
    "https://paymentauth.org/problems/lightning/unknown-challenge";
pub const LIGHTNING_INVALID_PREIMAGE: &str =
    "https://paymentauth.org/problems/lightning/invalid-preimage";
pub const LIGHTNING_EXPIRED_INVOICE: &str =
    "https://paymentauth.org/problems/lightning/expired-invoice";
pub const LIGHTNING_SESSION_NOT_FOUND: &str =
    "https://paymentauth.org/problems/lightning/session-not-found";
pub const LIGHTNING_SESSION_CLOSED: &str =
    "https://paymentauth.org/problems/lightning/session-closed";
pub const LIGHTNING_INSUFFICIENT_BALANCE: &str =
    "https://paymentauth.org/problems/lightning/insufficient-balance";
pub const LIGHTNING_CHALLENGE_EXPIRED: &str =
    "https://paymentauth.org/problems/lightning/challenge-expired";
pub const LIGHTNING_INVALID_RETURN_INVOICE: &str =
    "https://paymentauth.org/problems/lightning/invalid-return-invoice";

/// Go aperture's 402 body, byte for byte (no trailing newline).
pub const PAYMENT_REQUIRED_BODY: &str = r#"{"type":"https://paymentauth.org/problems/payment-required","title":"Payment Required","status":402,"detail":"Payment required for access."}"#;

/// Every problem type of `mpp/problem.go`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemType {
    PaymentRequired,
    PaymentInsufficient,
    PaymentExpired,
    VerificationFailed,
    MethodUnsupported,
    MalformedCredential,
    InvalidChallenge,
    LightningMalformedCredential,
    LightningUnknownChallenge,
    LightningInvalidPreimage,
    LightningExpiredInvoice,
    LightningSessionNotFound,
    LightningSessionClosed,
    LightningInsufficientBalance,
    LightningChallengeExpired,
    LightningInvalidReturnInvoice,
}

impl ProblemType {
    pub const ALL: [ProblemType; 16] = [
        Self::PaymentRequired,
        Self::PaymentInsufficient,
        Self::PaymentExpired,
        Self::VerificationFailed,
        Self::MethodUnsupported,
        Self::MalformedCredential,
        Self::InvalidChallenge,
        Self::LightningMalformedCredential,
        Self::LightningUnknownChallenge,
        Self::LightningInvalidPreimage,
        Self::LightningExpiredInvoice,
        Self::LightningSessionNotFound,
        Self::LightningSessionClosed,
        Self::LightningInsufficientBalance,
        Self::LightningChallengeExpired,
        Self::LightningInvalidReturnInvoice,
    ];

    /// The type URI.
    pub fn uri(self) -> &'static str {
        use ProblemType::*;
        match self {
            PaymentRequired => PAYMENT_REQUIRED,
            PaymentInsufficient => PAYMENT_INSUFFICIENT,
            PaymentExpired => PAYMENT_EXPIRED,
            VerificationFailed => VERIFICATION_FAILED,
            MethodUnsupported => METHOD_UNSUPPORTED,
            MalformedCredential => MALFORMED_CREDENTIAL,
            InvalidChallenge => INVALID_CHALLENGE,
            LightningMalformedCredential => LIGHTNING_MALFORMED_CREDENTIAL,
            LightningUnknownChallenge => LIGHTNING_UNKNOWN_CHALLENGE,
            LightningInvalidPreimage => LIGHTNING_INVALID_PREIMAGE,
            LightningExpiredInvoice => LIGHTNING_EXPIRED_INVOICE,
            LightningSessionNotFound => LIGHTNING_SESSION_NOT_FOUND,
            LightningSessionClosed => LIGHTNING_SESSION_CLOSED,
            LightningInsufficientBalance => LIGHTNING_INSUFFICIENT_BALANCE,
            LightningChallengeExpired => LIGHTNING_CHALLENGE_EXPIRED,
            LightningInvalidReturnInvoice => LIGHTNING_INVALID_RETURN_INVOICE,
        }
    }

    /// The draft's title.
    pub fn title(self) -> &'static str {
        use ProblemType::*;
        match self {
            PaymentRequired => "Payment Required",
            PaymentInsufficient => "Payment Insufficient",
            PaymentExpired => "Payment Expired",
            VerificationFailed => "Verification Failed",
            MethodUnsupported => "Method Unsupported",
            MalformedCredential => "Malformed Credential",
            InvalidChallenge => "Invalid Challenge",
            LightningMalformedCredential => "Malformed Credential",
            LightningUnknownChallenge => "Unknown Challenge",
            LightningInvalidPreimage => "Invalid Preimage",
            LightningExpiredInvoice => "Expired Invoice",
            LightningSessionNotFound => "Session Not Found",
            LightningSessionClosed => "Session Closed",
            LightningInsufficientBalance => "Insufficient Balance",
            LightningChallengeExpired => "Challenge Expired",
            LightningInvalidReturnInvoice => "Invalid Return Invoice",
        }
    }

    /// A fixed one-sentence explanation (no request data: bodies must not echo credentials).
    pub fn detail(self) -> &'static str {
        use ProblemType::*;
        match self {
            PaymentRequired => "Payment required for access.",
            PaymentInsufficient => "The payment amount is too low for this resource.",
            PaymentExpired => "The challenge or authorization has expired.",
            VerificationFailed => "The payment proof could not be verified.",
            MethodUnsupported => "The payment method is not accepted.",
            MalformedCredential => "The credential could not be parsed.",
            InvalidChallenge => "The challenge is unknown, expired, or already used.",
            LightningMalformedCredential => {
                "The credential could not be decoded or lacks a required field."
            }
            LightningUnknownChallenge => {
                "The challenge was not issued here or was already consumed."
            }
            LightningInvalidPreimage => "SHA-256 of the preimage does not match the payment hash.",
            LightningExpiredInvoice => "The invoice or the challenge has expired.",
            LightningSessionNotFound => "No session matches the session id.",
            LightningSessionClosed => "The session is closed.",
            LightningInsufficientBalance => "The session balance does not cover this request.",
            LightningChallengeExpired => "The challenge has passed its expiry time.",
            LightningInvalidReturnInvoice => {
                "The return invoice is not a BOLT11 invoice without an amount."
            }
        }
    }

    /// 400 for `method-unsupported`, 402 for everything else (core draft's table).
    pub fn status(self) -> u16 {
        if self == Self::MethodUnsupported {
            400
        } else {
            402
        }
    }

    /// The body in Go's `ProblemDetails` order (`type, title, status, detail[, challengeId]`),
    /// HTML-escaped like `json.Marshal`. `PaymentRequired` without an id is
    /// [`PAYMENT_REQUIRED_BODY`].
    pub fn body(self, challenge_id: Option<&str>) -> String {
        let mut out = String::with_capacity(256);
        out.push_str("{\"type\":");
        write_go_string(&mut out, self.uri(), true);
        out.push_str(",\"title\":");
        write_go_string(&mut out, self.title(), true);
        out.push_str(",\"status\":");
        out.push_str(&self.status().to_string());
        out.push_str(",\"detail\":");
        write_go_string(&mut out, self.detail(), true);
        if let Some(id) = challenge_id.filter(|id| !id.is_empty()) {
            out.push_str(",\"challengeId\":");
            write_go_string(&mut out, id, true);
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_required_is_go_bytes() {
        assert_eq!(PAYMENT_REQUIRED_BODY.len(), 140);
        assert_eq!(
            ProblemType::PaymentRequired.body(None),
            PAYMENT_REQUIRED_BODY
        );
        assert_eq!(
            ProblemType::PaymentRequired.body(Some("")),
            PAYMENT_REQUIRED_BODY
        );
    }

    #[test]
    fn every_type_renders_valid_json_under_its_base() {
        for t in ProblemType::ALL {
            let body = t.body(Some("id<1>"));
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["type"], t.uri());
            assert_eq!(v["status"], t.status());
            assert_eq!(v["challengeId"], "id<1>");
            assert!(body.contains("\\u003c"));
            let base = if format!("{t:?}").starts_with("Lightning") {
                PROBLEM_LIGHTNING_BASE_URI
            } else {
                PROBLEM_BASE_URI
            };
            assert!(
                t.uri().starts_with(base) && !t.uri()[base.len()..].contains('/'),
                "{t:?}"
            );
        }
    }
}
