//! Fleet-wide rate limits (`ratelimitbackend: redis`) with a real `redis-server`: three proxy
//! instances sharing one master secret and one Redis hold a client spread over all of them to
//! its limit; with Redis killed they fall back to per-instance limits and say so in the metric;
//! with Redis back they are fleet-wide again. Each test starts its own `redis-server` on a free
//! loopback port, so that it can kill it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{buy_token, get, service, wait_until, Origin, Proxy};

/// A `redis-server` this test owns (killed on drop).
struct RedisServer {
    bin: String,
    port: u16,
    /// Extra `redis-server` arguments (TLS, users).
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port; `None` (skip) when `redis-server` is not installed, outside
    /// CI only: `scripts/test.sh` installs it and CI must run these tests.
    fn start() -> Option<RedisServer> {
        Self::start_with(Vec::new())
    }

    fn start_with(args: Vec<String>) -> Option<RedisServer> {
        let bin = std::env::var("APERTURE_TEST_REDIS_SERVER")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "redis-server".into());
        let found = Command::new(&bin)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {bin} cannot run: scripts/test.sh installs Debian's redis-server"
            );
            eprintln!("skipping: {bin} not found (scripts/test.sh installs redis-server)");
            return None;
        }
        let mut server = RedisServer {
            bin,
            port: free_port(),
            args,
            child: None,
        };
        server.resume();
        Some(server)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// (Re)starts the server on its port, empty, and waits until it answers.
    fn resume(&mut self) {
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let addr = self.addr();
        wait_until("redis-server answers", Duration::from_secs(10), || {
            ping(addr)
        });
    }

    /// SIGKILL, as a crash or a network cut looks to the proxies.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ping(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    // Any answer will do: with `requirepass` it is `-NOAUTH`, still a server that serves.
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok()
}

fn top(redis: &RedisServer) -> String {
    format!(
        "ratelimitbackend: redis\nredis:\n  address: \"{}\"\n  keyprefix: \"it:\"\n",
        redis.addr()
    )
}

/// Three instances on one master secret (the first one's), 2 cores each.
fn fleet(services: &str, top: &str) -> Vec<Proxy> {
    let first = Proxy::start_with(services, 2, top, 4096);
    let secret = first.master_secret();
    let mut all = vec![first];
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        aperture::store::write_atomically(
            &dir.path().join(aperture::store::MASTER_SECRET_FILE),
            &secret,
            0o600,
        )
        .unwrap();
        all.push(Proxy::start_in(dir, services, 2, top, 4096));
    }
    all
}

fn metric(proxy: &Proxy) -> String {
    let mut out = String::new();
    let stats = proxy
        .fleet
        .as_ref()
        .expect("fleet backend")
        .handle()
        .stats();
    aperture::exposition::render_fleet(&stats, &mut out);
    out
}

/// Sends `n` requests round robin over the instances; returns how many passed (200), and
/// checks that every other answer was a 429.
fn spread(proxies: &[Proxy], n: usize, path: &str, auth: &str) -> usize {
    let header = format!("Authorization: {auth}\r\n");
    let mut passed = 0;
    for i in 0..n {
        let resp = get(proxies[i % proxies.len()].addr, path, &header);
        match resp.status {
            200 => passed += 1,
            429 => assert!(resp.header("retry-after").is_some()),
            other => panic!("request {i}: {other} {}", resp.text()),
        }
    }
    passed
}

const TEN_PER_HOUR: &str =
    "    ratelimits:\n      - requests: 10\n        per: 1h\n        burst: 10\n";

#[test]
fn a_client_spread_over_three_instances_gets_its_limit_once_and_per_instance_without_redis() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let origin = Origin::start();
    let proxies = fleet(&service("svc", origin.addr, TEN_PER_HOUR), &top(&redis));
    for p in &proxies {
        assert!(metric(p).contains("aperture_ratelimit_backend_fleet 1"));
    }
    // One token, bought through the first instance, used through all three: a 30-request burst
    // of a 10-per-hour rule (no refill during the test) passes exactly 10 times (slice 1: no instance holds a token).
    let auth = buy_token(&proxies[0], "/");
    assert_eq!(spread(&proxies, 30, "/x", &auth), 10);

    // Redis killed: every instance notices (its idle check), says so, and limits per instance.
    redis.kill();
    for p in &proxies {
        wait_until(
            "the fleet metric drops to 0",
            Duration::from_secs(10),
            || metric(p).contains("aperture_ratelimit_backend_fleet 0"),
        );
        let m = metric(p);
        assert!(
            !m.contains("aperture_ratelimit_backend_errors_total 0\n"),
            "{m}"
        );
    }
    let fresh = buy_token(&proxies[1], "/");
    // Per instance: 10 on each, so 30 over three, and no more.
    assert_eq!(spread(&proxies, 36, "/x", &fresh), 30);
    assert_eq!(spread(&proxies[..1], 3, "/x", &fresh), 0);

    // Redis back (empty): fleet-wide again, by itself.
    redis.resume();
    for p in &proxies {
        wait_until(
            "the fleet metric is back to 1",
            Duration::from_secs(10),
            || metric(p).contains("aperture_ratelimit_backend_fleet 1"),
        );
    }
    let third = buy_token(&proxies[2], "/");
    assert_eq!(spread(&proxies, 30, "/x", &third), 10);
}

