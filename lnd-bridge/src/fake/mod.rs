//! A scriptable in-process fake of lnd's gRPC `Lightning` and `routerrpc.Router` services,
//! for tests (feature `fake`).
//!
//! Owns a TLS gRPC server on `127.0.0.1` (its own thread and tokio runtime) that speaks
//! the same wire as lnd for `AddInvoice`, `LookupInvoice`, `SubscribeInvoices`,
//! `SendPaymentV2` and `TrackPaymentV2` (`router`: payments are recorded, never routed): a
//! self-signed ECDSA P-256 certificate with CA:TRUE like lnd's, macaroon checking with
//! lnd's error shape, real signed BOLT11 invoices (the dev backend's signer with a
//! throwaway key), add/settle indices, backlog replay on subscribe and lnd's habit of
//! sending a stream's headers only with its first event. Tests script it: settle or pay
//! invoices (getting preimages), fail the next calls, add latency, drop subscriptions,
//! read call counters, read the payments asked for and fail the next ones. Never for
//! production: it holds no funds and checks nothing else.

pub mod pricer;
mod router;
mod server;
mod service;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::hashes::Hash;
use lightning_invoice::SignedRawBolt11Invoice;
use tokio::sync::mpsc::UnboundedSender;

use crate::dev::DevBackend;
use crate::lnrpc::invoice::InvoiceState as RpcState;
use crate::lnrpc::Invoice as RpcInvoice;
use crate::{BackendConfig, Network};

/// File names the fake writes into its directory, as lnd names them.
pub const TLS_CERT_FILE: &str = "tls.cert";
pub const MACAROON_FILE: &str = "invoice.macaroon";
/// The macaroon `Router` calls need (the invoice macaroon is refused there, as by lnd).
pub const ADMIN_MACAROON_FILE: &str = "admin.macaroon";

/// Why the fake could not start or could not do what a test asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FakeError {
    #[error("fake lnd I/O: {0}")]
    Io(String),
    #[error("fake lnd certificate: {0}")]
    Cert(String),
    #[error("malformed invoice: {0}")]
    Malformed(String),
    #[error("unknown invoice")]
    UnknownInvoice,
    #[error("invoice is canceled")]
    Canceled,
}

/// How many calls of each rpc the fake received (counted before the macaroon check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FakeCounters {
    pub add_invoice: u64,
    pub lookup_invoice: u64,
    pub subscribe_invoices: u64,
    pub send_payment: u64,
    pub track_payment: u64,
    /// Calls refused for a missing, wrong or insufficient macaroon.
    pub auth_failures: u64,
}

/// One `SendPaymentV2` call as the fake received it (after the macaroon check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePayment {
    pub payment_request: String,
    pub amt: i64,
    pub timeout_seconds: i32,
    pub fee_limit_sat: i64,
    pub no_inflight_updates: bool,
}

/// A live subscription's sink.
type SubSink = UnboundedSender<Result<RpcInvoice, tonic::Status>>;

/// One invoice in the fake's book.
struct Entry {
    memo: String,
    value_sat: i64,
    preimage: [u8; 32],
    payment_request: String,
    payment_addr: [u8; 32],
    created: i64,
    add_index: u64,
    settle_index: u64,
    settle_date: i64,
    state: RpcState,
}

#[derive(Default)]
struct Book {
    invoices: HashMap<[u8; 32], Entry>,
    /// Payment hashes by add order (`add_index - 1`) and by settle order.
    added: Vec<[u8; 32]>,
    settled: Vec<[u8; 32]>,
    subs: Vec<SubSink>,
}

/// State shared by the gRPC service and the test-facing handle.
pub(crate) struct State {
    signer: DevBackend,
    macaroon_hex: String,
    admin_macaroon_hex: String,
    book: Mutex<Book>,
    payments: Mutex<router::Payments>,
    fail_payments: AtomicU32,
    payment_fee_sat: AtomicU64,
    payment_delay_nanos: AtomicU64,
    send_payment_calls: AtomicU64,
    track_payment_calls: AtomicU64,
    fail_next: AtomicU32,
    delay_nanos: AtomicU64,
    refuse_subs: AtomicBool,
    add_calls: AtomicU64,
    lookup_calls: AtomicU64,
    subscribe_calls: AtomicU64,
    auth_failures: AtomicU64,
}

