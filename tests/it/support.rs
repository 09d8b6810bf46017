//! Test support: an in-process fake origin, an in-process proxy (config → routes → bridge →
//! workers, all on port 0), a small blocking HTTP/1.1 client, and helpers for the 402 → pay →
//! retry dance. Waits are conditions with deadlines, never bare sleeps.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use aperture::proxy::Routes;
use aperture::runtime::{self, Server, Settings};

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive client connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        Conn::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    pub fn from_stream(stream: TcpStream) -> Conn {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Conn {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.reader.get_mut().write_all(raw).expect("write request");
    }

    /// Sends a request and reads one response (for a HEAD request pass `head = true`).
    pub fn request(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.read_response(false)
    }

    pub fn read_response(&mut self, head_only: bool) -> Response {
        read_response(&mut self.reader, head_only).expect("read response")
    }

    /// Whether the server closed the connection (reads EOF).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }
}

/// Reads one response from `r`.
pub fn read_response(r: &mut impl BufRead, head_only: bool) -> std::io::Result<Response> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.trim().to_string()))
        .collect();
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(resp);
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        resp.body = read_chunked(r)?;
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().expect("content-length");
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        resp.body = body;
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

fn read_chunked(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
        if size == 0 {
            // trailers until the empty line
            loop {
                let mut t = String::new();
                r.read_line(&mut t)?;
                if t == "\r\n" || t.is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
    }
}

/// One request on a fresh connection.
pub fn get(addr: SocketAddr, path: &str, extra_headers: &str) -> Response {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra_headers}\r\n");
    Conn::open(addr).request(raw.as_bytes())
}

/// Polls `cond` until it holds or the deadline passes.
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A fake origin that records what it saw. Paths:
/// `/echo` answers with the request head and body; `/big?n=N` streams N bytes;
/// `/chunked` answers with a chunked body; `/hold` waits until released; anything else a
/// short text naming the path.
pub struct Origin {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub held: Arc<(Mutex<(usize, bool)>, Condvar)>,
}

impl Origin {
    pub fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let held = Arc::new((Mutex::new((0usize, false)), Condvar::new()));
        let (h, hd) = (hits.clone(), held.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (h, hd) = (h.clone(), hd.clone());
                std::thread::spawn(move || origin_conn(stream, h, hd));
            }
        });
        Origin { addr, hits, held }
    }

    /// Number of requests parked at `/hold`.
    pub fn holding(&self) -> usize {
        self.held.0.lock().unwrap().0
    }

    /// Lets every `/hold` request answer.
    pub fn release(&self) {
        let (m, c) = &*self.held;
        m.lock().unwrap().1 = true;
        c.notify_all();
    }
}

fn origin_conn(
    stream: TcpStream,
    hits: Arc<AtomicUsize>,
    held: Arc<(Mutex<(usize, bool)>, Condvar)>,
) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let text = String::from_utf8_lossy(&head).into_owned();
        let target = text.split(' ').nth(1).unwrap_or("/").to_string();
        let lower = text.to_ascii_lowercase();
        let body = if lower.contains("transfer-encoding: chunked") {
            read_chunked(&mut reader).unwrap_or_default()
        } else if let Some(i) = lower.find("content-length:") {
            let n: usize = lower[i + 15..]
                .split("\r\n")
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let mut b = vec![0u8; n];
            if reader.read_exact(&mut b).is_err() {
                return;
            }
            b
        } else {
            Vec::new()
        };
        let out = reader.get_mut();
        let ok = if target == "/echo" {
            let mut payload = head.clone();
            payload.extend_from_slice(&body);
            write_fixed(out, &payload)
        } else if let Some(n) = target.strip_prefix("/big?n=") {
            write_big(out, n.parse().unwrap())
        } else if target == "/chunked" {
            out.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
                .is_ok()
        } else if target == "/hold" {
            let (m, c) = &*held;
            let mut g = m.lock().unwrap();
            g.0 += 1;
            while !g.1 {
                g = c.wait(g).unwrap();
            }
            drop(g);
            write_fixed(out, b"released")
        } else if target == "/www-auth" {
            out.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\n\r\n")
                .is_ok()
        } else {
            write_fixed(out, format!("origin saw {target}").as_bytes())
        };
        if !ok {
            return;
        }
    }
}

