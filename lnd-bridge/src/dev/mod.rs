//! The embedded dev Lightning backend: signs real BOLT11 invoices with a persisted node key
//! and settles them when its simulated wallet endpoint "pays" them; pays the wallet's own
//! invoices (`receive`) when the proxy pays out (session refunds).
//!
//! Owns invoice minting, the in-memory invoice book (preimage + settled flag per payment
//! hash), settlement events and the proxy's outgoing payments. It must never touch real
//! funds: payments are SIMULATED.
//! Runs on the bridge's tokio thread; the CPU-bound signing runs on a few signer threads
//! (`signers`), inline only when they are saturated.

pub mod key;
pub(crate) mod receive;
mod signers;
mod store;
pub(crate) mod wallet;

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{All, Message, PublicKey, Secp256k1, SecretKey};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret, SignedRawBolt11Invoice};
use rand::RngCore;

use crate::bolt11::PayTarget;
use crate::events::EventBus;
use crate::protocol::{
    BridgeError, Event, Invoice, InvoiceRequest, InvoiceState, PayReply, PayStatus,
};
use crate::Network;
use store::InvoiceStore;

/// lnd's default invoice expiry, which Go aperture relies on (it sets none).
pub const INVOICE_EXPIRY: Duration = Duration::from_secs(86_400);
/// lnd's default final CLTV delta.
pub const MIN_FINAL_CLTV: u64 = 80;
/// How many invoices the dev backend remembers; the oldest are forgotten beyond this.
pub const MAX_REMEMBERED_INVOICES: usize = 1_000_000;

/// Outcome of a simulated payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Paid {
    pub preimage: [u8; 32],
    pub payment_hash: [u8; 32],
    /// The invoice's amount (0 for an amountless one).
    pub amount_msat: u64,
}

/// Why a simulated payment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PayError {
    /// Not a decodable, correctly signed BOLT11 invoice.
    #[error("malformed invoice: {0}")]
    Malformed(String),
    /// A valid invoice, but not one this backend issued (or one it has forgotten).
    #[error("unknown invoice")]
    Unknown { payment_hash: [u8; 32] },
}

/// A freshly signed invoice and the secrets behind it.
pub(crate) struct Signed {
    pub payment_hash: [u8; 32],
    pub payment_request: String,
    pub preimage: [u8; 32],
    /// The BOLT11 payment secret (lnd's `payment_addr`).
    #[cfg_attr(not(feature = "fake"), allow(dead_code))]
    pub payment_addr: [u8; 32],
    /// Creation time, seconds since the Unix epoch.
    #[cfg_attr(not(feature = "fake"), allow(dead_code))]
    pub created: u64,
}

struct Book {
    store: InvoiceStore,
    last_add: u64,
    last_settle: u64,
}

/// The dev backend's state; shared by the invoice path and the wallet endpoint.
pub(crate) struct DevBackend {
    secp: Secp256k1<All>,
    key: SecretKey,
    node_id: PublicKey,
    currency: Currency,
    book: Mutex<Book>,
    /// Artificial latency before each invoice (nanoseconds), for saturation tests.
    delay_nanos: AtomicU64,
    events: Arc<EventBus>,
    /// Threads that sign invoices off the runtime (`None`: sign inline).
    signers: Option<signers::Signers>,
    /// The wallet's receive side, which the proxy's payments go to.
    wallet: receive::Receiver,
}

/// Maps our network onto the BOLT11 currency prefix.
pub(crate) fn currency(network: Network) -> Currency {
    match network {
        Network::Mainnet => Currency::Bitcoin,
        Network::Testnet => Currency::BitcoinTestnet,
        Network::Regtest => Currency::Regtest,
        Network::Simnet => Currency::Simnet,
        Network::Signet => Currency::Signet,
    }
}

impl DevBackend {
    /// Builds the backend around the key in `basedir` (created on first use).
    pub(crate) fn open(
        basedir: &Path,
        network: Network,
        events: Arc<EventBus>,
    ) -> Result<Self, BridgeError> {
        let key = key::load_or_create(basedir)?;
        let mut dev = Self::with_key(key, network, events, MAX_REMEMBERED_INVOICES);
        dev.signers = signers::Signers::start();
        Ok(dev)
    }

    /// A backend with a fresh random key and no persistence (the fake lnd's signer).
    #[cfg(feature = "fake")]
    pub(crate) fn ephemeral(network: Network) -> Self {
        let key = SecretKey::new(&mut rand::thread_rng());
        Self::with_key(key, network, Arc::new(EventBus::default()), 1)
    }

