//! A scriptable in-process fake of Go aperture's dynamic pricer (`pricesrpc.Prices`), for tests
//! (feature `fake`).
//!
//! Owns a plaintext h2c gRPC server on `127.0.0.1` (its own thread and tokio runtime) that
//! answers `GetPrice` with a price the test sets (one for every path, or per path), or with an
//! error, and records every request it was asked; and the metered rpcs (`ChallengeMinted`,
//! `AuthorizeRequest`, `ReportUsage`, `QuoteSession`, `SettleSession`), each recorded whole,
//! each answerable with an error, `AuthorizeRequest` with a scripted verdict, `QuoteSession` and
//! `SettleSession` with `Unimplemented` (the default), an error or scripted numbers. Never for
//! production.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::FakeError;
use crate::pricesrpc::prices_server::{Prices, PricesServer};
/// The recorded requests, as generated from the proto.
pub use crate::pricesrpc::{
    AuthorizeRequestRequest, ChallengeMintedRequest, QuoteSessionRequest, ReportUsageRequest,
    SettleSessionRequest,
};
use crate::pricesrpc::{
    AuthorizeRequestResponse, ChallengeMintedResponse, GetPriceRequest, GetPriceResponse,
    QuoteSessionResponse, ReportUsageResponse, SettleSessionResponse,
};
use crate::PricerTarget;

/// One `GetPrice` the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceCall {
    pub path: String,
    pub http_request_text: String,
}

/// One metered rpc the fake answered (or refused), with every field it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeterCall {
    Minted(ChallengeMintedRequest),
    Authorize(AuthorizeRequestRequest),
    Usage(ReportUsageRequest),
    Quote(QuoteSessionRequest),
    Settle(SettleSessionRequest),
}

/// Which metered rpc a scripted failure applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    ChallengeMinted,
    AuthorizeRequest,
    ReportUsage,
}

/// How the fake answers `QuoteSession` or `SettleSession`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionAnswer {
    /// gRPC `UNIMPLEMENTED` (the default, as a pricer without session support answers).
    #[default]
    Unimplemented,
    /// gRPC `INTERNAL`.
    Fail,
    /// `QuoteSession`: these unit price and deposit; `SettleSession`: `cost_sats` = the first.
    Answer(i64, i64),
}

#[derive(Default)]
struct Script {
    price: i64,
    per_path: HashMap<String, i64>,
    fail: bool,
    calls: Vec<PriceCall>,
    meter_calls: Vec<MeterCall>,
    failing: std::collections::HashSet<Rpc>,
    /// `AuthorizeRequest`'s answer; `None`: allowed, nothing reserved.
    verdict: Option<AuthorizeRequestResponse>,
    quote: SessionAnswer,
    settle: SessionAnswer,
}

impl Script {
    fn record(&mut self, rpc: Rpc, call: MeterCall) -> Result<(), Status> {
        self.meter_calls.push(call);
        if self.failing.contains(&rpc) {
            return Err(Status::unavailable("scripted pricer failure"));
        }
        Ok(())
    }
}

#[derive(Clone, Default)]
struct Svc(Arc<Mutex<Script>>);

fn lock(m: &Mutex<Script>) -> MutexGuard<'_, Script> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[tonic::async_trait]
impl Prices for Svc {
    async fn get_price(
        &self,
        req: Request<GetPriceRequest>,
    ) -> Result<Response<GetPriceResponse>, Status> {
        let req = req.into_inner();
        let mut script = lock(&self.0);
        let price = script
            .per_path
            .get(&req.path)
            .copied()
            .unwrap_or(script.price);
        let fail = script.fail;
        script.calls.push(PriceCall {
            path: req.path,
            http_request_text: req.http_request_text,
        });
        if fail {
            return Err(Status::internal("scripted pricer failure"));
        }
        Ok(Response::new(GetPriceResponse { price_sats: price }))
    }

    async fn challenge_minted(
        &self,
        req: Request<ChallengeMintedRequest>,
    ) -> Result<Response<ChallengeMintedResponse>, Status> {
        let call = MeterCall::Minted(req.into_inner());
        lock(&self.0).record(Rpc::ChallengeMinted, call)?;
        Ok(Response::new(ChallengeMintedResponse {}))
    }

    async fn authorize_request(
        &self,
        req: Request<AuthorizeRequestRequest>,
    ) -> Result<Response<AuthorizeRequestResponse>, Status> {
        let mut script = lock(&self.0);
        script.record(
            Rpc::AuthorizeRequest,
            MeterCall::Authorize(req.into_inner()),
        )?;
        let verdict = script.verdict.clone().unwrap_or(AuthorizeRequestResponse {
            allowed: true,
            ..Default::default()
        });
        Ok(Response::new(verdict))
    }

    async fn report_usage(
        &self,
        req: Request<ReportUsageRequest>,
    ) -> Result<Response<ReportUsageResponse>, Status> {
        lock(&self.0).record(Rpc::ReportUsage, MeterCall::Usage(req.into_inner()))?;
        Ok(Response::new(ReportUsageResponse::default()))
    }

