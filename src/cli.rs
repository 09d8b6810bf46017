//! Command line (clap derive) and the `--check-config` action. Parses arguments only: it binds no
//! ports and starts no threads. `main.rs` wires [`Cli`] to the runtime and to [`crate::client`].

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::client::FetchOptions;
use crate::config::{self, Config};

const LONG_ABOUT: &str = "\
aperture is an L402 reverse proxy: it puts a Lightning paywall in front of HTTP and gRPC \
services, and reads the same aperture.yaml as Lightning Labs' Go aperture.

HOW IT WORKS
  1. A client requests a paid resource without a credential. aperture answers
     402 Payment Required with WWW-Authenticate headers carrying a macaroon and
     a BOLT11 invoice for the service's price.
  2. The client pays the invoice over Lightning and learns its preimage.
  3. The client retries with `Authorization: L402 <macaroon>:<preimage>`.
     aperture checks the macaroon's signature and caveats and that the preimage
     hashes to the invoice's payment hash, then proxies the request: 200.
  The token stays valid (until its timeout caveat) for further requests.

FILES
  Config:  ~/.aperture/aperture.yaml (or --config). See sample-conf.yaml for
           every key. Unknown keys are errors, not silently ignored.
  Basedir: ~/.aperture (or `basedir:` / --basedir): tls.cert and tls.key (a
           self-signed certificate is created when neither autocert nor
           insecure is set) and the autocert cache.
  Tokens:  sqlite.databasefilename, default ~/.aperture/aperture.db.

TRY IT
  aperture --dev                        proxy a demo origin on 127.0.0.1:8081,
                                        with a built-in dev Lightning wallet
  aperture fetch http://127.0.0.1:8081/ pay the 402 with that wallet and print
                                        the response

EXIT CODES
  0   success (or --check-config found the file valid)
  1   runtime failure (listener, Lightning backend, payment, network)
  64  configuration or usage error";

/// `aperture` command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "aperture", version, about = "L402 (Lightning HTTP 402) reverse proxy", long_about = LONG_ABOUT)]
pub struct Cli {
    /// Config file (YAML).
    #[arg(long, value_name = "PATH", default_value_os_t = Config::default_path())]
    pub config: PathBuf,

    /// Base directory for TLS files and the default database; overrides `basedir` in the config.
    #[arg(long, value_name = "DIR")]
    pub basedir: Option<PathBuf>,

    /// Worker threads, one pinned per core (default: every available core).
    #[arg(long, value_name = "N", default_value_t = available_cores(), value_parser = clap::value_parser!(usize))]
    pub cores: usize,

    /// Do not pin worker threads to CPUs (they still honour the inherited CPU set, e.g. taskset).
    #[arg(long)]
    pub no_pin: bool,

    /// Load and validate the config, print warnings, and exit (0: valid, 64: invalid). Binds nothing.
    #[arg(long)]
    pub check_config: bool,

