//! A fleet: proxy processes that share a master secret and one PostgreSQL act as one; and a
//! proxy killed with SIGKILL under load loses no token it sold.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::{aperture_command, challenge, get, pay, wait_until, Origin};

/// A proxy process started from a config file, with its logged addresses.
pub(crate) struct Node {
    child: Child,
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) wallet: std::net::SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start(config: &Path, basedir: &Path) -> Node {
    let mut child = aperture_command()
        .args([
            "--config",
            config.to_str().unwrap(),
            "--basedir",
            basedir.to_str().unwrap(),
            "--cores",
            "2",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let grab = |line: &str, marker: &str| -> Option<std::net::SocketAddr> {
        let rest = &line[line.find(marker)? + marker.len()..];
        rest.split(|c: char| c.is_whitespace() || c == '"')
            .next()?
            .parse()
            .ok()
    };
    let (mut addr, mut wallet) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while addr.is_none() || wallet.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the proxy logged its addresses");
        addr = addr.or_else(|| grab(&line, "aperture listening on http://"));
        wallet = wallet.or_else(|| grab(&line, "wallet at http://"));
    }
    Node {
        child,
        addr: addr.unwrap(),
        wallet: wallet.unwrap(),
    }
}

pub(crate) fn write_config(
    dir: &Path,
    origin: std::net::SocketAddr,
    db: &str,
) -> std::path::PathBuf {
    let path = dir.join("aperture.yaml");
    let yaml = format!(
        "listenaddr: \"127.0.0.1:0\"\ninsecure: true\n{db}\nauthenticator:\n  network: regtest\n  dev:\n    listenaddr: \"127.0.0.1:0\"\n\
         services:\n  - name: svc\n    hostregexp: \".*\"\n    address: \"{origin}\"\n    protocol: http\n    price: 10\n"
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

pub(crate) fn token_id_of(mac: &str) -> String {
    let m = aperture::l402::macaroon_from_base64(mac).unwrap();
    hex::encode(
        aperture::l402::Identifier::decode(&m.identifier)
            .unwrap()
            .token_id,
    )
}

#[test]
fn two_proxies_on_one_postgres_act_as_one() {
    let Some(url) = crate::store::pg_url() else {
        return;
    };
    // postgres://USER@HOST:PORT/DB?…
    let rest = url.trim_start_matches("postgres://");
    let (user, rest) = rest.split_once('@').unwrap();
    let (hostport, rest) = rest.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let dbname = rest.split('?').next().unwrap();
    let db = format!(
        "dbbackend: postgres\npostgres:\n  host: \"{host}\"\n  port: {port}\n  user: \"{user}\"\n  password: \"\"\n  dbname: \"{dbname}\"\n  requiressl: false"
    );
    let origin = Origin::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // One master secret for the fleet (an operator copies `master.secret` to every instance).
    let secret = aperture::store::load_or_create_master_secret(dir_a.path()).unwrap();
    aperture::store::write_atomically(
        &dir_b.path().join(aperture::store::MASTER_SECRET_FILE),
        &secret,
        0o600,
    )
    .unwrap();
    let a = start(&write_config(dir_a.path(), origin.addr, &db), dir_a.path());
    let b = start(&write_config(dir_b.path(), origin.addr, &db), dir_b.path());
    // Minted and paid through A, accepted by B with no lookup.
    let (mac, invoice) = challenge(&get(a.addr, "/", ""));
    let preimage = pay(a.wallet, &invoice);
    let auth = format!("Authorization: L402 {mac}:{preimage}\r\n");
    assert_eq!(get(b.addr, "/x", &auth).status, 200);
    // Revoked through A's database, rejected by B.
    let id = token_id_of(&mac);
    let config_a = dir_a.path().join("aperture.yaml");
    let out = aperture_command()
        .args([
            "token",
            "revoke",
            &id,
            "--config",
            config_a.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked = Instant::now();
    wait_until(
        "B to reject the revoked token",
        Duration::from_secs(3),
        || (0..4).all(|_| get(b.addr, "/", &auth).status == 402),
    );
    eprintln!(
        "revocation reached the other instance in {:?}",
        revoked.elapsed()
    );
    // The shared ledger shows the challenge, settled after the payment.
    wait_until(
        "the ledger to show the settlement",
        Duration::from_secs(5),
        || {
            let out = aperture_command()
                .args(["token", "show", &id, "--config", config_a.to_str().unwrap()])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("settled at:")
        },
    );
}

#[test]
fn sigkill_under_load_loses_no_sold_token_and_tears_no_ledger_row() {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "dbbackend: sqlite\nsqlite:\n  databasefilename: \"{}\"",
        dir.path().join("ledger.db").display()
    );
    let config = write_config(dir.path(), origin.addr, &db);
    let node = start(&config, dir.path());
    let mut sold = Vec::new();
    for _ in 0..20 {
        let (mac, invoice) = challenge(&get(node.addr, "/", ""));
        sold.push(format!(
            "Authorization: L402 {mac}:{}\r\n",
            pay(node.wallet, &invoice)
        ));
    }
    // Load (more challenges being minted and recorded) while the process is killed.
    let addr = node.addr;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let load = std::thread::spawn(move || {
        for _ in 0..200 {
            if std::net::TcpStream::connect(addr).is_err() {
                break;
            }
            let _ = std::panic::catch_unwind(|| get(addr, "/", ""));
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    wait_until("load to run", Duration::from_secs(10), || {
        sent.load(std::sync::atomic::Ordering::Relaxed) >= 10
    });
    let mut node = node;
    node.child.kill().unwrap(); // SIGKILL
    let _ = node.child.wait();
    let _ = load.join();
    let node = start(&config, dir.path());
    for auth in &sold {
        assert_eq!(
            get(node.addr, "/", auth).status,
            200,
            "a token sold before the kill"
        );
    }
    drop(node);
    let out = aperture_command()
        .args([
            "token",
            "list",
            "--limit",
            "100000",
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    for auth in &sold {
        let mac = auth
            .trim_start_matches("Authorization: L402 ")
            .split(':')
            .next()
            .unwrap();
        assert!(
            listing.contains(&token_id_of(mac)),
            "ledger row for a sold token:\n{listing}"
        );
    }
}
