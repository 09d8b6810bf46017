//! The built-in meter on the data path (`metering: openai`): prepaid token bundles with the
//! semantics of Go aperture's `meterd` ([`crate::usage`] does the accounting), with no pricer
//! daemon. A 402 sells one bundle of the request's model; the model is bound to the token by
//! the resource it is minted for ([`resource`]: `<service>#model=<model>`, in the `services`
//! caveat and a Payment charge's HMAC), so a bundle can never be spent on another model: a
//! request for another model does not verify and gets a fresh 402 for its own.
//!
//! **Owner core.** Each token's bundle lives on one core (the rate limiter's owner of the token
//! key), which reserves and settles it; other cores ask it through the peer inbox, so requests
//! on several connections and cores never overdraw a bundle. A bundle not in memory is read from
//! the store thread (an awaited message, never a blocking call); creations and debits are
//! written behind through the store's batches, so balances survive a restart.
//!
//! Owns only the built-in meter's state and messages; the observation of the response (tail,
//! `complete`) is [`super::meter`]'s `Observer`, shared with the pricer protocol.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;

use crate::error::Synthetic;
use crate::ratelimit::{owner_core, ClientKey};
use crate::store::BundleRow;
use crate::usage::{self, Authorization, Bundle, ModelRates, Outcome, PriceTable};

use super::h1::{Framing, Head};
use super::io::{BufStream, Io};
use super::limit::PeerMsg;
use super::meter::{self, Observer};
use super::{auth, CoreCtx, Route};

/// The response tail the built-in meter keeps: OpenAI's usage object (a JSON body's last
/// field, or the last SSE `data:` chunk before `[DONE]`) is well inside it.
pub const TAIL_BYTES: usize = 16 * 1024;
/// Bundles held in memory per core; beyond this an idle one is dropped (the store has it).
pub const CAPACITY: usize = 100_000;
/// How long a request waits for the owner core or the store.
const WAIT: Duration = Duration::from_secs(5);
/// The 400 for a request whose model is not priced (or cannot be read).
pub const UNKNOWN_MODEL: &str =
    "unknown model: this service sells only the models priced in its meter.models";
/// The 400 for a body whose model cannot be read (chunked, cut, not JSON).
pub const UNREADABLE_MODEL: &str =
    "the request's model cannot be read: send a JSON body with Content-Length naming \"model\"";
/// The 400 for a request without a model on a service without `meter.defaultmodel`.
pub const NO_MODEL: &str = "the request names no model and this service has no default model";

/// The resource a built-in meter's tokens are minted for and checked against: the service name
/// and the model, percent-encoded outside `[A-Za-z0-9._~/-]` (no caveat delimiter gets in).
pub fn resource(service: &str, model: &str) -> String {
    let mut out = String::with_capacity(service.len() + 7 + model.len());
    out.push_str(service);
    out.push_str("#model=");
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || b"._~/-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The model a request on a built-in metered service is for, from the body prefix at hand
/// (`declared`: the body's `Content-Length`, `None` when chunked); `Err` is the 400.
pub fn model<'t>(
    table: &'t PriceTable,
    body: &[u8],
    declared: Option<u64>,
) -> Result<(&'t str, ModelRates), Synthetic> {
    let truncated = declared.is_none_or(|n| n > body.len() as u64);
    let named = usage::model_of(body, truncated);
    table.resolve(&named).map_err(|e| {
        Synthetic::BadRequest(match e {
            usage::MeterError::UnknownModel(m) => {
                tracing::debug!(model = %m, "metered request for an unpriced model");
                UNKNOWN_MODEL
            }
            usage::MeterError::NoDefaultModel => NO_MODEL,
            usage::MeterError::Unreadable => UNREADABLE_MODEL,
        })
    })
}

