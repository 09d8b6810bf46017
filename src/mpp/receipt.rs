//! `Payment-Receipt` values, byte-identical to Go aperture's: compact JSON in the Go struct
//! field order, base64url-nopad. Charge and session open/bearer/topUp receipts come from
//! `MarshalPlainJSON` (no HTML escaping), close receipts from `json.Marshal` (HTML escaping),
//! and the `payment-need-topup` SSE payload shares the plain form. Owns the bytes only; it must
//! not decide when a receipt is due (that is the proxy's), nor read a clock (timestamps are
//! passed in, see `time::format_rfc3339`).

use std::fmt::Write as _;

use super::{b64, METHOD_LIGHTNING};

/// Appends `s` as a JSON string the way Go's `encoding/json` writes it: `"` `\` and the five
/// short escapes, other C0 controls as `\u00xx`, U+2028/U+2029 always escaped, and `<` `>` `&`
/// escaped too when `html` (plain `json.Marshal`). DEL and everything else is raw.
pub fn write_go_string(out: &mut String, s: &str, html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' if html => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn field(out: &mut String, name: &str, value: &str, html: bool) {
    if out.len() > 1 {
        out.push(',');
    }
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    write_go_string(out, value, html);
}

fn int_field(out: &mut String, name: &str, value: i64) {
    let _ = write!(out, ",\"{name}\":{value}");
}

/// Receipt for a charge and for session open, bearer and topUp.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// RFC 3339 UTC, second precision.
    pub timestamp: String,
    /// Charge: the payment hash; open: the request's deposit `paymentHash`; bearer and topUp:
    /// `payload.sessionId`.
    pub reference: String,
    /// The credential's challenge id; omitted when empty.
    pub challenge_id: String,
}

impl Receipt {
    /// `{"status":"success","method":"lightning","timestamp":…,"reference":…[,"challengeId":…]}`.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        field(&mut out, "status", "success", false);
        field(&mut out, "method", METHOD_LIGHTNING, false);
        field(&mut out, "timestamp", &self.timestamp, false);
        field(&mut out, "reference", &self.reference, false);
        if !self.challenge_id.is_empty() {
            field(&mut out, "challengeId", &self.challenge_id, false);
        }
        out.push('}');
        out
    }

    /// The `Payment-Receipt` field value.
    pub fn to_header(&self) -> String {
        b64::encode(self.to_json().as_bytes())
    }
}

/// Outcome of the refund attempted when a session closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefundStatus {
    Succeeded,
    Failed,
    /// Nothing was left to refund.
    Skipped,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// Receipt for a session close (Go's `SessionReceipt`): no challenge id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseReceipt {
    pub timestamp: String,
    /// `payload.sessionId`.
    pub session_id: String,
    /// Omitted when 0.
    pub refund_sats: i64,
    /// Omitted when unknown (Go: the close result fell out of its cache).
    pub refund_status: Option<RefundStatus>,
}

impl CloseReceipt {
    /// `{"method":"lightning","reference":…,"status":"success","timestamp":…[,"refundSats":N]
    /// [,"refundStatus":…]}`, HTML-escaped like Go's `json.Marshal`.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        field(&mut out, "method", METHOD_LIGHTNING, true);
        field(&mut out, "reference", &self.session_id, true);
        field(&mut out, "status", "success", true);
        field(&mut out, "timestamp", &self.timestamp, true);
        if self.refund_sats != 0 {
            int_field(&mut out, "refundSats", self.refund_sats);
        }
        if let Some(status) = self.refund_status {
            field(&mut out, "refundStatus", status.as_str(), true);
        }
        out.push('}');
        out
    }

    /// The `Payment-Receipt` field value.
    pub fn to_header(&self) -> String {
        b64::encode(self.to_json().as_bytes())
    }
}

/// The `payment-need-topup` SSE event payload (Go's `NeedTopUpEvent`; Go never emits it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeedTopUpEvent {
    pub session_id: String,
    pub balance_spent: i64,
    pub balance_required: i64,
}

impl NeedTopUpEvent {
    /// `{"sessionId":…,"balanceSpent":N,"balanceRequired":N}`.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        field(&mut out, "sessionId", &self.session_id, false);
        int_field(&mut out, "balanceSpent", self.balance_spent);
        int_field(&mut out, "balanceRequired", self.balance_required);
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_string_escaping() {
        let mut plain = String::new();
        write_go_string(&mut plain, "<&>\u{2028}\u{7f}\u{1}\u{8}é\"\\", false);
        assert_eq!(plain, "\"<&>\\u2028\u{7f}\\u0001\\bé\\\"\\\\\"");
        let mut html = String::new();
        write_go_string(&mut html, "<&>\u{2029}", true);
        assert_eq!(html, "\"\\u003c\\u0026\\u003e\\u2029\"");
    }

    #[test]
    fn close_receipt_without_result_and_html_reference() {
        let r = CloseReceipt {
            timestamp: "t".into(),
            session_id: "a<b".into(),
            ..Default::default()
        };
        assert_eq!(
            r.to_json(),
            r#"{"method":"lightning","reference":"a\u003cb","status":"success","timestamp":"t"}"#
        );
        let r = CloseReceipt {
            refund_sats: -3,
            refund_status: Some(RefundStatus::Failed),
            ..r
        };
        assert!(r
            .to_json()
            .ends_with(r#""refundSats":-3,"refundStatus":"failed"}"#));
    }
}
