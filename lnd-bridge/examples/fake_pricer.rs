//! The in-process fake pricer (`lnd_bridge::fake::pricer`) as a process, for benchmarks of
//! metered services (`benches/metering.sh`): prices everything at the first argument (default
//! 10 sats), admits every metered request, takes every usage report, prints its address and
//! runs until killed. Never for production.

use lnd_bridge::fake::pricer::FakePricer;

fn main() {
    let price = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(10);
    let pricer = FakePricer::start(price).expect("start the fake pricer");
    println!("{}", pricer.addr());
    loop {
        std::thread::park();
    }
}