    /// Run a self-contained demo: built-in origin and dev Lightning wallet, plaintext on
    /// 127.0.0.1:8081, no config file needed.
    #[arg(long, conflicts_with = "check_config")]
    pub dev: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Fetch a URL, paying an L402 challenge through an LND-REST-compatible wallet.
    ///
    /// Requests URL; on 402, pays the invoice with `POST <wallet>/v2/router/send`, then retries
    /// with `Authorization: L402 <macaroon>:<preimage>` and prints the response body.
    /// Only http:// URLs are supported.
    Fetch(FetchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    /// URL to fetch (http:// only).
    pub url: String,

    /// Wallet base URL (LND REST API; the --dev backend by default).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8089")]
    pub wallet: String,

    /// Hex admin macaroon sent to the wallet as Grpc-Metadata-macaroon (real lnd needs one).
    #[arg(long, value_name = "HEX")]
    pub wallet_macaroon: Option<String>,

    /// HTTP method [default: GET, or POST with --data].
    #[arg(long, short = 'X', value_name = "M")]
    pub method: Option<String>,

    /// Request body.
    #[arg(long, short = 'd', value_name = "BODY")]
    pub data: Option<String>,

    /// Extra request header, repeatable.
    #[arg(short = 'H', long = "header", value_name = "'Name: value'", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
}

impl FetchArgs {
    /// The client options these arguments describe.
    pub fn to_options(&self) -> FetchOptions {
        let method = match (&self.method, &self.data) {
            (Some(m), _) => m.to_ascii_uppercase(),
            (None, Some(_)) => "POST".to_owned(),
            (None, None) => "GET".to_owned(),
        };
        FetchOptions {
            url: self.url.clone(),
            wallet: self.wallet.clone(),
            wallet_macaroon: self.wallet_macaroon.clone(),
            method,
            body: self.data.clone().map(String::into_bytes),
            headers: self.headers.clone(),
            ..FetchOptions::default()
        }
    }
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not a header; write 'Name: value'"))?;
    let name = name.trim();
    if name.is_empty() || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("{name:?} is not a valid header name"));
    }
    let value = value.trim();
    if http::HeaderValue::from_str(value).is_err() {
        return Err(format!(
            "the value of {name} contains characters not allowed in a header"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl Cli {
    /// Parses `std::env::args`. `--help`/`--version` print and exit 0; a usage error prints and
    /// exits 64 (the documented usage/config code, rather than clap's 2).
    pub fn parse_args() -> Cli {
        Cli::try_parse().unwrap_or_else(|e| {
            let code = if e.use_stderr() {
                config::EXIT_CONFIG
            } else {
                0
            };
            // If printing fails there is nowhere left to report it; the exit code still tells.
            let _ = e.print();
            std::process::exit(code)
        })
    }
}

/// `--check-config`: loads and validates `path`, prints `OK` and the warnings to stdout, or the
/// error to stderr. Returns the exit code (0 valid, 64 invalid). Binds no ports.
pub fn check_config(path: &Path) -> i32 {
    match config::load(path) {
        Ok(c) => {
            println!("{}: OK ({} service(s))", path.display(), c.services.len());
            for w in &c.warnings {
                println!("warning: {w}");
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("aperture").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.config, Config::default_path());
        assert_eq!(cli.cores, available_cores());
        assert!(cli.cores >= 1);
        assert!(!cli.check_config && !cli.dev && cli.command.is_none() && cli.basedir.is_none());
    }

    #[test]
    fn flags() {
        let cli = parse(&[
            "--config",
            "/etc/a.yaml",
            "--basedir",
            "/var/a",
            "--cores",
            "3",
            "--check-config",
        ])
        .unwrap();
        assert_eq!(cli.config, PathBuf::from("/etc/a.yaml"));
        assert_eq!(cli.basedir, Some(PathBuf::from("/var/a")));
        assert_eq!(cli.cores, 3);
        assert!(cli.check_config);
        assert!(parse(&["--cores", "x"]).is_err());
        assert!(parse(&["--dev", "--check-config"]).is_err());
    }

    #[test]
    fn fetch_subcommand() {
        let cli = parse(&[
            "fetch",
            "http://h/x",
            "-H",
            "X-A: 1",
            "-H",
            "Accept:text/plain",
            "--data",
            "hi",
        ])
        .unwrap();
        let Some(Command::Fetch(f)) = cli.command else {
            panic!("no fetch")
        };
        let o = f.to_options();
        assert_eq!(o.url, "http://h/x");
        assert_eq!(o.wallet, "http://127.0.0.1:8089");
        assert_eq!(o.method, "POST");
        assert_eq!(o.body.as_deref(), Some(&b"hi"[..]));
        assert_eq!(
            o.headers,
            vec![
                ("X-A".into(), "1".into()),
                ("Accept".into(), "text/plain".into())
            ]
        );
        assert!(parse(&["fetch", "http://h/", "-H", "nocolon"]).is_err());
        let cli = parse(&[
            "fetch",
            "http://h/",
            "--method",
            "put",
            "--wallet",
            "http://w:1",
        ])
        .unwrap();
        let Some(Command::Fetch(f)) = cli.command else {
            panic!("no fetch")
        };
        assert_eq!(
            (f.to_options().method.as_str(), f.wallet.as_str()),
            ("PUT", "http://w:1")
        );
    }

    #[test]
    fn help_is_a_manual() {
        let err = parse(&["--help"]).unwrap_err();
        let help = err.to_string();
        assert!(
            help.contains("402") && help.contains("EXIT CODES") && help.contains("64"),
            "{help}"
        );
        Cli::command_for_test().debug_assert();
    }

    #[test]
    fn check_config_exit_codes() {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-conf.yaml");
        assert_eq!(check_config(&sample), 0);
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "listenaddr: \":1\"\nbogus: 1\n").unwrap();
        assert_eq!(check_config(&bad), 64);
        assert_eq!(check_config(&dir.path().join("missing.yaml")), 64);
    }

    impl Cli {
        fn command_for_test() -> clap::Command {
            <Cli as clap::CommandFactory>::command()
        }
    }
}
