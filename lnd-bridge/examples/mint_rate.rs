//! Measures invoices/s through the whole bridge (crossbeam queue, pump, the dev backend signing
//! on its signer threads), driven from plain std threads as the worker cores would drive it.
//!
//! `cargo run -p lnd-bridge --release --example mint_rate -- [total] [window] [callers]`

use std::time::Instant;

mod common;

use common::{arg, block_on};
use lnd_bridge::{BackendConfig, BridgeConfig, BridgeError, Network};

fn main() -> Result<(), BridgeError> {
    let total = arg(1, 200_000);
    let window = arg(2, 512);
    let callers = arg(3, 2).max(1);
    let dir = std::env::temp_dir().join(format!("mint-rate-{}", std::process::id()));
    let bridge = lnd_bridge::start(BridgeConfig::new(BackendConfig::Dev {
        basedir: dir.clone(),
        wallet_listen: "127.0.0.1:0".parse().expect("literal address"),
        network: Network::Regtest,
    }))?;
    let start = Instant::now();
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let handle = bridge.handle();
            let per = total / callers;
            std::thread::spawn(move || -> Result<usize, BridgeError> {
                let mut done = 0;
                while done < per {
                    // Keep `window` calls in flight per caller, then collect them.
                    let n = window.min(per - done);
                    let replies: Vec<_> = (0..n)
                        .map(|_| handle.try_create_invoice(100))
                        .collect::<Result<_, _>>()?;
                    for r in replies {
                        block_on(r).map_err(|_| BridgeError::Closed)??;
                    }
                    done += n;
                }
                Ok(done)
            })
        })
        .collect();
    let mut made = 0;
    for t in threads {
        made += t
            .join()
            .map_err(|_| BridgeError::Runtime("caller panicked".into()))??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "bridge mint: {made} invoices in {secs:.3}s = {:.0}/s ({callers} callers, window {window})",
        made as f64 / secs
    );
    bridge.shutdown();
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