/// The resource and the price of a bundle for a request on a built-in metered service (the
/// authenticate phase: what a token must have been minted for, what a 402 costs); `body` is
/// the prefix read ahead. `Err` is the 400 for a model that is not sold.
pub fn priced(
    table: &PriceTable,
    service: &str,
    head: &Head,
    body: &[u8],
) -> Result<(String, u64), Synthetic> {
    let declared = head.request_framing().ok().and_then(declared);
    let (name, rates) = model(table, body, declared)?;
    Ok((resource(service, name), table.bundle_price_sats(rates)))
}

/// The body's declared length (`None`: chunked).
pub fn declared(framing: Framing) -> Option<u64> {
    match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    }
}

/// The bundles this core owns.
#[derive(Default)]
pub struct CoreBundles {
    held: RefCell<HashMap<[u8; 32], Bundle>>,
}

impl CoreBundles {
    /// Bundles held now.
    pub fn len(&self) -> usize {
        self.held.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn authorize(&self, token: &[u8; 32], model: &str, estimate: u64) -> Option<Reserved> {
        let mut held = self.held.borrow_mut();
        let bundle = held.get_mut(token)?;
        Some(match bundle.authorize(model, estimate) {
            Authorization::Allowed { reserved } => Reserved::Allowed(reserved),
            Authorization::Exhausted | Authorization::OtherModel => Reserved::Refused,
        })
    }

    /// Keeps `bundle` for `token` (unless a racing request already did), dropping an idle one
    /// when full (its balance is in the store; nothing in flight holds it).
    fn keep(&self, token: [u8; 32], bundle: Bundle) {
        let mut held = self.held.borrow_mut();
        if held.contains_key(&token) {
            return;
        }
        if held.len() >= CAPACITY {
            let idle = held.iter().find(|(_, b)| b.reserved == 0).map(|(k, _)| *k);
            if let Some(k) = idle {
                held.remove(&k);
            }
        }
        held.insert(token, bundle);
    }
}

/// The owner core's answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// Go ahead; this many tokens are held until the settle.
    Allowed(u64),
    /// Spent (or held by requests in flight): a fresh 402 for another bundle.
    Refused,
    /// The store could not say: 503, never a free request.
    Unavailable,
}

/// A reservation asked of the owner core.
pub struct Reserve {
    token: [u8; 32],
    service: String,
    model: String,
    estimate: u64,
    table: Arc<PriceTable>,
}

/// A message for the core that owns a token's bundle.
pub enum BundleCall {
    Reserve(Reserve, oneshot::Sender<Reserved>),
    Settle {
        token: [u8; 32],
        reserved: u64,
        outcome: Outcome,
        rates: ModelRates,
    },
}

/// Serves a call another core sent: on a task of its own, so a store read never holds up the
/// peer inbox.
pub fn serve_call(core: &Rc<CoreCtx>, call: BundleCall) {
    match call {
        BundleCall::Reserve(ask, reply) => {
            let core = core.clone();
            monoio::spawn(async move {
                let _ = reply.send(reserve(&core, ask).await);
            });
        }
        BundleCall::Settle {
            token,
            reserved,
            outcome,
            rates,
        } => settle_owned(core, token, reserved, outcome, rates),
    }
}

/// Reserves on this core (the owner): from memory, else from the store, else a new bundle.
async fn reserve(core: &CoreCtx, ask: Reserve) -> Reserved {
    if let Some(r) = core.bundles.authorize(&ask.token, &ask.model, ask.estimate) {
        return r;
    }
    let bundle = match core.store.as_ref() {
        None => None,
        Some(store) => match store.try_bundle(ask.token) {
            None => return Reserved::Unavailable,
            Some(rx) => match monoio::time::timeout(WAIT, rx).await {
                Ok(Ok(Ok(row))) => row,
                _ => return Reserved::Unavailable,
            },
        },
    };
    // A racing request may have kept it meanwhile; `keep` leaves that one alone.
    let bundle = match bundle {
        Some(row) => Bundle {
            model: row.model,
            remaining: row.remaining,
            reserved: 0,
        },
        None => {
            // The first paid request of this token: the bundle it paid for is new.
            let fresh = Bundle::new(&ask.model, &ask.table);
            if let Some(store) = core.store.as_ref() {
                store.bundle_created(BundleRow {
                    token_id: ask.token,
                    service: ask.service,
                    model: fresh.model.clone(),
                    remaining: fresh.remaining,
                });
            }
            fresh
        }
    };
    core.bundles.keep(ask.token, bundle);
    core.bundles
        .authorize(&ask.token, &ask.model, ask.estimate)
        .unwrap_or(Reserved::Unavailable)
}

