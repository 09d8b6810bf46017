//! Measures AddInvoice/s through the whole bridge against the in-process fake lnd: crossbeam
//! queue, pump, the tonic client multiplexing calls on one TLS HTTP/2 connection, and the
//! fake answering each call after an artificial latency (5 ms by default, standing in for
//! lnd's own work), so the figure shows how well calls pipeline rather than how fast one is.
//!
//! `cargo run -p lnd-bridge --release --features fake --example lnd_rate -- [total] [window] [delay_ms]`

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use lnd_bridge::fake::FakeLnd;
use lnd_bridge::{BridgeConfig, BridgeError, Network};

fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total = arg(1, 4_000) as usize;
    let window = arg(2, 256).max(1) as usize;
    let delay = Duration::from_millis(arg(3, 5));
    let dir = std::env::temp_dir().join(format!("lnd-rate-{}", std::process::id()));
    let lnd = FakeLnd::start(&dir, Network::Regtest)?;
    lnd.set_delay(delay);
    let bridge = lnd_bridge::start(BridgeConfig::new(lnd.backend_config()))?;
    let handle = bridge.handle();
    // One warm-up call opens the connection, so the figure excludes the TLS handshake.
    block_on(handle.try_create_invoice(1)?).map_err(|_| BridgeError::Closed)??;
    let start = Instant::now();
    let mut done = 0;
    let mut replies = std::collections::VecDeque::with_capacity(window);
    // A sliding window: keep `window` calls in flight, topping up as each one answers.
    while done < total {
        while replies.len() < window && done + replies.len() < total {
            replies.push_back(handle.try_create_invoice(100)?);
        }
        if let Some(r) = replies.pop_front() {
            block_on(r).map_err(|_| BridgeError::Closed)??;
            done += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "lnd AddInvoice via bridge: {done} calls in {secs:.3}s = {:.0}/s (window {window}, \
         fake latency {delay:?}, fake saw {} calls)",
        done as f64 / secs,
        lnd.counters().add_invoice
    );
    bridge.shutdown();
    lnd.shutdown();
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
