//! `aperture fetch --session N`: a Lightning Payment-session client (intent `session`), the
//! only installable one: open a session with a deposit, make N requests debited from it (paying
//! a top-up when the server asks), then close it and get the unspent balance back on a return
//! invoice the wallet issued. Blocking, on the main thread, like the rest of the client.
//!
//! Wire (see the proxy's `session` module): the 402's `Payment … intent="session"` challenge
//! carries `depositInvoice`; `open` echoes it with the deposit preimage and an amountless
//! `returnInvoice`; `bearer` echoes the latest session challenge (a 402 without an invoice is a
//! fresh bearer challenge); a 402 with an invoice while the session is open asks for a top-up
//! (`topUp`, answered `200 {"status":"ok"}`); `close` answers with the refund.

use std::io::Read;
use std::time::Duration;

use base64::Engine;
use serde_json::json;

use super::h1::{exchange, Body, Request, Target};
use super::{header_values, pay_invoice, request, ClientError, FetchOptions, FetchResponse};
use crate::mpp::{ChallengeParams, Credential, SessionRequest};

/// At most this many top-ups in one run (a server that keeps asking is refused).
const MAX_TOP_UPS: u32 = 16;

/// What a session run did.
#[derive(Debug)]
pub struct SessionReport {
    /// The session id (hex of the deposit's payment hash).
    pub session_id: String,
    /// The deposit paid, in sats.
    pub deposit_sats: u64,
    /// Every answer to the N requests, in order.
    pub responses: Vec<FetchResponse>,
    /// Top-ups paid, in sats.
    pub top_ups_sats: Vec<u64>,
    /// The close answer: `{"status":"closed","refundSats":N,"refundStatus":…}`.
    pub close: FetchResponse,
    /// The return invoice the refund goes to, and its payment hash.
    pub return_invoice: String,
    pub return_hash: String,
}

