//! The lnd backend: `AddInvoice`, `LookupInvoice` and the `SubscribeInvoices` watcher over
//! gRPC (tonic client generated from `proto/lightning.proto`), TLS pinned to `tls.cert`,
//! the invoice macaroon on every call; payments (`pay`: `routerrpc.Router/SendPaymentV2`)
//! with `admin.macaroon` from the same directory when there is one, as Go aperture's refunds.
//!
//! Owns the one lazily connected HTTP/2 channel to lnd (calls multiplex on it, so many run
//! at once with no queue of our own) and the backend's connection state. Start-up only
//! reads and checks the files; it never dials, so an unreachable lnd is logged and retried
//! rather than failing the proxy's start. Must not block the bridge thread.

mod pay;
mod subscribe;
#[cfg(all(test, feature = "fake"))]
mod tests;
pub(crate) mod tls;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::events::EventBus;
use crate::lnrpc::invoice::InvoiceState as RpcState;
use crate::lnrpc::lightning_client::LightningClient;
use crate::lnrpc::{self, PaymentHash};
use crate::protocol::{BackendStats, BridgeError, Invoice, InvoiceRequest, InvoiceState};
use crate::routerrpc::router_client::RouterClient;
use crate::Network;

pub(crate) use subscribe::Cursor;

/// How long one TCP+TLS connect may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings find a dead connection (and so a dead subscription) within about
/// interval + timeout, instead of waiting for the kernel's TCP timeout. lnd accepts client
/// pings every 5 s or slower (`grpc.client-ping-min-wait`) but, by default, only while a
/// stream is open (`grpc.client-allow-ping-without-stream`), hence no idle pings; the
/// subscription keeps a stream open anyway.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The macaroon payments use when it sits next to the configured one (Go aperture's refunds
/// open an admin connection from `macdir`): `invoice.macaroon` cannot pay.
pub(crate) const ADMIN_MACAROON_FILE: &str = "admin.macaroon";

/// What `BackendConfig::Lnd` carries, borrowed.
pub(crate) struct LndSettings<'a> {
    pub host: &'a str,
    pub tls_path: &'a Path,
    pub macaroon_path: &'a Path,
    pub network: Network,
}

pub(crate) struct LndBackend {
    client: LightningClient<Channel>,
    /// The same channel, for payments.
    router: RouterClient<Channel>,
    /// `hex(macaroon file)`, sent as the `macaroon` metadata of every call.
    macaroon: MetadataValue<Ascii>,
    /// What payments send instead: `admin.macaroon` beside the configured file, if readable.
    pay_macaroon: MetadataValue<Ascii>,
    connected: Arc<AtomicBool>,
    cursor: Cursor,
    /// `ln` + the network's BOLT11 currency, to spot an lnd on another network.
    prefix: String,
}

/// Checks the files and builds the (not yet connected) backend, then starts the invoice
/// subscription on `rt`. Must be called with `rt` entered or passed (channel workers spawn).
pub(crate) fn open(
    s: &LndSettings<'_>,
    events: Arc<EventBus>,
    rt: &tokio::runtime::Runtime,
) -> Result<Arc<LndBackend>, BridgeError> {
    let macaroon = load_macaroon(s.macaroon_path)?;
    let pay_macaroon = load_pay_macaroon(s.macaroon_path).unwrap_or_else(|| macaroon.clone());
    tls::load_cert(s.tls_path)?;
    let (endpoint, server_name) = parse_host(s.host)?;
    let connected = Arc::new(AtomicBool::new(false));
    let connector = tls::Connector {
        peer: "lnd",
        addr: s.host.to_owned(),
        server_name,
        tls_path: s.tls_path.to_path_buf(),
        provider: tls::provider(),
        connected: connected.clone(),
        dial: Default::default(),
    };
    // The channel spawns its worker task, which needs the runtime in context.
    let _ctx = rt.enter();
    let channel = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(false)
        .connect_with_connector_lazy(connector);
    let backend = Arc::new(LndBackend {
        client: LightningClient::new(channel.clone()),
        router: RouterClient::new(channel),
        macaroon,
        pay_macaroon,
        connected,
        cursor: Cursor::default(),
        prefix: format!("ln{}", crate::dev::currency(s.network)),
    });
    tracing::info!(lnd = %s.host, "lnd backend configured; connecting in the background");
    rt.spawn(subscribe::run(backend.clone(), events));
    Ok(backend)
}

/// Reads the macaroon file into its metadata form (lowercase hex).
fn load_macaroon(path: &Path) -> Result<MetadataValue<Ascii>, BridgeError> {
    let err = |reason: String| BridgeError::Macaroon {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("read: {e}")))?;
    if bytes.is_empty() {
        return Err(err("file is empty".into()));
    }
    MetadataValue::try_from(hex::encode(bytes)).map_err(|e| err(e.to_string()))
}

