//! PostgreSQL over TLS (`postgres.requiressl: true`, `tlscertpath`, `tlsverify`): the store, the
//! proxy and the `token` command against a server with `ssl=on` and a test CA; a wrong CA, a
//! wrong host name and a server without TLS each refused with an error that says what to fix.
//!
//! Needs `APERTURE_TEST_PG_TLS` (scripts/test.sh turns TLS on in its PostgreSQL and sets it to
//! `postgres://USER@127.0.0.1:PORT/DB?sslmode=verify-full&sslrootcert=CA.pem`); the tests skip
//! with a printed reason only when it is unset outside CI, and fail in CI.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aperture::config::{self, Db};
use aperture::store::postgres::PgTarget;
use aperture::store::{self, Challenge, Key32, TokenQuery};

use crate::support::{aperture_command, challenge, get, pay, wait_until, Origin};

/// The TLS server: host, port, user, database and the CA file that signed its certificate.
struct TlsServer {
    /// `APERTURE_TEST_PG_TLS` itself.
    url: String,
    host: String,
    port: u16,
    user: String,
    dbname: String,
    ca: PathBuf,
}

fn tls_server() -> Option<TlsServer> {
    let url = match std::env::var("APERTURE_TEST_PG_TLS") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but APERTURE_TEST_PG_TLS is not: PostgreSQL with TLS must run for these tests (scripts/test.sh starts one)")
        }
        _ => {
            eprintln!("skipping: APERTURE_TEST_PG_TLS is unset (scripts/test.sh starts a PostgreSQL with TLS and sets it)");
            return None;
        }
    };
    // postgres://USER@HOST:PORT/DB?…&sslrootcert=PATH
    let rest = url.trim_start_matches("postgres://");
    let (user, rest) = rest.split_once('@').unwrap();
    let (hostport, rest) = rest.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let (dbname, query) = rest.split_once('?').unwrap();
    let ca = query
        .split('&')
        .find_map(|p| p.strip_prefix("sslrootcert="))
        .expect("sslrootcert in APERTURE_TEST_PG_TLS");
    Some(TlsServer {
        url: url.clone(),
        host: host.into(),
        port: port.parse().unwrap(),
        user: user.into(),
        dbname: dbname.into(),
        ca: ca.into(),
    })
}

impl TlsServer {
    /// The config's database section; `extra` is added under `postgres:`.
    fn yaml(&self, host: &str, extra: &str) -> String {
        format!(
            "dbbackend: postgres\npostgres:\n  host: \"{host}\"\n  port: {}\n  user: \"{}\"\n  password: \"\"\n  dbname: \"{}\"\n  requiressl: true\n{extra}",
            self.port, self.user, self.dbname
        )
    }

    fn with_ca(&self, ca: &Path) -> String {
        self.yaml(
            &self.host,
            &format!("  tlscertpath: \"{}\"\n", ca.display()),
        )
    }
}

fn db_of(db_yaml: &str) -> Db {
    let yaml = format!("listenaddr: \":1\"\n{db_yaml}\nauthenticator:\n  disable: true\n");
    config::parse(&yaml, "t").unwrap().db
}

fn pg_of(db: &Db) -> &config::Postgres {
    match db {
        Db::Postgres(pg) => pg,
        other => panic!("{other:?}"),
    }
}

/// A CA the server has never heard of.
fn other_ca(dir: &Path) -> PathBuf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let path = dir.join("other-ca.pem");
    std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
    path
}

fn open_err(db: &Db) -> String {
    match store::open(db) {
        Ok(_) => panic!("the connection was expected to fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_store_works_over_verified_tls() {
    let Some(server) = tls_server() else { return };
    let db = db_of(&server.with_ca(&server.ca));
    // The connection really is encrypted.
    let mut client = PgTarget::from_config(pg_of(&db))
        .unwrap()
        .connect()
        .unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(ssl, "pg_stat_ssl says the session is not encrypted");
    let mut s = store::open(&db).unwrap();
    let (id, hash): (Key32, Key32) = (rand::random(), rand::random());
    s.record_challenge(&Challenge {
        token_id: id,
        payment_hash: hash,
        service: "svc".into(),
        price_sat: 5,
        created_at: 1_700_000_000,
    })
    .unwrap();
    assert!(s.revoke(id).unwrap());
    let rows = s
        .list_tokens(&TokenQuery {
            token_id: Some(id),
            limit: 0,
        })
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].revoked_at.is_some());
    // `tlsverify: ca` checks the chain only, and still encrypts.
    let db = db_of(&server.yaml(
        &server.host,
        &format!(
            "  tlscertpath: \"{}\"\n  tlsverify: ca\n",
            server.ca.display()
        ),
    ));
    assert!(store::open(&db).unwrap().revoked_at(id).unwrap().is_some());
    // `aperture import --from-postgres` reads Go's database over TLS from a libpq URL.
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS secrets (id BIGSERIAL PRIMARY KEY, hash BYTEA UNIQUE NOT NULL, \
             secret BYTEA UNIQUE NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT now())",
        )
        .unwrap();
    let (hash, secret): (Key32, Key32) = (rand::random(), rand::random());
    client
        .execute(
            "INSERT INTO secrets (hash, secret) VALUES ($1, $2)",
            &[&&hash[..], &&secret[..]],
        )
        .unwrap();
    store::import(s.as_mut(), store::ImportSource::Postgres(&server.url)).unwrap();
    assert_eq!(s.legacy_root_key(&hash).unwrap(), Some(secret));
}