/// Settles on this core (the owner) and writes the debit behind.
fn settle_owned(
    core: &CoreCtx,
    token: [u8; 32],
    reserved: u64,
    outcome: Outcome,
    rates: ModelRates,
) {
    let debit = {
        let mut held = core.bundles.held.borrow_mut();
        match held.get_mut(&token) {
            Some(bundle) => bundle.settle(reserved, outcome, rates),
            // Not held (cannot happen while reserved): the debit still goes to the store.
            None => Bundle {
                model: String::new(),
                remaining: u64::MAX,
                reserved,
            }
            .settle(reserved, outcome, rates),
        }
    };
    tracing::debug!(core = core.id, token = %hex::encode(token), debit, "meter: bundle debited");
    if debit > 0 {
        if let Some(store) = core.store.as_ref() {
            store.bundle_debited(token, debit);
        }
    }
}

/// Sends `call` to `owner`'s peer inbox; false when the owner is gone.
fn send(core: &CoreCtx, owner: usize, call: BundleCall) -> bool {
    core.peers
        .get(owner)
        .is_some_and(|tx| tx.unbounded_send(PeerMsg::Bundle(call)).is_ok())
}

/// A paid request admitted by the built-in meter: what its settle needs.
pub struct Held {
    token: [u8; 32],
    owner: usize,
    reserved: u64,
    rates: ModelRates,
    /// The response, as the forwarder shows it.
    pub observer: Observer,
}

impl Held {
    /// Settles the request on the owner core (never waits): the usage in the response's tail,
    /// `complete` when the body reached its end.
    pub fn settle(self, core: &CoreCtx, complete: bool) {
        let (status, content_type, tail) = self.observer.finish();
        let outcome = Outcome {
            usage: usage::usage_from_tail(&content_type, &tail),
            complete: complete && status != 0,
            // No response at all (502) costs nothing; see `Bundle::settle`.
            status,
            // The tail holds body bytes only: empty means none reached the client.
            body_bytes: tail.len() as u64,
        };
        if self.owner == core.id {
            settle_owned(core, self.token, self.reserved, outcome, self.rates);
            return;
        }
        let call = BundleCall::Settle {
            token: self.token,
            reserved: self.reserved,
            outcome,
            rates: self.rates,
        };
        if !send(core, self.owner, call) {
            tracing::warn!(
                core = core.id,
                owner = self.owner,
                "meter: the owner core is gone; a debit is lost"
            );
        }
    }
}

/// What the built-in meter decided about a paid request.
pub enum Admit {
    Go(Box<Held>),
    Answer(Synthetic),
}

