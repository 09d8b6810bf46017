//! autocert end to end against Pebble (Let's Encrypt's test ACME server, Debian's `pebble`),
//! started here on loopback with a CA of ours for its own HTTPS (`autocertdirectoryca`) and told
//! to validate against the proxy's ports:
//! - TLS-ALPN-01 on the main listener (in-process proxy): the certificate is issued, verifies
//!   against Pebble's root (`/roots/0` on its management port), is saved 0600, and a forced
//!   renewal swaps it on the cores while a connection opened before stays open and usable;
//! - HTTP-01 on `autocerthttplisten` (the binary): issued with Pebble's TLS-ALPN-01 port pointing
//!   nowhere, then a restart serves the cached certificate without a new order.
//!
//! Skipped with a printed line when `pebble` is not installed, unless `CI` is set (then fail).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use aperture::metrics::Counter;
use aperture::proxy::Routes;
use aperture::runtime::{self, Settings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::support::{self, service, wait_until, Origin, Response};

/// The name certificates are issued for (Pebble resolves it with the system resolver).
const DOMAIN: &str = "localhost";

/// The `pebble` binary, or `None` (skip) outside CI.
fn pebble_bin() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("pebble"))
            .find(|p| p.is_file())
    });
    match found {
        Some(bin) => Some(bin),
        None if std::env::var_os("CI").is_some() => {
            panic!("CI is set but pebble is not installed: the autocert tests need it (scripts/test.sh installs Debian's pebble)")
        }
        None => {
            eprintln!(
                "skipping: pebble is not installed (apt-get install pebble; scripts/test.sh does)"
            );
            None
        }
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running Pebble, killed on drop.
struct Pebble {
    child: Child,
    dir: tempfile::TempDir,
    /// The ACME directory URL.
    directory: String,
    /// The CA of Pebble's own HTTPS (ours), for `autocertdirectoryca`.
    https_ca: PathBuf,
    management: SocketAddr,
}

impl Pebble {
    /// Starts Pebble validating TLS-ALPN-01 on `tls_port` and HTTP-01 on `http_port`.
    fn start(bin: &Path, tls_port: u16, http_port: u16) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        // Pebble's HTTPS: a CA of ours and a leaf for localhost signed by it.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(path("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(path("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();
        let (listen, management) = (free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": path("cert.pem"),
            "privateKey": path("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(path("pebble.json"), config.to_string()).unwrap();
        let log = std::fs::File::create(path("pebble.log")).unwrap();
        let child = Command::new(bin)
            .arg("-config")
            .arg(path("pebble.json"))
            // No artificial validation delays; never reject a good nonce (instant-acme would
            // retry, but the test stays deterministic).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn pebble");
        let pebble = Pebble {
            child,
            directory: format!("https://localhost:{listen}/dir"),
            https_ca: path("ca.pem"),
            management: SocketAddr::from(([127, 0, 0, 1], management)),
            dir,
        };
        let up = |port: u16| TcpStream::connect(("127.0.0.1", port)).is_ok();
        wait_until("pebble listens", Duration::from_secs(20), || {
            up(listen) && up(management)
        });
        pebble
    }

    /// Pebble's issuing root (PEM, from its management endpoint), as trust roots.
    fn issuing_roots(&self) -> Arc<rustls::RootCertStore> {
        let resp = self.management_get("/roots/0");
        assert_eq!(resp.status, 200, "{}", resp.text());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&resp.body) {
            roots.add(cert.unwrap()).unwrap();
        }
        assert_eq!(roots.len(), 1, "one root");
        Arc::new(roots)
    }

    fn management_get(&self, path: &str) -> Response {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.https_ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut conn = TlsConn::open(self.management, Arc::new(roots), &[]);
        conn.request(path)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A verified HTTPS/1.1 connection (SNI `localhost`).
struct TlsConn(BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>);

impl TlsConn {
    fn try_open(
        addr: SocketAddr,
        roots: Arc<rustls::RootCertStore>,
        alpn: &[&[u8]],
    ) -> Result<TlsConn, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let name = ServerName::try_from(DOMAIN).unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| e.to_string())?;
        }
        Ok(TlsConn(BufReader::new(stream)))
    }

    fn open(addr: SocketAddr, roots: Arc<rustls::RootCertStore>, alpn: &[&[u8]]) -> TlsConn {
        Self::try_open(addr, roots, alpn).unwrap_or_else(|e| panic!("TLS to {addr}: {e}"))
    }

    /// The leaf certificate the server showed.
    fn leaf(&self) -> Vec<u8> {
        self.0.get_ref().conn.peer_certificates().unwrap()[0].to_vec()
    }

    fn request(&mut self, path: &str) -> Response {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n");
        self.0.get_mut().write_all(raw.as_bytes()).unwrap();
        support::read_response(&mut self.0, false).expect("response")
    }
}