#[test]
fn a_wrong_ca_is_refused_naming_the_ca_file_and_the_host() {
    let Some(server) = tls_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let wrong = other_ca(dir.path());
    let e = open_err(&db_of(&server.with_ca(&wrong)));
    let at = format!("{}:{}", server.host, server.port);
    assert!(
        e.contains(&at) && e.contains(&wrong.display().to_string()) && e.contains("not trusted"),
        "{e}"
    );
    // No CA file: the web PKI roots do not know the test CA either, and the error says so.
    let e = open_err(&db_of(&server.yaml(&server.host, "")));
    assert!(
        e.contains("web PKI roots") && e.contains("tlscertpath"),
        "{e}"
    );
    // The proxy does not start on it, and says why.
    let origin = Origin::start();
    let yaml_path = crate::fleet::write_config(dir.path(), origin.addr, &server.with_ca(&wrong));
    let out = aperture_command()
        .args(["--config", yaml_path.to_str().unwrap()])
        .args(["--basedir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&wrong.display().to_string()) && stderr.contains(&at),
        "{stderr}"
    );
}

#[test]
fn a_host_name_outside_the_certificate_is_refused_unless_tlsverify_is_ca() {
    let Some(server) = tls_server() else { return };
    // The test server's certificate holds IP 127.0.0.1 only; `localhost` reaches it too.
    if server.host != "127.0.0.1" {
        eprintln!("skipping: the TLS server is not on 127.0.0.1");
        return;
    }
    let ca = format!("  tlscertpath: \"{}\"\n", server.ca.display());
    let e = open_err(&db_of(&server.yaml("localhost", &ca)));
    assert!(
        e.contains("not valid for the host name") && e.contains("tlsverify: ca"),
        "{e}"
    );
    let db = db_of(&server.yaml("localhost", &format!("{ca}  tlsverify: ca\n")));
    store::open(&db).unwrap();
}

#[test]
fn requiressl_against_a_server_without_tls_is_a_clear_error() {
    let Some(server) = tls_server() else { return };
    // A fake server that answers PostgreSQL's SSLRequest with 'N' (no TLS), as one with
    // ssl=off does.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = [0u8; 8];
        conn.read_exact(&mut request).unwrap();
        assert_eq!(&request[4..], &[0x04, 0xd2, 0x16, 0x2f], "an SSLRequest");
        conn.write_all(b"N").unwrap();
    });
    let ca = server.ca.clone();
    let yaml = TlsServer { port, ..server }.with_ca(&ca);
    let e = open_err(&db_of(&yaml));
    fake.join().unwrap();
    assert!(
        e.contains("does not accept TLS") && e.contains(&format!("127.0.0.1:{port}")),
        "{e}"
    );
}

/// The proxy on a TLS database: a token bought through it is in the ledger the `token`
/// command reads over TLS, and a revoke through that command reaches the proxy.
#[test]
fn the_proxy_and_the_token_command_work_over_tls() {
    let Some(server) = tls_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start();
    let config = crate::fleet::write_config(dir.path(), origin.addr, &server.with_ca(&server.ca));
    let node = crate::fleet::start(&config, dir.path());
    let (mac, invoice) = challenge(&get(node.addr, "/", ""));
    let preimage = pay(node.wallet, &invoice);
    let auth = format!("Authorization: L402 {mac}:{preimage}\r\n");
    assert_eq!(get(node.addr, "/x", &auth).status, 200);
    let id = crate::fleet::token_id_of(&mac);
    let token = |args: &[&str]| {
        let out = aperture_command()
            .arg("token")
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    wait_until("the ledger row over TLS", Duration::from_secs(5), || {
        token(&["show", &id]).contains("settled at:")
    });
    assert!(token(&["revoke", &id]).contains(&format!("revoked {id}")));
    wait_until(
        "the proxy to reject the revoked token",
        Duration::from_secs(3),
        || (0..4).all(|_| get(node.addr, "/", &auth).status == 402),
    );
}