    fn with_key(key: SecretKey, network: Network, events: Arc<EventBus>, cap: usize) -> Self {
        let mut secp = Secp256k1::new();
        // Blinding the context hardens signing against side channels at no per-call cost.
        secp.randomize(&mut rand::thread_rng());
        let node_id = PublicKey::from_secret_key(&secp, &key);
        DevBackend {
            secp,
            key,
            node_id,
            currency: currency(network),
            book: Mutex::new(Book {
                store: InvoiceStore::new(cap),
                last_add: 0,
                last_settle: 0,
            }),
            delay_nanos: AtomicU64::new(0),
            events,
            signers: None,
            wallet: receive::Receiver::new(currency(network), receive::MAX_WALLET_INVOICES),
        }
    }

    /// The node's public key (the payee every invoice recovers to).
    pub(crate) fn node_id(&self) -> [u8; 33] {
        self.node_id.serialize()
    }

    pub(crate) fn set_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Creates an invoice after the configured artificial delay (zero by default), signed on a
    /// signer thread when there are some.
    pub(crate) async fn create_invoice(
        self: &Arc<Self>,
        req: &InvoiceRequest,
    ) -> Result<Invoice, BridgeError> {
        let nanos = self.delay_nanos.load(Ordering::Relaxed);
        if nanos > 0 {
            tokio::time::sleep(Duration::from_nanos(nanos)).await;
        }
        let Some(signers) = &self.signers else {
            return self.mint(req);
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (dev, job_req) = (Arc::clone(self), req.clone());
        let job = Box::new(move || {
            let _ = tx.send(dev.mint(&job_req));
        });
        match signers.try_run(job) {
            Ok(()) => rx
                .await
                .unwrap_or_else(|_| Err(BridgeError::Backend("invoice signer stopped".into()))),
            // Every signer busy and the queue full: sign here (the job, and its sender, drop).
            Err(_) => self.mint(req),
        }
    }

    /// Signs a fresh invoice and remembers its preimage. CPU-bound (one ECDSA signature).
    pub(crate) fn mint(&self, req: &InvoiceRequest) -> Result<Invoice, BridgeError> {
        let signed = self.sign(req)?;
        let add_index = {
            let mut book = self.book();
            book.last_add += 1;
            book.store.insert(signed.payment_hash, signed.preimage);
            book.last_add
        };
        Ok(Invoice {
            payment_hash: signed.payment_hash,
            payment_request: signed.payment_request,
            add_index,
        })
    }

    /// Signs a fresh invoice with a random preimage without booking it (the fake lnd keeps
    /// its own book). CPU-bound (one ECDSA signature).
    pub(crate) fn sign(&self, req: &InvoiceRequest) -> Result<Signed, BridgeError> {
        req.validate()?;
        let mut rng = rand::thread_rng();
        let mut preimage = [0u8; 32];
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut preimage);
        rng.fill_bytes(&mut secret);
        let hash = sha256::Hash::hash(&preimage);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| BridgeError::Backend("system clock is before 1970".into()))?;
        let invoice = InvoiceBuilder::new(self.currency.clone())
            .description(req.memo.clone())
            // validate() bounds amount_sat so that this product cannot overflow.
            .amount_milli_satoshis(req.amount_sat * 1000)
            .payment_hash(hash)
            .payment_secret(PaymentSecret(secret))
            .duration_since_epoch(now)
            .expiry_time(INVOICE_EXPIRY)
            .min_final_cltv_expiry_delta(MIN_FINAL_CLTV)
            .build_signed(|msg| self.secp.sign_ecdsa_recoverable(msg, &self.key))
            .map_err(|e| BridgeError::Backend(format!("build invoice: {e}")))?;
        Ok(Signed {
            payment_hash: hash.to_byte_array(),
            payment_request: invoice.to_string(),
            preimage,
            payment_addr: secret,
            created: now.as_secs(),
        })
    }

    /// The state of an invoice this backend issued (`Unknown` if never issued or forgotten).
    pub(crate) fn lookup(&self, payment_hash: &[u8; 32]) -> InvoiceState {
        match self.book().store.settle_index(payment_hash) {
            None => InvoiceState::Unknown,
            Some(0) => InvoiceState::Open,
            Some(_) => InvoiceState::Settled,
        }
    }

    /// Simulates paying `bolt11`: marks it settled (once) and reveals its preimage.
    pub(crate) fn pay(&self, bolt11: &str) -> Result<Paid, PayError> {
        let (payment_hash, amount_msat) = self.check_ours(bolt11)?;
        let (preimage, settled_now) = {
            let mut book = self.book();
            let next_settle = book.last_settle + 1;
            let Some(found) = book.store.settle(&payment_hash, next_settle) else {
                return Err(PayError::Unknown { payment_hash });
            };
            if found.newly_settled {
                book.last_settle = next_settle;
            }
            (found.preimage, found.newly_settled.then_some(next_settle))
        };
        if let Some(settle_index) = settled_now {
            tracing::debug!(hash = %hex::encode(payment_hash), settle_index, "dev invoice settled");
            self.events.publish(&Event::InvoiceSettled {
                payment_hash,
                settle_index,
            });
        }
        Ok(Paid {
            preimage,
            payment_hash,
            amount_msat,
        })
    }

    /// Decodes `bolt11` and returns its payment hash and amount (msat, 0 if none) if this
    /// node signed it.
    fn check_ours(&self, bolt11: &str) -> Result<([u8; 32], u64), PayError> {
        // Parse the raw form: the full semantic parse may panic on some signature errors.
        let signed = SignedRawBolt11Invoice::from_str(bolt11.trim())
            .map_err(|e| PayError::Malformed(e.to_string()))?;
        let payment_hash = signed
            .raw_invoice()
            .payment_hash()
            .map(|h| h.0.to_byte_array())
            .ok_or_else(|| PayError::Malformed("invoice has no payment hash".into()))?;
        let amount_msat = signed
            .raw_invoice()
            .amount_pico_btc()
            .map_or(0, |pico| pico / 10);
        let (_, signable, sig) = signed.into_parts();
        let payee = self
            .secp
            .recover_ecdsa(&Message::from_digest(signable), &sig.0)
            .map_err(|e| PayError::Malformed(format!("bad signature: {e}")))?;
        if payee != self.node_id {
            return Err(PayError::Unknown { payment_hash });
        }
        Ok((payment_hash, amount_msat))
    }

    /// The wallet's receive side (`POST /invoice`, `GET /invoice/<hash>`).
    pub(crate) fn wallet(&self) -> &receive::Receiver {
        &self.wallet
    }

    /// Pays `req` (checked into `target` by the caller) out of the proxy: only the wallet's
    /// own unexpired invoices are reachable (anything else fails with "no route"); the fee is
    /// always 0. Paying a paid invoice again answers the first payment, as lnd does once it
    /// tracks the earlier payment.
    pub(crate) fn pay_invoice(&self, req: &crate::PayRequest, target: &PayTarget) -> PayReply {
        let hash = target.payment_hash;
        let signed = match crate::bolt11::parse(&req.payment_request) {
            Ok(signed) => signed,
            Err(why) => return PayReply::failed(hash, format!("malformed invoice: {why}")),
        };
        match crate::bolt11::verify_signature(&signed) {
            Some(payee) if payee == self.wallet.id() => {}
            _ => return PayReply::failed(hash, receive::Refused::Unknown.to_string()),
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now >= crate::bolt11::expires_at(&signed) {
            return PayReply::failed(hash, "invoice expired");
        }
        match self.wallet.settle(&hash, target.send_sat) {
            Ok(got) => {
                tracing::debug!(
                    hash = %hex::encode(hash),
                    sat = got.amount_sat,
                    "dev backend paid a wallet invoice"
                );
                PayReply {
                    status: PayStatus::Succeeded,
                    payment_hash: hash,
                    preimage: Some(got.preimage),
                    value_sat: got.amount_sat,
                    fee_sat: 0,
                    failure: None,
                }
            }
            Err(refused) => PayReply::failed(hash, refused.to_string()),
        }
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // Book updates are single assignments/inserts; a poisoned lock holds a usable state.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Opens the dev backend and binds its wallet listener; called synchronously by `start`
/// so that key and port errors reach the caller. Must run inside the runtime's context.
pub(crate) fn open(
    basedir: &Path,
    listen: SocketAddr,
    network: Network,
    events: Arc<EventBus>,
) -> Result<(Arc<DevBackend>, tokio::net::TcpListener), BridgeError> {
    let backend = Arc::new(DevBackend::open(basedir, network, events)?);
    let listener = wallet::bind(listen)?;
    tracing::warn!(
        wallet = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        node_id = %hex::encode(backend.node_id()),
        "DEV LIGHTNING BACKEND: payments are SIMULATED; anyone who can reach the wallet \
         endpoint gets tokens for free. Never use the dev backend for real money."
    );
    Ok((backend, listener))
}

#[cfg(test)]
mod tests;