/// Opens a session on `opts.url`, makes `requests` requests on it, closes it.
pub fn fetch_session(opts: &FetchOptions, requests: u32) -> Result<SessionReport, ClientError> {
    let target = Target::parse(&opts.url)?;
    let first = request(&target, opts, None)?;
    if first.status != 402 {
        return Err(ClientError::Session(format!(
            "expected a 402 with a session challenge, got HTTP {}",
            first.status
        )));
    }
    let (mut challenge, offer) = session_challenge(&first)?
        .filter(|(_, r)| !r.deposit_invoice.is_empty())
        .ok_or_else(|| no_session(&first))?;
    let deposit_sats = offer.deposit_sats().unwrap_or(0);
    let preimage = hex::encode(pay_invoice(opts, &offer.deposit_invoice)?);
    let session_id = offer.payment_hash.clone();
    let (return_invoice, return_hash) = create_return_invoice(opts)?;
    let open = json!({"action": "open", "preimage": preimage, "returnInvoice": return_invoice});
    let mut next = Some(credential(&challenge, open));
    let mut responses = Vec::new();
    let mut top_ups_sats = Vec::new();
    let bearer = json!({"action": "bearer", "sessionId": session_id, "preimage": preimage});
    while responses.len() < requests as usize {
        let auth = next
            .take()
            .unwrap_or_else(|| credential(&challenge, bearer.clone()));
        let resp = request(&target, opts, Some(&auth))?;
        if resp.status != 402 {
            responses.push(resp);
            continue;
        }
        let Some((fresh, offer)) = session_challenge(&resp)? else {
            return Err(no_session(&resp));
        };
        if offer.deposit_invoice.is_empty() {
            // A bearer challenge: the one we echoed expired.
            challenge = fresh;
            continue;
        }
        if responses.is_empty() && top_ups_sats.is_empty() {
            return Err(ClientError::Session(
                "the server refused to open the session (402 again)".to_owned(),
            ));
        }
        if top_ups_sats.len() as u32 >= MAX_TOP_UPS {
            return Err(ClientError::Session(format!(
                "the server asked for more than {MAX_TOP_UPS} top-ups"
            )));
        }
        let top_up = hex::encode(pay_invoice(opts, &offer.deposit_invoice)?);
        let payload = json!({"action": "topUp", "sessionId": session_id, "topUpPreimage": top_up});
        let answer = request(&target, opts, Some(&credential(&fresh, payload)))?;
        if answer.status != 200 {
            return Err(ClientError::Session(format!(
                "top-up answered HTTP {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            )));
        }
        top_ups_sats.push(offer.deposit_sats().unwrap_or(0));
    }
    let close_payload = json!({"action": "close", "sessionId": session_id, "preimage": preimage});
    let mut close = request(
        &target,
        opts,
        Some(&credential(&challenge, close_payload.clone())),
    )?;
    if close.status == 402 {
        // The challenge expired meanwhile: close with the bearer challenge offered.
        if let Some((fresh, _)) = session_challenge(&close)? {
            close = request(&target, opts, Some(&credential(&fresh, close_payload)))?;
        }
    }
    Ok(SessionReport {
        session_id,
        deposit_sats,
        responses,
        top_ups_sats,
        close,
        return_invoice,
        return_hash,
    })
}

fn no_session(resp: &FetchResponse) -> ClientError {
    let values = header_values(&resp.headers, "www-authenticate")
        .map(str::to_owned)
        .collect();
    ClientError::Challenge(values)
}

/// The answer's Lightning session challenge and its decoded request, if it offers one.
fn session_challenge(
    resp: &FetchResponse,
) -> Result<Option<(ChallengeParams, SessionRequest)>, ClientError> {
    let values: Vec<&str> = header_values(&resp.headers, "www-authenticate").collect();
    let Ok(offers) = crate::mpp::parse_challenge_fields(values.iter().copied()) else {
        return Ok(None);
    };
    for c in offers {
        if c.method != crate::mpp::METHOD_LIGHTNING || c.intent != "session" {
            continue;
        }
        let request = SessionRequest::decode(&c.request)
            .map_err(|e| ClientError::Session(format!("bad session request: {e}")))?;
        return Ok(Some((c, request)));
    }
    Ok(None)
}

/// `Authorization: Payment …` echoing `challenge` with `payload`.
fn credential(challenge: &ChallengeParams, payload: serde_json::Value) -> String {
    Credential {
        challenge: challenge.clone(),
        source: String::new(),
        payload,
    }
    .to_header()
}

/// An amountless invoice from the wallet for the refund: the dev wallet's `POST /invoice`, or
/// lnd's `POST /v1/invoices` when a wallet macaroon is given (a real lnd).
fn create_return_invoice(opts: &FetchOptions) -> Result<(String, String), ClientError> {
    let base = Target::parse(&opts.wallet)?;
    let lnd = opts.wallet_macaroon.is_some();
    let path = if lnd { "/v1/invoices" } else { "/invoice" };
    let target = Target {
        path: format!("{}{path}", base.path.trim_end_matches('/')),
        ..base
    };
    let memo = "aperture session refund";
    let payload = if lnd {
        json!({"value": "0", "memo": memo})
    } else {
        json!({"amount_sats": 0, "memo": memo})
    }
    .to_string();
    let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    if let Some(mac) = &opts.wallet_macaroon {
        headers.push(("Grpc-Metadata-macaroon".to_owned(), mac.clone()));
    }
    let req = Request {
        method: "POST",
        headers: &headers,
        body: Some(payload.as_bytes()),
    };
    let (head, mut reader) = exchange(&target, &req, opts.timeout + Duration::from_secs(5))?;
    let mut text = Vec::new();
    Body::new(&mut reader, &head, false)
        .take(64 * 1024)
        .read_to_end(&mut text)
        .map_err(|source| ClientError::Io {
            addr: target.connect.clone(),
            source,
        })?;
    let body = String::from_utf8_lossy(&text).trim().to_owned();
    if head.status != 200 {
        return Err(ClientError::WalletHttp {
            wallet: opts.wallet.clone(),
            status: head.status,
            body,
        });
    }
    let value: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| ClientError::Wallet(format!("invoice answer is not JSON: {e}")))?;
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| value.get(*n).and_then(|v| v.as_str()))
            .map(str::to_owned)
    };
    let invoice = field(&["invoice", "payment_request"])
        .ok_or_else(|| ClientError::Wallet("invoice answer has no invoice".to_owned()))?;
    let hash = match field(&["payment_hash"]) {
        Some(h) => h,
        // lnd REST: `r_hash` in base64.
        None => field(&["r_hash"])
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(hex::encode)
            .unwrap_or_default(),
    };
    Ok((invoice, hash))
}
