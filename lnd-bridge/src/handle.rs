//! [`BridgeHandle`]: what the worker cores hold. Every entry point queues a call without
//! blocking (or fails at once) and hands back a oneshot reply; the in-flight bound is enforced
//! here with permits. It must never block or await: the callers are monoio worker cores.

use super::*;

/// What the worker cores hold: non-blocking entry points into the bridge.
#[derive(Clone)]
pub struct BridgeHandle {
    pub(crate) shared: Arc<Shared>,
}

// Worker cores on other threads hold and clone handles.
const _: fn() = || {
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    send_sync_clone::<BridgeHandle>();
};

/// One unit of the in-flight bound, released when the call finishes or is dropped unrun
/// (refused by the channel, left in it at shutdown, or canceled with the runtime).
pub(crate) struct Permit(Arc<Shared>);

impl Permit {
    pub(crate) fn acquire(shared: &Arc<Shared>) -> Result<Permit, BridgeError> {
        let prev = shared.in_flight.fetch_add(1, Ordering::AcqRel);
        if prev >= shared.capacity {
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(BridgeError::QueueFull);
        }
        Ok(Permit(shared.clone()))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl BridgeHandle {
    /// Queues an `L402`-memo invoice for `amount_sat`; never blocks. Fails at once with
    /// `QueueFull` at capacity, `Closed` after shutdown, `InvalidRequest` for a zero or
    /// oversized amount, `Backend("authentication is disabled")` on a disabled bridge. The
    /// reply carries `Timeout` if `call_timeout` passes first.
    pub fn try_create_invoice(&self, amount_sat: u64) -> Result<InvoiceReply, BridgeError> {
        self.try_create_invoice_with(InvoiceRequest::l402(amount_sat))
    }

    /// Like [`Self::try_create_invoice`] with an explicit memo.
    pub fn try_create_invoice_with(
        &self,
        req: InvoiceRequest,
    ) -> Result<InvoiceReply, BridgeError> {
        req.validate()?;
        let (reply, rx) = oneshot::channel();
        self.enqueue(Call::Create { req, reply })?;
        Ok(rx)
    }

    /// Queues a lookup of `payment_hash`'s state; never blocks. A hash the backend does
    /// not know answers `Ok(InvoiceState::Unknown)`. Fails at once like
    /// [`Self::try_create_invoice`] (`QueueFull`, `Closed`, disabled backend); the reply
    /// carries `Timeout` or `Backend` errors.
    pub fn try_lookup_invoice(&self, payment_hash: [u8; 32]) -> Result<LookupReply, BridgeError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(Call::Lookup {
            payment_hash,
            reply,
        })?;
        Ok(rx)
    }

    /// Queues a payment of `req.payment_request` (a session refund); never blocks. The
    /// invoice is decoded here, so a malformed one, an amountless one without `amount_sat`
    /// or an `amount_sat` that contradicts the invoice's amount fails at once with
    /// `InvalidRequest`; otherwise it fails at once like [`Self::try_create_invoice`]
    /// (`QueueFull`, `Closed`, disabled backend). The reply carries the [`PayReply`]
    /// (`Succeeded` or `Failed` with lnd's reason), or `Backend` (lnd unreachable, or the
    /// stream broke: outcome unknown) or `Timeout` after `req.timeout` +
    /// [`PAY_TIMEOUT_MARGIN`] (not `call_timeout`). Paying the same invoice again is safe.
    pub fn try_pay_invoice(&self, req: PayRequest) -> Result<PayReplyRx, BridgeError> {
        let target = bolt11::pay_target(&req)?;
        let (reply, rx) = oneshot::channel();
        self.enqueue(Call::Pay { req, target, reply })?;
        Ok(rx)
    }

    /// Queues a `GetPrice` call to the dynamic pricer `target` for `path` (the request's URL
    /// path) with `http_request_text` (the serialized request head and a bounded body prefix);
    /// never blocks. Fails at once with `QueueFull` or `Closed`; the reply carries the price,
    /// or `Timeout` (past `call_timeout`) or `Backend` (the pricer failed or is unreachable).
    /// Needs no Lightning backend, so it also works on a disabled one.
    pub fn try_get_price(
        &self,
        target: Arc<PricerTarget>,
        path: String,
        http_request_text: String,
    ) -> Result<PriceReply, BridgeError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(Call::Price {
            target,
            path,
            http_request_text,
            reply,
        })?;
        Ok(rx)
    }