fn write_fixed(out: &mut TcpStream, body: &[u8]) -> bool {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes()).is_ok() && out.write_all(body).is_ok()
}

fn write_big(out: &mut TcpStream, n: usize) -> bool {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
    if out.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let chunk = vec![b'x'; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        if out.write_all(&chunk[..k]).is_err() {
            return false;
        }
        left -= k;
    }
    true
}

/// An in-process proxy with the dev bridge.
pub struct Proxy {
    pub addr: SocketAddr,
    pub wallet: SocketAddr,
    pub server: Option<Server>,
    pub bridge: Option<lnd_bridge::Bridge>,
    pub basedir: tempfile::TempDir,
    /// The store thread, started when the config turns the Payment scheme on (its claims need
    /// the database).
    pub store: Option<aperture::store::StoreService>,
    /// The fleet rate-limit thread, when the config says `ratelimitbackend: redis`.
    pub fleet: Option<aperture::fleet::Fleet>,
}

impl Proxy {
    /// Starts a proxy whose config has `services_yaml` under `services:`.
    pub fn start(services_yaml: &str, cores: usize) -> Proxy {
        Self::start_with(services_yaml, cores, "", 4096)
    }

    pub fn start_with(services_yaml: &str, cores: usize, top: &str, queue: usize) -> Proxy {
        Self::start_in(
            tempfile::tempdir().unwrap(),
            services_yaml,
            cores,
            top,
            queue,
        )
    }

    /// Starts a proxy on an existing basedir (to restart over the same state).
    pub fn start_in(
        basedir: tempfile::TempDir,
        services_yaml: &str,
        cores: usize,
        top: &str,
        queue: usize,
    ) -> Proxy {
        let backend = lnd_bridge::BackendConfig::Dev {
            basedir: basedir.path().to_path_buf(),
            wallet_listen: "127.0.0.1:0".parse().unwrap(),
            network: lnd_bridge::Network::Regtest,
        };
        Self::start_on(basedir, backend, services_yaml, cores, top, queue)
    }