/// A running fake lnd. Dropping it (or [`FakeLnd::shutdown`]) stops the server; clients
/// then see their connections close.
pub struct FakeLnd {
    addr: SocketAddr,
    dir: PathBuf,
    network: Network,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeLnd {
    /// Starts a fake on a free port of 127.0.0.1, writing a fresh `tls.cert` and (unless
    /// present) an `invoice.macaroon` and an `admin.macaroon` into `dir`.
    pub fn start(dir: &Path, network: Network) -> Result<FakeLnd, FakeError> {
        Self::start_at(dir, network, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Like [`Self::start`] on a given address, e.g. the previous fake's to simulate an
    /// lnd restart (which also rotates the certificate, as lnd may).
    pub fn start_at(dir: &Path, network: Network, addr: SocketAddr) -> Result<FakeLnd, FakeError> {
        let io = |e: std::io::Error| FakeError::Io(e.to_string());
        std::fs::create_dir_all(dir).map_err(io)?;
        let macaroon = load_or_create_macaroon(&dir.join(MACAROON_FILE))?;
        let admin = load_or_create_macaroon(&dir.join(ADMIN_MACAROON_FILE))?;
        let tls = server::tls_config(&dir.join(TLS_CERT_FILE))?;
        let state = Arc::new(State {
            signer: DevBackend::ephemeral(network),
            macaroon_hex: hex::encode(macaroon),
            admin_macaroon_hex: hex::encode(admin),
            book: Mutex::new(Book::default()),
            payments: Mutex::new(router::Payments::default()),
            fail_payments: AtomicU32::new(0),
            payment_fee_sat: AtomicU64::new(0),
            payment_delay_nanos: AtomicU64::new(0),
            send_payment_calls: AtomicU64::new(0),
            track_payment_calls: AtomicU64::new(0),
            fail_next: AtomicU32::new(0),
            delay_nanos: AtomicU64::new(0),
            refuse_subs: AtomicBool::new(false),
            add_calls: AtomicU64::new(0),
            lookup_calls: AtomicU64::new(0),
            subscribe_calls: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
        });
        let listener = std::net::TcpListener::bind(addr).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let addr = listener.local_addr().map_err(io)?;
        let (stop, thread) = server::spawn(listener, tls, state.clone())?;
        Ok(FakeLnd {
            addr,
            dir: dir.to_path_buf(),
            network,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` for `BackendConfig::Lnd::host`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn tls_cert_path(&self) -> PathBuf {
        self.dir.join(TLS_CERT_FILE)
    }

    pub fn macaroon_path(&self) -> PathBuf {
        self.dir.join(MACAROON_FILE)
    }

    /// A bridge backend pointed at this fake.
    pub fn backend_config(&self) -> BackendConfig {
        BackendConfig::Lnd {
            host: self.host(),
            tls_path: self.tls_cert_path(),
            macaroon_path: self.macaroon_path(),
            network: self.network,
        }
    }

    /// Settles an OPEN invoice (once; settling again is a no-op) and returns its preimage.
    pub fn settle(&self, payment_hash: &[u8; 32]) -> Result<[u8; 32], FakeError> {
        self.state.settle(payment_hash)
    }

    /// The preimage of an invoice this fake created, without settling it (a test can then hold
    /// a token whose invoice is still OPEN, as a client does between paying and settlement).
    pub fn preimage_of(&self, payment_hash: &[u8; 32]) -> Option<[u8; 32]> {
        self.state
            .book()
            .invoices
            .get(payment_hash)
            .map(|e| e.preimage)
    }

    /// "Pays" `payment_request`: settles the invoice it names and returns the preimage.
    pub fn pay(&self, payment_request: &str) -> Result<[u8; 32], FakeError> {
        let signed = SignedRawBolt11Invoice::from_str(payment_request.trim())
            .map_err(|e| FakeError::Malformed(e.to_string()))?;
        let hash = signed
            .raw_invoice()
            .payment_hash()
            .ok_or_else(|| FakeError::Malformed("no payment hash".into()))?;
        self.settle(&hash.0.to_byte_array())
    }

    /// Cancels an OPEN invoice (not streamed, as in lnd).
    pub fn cancel(&self, payment_hash: &[u8; 32]) -> Result<(), FakeError> {
        let mut book = self.state.book();
        let e = book
            .invoices
            .get_mut(payment_hash)
            .ok_or(FakeError::UnknownInvoice)?;
        if e.state == RpcState::Open {
            e.state = RpcState::Canceled;
        }
        Ok(())
    }

    /// Every `SendPaymentV2` call received so far (after the macaroon check), oldest first.
    pub fn payments(&self) -> Vec<FakePayment> {
        self.state.payments().calls.clone()
    }

    /// The next `n` payments end `FAILED` with `FAILURE_REASON_NO_ROUTE` (paying the same
    /// invoice again is then allowed, as in lnd).
    pub fn fail_payments(&self, n: u32) {
        self.state.fail_payments.store(n, Ordering::SeqCst);
    }

    /// The routing fee successful payments report (default 0).
    pub fn set_payment_fee_sat(&self, fee_sat: u64) {
        self.state.payment_fee_sat.store(fee_sat, Ordering::SeqCst);
    }

    /// Latency before each `SendPaymentV2` answers (its timeout is not enforced).
    pub fn set_payment_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.state
            .payment_delay_nanos
            .store(nanos, Ordering::SeqCst);
    }

    /// The next `n` unary calls (AddInvoice, LookupInvoice) fail with status `UNKNOWN`.
    pub fn fail_next(&self, n: u32) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// Latency added to every unary call.
    pub fn set_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.state.delay_nanos.store(nanos, Ordering::SeqCst);
    }

    /// Ends every open subscription with status `UNAVAILABLE`.
    pub fn drop_subscriptions(&self) {
        let subs = std::mem::take(&mut self.state.book().subs);
        for tx in subs {
            let _ = tx.send(Err(tonic::Status::unavailable(
                "fake lnd: subscription dropped",
            )));
        }
    }

    /// While true, new subscriptions are refused with `UNAVAILABLE`.
    pub fn refuse_subscriptions(&self, refuse: bool) {
        self.state.refuse_subs.store(refuse, Ordering::SeqCst);
    }

    /// Subscriptions currently registered whose client is still there.
    pub fn active_subscriptions(&self) -> usize {
        let mut book = self.state.book();
        book.subs.retain(|tx| !tx.is_closed());
        book.subs.len()
    }

    pub fn counters(&self) -> FakeCounters {
        let s = &self.state;
        FakeCounters {
            add_invoice: s.add_calls.load(Ordering::SeqCst),
            lookup_invoice: s.lookup_calls.load(Ordering::SeqCst),
            subscribe_invoices: s.subscribe_calls.load(Ordering::SeqCst),
            send_payment: s.send_payment_calls.load(Ordering::SeqCst),
            track_payment: s.track_payment_calls.load(Ordering::SeqCst),
            auth_failures: s.auth_failures.load(Ordering::SeqCst),
        }
    }

    /// Stops the server and joins its thread.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for FakeLnd {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reuses the directory's macaroon (so a restarted fake accepts the same clients) or
/// writes 32 random bytes; the fake compares bytes, it does not verify macaroons.
fn load_or_create_macaroon(path: &Path) -> Result<Vec<u8>, FakeError> {
    match std::fs::read(path) {
        Ok(bytes) if !bytes.is_empty() => Ok(bytes),
        _ => {
            let bytes: [u8; 32] = rand::random();
            std::fs::write(path, bytes).map_err(|e| FakeError::Io(e.to_string()))?;
            Ok(bytes.to_vec())
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl State {
    fn book(&self) -> MutexGuard<'_, Book> {
        // Every update is complete under the lock; a poisoned book is still consistent.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn payments(&self) -> MutexGuard<'_, router::Payments> {
        self.payments.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// lnd's answers to a missing or wrong macaroon (`UNKNOWN` with a message); `admin_only`
    /// also refuses the invoice macaroon, as lnd does for calls it grants no permission for.
    fn authorize<T>(&self, req: &tonic::Request<T>, admin_only: bool) -> Result<(), tonic::Status> {
        let got = req.metadata().get("macaroon").map(|v| v.to_str());
        let msg = match got {
            Some(Ok(v)) if v.eq_ignore_ascii_case(&self.admin_macaroon_hex) => return Ok(()),
            Some(Ok(v)) if v.eq_ignore_ascii_case(&self.macaroon_hex) => {
                if !admin_only {
                    return Ok(());
                }
                "verification failed: permission denied"
            }
            Some(_) => "verification failed: signature mismatch after caveat verification",
            None => "expected 1 macaroon, got 0",
        };
        self.auth_failures.fetch_add(1, Ordering::SeqCst);
        Err(tonic::Status::unknown(msg))
    }

    fn settle(&self, payment_hash: &[u8; 32]) -> Result<[u8; 32], FakeError> {
        let mut guard = self.book();
        let book = &mut *guard;
        let next = book.settled.len() as u64 + 1;
        let e = book
            .invoices
            .get_mut(payment_hash)
            .ok_or(FakeError::UnknownInvoice)?;
        match e.state {
            RpcState::Settled => return Ok(e.preimage),
            RpcState::Canceled => return Err(FakeError::Canceled),
            RpcState::Open | RpcState::Accepted => {}
        }
        e.state = RpcState::Settled;
        e.settle_index = next;
        e.settle_date = unix_now();
        let update = e.to_rpc();
        let preimage = e.preimage;
        book.settled.push(*payment_hash);
        // Sent under the lock, so a subscriber registering concurrently gets this either
        // in its backlog or live, never both and never neither.
        book.subs.retain(|tx| tx.send(Ok(update.clone())).is_ok());
        Ok(preimage)
    }
}

impl Entry {
    /// The invoice as lnd reports it (LookupInvoice, settle updates).
    #[allow(deprecated)] // `settled` is deprecated in lnd but still filled in
    fn to_rpc(&self) -> RpcInvoice {
        let settled = self.state == RpcState::Settled;
        let paid = if settled { self.value_sat } else { 0 };
        RpcInvoice {
            memo: self.memo.clone(),
            r_preimage: self.preimage.to_vec(),
            r_hash: bitcoin::hashes::sha256::Hash::hash(&self.preimage)
                .to_byte_array()
                .to_vec(),
            value: self.value_sat,
            value_msat: self.value_sat.saturating_mul(1000),
            settled,
            creation_date: self.created,
            settle_date: self.settle_date,
            payment_request: self.payment_request.clone(),
            expiry: crate::dev::INVOICE_EXPIRY.as_secs() as i64,
            cltv_expiry: crate::dev::MIN_FINAL_CLTV,
            add_index: self.add_index,
            settle_index: self.settle_index,
            amt_paid_sat: paid,
            amt_paid_msat: paid.saturating_mul(1000),
            state: self.state as i32,
            payment_addr: self.payment_addr.to_vec(),
        }
    }
}