    async fn quote_session(
        &self,
        req: Request<QuoteSessionRequest>,
    ) -> Result<Response<QuoteSessionResponse>, Status> {
        let mut script = lock(&self.0);
        script.meter_calls.push(MeterCall::Quote(req.into_inner()));
        match script.quote {
            SessionAnswer::Unimplemented => Err(Status::unimplemented("no session quotes")),
            SessionAnswer::Fail => Err(Status::internal("scripted pricer failure")),
            SessionAnswer::Answer(unit_price_sats, deposit_sats) => {
                Ok(Response::new(QuoteSessionResponse {
                    unit_price_sats,
                    deposit_sats,
                }))
            }
        }
    }

    async fn settle_session(
        &self,
        req: Request<SettleSessionRequest>,
    ) -> Result<Response<SettleSessionResponse>, Status> {
        let mut script = lock(&self.0);
        script.meter_calls.push(MeterCall::Settle(req.into_inner()));
        match script.settle {
            SessionAnswer::Unimplemented => Err(Status::unimplemented("no session settlement")),
            SessionAnswer::Fail => Err(Status::internal("scripted pricer failure")),
            SessionAnswer::Answer(cost_sats, _) => {
                Ok(Response::new(SettleSessionResponse { cost_sats }))
            }
        }
    }
}

/// A running fake pricer; dropping it stops the server.
pub struct FakePricer {
    addr: SocketAddr,
    svc: Svc,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakePricer {
    /// Starts a fake on a free port of 127.0.0.1 that prices everything at `price`.
    pub fn start(price: i64) -> Result<FakePricer, FakeError> {
        let io = |e: std::io::Error| FakeError::Io(e.to_string());
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let addr = listener.local_addr().map_err(io)?;
        let svc = Svc::default();
        lock(&svc.0).price = price;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io)?;
        let listener = {
            let _ctx = rt.enter();
            TcpListener::from_std(listener).map_err(io)?
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = PricesServer::new(svc.clone());
        let thread = std::thread::Builder::new()
            .name("fake-pricer".into())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept_loop(listener, server) => {}
                    }
                });
                drop(rt);
            })
            .map_err(io)?;
        Ok(FakePricer {
            addr,
            svc,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A plaintext (`insecure`) target pointing at this fake.
    pub fn target(&self) -> PricerTarget {
        PricerTarget {
            address: self.addr.to_string(),
            insecure: true,
            tls_cert_path: None,
        }
    }

    /// The price of every path without its own.
    pub fn set_price(&self, price: i64) {
        lock(&self.svc.0).price = price;
    }

    /// The price of one path.
    pub fn set_price_for(&self, path: &str, price: i64) {
        lock(&self.svc.0).per_path.insert(path.to_owned(), price);
    }

    /// Answer every call with gRPC `INTERNAL` while `fail` is set.
    pub fn set_failing(&self, fail: bool) {
        lock(&self.svc.0).fail = fail;
    }

    /// Every call answered so far, in order.
    pub fn calls(&self) -> Vec<PriceCall> {
        lock(&self.svc.0).calls.clone()
    }

    /// Every metered rpc received so far (refused ones too), in order.
    pub fn meter_calls(&self) -> Vec<MeterCall> {
        lock(&self.svc.0).meter_calls.clone()
    }

    /// Every `ReportUsage` received so far (refused ones too), in order.
    pub fn usage_reports(&self) -> Vec<ReportUsageRequest> {
        let script = lock(&self.svc.0);
        let usage = script.meter_calls.iter().filter_map(|c| match c {
            MeterCall::Usage(r) => Some(r.clone()),
            _ => None,
        });
        usage.collect()
    }

    /// Answer `rpc` with gRPC `UNAVAILABLE` while `fail` is set.
    pub fn set_rpc_failing(&self, rpc: Rpc, fail: bool) {
        let mut script = lock(&self.svc.0);
        if fail {
            script.failing.insert(rpc);
        } else {
            script.failing.remove(&rpc);
        }
    }

    /// `QuoteSession`'s answer from now on (`Unimplemented` until set).
    pub fn set_quote(&self, answer: SessionAnswer) {
        lock(&self.svc.0).quote = answer;
    }

    /// `SettleSession`'s answer from now on (`Unimplemented` until set).
    pub fn set_settle(&self, answer: SessionAnswer) {
        lock(&self.svc.0).settle = answer;
    }

    /// Every `QuoteSession` received so far, in order.
    pub fn quotes(&self) -> Vec<QuoteSessionRequest> {
        let script = lock(&self.svc.0);
        let quotes = script.meter_calls.iter().filter_map(|c| match c {
            MeterCall::Quote(r) => Some(r.clone()),
            _ => None,
        });
        quotes.collect()
    }

    /// Every `SettleSession` received so far, in order.
    pub fn settlements(&self) -> Vec<SettleSessionRequest> {
        let script = lock(&self.svc.0);
        let settles = script.meter_calls.iter().filter_map(|c| match c {
            MeterCall::Settle(r) => Some(r.clone()),
            _ => None,
        });
        settles.collect()
    }

    /// `AuthorizeRequest`'s answer from now on.
    pub fn set_verdict(&self, allowed: bool, price_sats: i64, reserved_estimate: i64) {
        lock(&self.svc.0).verdict = Some(AuthorizeRequestResponse {
            allowed,
            price_sats,
            reason: if allowed { "" } else { "bundle exhausted" }.to_owned(),
            reserved_estimate,
        });
    }
}

impl Drop for FakePricer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, svc: PricesServer<Svc>) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let svc = svc.clone();
        tokio::spawn(async move {
            let conn = http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(svc));
            let _ = conn.await;
        });
    }
}
