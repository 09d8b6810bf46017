//! Measures AddInvoice/s through the whole bridge against the in-process fake lnd: crossbeam
//! queue, pump, the tonic client multiplexing calls on one TLS HTTP/2 connection, and the
//! fake answering each call after an artificial latency (5 ms by default, standing in for
//! lnd's own work), so the figure shows how well calls pipeline rather than how fast one is.
//!
//! `cargo run -p lnd-bridge --release --features fake --example lnd_rate -- [total] [window] [delay_ms]`

use std::time::{Duration, Instant};

mod common;

use common::{arg, block_on};
use lnd_bridge::fake::FakeLnd;
use lnd_bridge::{BridgeConfig, BridgeError, Network};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = arg(1, 4_000);
    let window = arg::<usize>(2, 256).max(1);
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