#[test]
fn challenge_minting_limits_hold_across_instances() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let origin = Origin::start();
    let limits = "challengeratelimits:\n  - requests: 5\n    per: 1h\n    burst: 5\n";
    let proxies = fleet(
        &service("svc", origin.addr, ""),
        &format!("{}{limits}", top(&redis)),
    );
    let mut minted = 0;
    for i in 0..15 {
        let resp = get(proxies[i % 3].addr, "/", "");
        match resp.status {
            402 => minted += 1,
            429 => {}
            other => panic!("{other}"),
        }
    }
    assert_eq!(minted, 5);
}

#[test]
fn a_large_burst_is_spent_from_local_slices_within_the_bound() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let origin = Origin::start();
    // Burst 640: slice 20, so most requests never leave the owner core, and a client spread over
    // three instances passes at most 640 + 3 × 20 (what three instances can hold unspent).
    let rule = "    auth: \"off\"\n    ratelimits:\n      - requests: 640\n        per: 1h\n        burst: 640\n";
    let proxies = fleet(&service("free", origin.addr, rule), &top(&redis));
    let start = std::time::Instant::now();
    let passed = spread(&proxies, 800, "/", "");
    // Plus what the bucket earned while the burst ran (640 per hour: one token per 5.6 s).
    let earned = (start.elapsed().as_secs_f64() * 640.0 / 3600.0).ceil() as usize;
    assert!(
        (640 - 3 * 20..=640 + earned).contains(&passed),
        "{passed} passed in {:?}",
        start.elapsed()
    );
    let leases = proxies
        .iter()
        .map(|p| p.fleet.as_ref().unwrap().handle().stats().leases)
        .sum::<u64>();
    eprintln!(
        "burst 640 over three instances: {passed} of 800 passed in {:?}, {leases} lease round trips",
        start.elapsed()
    );
    // Far fewer round trips than requests: one per slice (plus the denials' asks).
    assert!(leases < 200, "{leases} lease round trips for 800 requests");
}

/// A CA and a leaf for `localhost` signed by it, as PEM files in `dir`: (ca, cert, key).
fn tls_files(dir: &std::path::Path, name: &str) -> [std::path::PathBuf; 3] {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = ["ca", "cert", "key"].map(|f| dir.join(format!("{name}-{f}.pem")));
    std::fs::write(&paths[0], ca_cert.pem()).unwrap();
    std::fs::write(&paths[1], leaf.pem()).unwrap();
    std::fs::write(&paths[2], key.serialize_pem()).unwrap();
    paths
}

#[test]
fn tls_and_an_acl_user_are_used_and_a_wrong_ca_or_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key] = tls_files(dir.path(), "server");
    let [other_ca, _, _] = tls_files(dir.path(), "other");
    let tls_port = free_port();
    let args = [
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
        "--user",
        "default",
        "off",
        "--user",
        "fleet",
        "on",
        ">s3cret",
        "~*",
        "+@all",
    ];
    let Some(_redis) = RedisServer::start_with(args.iter().map(|a| a.to_string()).collect()) else {
        return;
    };
    let origin = Origin::start();
    let start = |ca: &std::path::Path, password: &str| {
        let top = format!(
            "ratelimitbackend: redis\nredis:\n  address: \"localhost:{tls_port}\"\n  tls: true\n  tlscafile: \"{}\"\n  username: fleet\n  password: \"{password}\"\n",
            ca.display()
        );
        Proxy::start_with(&service("svc", origin.addr, TEN_PER_HOUR), 1, &top, 4096)
    };
    // The right CA and password: fleet-wide, and leases come from this server.
    let good = start(&ca, "s3cret");
    assert!(metric(&good).contains("aperture_ratelimit_backend_fleet 1"));
    let auth = buy_token(&good, "/");
    assert_eq!(spread(std::slice::from_ref(&good), 12, "/x", &auth), 10);
    assert!(good.fleet.as_ref().unwrap().handle().stats().leases >= 10);
    // A CA that did not sign the server's certificate, or a wrong password: refused, and the
    // instance runs per instance (the first connection attempt has been made when start returns).
    for bad in [start(&other_ca, "s3cret"), start(&ca, "wrong")] {
        let stats = bad.fleet.as_ref().unwrap().handle().stats();
        assert!(!stats.up && stats.errors >= 1, "{stats:?}");
        let auth = buy_token(&bad, "/");
        assert_eq!(spread(std::slice::from_ref(&bad), 12, "/x", &auth), 10);
    }
}
