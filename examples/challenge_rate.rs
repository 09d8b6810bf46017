//! How many 402 challenges per second the proxy mints when every LND `AddInvoice` takes 5 ms:
//! the in-process fake LND (real gRPC client, TLS, macaroon) with a delay, the proxy with
//! `--cores 1`, and 128 keep-alive clients asking for a priced resource for 5 seconds.
//!
//!     cargo run --release --example challenge_rate [-- DELAY_MS CLIENTS SECONDS]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aperture::proxy::Routes;
use aperture::runtime::{self, Settings};
use lnd_bridge::fake::FakeLnd;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let delay_ms = args.first().copied().unwrap_or(5);
    let clients = args.get(1).copied().unwrap_or(128) as usize;
    let seconds = args.get(2).copied().unwrap_or(5);
    let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lnd_dir = tempfile::tempdir().unwrap();
    let fake = FakeLnd::start(lnd_dir.path(), lnd_bridge::Network::Regtest).unwrap();
    fake.set_delay(Duration::from_millis(delay_ms));
    let basedir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "listenaddr: \"127.0.0.1:0\"\ninsecure: true\ndbbackend: sqlite\nauthenticator:\n  dev: {{}}\nservices:\n  - name: svc\n    hostregexp: \".*\"\n    address: \"{}\"\n    protocol: http\n    price: 10\n",
        origin.local_addr().unwrap()
    );
    let config = aperture::config::parse(&yaml, "bench.yaml").unwrap();
    let bridge = lnd_bridge::start(lnd_bridge::BridgeConfig::new(fake.backend_config())).unwrap();
    let server = runtime::start(Settings {
        cores: 1,
        pin: false,
        listen: config.listen_addr,
        routes: Arc::new(Routes::resolve(&config).unwrap()),
        master_secret: aperture::store::load_or_create_master_secret(basedir.path()).unwrap(),
        bridge: bridge.handle(),
        steer: false,
        legacy_keys: Default::default(),
        revoked: Arc::from(Vec::new()),
        store: None,
        tls: None,
        payment_secret: None,
        session_holder: None,
        fleet: None,
    })
    .unwrap();
    let addr = server.local_addr();
    let (count, other, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (count, other, stop) = (count.clone(), other.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut conn = BufReader::new(TcpStream::connect(addr).unwrap());
                while !stop.load(Ordering::Relaxed) {
                    conn.get_mut()
                        .write_all(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
                        .unwrap();
                    match read_status(&mut conn) {
                        402 => count.fetch_add(1, Ordering::Relaxed),
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let minted = count.load(Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    println!(
        "{delay_ms} ms per AddInvoice, {clients} clients, --cores 1: {minted} challenges in {elapsed:.1} s = {:.0} challenges/s ({} other answers)",
        minted as f64 / elapsed,
        other.load(Ordering::Relaxed)
    );
    server.shutdown(Duration::from_secs(1));
    bridge.shutdown();
}

fn read_status(conn: &mut BufReader<TcpStream>) -> u16 {
    let mut status = 0;
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).unwrap_or(0) == 0 {
            return 0;
        }
        if status == 0 {
            status = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        } else if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        } else if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    let _ = conn.read_exact(&mut body);
    status
}
