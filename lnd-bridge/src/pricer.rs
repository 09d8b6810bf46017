//! The dynamic pricer client: Go aperture's `pricesrpc.Prices/GetPrice`, asked on the bridge
//! runtime for the worker cores (`dynamicprice` in a service's config).
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
use crate::pricesrpc::GetPriceRequest;
use crate::protocol::{BridgeError, PricerTarget};

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
            Err(status) => Err(BridgeError::Backend(format!(
                "pricer {} {:?}: {}",
                target.address,
                status.code(),
                status.message()
            ))),
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
