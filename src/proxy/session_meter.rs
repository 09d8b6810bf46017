//! Payment sessions priced by the service's pricer (`dynamicprice.enabled`, metered or not): Go
//! aperture's `QuoteSession` and `SettleSession`. A 402 that offers the session intent asks the
//! pricer what one request drawn from a session costs and what deposit to ask
//! ([`quote`]); a bearer request, already debited that estimate, has its response observed as
//! it streams (the rolling tail of [`super::meter::Observer`]) and, once the body ended, its
//! true cost is asked of the pricer and the difference applied to the session's balance on its
//! owner core ([`Settling::settle`], [`super::session::send_adjust`]).
//!
//! Owns only what a session bearer on a priced service adds; every other request never reaches
//! this module. Must not wait on the pricer on the data path after the response: the settlement
//! runs on a task of its own, once, and its failure leaves the estimate charged (as in Go).

use std::sync::Arc;

use lnd_bridge::{PricerTarget, SessionQuoteQuery, SessionSettlement};

use super::meter::{Ask, Observer};
use super::session::Bearer;
use super::{price, CoreCtx, Route, BRIDGE_WAIT};

/// The session challenge's unit price and deposit for a 402 at the charge price `price`: the
/// pricer's quote, each field that is 0 or below falling back to the proxy's own value (the
/// charge price, the deposit of the multiplier). `Unimplemented` quietly keeps them; any other
/// failure is logged and keeps them too.
pub async fn quote(
    core: &CoreCtx,
    route: &Route,
    ask: &Ask<'_>,
    price: u64,
    deposit_of: impl Fn(u64) -> u64,
) -> (u64, u64) {
    let fallback = (price, deposit_of(price));
    let Some(target) = route.pricer.as_ref() else {
        return fallback;
    };
    let service = &route.service.name;
    let query = SessionQuoteQuery {
        path: price::decoded_path(ask.head.path()),
        http_request_text: price::request_text(ask.head, ask.version, ask.body),
        service_name: service.clone(),
        session_id: String::new(),
    };
    let quoted = match core.bridge.try_quote_session(target.clone(), query) {
        Ok(rx) => match monoio::time::timeout(BRIDGE_WAIT, rx).await {
            Ok(Ok(Ok(q))) => Ok(q),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(_)) => Err("the bridge dropped the request".to_owned()),
            Err(_) => Err("the pricer did not answer in time".to_owned()),
        },
        Err(e) => Err(e.to_string()),
    };
    let q = match quoted {
        Ok(Some(q)) => q,
        Ok(None) => {
            tracing::debug!(core = core.id, service = %service, "the pricer does not quote sessions; the charge price stands");
            return fallback;
        }
        Err(why) => {
            tracing::warn!(core = core.id, service = %service, "error quoting a session price, the charge price stands: {why}");
            return fallback;
        }
    };
    let unit = u64::try_from(q.unit_price_sats)
        .ok()
        .filter(|&u| u > 0)
        .unwrap_or(price);
    let deposit = u64::try_from(q.deposit_sats)
        .ok()
        .filter(|&d| d > 0)
        .unwrap_or_else(|| deposit_of(unit));
    (unit, deposit)
}

/// A session bearer request on a priced service, being observed for its settlement.
pub struct Settling {
    target: Arc<PricerTarget>,
    bearer: Bearer,
    path: String,
    http_request_text: String,
    /// The response, as the forwarder shows it.
    pub observer: Observer,
}

/// Starts observing a bearer request on a service with a pricer (`None` for every other one).
/// The request text is taken now, before the body streams upstream.
pub fn begin(route: &Route, bearer: Option<Box<Bearer>>, ask: &Ask<'_>) -> Option<Box<Settling>> {
    let bearer = bearer?;
    let target = route.pricer.as_ref()?;
    let tail = route
        .service
        .dynamic_price
        .as_ref()
        .map_or(0, |d| d.usage_tail_bytes as usize);
    Some(Box::new(Settling {
        target: target.clone(),
        bearer: *bearer,
        path: price::decoded_path(ask.head.path()),
        http_request_text: price::request_text(ask.head, ask.version, ask.body),
        observer: Observer::new(tail),
    }))
}

impl Settling {
    /// After the response body ended (`complete`) or either side went away: asks the pricer
    /// for the request's cost, once, on a task of its own, and applies cost − estimate to the
    /// session. Nothing for an upgrade (101) or when no response came (the upstream failed):
    /// the estimate stands.
    pub fn settle(self, core: &CoreCtx, route: &Route, complete: bool) {
        let (status, content_type, content_encoding, tail) = self.observer.into_parts();
        if status == 0 || status == 101 {
            return;
        }
        let estimate = self.bearer.debited;
        let session_id = self.bearer.session_id;
        let settlement = SessionSettlement {
            session_id: session_id.clone(),
            path: self.path,
            service_name: route.service.name.clone(),
            http_status: i32::from(status),
            content_type,
            content_encoding,
            complete,
            response_tail: tail,
            estimate_sats: i64::try_from(estimate).unwrap_or(i64::MAX),
            http_request_text: self.http_request_text,
        };
        let rx = match core.bridge.try_settle_session(self.target, settlement) {
            Ok(rx) => rx,
            Err(why) => {
                tracing::warn!(core = core.id, session = %session_id, "cannot settle a session request, the estimate stands: {why}");
                return;
            }
        };
        let (core_id, peers) = (core.id, core.peers.clone());
        monoio::spawn(async move {
            // The bridge holds the 30 s deadline; a dropped reply means it shut down.
            let cost = match rx.await {
                Ok(Ok(Some(cost))) => cost,
                Ok(Ok(None)) => {
                    tracing::debug!(core = core_id, session = %session_id, "the pricer does not settle sessions; the estimate stands");
                    return;
                }
                Ok(Err(why)) => {
                    tracing::warn!(core = core_id, session = %session_id, "error settling a session request, the estimate stands: {why}");
                    return;
                }
                Err(_) => return,
            };
            // A negative cost is no refund of other requests: at most this one's estimate.
            let delta = i128::from(cost.max(0)) - i128::from(estimate);
            let delta = i64::try_from(delta).unwrap_or(i64::MAX);
            if delta != 0 && !super::session::send_adjust(&peers, &session_id, delta) {
                tracing::warn!(core = core_id, session = %session_id, "cannot apply a session settlement: the owner core is gone");
            }
        });
    }
}
