//! The dynamic pricer client: Go aperture's `pricesrpc.Prices` (`GetPrice`, for metered
//! services `ChallengeMinted`, `AuthorizeRequest`, `ReportUsage`, and for Payment sessions
//! `QuoteSession`, `SettleSession`), asked on the bridge runtime
//! for the worker cores (`dynamicprice` in a service's config).
//!
//! Owns one lazily connected tonic channel per pricer target (address + TLS settings), built on
//! first use on the bridge runtime and shared by every call to that pricer. Plaintext h2c when
//! `insecure`, else TLS pinned to the certificate in `tlscertpath` (the connector lnd uses).
//! Targets are cached by value, so a reload that points a service at another pricer gets a new
//! channel; the cache is bounded and dropping it closes the old connections. Must not block the
//! bridge thread and must not let a tonic type escape into the main crate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::lnd::{parse_host, tls};
use crate::pricesrpc::prices_client::PricesClient;
use crate::pricesrpc::{
    AuthorizeRequestRequest, ChallengeMintedRequest, GetPriceRequest, QuoteSessionRequest,
    ReportUsageRequest, SettleSessionRequest,
};
use crate::protocol::{
    Authorization, AuthorizeQuery, BridgeError, MintedChallenge, PricerTarget, SessionQuote,
    SessionQuoteQuery, SessionSettlement, UsageReport,
};

/// How long one TCP (+TLS) connect to a pricer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most distinct pricers kept connected; past it the cache starts over (only reloads that keep
/// changing pricer addresses get here).
const MAX_PRICERS: usize = 64;

/// Pricer clients by target.
#[derive(Default)]
pub(crate) struct Pricers {
    clients: Mutex<HashMap<Arc<PricerTarget>, PricesClient<Channel>>>,
}

impl Pricers {
    /// Asks `target` for the price of `path`; `http_request_text` is the serialized request.
    /// Must run on the bridge runtime (a new channel spawns its worker there).
    pub(crate) async fn get_price(
        &self,
        target: &Arc<PricerTarget>,
        path: String,
        http_request_text: String,
    ) -> Result<i64, BridgeError> {
        let mut client = self.client(target)?;
        let req = GetPriceRequest {
            path,
            http_request_text,
        };
        match client.get_price(req).await {
            Ok(resp) => Ok(resp.into_inner().price_sats),
            Err(status) => Err(failed(target, &status)),
        }
    }

    /// Books a minted challenge with a metered pricer (`ChallengeMinted`).
    pub(crate) async fn challenge_minted(
        &self,
        target: &Arc<PricerTarget>,
        m: MintedChallenge,
    ) -> Result<(), BridgeError> {
        let mut client = self.client(target)?;
        let req = ChallengeMintedRequest {
            path: m.path,
            http_request_text: m.http_request_text,
            token_id: m.token_id,
            price_sats: m.price_sats,
            service_name: m.service_name,
        };
        match client.challenge_minted(req).await {
            Ok(_) => Ok(()),
            Err(status) => Err(failed(target, &status)),
        }
    }

    /// Asks a metered pricer to admit a paid request (`AuthorizeRequest`).
    pub(crate) async fn authorize_request(
        &self,
        target: &Arc<PricerTarget>,
        q: AuthorizeQuery,
    ) -> Result<Authorization, BridgeError> {
        let mut client = self.client(target)?;
        let req = AuthorizeRequestRequest {
            path: q.path,
            http_request_text: q.http_request_text,
            token_id: q.token_id,
            service_name: q.service_name,
        };
        match client.authorize_request(req).await {
            Ok(resp) => {
                let r = resp.into_inner();
                Ok(Authorization {
                    allowed: r.allowed,
                    price_sats: r.price_sats,
                    reason: r.reason,
                    reserved_estimate: r.reserved_estimate,
                })
            }
            Err(status) => Err(failed(target, &status)),
        }
    }

