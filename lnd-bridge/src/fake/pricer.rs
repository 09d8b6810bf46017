//! A scriptable in-process fake of Go aperture's dynamic pricer (`pricesrpc.Prices`), for tests
//! (feature `fake`).
//!
//! Owns a plaintext h2c gRPC server on `127.0.0.1` (its own thread and tokio runtime) that
//! answers `GetPrice` with a price the test sets (one for every path, or per path), or with an
//! error, and records every request it was asked. Never for production.

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
use crate::pricesrpc::{GetPriceRequest, GetPriceResponse};
use crate::PricerTarget;

/// One `GetPrice` the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceCall {
    pub path: String,
    pub http_request_text: String,
}

#[derive(Default)]
struct Script {
    price: i64,
    per_path: HashMap<String, i64>,
    fail: bool,
    calls: Vec<PriceCall>,
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