/// An in-process proxy with `autocert` on `port` (the dev backend, one priced service).
struct AutocertProxy {
    server: Option<runtime::Server>,
    bridge: Option<lnd_bridge::Bridge>,
    autocert: Option<aperture::acme::AutocertService>,
    basedir: tempfile::TempDir,
    addr: SocketAddr,
}

impl AutocertProxy {
    fn start(port: u16, pebble: &Pebble, origin: SocketAddr) -> AutocertProxy {
        let basedir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "listenaddr: \"127.0.0.1:{port}\"\nservername: \"{DOMAIN}\"\nautocert: true\n\
             autocertdirectory: \"{}\"\nautocertdirectoryca: \"{}\"\ndbbackend: sqlite\n\
             ratelimitsteering: off\nauthenticator:\n  network: regtest\n  dev:\n    listenaddr: \"127.0.0.1:0\"\n\
             services:\n{}",
            pebble.directory,
            pebble.https_ca.display(),
            service("svc", origin, "")
        );
        let config = aperture::config::parse(&yaml, "autocert.yaml").expect("config");
        let settings = config.autocert.clone().expect("autocert on");
        let autocert =
            aperture::acme::Autocert::prepare(&settings, basedir.path(), config.listen_addr)
                .expect("autocert prepares");
        let backend = lnd_bridge::BackendConfig::Dev {
            basedir: basedir.path().to_path_buf(),
            wallet_listen: "127.0.0.1:0".parse().unwrap(),
            network: lnd_bridge::Network::Regtest,
        };
        let bridge = lnd_bridge::start(lnd_bridge::BridgeConfig::new(backend)).expect("bridge");
        let master = aperture::store::load_or_create_master_secret(basedir.path()).unwrap();
        let server = runtime::start(Settings {
            cores: 2,
            pin: false,
            listen: config.listen_addr,
            routes: Arc::new(Routes::resolve(&config).expect("routes")),
            master_secret: master,
            bridge: bridge.handle(),
            steer: config.rate_limit_steering,
            legacy_keys: Default::default(),
            revoked: Arc::from(Vec::new()),
            store: None,
            tls: Some(autocert.server_config()),
            payment_secret: None,
            session_holder: None,
            fleet: None,
        })
        .expect("workers");
        let addr = server.local_addr();
        let autocert = autocert.start().expect("autocert starts");
        AutocertProxy {
            server: Some(server),
            bridge: Some(bridge),
            autocert: Some(autocert),
            basedir,
            addr,
        }
    }

    fn autocert(&self) -> &aperture::acme::AutocertService {
        self.autocert.as_ref().unwrap()
    }

    fn server(&self) -> &runtime::Server {
        self.server.as_ref().unwrap()
    }
}

impl Drop for AutocertProxy {
    fn drop(&mut self) {
        if let Some(autocert) = self.autocert.take() {
            autocert.shutdown();
        }
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(2));
        }
        if let Some(bridge) = self.bridge.take() {
            bridge.shutdown();
        }
    }
}

/// Waits until the proxy has installed `n` certificates from Pebble (its log on failure).
fn wait_for_certificates(proxy: &AutocertProxy, pebble: &Pebble, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.autocert().obtained() < n {
        assert!(
            Instant::now() < deadline,
            "no certificate #{n} within 60 s; Pebble's log:\n{}",
            pebble.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn tls_alpn_01_issues_verifies_and_a_renewal_swaps_while_a_connection_stays_open() {
    let Some(bin) = pebble_bin() else { return };
    let origin = Origin::start();
    let port = free_port();
    // Nothing listens on Pebble's HTTP-01 port: only TLS-ALPN-01 on the listener can succeed.
    let pebble = Pebble::start(&bin, port, free_port());
    let proxy = AutocertProxy::start(port, &pebble, origin.addr);
    wait_for_certificates(&proxy, &pebble, 1);
    // Verified against Pebble's root only: this is the issued certificate, not the fallback.
    let roots = pebble.issuing_roots();
    let mut before = TlsConn::open(proxy.addr, roots.clone(), &[b"http/1.1"]);
    let resp = before.request("/paid");
    assert_eq!(resp.status, 402, "{}", resp.text());
    let first = before.leaf();
    // Account and certificate in the basedir, private.
    let dir = proxy.basedir.path().join(aperture::acme::DIR);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(DOMAIN)), 0o600);
    let accounts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".json"))
        .collect();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(mode(&accounts[0]), 0o600);

    // A forced renewal: new handshakes get the new certificate on every core...
    proxy.autocert().renew_now();
    wait_for_certificates(&proxy, &pebble, 2);
    // Steering is off, so the kernel spreads connections over both cores: open them until every
    // core has handshaken at least one since the renewal, each showing the new certificate.
    let accepted = || {
        proxy
            .server()
            .metrics()
            .per_core(Counter::ConnectionsAccepted)
    };
    let start = accepted();
    for attempt in 0.. {
        assert!(attempt < 64, "one core never served: {:?}", accepted());
        let mut after = TlsConn::open(proxy.addr, roots.clone(), &[b"h2", b"http/1.1"]);
        assert_ne!(
            after.leaf(),
            first,
            "a new handshake shows the renewed certificate"
        );
        if after.0.get_ref().conn.alpn_protocol() == Some(b"http/1.1") {
            assert_eq!(after.request("/paid").status, 402);
        }
        if accepted().iter().zip(&start).all(|(now, then)| now > then) {
            break;
        }
    }
    // ...while the connection opened before keeps its session and keeps serving.
    let resp = before.request("/paid");
    assert_eq!(resp.status, 402, "{}", resp.text());
    assert_eq!(before.leaf(), first);
    let saved = std::fs::read(dir.join(DOMAIN)).unwrap();
    let saved_leaf = CertificateDer::pem_slice_iter(&saved)
        .next()
        .unwrap()
        .unwrap();
    assert_ne!(
        saved_leaf.to_vec(),
        first,
        "the renewed certificate is saved"
    );
}