/// `admin.macaroon` next to `configured` (unless that is it), for payments. Optional: a
/// missing or unreadable one (lnd's files are often readable only by lnd) leaves payments on
/// the configured macaroon, which lnd refuses unless it grants `offchain:write`; start-up
/// never fails for it.
fn load_pay_macaroon(configured: &Path) -> Option<MetadataValue<Ascii>> {
    let path = configured.parent()?.join(ADMIN_MACAROON_FILE);
    if path == configured {
        return None;
    }
    match load_macaroon(&path) {
        Ok(m) => {
            tracing::info!(path = %path.display(), "lnd payments (session refunds) use this macaroon");
            Some(m)
        }
        Err(e) => {
            tracing::info!(
                error = %e,
                "no usable {ADMIN_MACAROON_FILE} beside the invoice macaroon: lnd payments \
                 (session refunds) use the configured macaroon and fail unless it may pay"
            );
            None
        }
    }
}

/// Turns `host:port` into the channel's endpoint and the TLS server name.
pub(crate) fn parse_host(host: &str) -> Result<(Endpoint, ServerName<'static>), BridgeError> {
    let err = |reason: &str| BridgeError::LndHost {
        host: host.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: http::Uri = format!("https://{host}")
        .parse()
        .map_err(|_| err("expected host:port"))?;
    let authority = uri.authority().ok_or_else(|| err("expected host:port"))?;
    if authority.as_str() != host || authority.port_u16().is_none() {
        return Err(err("expected host:port (with a port, nothing else)"));
    }
    let name = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let server_name = ServerName::try_from(name.to_owned()).map_err(|_| err("bad host name"))?;
    let endpoint = Endpoint::from(uri);
    Ok((endpoint, server_name))
}

impl LndBackend {
    /// Wraps `msg` with the macaroon metadata lnd authenticates every call by.
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut().insert("macaroon", self.macaroon.clone());
        req
    }

    /// Maps a failed call's status to our error, noting a lost connection.
    fn status_err(&self, status: &tonic::Status) -> BridgeError {
        self.note_status(status);
        BridgeError::Backend(format!("lnd {:?}: {}", status.code(), status.message()))
    }

    fn note_up(&self) {
        self.connected.store(true, Ordering::Release);
    }

    /// Any answer from lnd proves the connection, except `Unavailable` (transport down).
    fn note_status(&self, status: &tonic::Status) {
        let up = status.code() != Code::Unavailable;
        self.connected.store(up, Ordering::Release);
    }

    pub(crate) async fn create_invoice(
        &self,
        req: &InvoiceRequest,
    ) -> Result<Invoice, BridgeError> {
        let value = i64::try_from(req.amount_sat)
            .map_err(|_| BridgeError::InvalidRequest("amount exceeds lnd's range".into()))?;
        let msg = lnrpc::Invoice {
            memo: req.memo.clone(),
            value,
            ..Default::default()
        };
        let resp = match self.client.clone().add_invoice(self.request(msg)).await {
            Ok(r) => r.into_inner(),
            Err(status) => return Err(self.status_err(&status)),
        };
        self.note_up();
        let payment_hash: [u8; 32] = resp.r_hash.as_slice().try_into().map_err(|_| {
            BridgeError::Backend(format!("lnd returned a {}-byte r_hash", resp.r_hash.len()))
        })?;
        if !self.on_our_network(&resp.payment_request) {
            tracing::warn!(
                invoice = %resp.payment_request,
                expected = %self.prefix,
                "lnd issued an invoice for another network than configured"
            );
        }
        Ok(Invoice {
            payment_hash,
            payment_request: resp.payment_request,
            add_index: resp.add_index,
        })
    }

    /// `lnbc` is a prefix of `lnbcrt`, so the character after the currency must start the
    /// amount (a digit) or be the `1` separator.
    fn on_our_network(&self, bolt11: &str) -> bool {
        let lower = bolt11.to_ascii_lowercase();
        lower
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.chars().next())
            .is_some_and(|c| c.is_ascii_digit())
    }

    pub(crate) async fn lookup_invoice(
        &self,
        payment_hash: [u8; 32],
    ) -> Result<InvoiceState, BridgeError> {
        let msg = PaymentHash {
            r_hash: payment_hash.to_vec(),
            ..Default::default()
        };
        match self.client.clone().lookup_invoice(self.request(msg)).await {
            Ok(r) => {
                self.note_up();
                Ok(state_of(&r.into_inner()))
            }
            Err(status) if status.code() == Code::NotFound => {
                self.note_up();
                Ok(InvoiceState::Unknown)
            }
            Err(status) => Err(self.status_err(&status)),
        }
    }

    pub(crate) fn stats(&self) -> BackendStats {
        BackendStats {
            connected: self.connected.load(Ordering::Acquire),
            subscription_restarts: self.cursor.restarts(),
            settle_index: self.cursor.settle_index(),
            add_index: self.cursor.add_index(),
        }
    }
}

/// Maps lnd's state enum; values this version does not know become `Unknown`.
pub(crate) fn state_of(inv: &lnrpc::Invoice) -> InvoiceState {
    match RpcState::try_from(inv.state) {
        Ok(RpcState::Open) => InvoiceState::Open,
        Ok(RpcState::Settled) => InvoiceState::Settled,
        Ok(RpcState::Canceled) => InvoiceState::Canceled,
        Ok(RpcState::Accepted) => InvoiceState::Accepted,
        Err(_) => InvoiceState::Unknown,
    }
}