    /// Queues a `ChallengeMinted` booking with the metered pricer `target`; never blocks.
    pub fn try_challenge_minted(
        &self,
        target: Arc<PricerTarget>,
        minted: MintedChallenge,
    ) -> Result<MintedReply, BridgeError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(Call::Minted {
            target,
            minted,
            reply,
        })?;
        Ok(rx)
    }

    /// Queues an `AuthorizeRequest` to the metered pricer `target`; never blocks.
    pub fn try_authorize_request(
        &self,
        target: Arc<PricerTarget>,
        query: AuthorizeQuery,
    ) -> Result<AuthorizeReply, BridgeError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(Call::Authorize {
            target,
            query,
            reply,
        })?;
        Ok(rx)
    }

    /// Queues a `QuoteSession` to the pricer `target` (a session challenge's prices); never
    /// blocks.
    pub fn try_quote_session(
        &self,
        target: Arc<PricerTarget>,
        query: SessionQuoteQuery,
    ) -> Result<QuoteReply, BridgeError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(Call::Quote {
            target,
            query,
            reply,
        })?;
        Ok(rx)
    }

    /// Queues one `SettleSession` to the pricer `target` (a single attempt within
    /// [`crate::SETTLE_SESSION_TIMEOUT`]); never blocks.
    pub fn try_settle_session(
        &self,
        target: Arc<PricerTarget>,
        settlement: SessionSettlement,
    ) -> Result<SettleReply, BridgeError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(Call::Settle {
            target,
            settlement: Box::new(settlement),
            reply,
        })?;
        Ok(rx)
    }

    /// Hands a usage report over for delivery (`ReportUsage`, Go's retry schedule); never
    /// blocks and never fails: a report that cannot be queued or delivered goes to the
    /// [`UsageSink`] (see [`Self::set_usage_sink`]).
    pub fn report_usage(&self, report: UsageReport) {
        if self.shared.closed.load(Ordering::Acquire) {
            self.shared.usage.keep(&report);
            return;
        }
        let id = self.shared.usage.admit(report);
        if self.shared.jobs.try_send(Msg::Usage(id)).is_err() {
            self.shared.usage.give_up(id);
        }
    }

    /// Sets where undelivered usage reports go (once; false if one was set already).
    pub fn set_usage_sink(&self, sink: Arc<dyn UsageSink>) -> bool {
        self.shared.usage.set_sink(sink)
    }

    /// Hands every usage report still being delivered to the sink (at shutdown, before the
    /// store stops); their deliveries stop.
    pub fn persist_unfinished_usage(&self) {
        self.shared.usage.persist_unfinished();
    }

    /// Counters of usage delivery.
    pub fn usage_stats(&self) -> UsageStats {
        self.shared.usage.stats()
    }

    /// The shared admission path: closed and disabled checks, the in-flight bound, the
    /// channel.
    fn enqueue(&self, call: Call) -> Result<(), BridgeError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(BridgeError::Closed);
        }
        let needs_lightning = matches!(
            call,
            Call::Create { .. } | Call::Lookup { .. } | Call::Pay { .. }
        );
        if needs_lightning && matches!(self.shared.backend, Backend::Disabled) {
            return Err(BridgeError::Backend(DISABLED_REASON.into()));
        }
        let permit = Permit::acquire(&self.shared)?;
        let job = Job {
            call,
            enqueued: Instant::now(),
            permit,
        };
        // A refused job is dropped here, releasing its permit.
        match self.shared.jobs.try_send(Msg::Call(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(BridgeError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(BridgeError::Closed),
        }
    }

    /// Whether the backend is reachable; see [`Bridge::backend_connected`].
    pub fn backend_connected(&self) -> bool {
        self.shared.backend.stats().connected
    }

    /// Connection state and subscription counters, for readiness and metrics.
    pub fn backend_stats(&self) -> BackendStats {
        self.shared.backend.stats()
    }

    /// Registers an event sink; it receives every event published from now on, and its
    /// stream ends when the bridge shuts down.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Event> {
        let rx = self.shared.events.subscribe();
        if self.shared.closed.load(Ordering::Acquire) {
            self.shared.events.close(); // keep "ends after shutdown" for late subscribers
        }
        rx
    }

    /// Sends `event` to every subscriber (e.g. a `TokenRevoked` from the admin path).
    pub fn publish(&self, event: Event) {
        self.shared.events.publish(&event);
    }

    /// Dev backend only (no-op otherwise): waits `delay` before creating each invoice, so
    /// tests can hold calls in flight to saturate the queue or trip `call_timeout`.
    pub fn set_dev_delay(&self, delay: Duration) {
        match &self.shared.backend {
            Backend::Dev(dev) => dev.set_delay(delay),
            Backend::Lnd(_) | Backend::Disabled => {}
        }
    }

    /// Queue depth, invoice latency and backend state, for metrics.
    pub fn stats(&self) -> BridgeStats {
        let s = &self.shared;
        BridgeStats::new(
            &s.invoices,
            s.in_flight.load(Ordering::Acquire),
            s.capacity,
            s.backend.stats(),
            s.usage.stats(),
        )
    }

    /// Calls currently queued or running on the bridge (for metrics and tests).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }
}