    /// Starts a proxy whose bridge drives `backend` (e.g. a fake LND).
    pub fn start_on(
        basedir: tempfile::TempDir,
        backend: lnd_bridge::BackendConfig,
        services_yaml: &str,
        cores: usize,
        top: &str,
        queue: usize,
    ) -> Proxy {
        // `top` may bring its own authenticator block; otherwise the dev backend is configured.
        let authenticator = if top.contains("authenticator:") {
            ""
        } else {
            "authenticator:\n  network: regtest\n  dev:\n    listenaddr: \"127.0.0.1:0\"\n"
        };
        // `top` may choose TLS (`insecure: false`); plaintext otherwise.
        let insecure = if top.contains("insecure:") {
            ""
        } else {
            "insecure: true\n"
        };
        // `top` may choose the database; SQLite otherwise.
        let db = if top.contains("dbbackend:") {
            ""
        } else {
            "dbbackend: sqlite\n"
        };
        let yaml = format!(
            "listenaddr: \"127.0.0.1:0\"\n{insecure}{db}{top}\n\
             {authenticator}services:\n{services_yaml}"
        );
        let config = aperture::config::parse(&yaml, "test.yaml").expect("config");
        let routes = Routes::resolve(&config).expect("routes");
        let master = aperture::store::load_or_create_master_secret(basedir.path()).unwrap();
        let tls = (!config.insecure).then(|| {
            let server_name = config.server_name.as_deref();
            aperture::tls::load_or_create(basedir.path(), server_name)
                .expect("tls")
                .config
        });
        let bridge_cfg = lnd_bridge::BridgeConfig {
            queue_capacity: queue,
            ..lnd_bridge::BridgeConfig::new(backend)
        };
        let bridge = lnd_bridge::start(bridge_cfg).expect("bridge");
        let holder = aperture::store::load_or_create_instance_id(&config.basedir).expect("id");
        let (mut store, payment_secret) = match config.authenticator.mpp {
            Some(_) => (
                Some(aperture::store::start(&config.db, &bridge.handle(), &holder).expect("store")),
                Some(aperture::store::load_mpp_secret(&config).expect("mpp secret")),
            ),
            None => (None, None),
        };
        // A metered service keeps undelivered usage in the database, as `aperture` does.
        let metered = config
            .services
            .iter()
            .any(|s| s.dynamic_price.as_ref().is_some_and(|d| d.metered));
        // So does the built-in meter's balances.
        let builtin = config.services.iter().any(|s| s.meter.is_some());
        if (metered || builtin) && store.is_none() {
            store =
                Some(aperture::store::start(&config.db, &bridge.handle(), &holder).expect("store"));
        }
        if let Some(store) = store.as_ref().filter(|_| metered) {
            store.keep_usage(&bridge.handle());
        }
        let sessions_on = config
            .authenticator
            .mpp
            .as_ref()
            .is_some_and(|m| m.sessions.is_some());
        let fleet = match &config.rate_limit_backend {
            aperture::config::RateLimitBackend::Redis(r) => {
                Some(aperture::fleet::start(r).expect("fleet"))
            }
            aperture::config::RateLimitBackend::Local => None,
        };
        let server = runtime::start(Settings {
            cores,
            pin: false,
            listen: config.listen_addr,
            routes: Arc::new(routes),
            master_secret: master,
            bridge: bridge.handle(),
            steer: config.rate_limit_steering,
            legacy_keys: Default::default(),
            revoked: Arc::from(Vec::new()),
            store: store.as_ref().map(|s| s.handle()),
            tls,
            payment_secret,
            session_holder: sessions_on.then_some(holder),
            fleet: fleet.as_ref().map(|f| f.handle()),
        })
        .expect("workers");
        Proxy {
            addr: server.local_addr(),
            // A non-dev backend has no wallet; tests that need one use the dev backend.
            wallet: bridge
                .wallet_addr()
                .unwrap_or_else(|| "127.0.0.1:9".parse().unwrap()),
            server: Some(server),
            bridge: Some(bridge),
            basedir,
            store,
            fleet,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    pub fn bridge(&self) -> &lnd_bridge::Bridge {
        self.bridge.as_ref().unwrap()
    }

    /// Stops the proxy and hands back its basedir.
    pub fn stop(mut self) -> tempfile::TempDir {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(2));
        }
        if let Some(bridge) = self.bridge.take() {
            bridge.shutdown();
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.basedir, dir)
    }

    pub fn master_secret(&self) -> [u8; 32] {
        aperture::store::load_or_create_master_secret(self.basedir.path()).unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(2));
        }
        if let Some(bridge) = self.bridge.take() {
            bridge.shutdown();
        }
    }
}

/// A service block for `Proxy::start`.
pub fn service(name: &str, origin: SocketAddr, extra: &str) -> String {
    format!(
        "  - name: \"{name}\"\n    hostregexp: \".*\"\n    address: \"{origin}\"\n    protocol: http\n    price: 10\n{extra}"
    )
}

/// The macaroon and invoice of the L402 challenge field.
pub fn challenge(resp: &Response) -> (String, String) {
    let field = resp
        .all("www-authenticate")
        .into_iter()
        .find(|v| v.starts_with("L402 "))
        .expect("an L402 challenge");
    let grab = |key: &str| {
        let start = field.find(&format!("{key}=\"")).expect(key) + key.len() + 2;
        let end = start + field[start..].find('"').unwrap();
        field[start..end].to_string()
    };
    (grab("macaroon"), grab("invoice"))
}