    /// One `ReportUsage` attempt (the caller retries and times out).
    pub(crate) async fn report_usage(&self, r: &UsageReport) -> Result<(), BridgeError> {
        let target = Arc::new(r.target.clone());
        let mut client = self.client(&target)?;
        let req = ReportUsageRequest {
            token_id: r.token_id.clone(),
            path: r.path.clone(),
            service_name: r.service_name.clone(),
            http_status: r.http_status,
            content_type: r.content_type.clone(),
            complete: r.complete,
            response_tail: r.response_tail.clone(),
            content_encoding: r.content_encoding.clone(),
            reserved_estimate: r.reserved_estimate,
        };
        match client.report_usage(req).await {
            Ok(_) => Ok(()),
            Err(status) => Err(failed(&target, &status)),
        }
    }

    /// A session challenge's prices (`QuoteSession`); `None` when the pricer answers
    /// `Unimplemented` (Go then quietly keeps the charge price).
    pub(crate) async fn quote_session(
        &self,
        target: &Arc<PricerTarget>,
        q: SessionQuoteQuery,
    ) -> Result<Option<SessionQuote>, BridgeError> {
        let mut client = self.client(target)?;
        let req = QuoteSessionRequest {
            path: q.path,
            http_request_text: q.http_request_text,
            service_name: q.service_name,
            session_id: q.session_id,
        };
        match client.quote_session(req).await {
            Ok(resp) => {
                let r = resp.into_inner();
                Ok(Some(SessionQuote {
                    unit_price_sats: r.unit_price_sats,
                    deposit_sats: r.deposit_sats,
                }))
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
            Err(status) => Err(failed(target, &status)),
        }
    }

    /// One `SettleSession` (the caller's deadline applies): the pricer's cost, `None` when it
    /// answers `Unimplemented`.
    pub(crate) async fn settle_session(
        &self,
        target: &Arc<PricerTarget>,
        s: SessionSettlement,
    ) -> Result<Option<i64>, BridgeError> {
        let mut client = self.client(target)?;
        let req = SettleSessionRequest {
            session_id: s.session_id,
            path: s.path,
            service_name: s.service_name,
            http_status: s.http_status,
            content_type: s.content_type,
            content_encoding: s.content_encoding,
            complete: s.complete,
            response_tail: s.response_tail,
            estimate_sats: s.estimate_sats,
            http_request_text: s.http_request_text,
        };
        match client.settle_session(req).await {
            Ok(resp) => Ok(Some(resp.into_inner().cost_sats)),
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
            Err(status) => Err(failed(target, &status)),
        }
    }

    /// The cached client for `target`, or a new lazily connected one.
    fn client(&self, target: &Arc<PricerTarget>) -> Result<PricesClient<Channel>, BridgeError> {
        let mut clients = lock(&self.clients);
        if let Some(c) = clients.get(target) {
            return Ok(c.clone());
        }
        if clients.len() >= MAX_PRICERS {
            clients.clear();
        }
        let client = PricesClient::new(channel(target)?);
        clients.insert(target.clone(), client.clone());
        Ok(client)
    }
}

/// A pricer's gRPC error as the bridge reports it.
fn failed(target: &PricerTarget, status: &tonic::Status) -> BridgeError {
    BridgeError::Backend(format!(
        "pricer {} {:?}: {}",
        target.address,
        status.code(),
        status.message()
    ))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A map of clients; a poisoned one is still consistent (inserts are single steps).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A channel that connects on first use: h2c when `insecure`, else TLS pinned to the file.
fn channel(target: &PricerTarget) -> Result<Channel, BridgeError> {
    let bad = |reason: String| BridgeError::Backend(format!("pricer {}: {reason}", target.address));
    let (endpoint, server_name) = parse_host(&target.address).map_err(|e| bad(e.to_string()))?;
    if target.insecure {
        let endpoint = Endpoint::from_shared(format!("http://{}", target.address))
            .map_err(|e| bad(e.to_string()))?;
        return Ok(endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy());
    }
    let tls_path = target
        .tls_cert_path
        .clone()
        .ok_or_else(|| bad("TLS needs dynamicprice.tlscertpath (or insecure: true)".into()))?;
    let connector = tls::Connector {
        peer: "pricer",
        addr: target.address.clone(),
        server_name,
        tls_path,
        provider: tls::provider(),
        connected: Default::default(),
        dial: Default::default(),
    };
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector_lazy(connector))
}