/// Reserves the request's tokens from the bundle of `token` (an L402 token id or a Payment
/// charge's hash) on its owner core. A spent bundle gets a fresh 402 for another one.
pub async fn authorize<C: Io>(
    core: &CoreCtx,
    route: &Route,
    table: &Arc<PriceTable>,
    head: &Head,
    framing: Framing,
    client: &BufStream<C>,
    token: [u8; 32],
) -> Admit {
    let body = meter::body_prefix(client, head, framing);
    let declared = declared(framing);
    let (name, rates) = match model(table, body, declared) {
        Ok(m) => m,
        Err(answer) => return Admit::Answer(answer),
    };
    let truncated = declared.is_none_or(|n| n > body.len() as u64);
    let estimate = table.reservation(usage::max_tokens_of(body, truncated));
    let ask = Reserve {
        token,
        service: route.service.name.clone(),
        model: name.to_owned(),
        estimate,
        table: table.clone(),
    };
    let owner = owner_core(&ClientKey::Token(token), core.peers.len());
    let reserved = if owner == core.id {
        reserve(core, ask).await
    } else {
        let (tx, rx) = oneshot::channel();
        if !send(core, owner, BundleCall::Reserve(ask, tx)) {
            Reserved::Unavailable
        } else {
            match monoio::time::timeout(WAIT, rx).await {
                Ok(Ok(r)) => r,
                _ => Reserved::Unavailable,
            }
        }
    };
    match reserved {
        Reserved::Allowed(reserved) => Admit::Go(Box::new(Held {
            token,
            owner,
            reserved,
            rates,
            observer: Observer::new(TAIL_BYTES),
        })),
        Reserved::Unavailable => {
            tracing::warn!(core = core.id, service = %route.service.name, "meter: no answer about a bundle (owner core or store)");
            Admit::Answer(Synthetic::Unavailable { retry_after: 1 })
        }
        Reserved::Refused => {
            let price = table.bundle_price_sats(rates);
            let resource = resource(&route.service.name, name);
            let ask = meter::Ask {
                head,
                version: "1.1",
                body,
                accept_payment: head.get("accept-payment"),
            };
            let fresh = auth::challenge(core, route, &resource, price, auth::now_unix(), &ask);
            Admit::Answer(Box::pin(fresh).await)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn table() -> PriceTable {
        let mut models = BTreeMap::new();
        let rates = ModelRates {
            input_msat: 1,
            output_msat: 3,
        };
        models.insert("m-1".to_owned(), rates);
        PriceTable {
            models,
            default_model: None,
            bundle_tokens: 100,
            estimated_tokens: 10,
        }
    }

    #[test]
    fn the_resource_names_the_model_without_caveat_delimiters() {
        assert_eq!(resource("llm", "gpt-4o"), "llm#model=gpt-4o");
        assert_eq!(
            resource("llm", "llama3:8b,x=y"),
            "llm#model=llama3%3A8b%2Cx%3Dy"
        );
    }

    #[test]
    fn the_model_comes_from_a_whole_body_or_is_refused() {
        let t = table();
        assert_eq!(model(&t, br#"{"model":"m-1"}"#, Some(15)).unwrap().0, "m-1");
        let unknown = model(&t, br#"{"model":"other"}"#, Some(17)).unwrap_err();
        assert_eq!(unknown, Synthetic::BadRequest(UNKNOWN_MODEL));
        assert_eq!(
            model(&t, b"", None).unwrap_err(),
            Synthetic::BadRequest(UNREADABLE_MODEL)
        );
        assert_eq!(
            model(&t, b"{}", Some(2)).unwrap_err(),
            Synthetic::BadRequest(NO_MODEL)
        );
    }

    #[test]
    fn a_core_keeps_one_bundle_per_token_and_refuses_once_spent() {
        let t = table();
        let bundles = CoreBundles::default();
        let token = [7; 32];
        assert_eq!(bundles.authorize(&token, "m-1", 10), None);
        bundles.keep(token, Bundle::new("m-1", &t));
        // A racing load keeps the first.
        bundles.keep(
            token,
            Bundle {
                model: "m-1".into(),
                remaining: 1,
                reserved: 0,
            },
        );
        assert_eq!(bundles.len(), 1);
        assert_eq!(
            bundles.authorize(&token, "m-1", 60),
            Some(Reserved::Allowed(60))
        );
        assert_eq!(
            bundles.authorize(&token, "m-1", 60),
            Some(Reserved::Allowed(60))
        );
        // 120 reserved of 100: nothing left for a third until a settle.
        assert_eq!(bundles.authorize(&token, "m-1", 1), Some(Reserved::Refused));
        assert_eq!(
            bundles.authorize(&token, "other", 1),
            Some(Reserved::Refused)
        );
    }
}