/// Pays `invoice` at the dev wallet; returns the preimage hex.
pub fn pay(wallet: SocketAddr, invoice: &str) -> String {
    let body = format!("{{\"invoice\": \"{invoice}\"}}");
    let raw = format!(
        "POST /pay HTTP/1.1\r\nHost: wallet\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = Conn::open(wallet).request(raw.as_bytes());
    assert_eq!(resp.status, 200, "pay: {}", resp.text());
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    v["preimage"].as_str().unwrap().to_string()
}

/// Runs 402 → pay and returns the `Authorization` value of a paid token.
pub fn buy_token(proxy: &Proxy, path: &str) -> String {
    let resp = get(proxy.addr, path, "");
    assert_eq!(resp.status, 402, "{}", resp.text());
    let (mac, invoice) = challenge(&resp);
    let preimage = pay(proxy.wallet, &invoice);
    format!("L402 {mac}:{preimage}")
}

/// The `aperture` binary with `HOME` in a fresh temporary directory, so that nothing a test
/// starts reads or writes the real `~/.aperture` (the default database lives there).
pub fn aperture_command() -> std::process::Command {
    let home = tempfile::tempdir().expect("temp home").keep();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_aperture"));
    cmd.env("HOME", home);
    cmd
}

/// A child process that is killed (and reaped) when dropped, so a failing test leaves none
/// running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `yaml` to `dir/aperture.yaml` and starts the binary on it (`--cores cores`, info
/// logs), then reads its log until each of `markers` has been seen on a line, within `within`.
/// Returns the process and, for each marker, the address after `http://` on its line. The
/// process is killed when an address does not come in time.
pub fn spawn_logging_addresses(
    dir: &std::path::Path,
    yaml: &str,
    cores: usize,
    markers: &[&str],
    within: Duration,
) -> (KillOnDrop, Vec<SocketAddr>) {
    let config = dir.join("aperture.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut child = KillOnDrop(
        aperture_command()
            .arg("--config")
            .arg(&config)
            .arg("--basedir")
            .arg(dir)
            .args(["--cores", &cores.to_string()])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn aperture"),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Drains the log for the whole life of the process, so it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut addrs: Vec<Option<SocketAddr>> = vec![None; markers.len()];
    let deadline = Instant::now() + within;
    while addrs.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("aperture did not log all of {markers:?}"));
        let Some(i) = markers.iter().position(|m| line.contains(m)) else {
            continue;
        };
        addrs[i] = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
    }
    (child, addrs.into_iter().flatten().collect())
}

/// The routing snapshot of `services_yaml` (a `services:` list), resolved as a SIGHUP reload
/// would, for tests that hand it to running cores.
pub fn reload_routes(services_yaml: &str) -> Routes {
    let yaml = format!(
        "listenaddr: \"127.0.0.1:0\"\ninsecure: true\ndbbackend: sqlite\nauthenticator:\n  dev: {{}}\nservices:\n{services_yaml}"
    );
    Routes::resolve(&aperture::config::parse(&yaml, "reload.yaml").expect("config"))
        .expect("routes")
}

/// Whether something still accepts on `addr`. A connect to a closed port in the ephemeral range
/// can succeed against itself (TCP simultaneous open picks the same port as its source): that
/// socket is its own peer and is not a listener.
pub fn listening(addr: SocketAddr) -> bool {
    match TcpStream::connect(addr) {
        Err(_) => false,
        Ok(stream) => stream.local_addr().ok() != stream.peer_addr().ok(),
    }
}

/// Whether `python3 <script> check` succeeds (a test script that needs Python h2 4.2.0):
/// false, with a note, outside CI when it does not; a failure in CI.
pub fn python_h2_script_runs(script: &std::path::Path, skipping: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .arg(script)
        .arg("check")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with h2 4.2.0 is required in CI: run tests/py/setup.sh"
        );
        eprintln!("python3 h2 4.2.0 missing: skipping {skipping}");
    }
    ok
}