/// The binary's stderr, line by line.
struct Logs(mpsc::Receiver<String>);

impl Logs {
    fn of(child: &mut Child) -> Logs {
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Logs(rx)
    }

    /// Waits for a line containing `part`; every line seen on the way is kept in `seen`.
    fn wait(&self, part: &str, within: Duration, seen: &mut Vec<String>) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) => {
                    seen.push(line.clone());
                    if line.contains(part) {
                        return line;
                    }
                }
                Err(_) => panic!("no log line with {part:?}; seen:\n{}", seen.join("\n")),
            }
        }
    }
}

fn start_binary(config: &Path, basedir: &Path) -> (Child, Logs) {
    let mut child = support::aperture_command()
        .arg("--config")
        .arg(config)
        .arg("--basedir")
        .arg(basedir)
        .args(["--cores", "1", "--no-pin"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn aperture");
    let logs = Logs::of(&mut child);
    (child, logs)
}

#[test]
fn http_01_on_autocerthttplisten_then_a_restart_serves_the_cached_certificate() {
    let Some(bin) = pebble_bin() else { return };
    let origin = Origin::start();
    let (port, http_port) = (free_port(), free_port());
    // Pebble's TLS-ALPN-01 port leads nowhere: only HTTP-01 can succeed.
    let pebble = Pebble::start(&bin, free_port(), http_port);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aperture.yaml");
    let yaml = format!(
        "listenaddr: \"127.0.0.1:{port}\"\nservername: \"{DOMAIN}\"\nautocert: true\n\
         autocertdirectory: \"{}\"\nautocertdirectoryca: \"{}\"\n\
         autocerthttplisten: \"127.0.0.1:{http_port}\"\ndbbackend: sqlite\n\
         authenticator:\n  network: regtest\n  dev:\n    listenaddr: \"127.0.0.1:0\"\n\
         services:\n{}",
        pebble.directory,
        pebble.https_ca.display(),
        service("svc", origin.addr, "")
    );
    std::fs::write(&config, yaml).unwrap();
    let mut seen = Vec::new();
    let (mut child, logs) = start_binary(&config, dir.path());
    let within = Duration::from_secs(60);
    logs.wait("serving the self-signed", within, &mut seen);
    logs.wait("new certificate for localhost", within, &mut seen);
    let roots = pebble.issuing_roots();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = TlsConn::open(addr, roots.clone(), &[b"http/1.1"]);
    assert_eq!(conn.request("/paid").status, 402);
    let issued = conn.leaf();
    // The HTTP-01 listener redirects everything else to HTTPS.
    let resp = support::get(SocketAddr::from(([127, 0, 0, 1], http_port)), "/paid", "");
    assert_eq!(resp.status, 302);
    let location = format!("https://{DOMAIN}:{port}/paid");
    assert_eq!(resp.header("location"), Some(location.as_str()));
    drop(conn);
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());

    // A restart serves the saved certificate at once and orders nothing.
    let mut seen = Vec::new();
    let (mut child, logs) = start_binary(&config, dir.path());
    logs.wait("serving the cached certificate", within, &mut seen);
    logs.wait("aperture listening on https://", within, &mut seen);
    let conn = TlsConn::open(addr, roots, &[b"http/1.1"]);
    assert_eq!(conn.leaf(), issued);
    assert!(
        !seen.iter().any(|l| l.contains("new certificate")),
        "{seen:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
