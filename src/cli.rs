//! Command line (clap derive), the `--check-config` action, the `token`/`import` actions on
//! the token database, the `admin` action (a client of a running instance's admin API), and the
//! shell completions and man page generated from this definition. It binds no ports and starts
//! no threads. `main.rs` wires [`Cli`] to the runtime and to [`crate::client`].

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

use crate::client::admin::{self as admin_client, AuthScheme, Output, Page, Range, TxState};
use crate::client::FetchOptions;
use crate::config::{self, Config, Db};
use crate::store::{self, DbError, ImportSource, Store, TokenQuery};

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
  Tokens:  sqlite.databasefilename, default ~/.aperture/aperture.db, or a
           shared PostgreSQL (dbbackend: postgres): the ledger of minted
           challenges, revoked tokens and keys imported from Go aperture.

TOKENS
  aperture token list                   minted challenges, newest first
  aperture token show <TOKEN_ID>        one token: settlement, revocation
  aperture token revoke <TOKEN_ID>      every instance rejects it within 1 s
  aperture import --from-sqlite PATH    keep Go aperture's tokens valid

ADMIN (a running instance with admin.enabled)
  aperture admin info | health | stats  its settings, liveness, revenue
  aperture admin services [list]        create | update | delete NAME too
  aperture admin transactions           --service, --state, --from/--to
  aperture admin revoke <TOKEN_ID>      through the running instance
  JSON (Go aperture's API shapes) when piped or with --json, tables on a
  terminal.

TRY IT
  aperture --dev                        proxy a demo origin on 127.0.0.1:8081,
                                        with a built-in dev Lightning wallet
  aperture fetch http://127.0.0.1:8081/ pay the 402 with that wallet and print
                                        the response

EXIT CODES
  0   success (or --check-config found the file valid)
  1   runtime failure (listener, Lightning backend, payment, network)
  64  configuration or usage error";

/// What `aperture --version` prints after the name: the crate version and the git revision it
/// was built from ("unknown" in a build without `.git`; see `build/git_revision.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (rev ",
    env!("APERTURE_GIT_REV"),
    ")"
);

/// `aperture` command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "aperture", version = VERSION, about = "L402 (Lightning HTTP 402) reverse proxy", long_about = LONG_ABOUT)]
pub struct Cli {
    /// Config file (YAML).
    #[arg(long, global = true, value_name = "PATH", default_value_os_t = Config::default_path())]
    pub config: PathBuf,

    /// Base directory for TLS files and the default database; overrides `basedir` in the config.
    #[arg(long, global = true, value_name = "DIR")]
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

    /// Inspect and revoke tokens in the token database (no running proxy needed).
    ///
    /// Opens the database named by the config (`dbbackend`, `sqlite.databasefilename` or
    /// `postgres`). A revocation reaches every core of every running instance sharing that
    /// database within a second.
    #[command(subcommand)]
    Token(TokenCommand),

    /// Query and manage a running instance through its admin API (admin.enabled).
    ///
    /// Talks to Go aperture's REST API under /api/admin/ on the admin listener (--admin, else
    /// the listener the config names, else http://127.0.0.1:8082), presenting the admin macaroon
    /// (--macaroon, else admin.macaroonpath, else <basedir>/admin.macaroon). Prints the API's
    /// JSON when stdout is not a terminal or with --json, aligned tables otherwise.
    Admin(AdminArgs),

    /// Import Go aperture's token root keys so the tokens it sold keep verifying here.
    ///
    /// Reads the `secrets` table of Go aperture's database and stores the keys in this
    /// aperture's database (the one the config names). Run it once before switching over.
    Import(ImportArgs),

    /// Print a shell completion script to stdout.
    ///
    /// bash: `aperture completions bash > /etc/bash_completion.d/aperture`;
    /// zsh: into a directory of `$fpath` as `_aperture`; fish: into
    /// `~/.config/fish/completions/aperture.fish`. The Debian package installs all three.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: Shell,
    },

    /// Print the man page (roff) to stdout: `aperture man | man -l -`.
    #[command(hide = true)]
    Man,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Revoke a token: every instance sharing the database rejects it within 1 s.
    Revoke {
        /// The token ID: 64 hex characters (the last 32 bytes of the macaroon identifier).
        #[arg(value_name = "TOKEN_ID", value_parser = parse_token_id)]
        token_id: [u8; 32],
    },
    /// List minted challenges, newest first.
    List {
        /// At most this many rows (0: all).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one token's challenges, settlement and revocation.
    Show {
        #[arg(value_name = "TOKEN_ID", value_parser = parse_token_id)]
        token_id: [u8; 32],
    },
}

#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct ImportArgs {
    /// Go aperture's SQLite file (its `sqlite.databasefilename`, default ~/.aperture/aperture.db).
    #[arg(long, value_name = "PATH")]
    pub from_sqlite: Option<PathBuf>,

    /// Go aperture's PostgreSQL database, as `postgres://user:pass@host:port/dbname?sslmode=disable`
    /// (over TLS: `?sslmode=verify-full&sslrootcert=/path/ca.pem`).
    #[arg(long, value_name = "DSN")]
    pub from_postgres: Option<String>,
}

/// `aperture admin`: where the API is, how to print, and the RPC.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The admin API's base URL, http:// only [default: the admin listener the config names
    /// (prometheus.listenaddr, else admin.listenaddr), else http://127.0.0.1:8082].
    #[arg(long, global = true, value_name = "URL")]
    pub admin: Option<String>,

    /// The admin macaroon file, sent hex-encoded [default: the config's admin.macaroonpath,
    /// else <basedir>/admin.macaroon].
    #[arg(long, global = true, value_name = "PATH")]
    pub macaroon: Option<PathBuf>,

    /// Print the API's JSON as received (the default when stdout is not a terminal).
    #[arg(long, global = true, conflicts_with = "human")]
    pub json: bool,

    /// Print tables even when stdout is not a terminal.
    #[arg(long, global = true)]
    pub human: bool,

    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Network, listen address and Payment (MPP) settings (GetInfo).
    Info,
    /// Whether the admin API answers (GetHealth; needs no macaroon).
    Health,
    /// List services (the default), or create, update or delete one.
    Services {
        #[command(subcommand)]
        action: Option<ServicesCommand>,
    },
    /// The ledger: every invoice handed out, pending or settled (ListTransactions).
    Transactions(TransactionsArgs),
    /// Paid tokens: settled transactions (ListTokens).
    Tokens(PageArgs),
    /// Revenue, settled transactions and revenue per service (GetStats).
    Stats(RangeArgs),
    /// Revoke a token through the running instance (RevokeToken): it is refused from then on.
    Revoke {
        /// The token ID: 64 hex characters.
        #[arg(value_name = "TOKEN_ID", value_parser = parse_token_id)]
        token_id: [u8; 32],
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum ServicesCommand {
    /// List every service with its source (config file or database).
    List,
    /// Create a service (stored in the database, live on every instance sharing it).
    Create(ServiceArgs),
    /// Change a service: only the fields given change.
    Update(ServiceArgs),
    /// Delete a service created through the API.
    Delete {
        /// The service's name.
        #[arg(value_name = "NAME", required_unless_present = "name")]
        name_arg: Option<String>,
        /// The service's name (or as the first argument).
        #[arg(long = "name", value_name = "NAME", conflicts_with = "name_arg")]
        name: Option<String>,
    },
}

/// Go's CreateService/UpdateService fields, and `--spec` for every other service key.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// The service's name.
    #[arg(value_name = "NAME")]
    pub name_arg: Option<String>,
    /// The service's name (or as the first argument; or name: in --spec).
    #[arg(long = "name", value_name = "NAME", conflicts_with = "name_arg")]
    pub name: Option<String>,
    /// Backend host:port.
    #[arg(long, value_name = "HOST:PORT")]
    pub address: Option<String>,
    /// Backend protocol (the API takes Go's two).
    #[arg(long, value_parser = ["http", "https"])]
    pub protocol: Option<String>,
    /// Regexp the request's Host must match [server default: .*].
    #[arg(long, value_name = "REGEXP")]
    pub host_regexp: Option<String>,
    /// Regexp the request's path must match.
    #[arg(long, value_name = "REGEXP")]
    pub path_regexp: Option<String>,
    /// Price per token, in sats.
    #[arg(long, value_name = "SATS")]
    pub price: Option<u64>,
    /// "on", "off" or "freebie N".
    #[arg(long, value_name = "LEVEL")]
    pub auth: Option<String>,
    /// Payment scheme(s) offered and accepted.
    #[arg(long, value_enum, value_name = "SCHEME")]
    pub auth_scheme: Option<AuthScheme>,
    /// A service block as in aperture.yaml (YAML or JSON), for every service key (ratelimits,
    /// dynamicprice, headers, constraints, ...); the flags above override its keys.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct TransactionsArgs {
    /// Only this service's transactions.
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Only pending or settled ones.
    #[arg(long, value_enum)]
    pub state: Option<TxState>,
    #[command(flatten)]
    pub range: RangeArgs,
    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RangeArgs {
    /// From this time: RFC 3339 (2026-03-01T00:00:00Z) or unix seconds.
    #[arg(long, value_name = "TIME", value_parser = admin_client::parse_time)]
    pub from: Option<String>,
    /// Up to this time: RFC 3339 or unix seconds.
    #[arg(long, value_name = "TIME", value_parser = admin_client::parse_time)]
    pub to: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PageArgs {
    /// At most this many rows [server default: 50].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Skip this many rows.
    #[arg(long, value_name = "N")]
    pub offset: Option<u32>,
}

impl AdminCommand {
    /// The RPC these arguments ask for. Reads the `--spec` file, if any.
    pub fn to_request(&self) -> Result<admin_client::Request, admin_client::AdminError> {
        use admin_client::Request;
        let page = |p: &PageArgs| Page {
            limit: p.limit,
            offset: p.offset,
        };
        let range = |r: &RangeArgs| Range {
            from: r.from.clone(),
            to: r.to.clone(),
        };
        Ok(match self {
            AdminCommand::Info => Request::Info,
            AdminCommand::Health => Request::Health,
            AdminCommand::Services { action } => match action {
                None | Some(ServicesCommand::List) => Request::ListServices,
                Some(ServicesCommand::Create(args)) => Request::CreateService(args.body(true)?),
                Some(ServicesCommand::Update(args)) => {
                    let name = args.name_arg.clone().or_else(|| args.name.clone());
                    let body = args.body(false)?;
                    let name = name.or_else(|| args.spec_name()).ok_or_else(|| {
                        admin_client::AdminError::Usage(
                            "which service? give its name (or --name NAME)".into(),
                        )
                    })?;
                    Request::UpdateService { name, body }
                }
                Some(ServicesCommand::Delete { name_arg, name }) => Request::DeleteService {
                    name: name_arg
                        .clone()
                        .or_else(|| name.clone())
                        .unwrap_or_default(),
                },
            },
            AdminCommand::Transactions(t) => Request::ListTransactions(admin_client::TxFilter {
                service: t.service.clone(),
                state: t.state,
                range: range(&t.range),
                page: page(&t.page),
            }),
            AdminCommand::Tokens(p) => Request::ListTokens(page(p)),
            AdminCommand::Stats(r) => Request::Stats(range(r)),
            AdminCommand::Revoke { token_id } => Request::RevokeToken {
                token_id: hex::encode(token_id),
            },
        })
    }
}

impl ServiceArgs {
    fn body(
        &self,
        create: bool,
    ) -> Result<serde_json::Map<String, serde_json::Value>, admin_client::AdminError> {
        let fields = admin_client::ServiceFields {
            // For an update the name is the path's, not a field.
            name: if create {
                self.name_arg.clone().or_else(|| self.name.clone())
            } else {
                None
            },
            address: self.address.clone(),
            protocol: self.protocol.clone(),
            host_regexp: self.host_regexp.clone(),
            path_regexp: self.path_regexp.clone(),
            price: self.price,
            auth: self.auth.clone(),
            auth_scheme: self.auth_scheme,
        };
        let spec = self
            .spec
            .as_deref()
            .map(admin_client::read_spec)
            .transpose()?;
        admin_client::service_body(&fields, spec, create)
    }

    /// The `name:` of the `--spec` file, if it has one.
    fn spec_name(&self) -> Option<String> {
        let spec = admin_client::read_spec(self.spec.as_deref()?).ok()?;
        spec.get("name")?.as_str().map(str::to_owned)
    }
}

/// `aperture admin …`: sends the RPC to the running instance and prints the reply to stdout,
/// errors to stderr. `config` is the config file's text, if there is one (it names the admin
/// listener and the macaroon); `basedir` is `--basedir`. Returns the exit code (0 done, 1
/// failure, 64 usage).
pub fn admin_command(args: &AdminArgs, config: Option<&str>, basedir: Option<&Path>) -> i32 {
    use std::io::IsTerminal;
    let endpoint = admin_client::resolve_endpoint(
        args.admin.as_deref(),
        args.macaroon.as_deref(),
        config,
        basedir,
    );
    let output = Output::choose(args.json, args.human, std::io::stdout().is_terminal());
    let result = args.command.to_request().and_then(|request| {
        let body = admin_client::call(&endpoint, &request)?;
        Ok(admin_client::render(&request, &body, output))
    });
    match result {
        Ok(text) => {
            // A closed stdout (`| head`) is not worth an error.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            0
        }
        Err(e) => {
            eprintln!("aperture admin: {e}");
            e.exit_code()
        }
    }
}

fn parse_token_id(s: &str) -> Result<[u8; 32], String> {
    let mut id = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut id)
        .map_err(|_| format!("{s:?} is not a token ID: expected 64 hex characters"))?;
    Ok(id)
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

    /// Open a Payment session (deposit), make N requests debited from it (paying top-ups when
    /// asked), then close it; the unspent balance is refunded to an invoice from the wallet.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub session: Option<u32>,
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

/// The command definition as the generated files show it: machine-specific defaults (the
/// `--config` path under this user's home, the number of CPUs here) are written generically.
fn documented_command() -> clap::Command {
    Cli::command()
        .mut_arg("config", |a| {
            a.hide_default_value(true)
                .help("Config file (YAML) [default: ~/.aperture/aperture.yaml]")
        })
        .mut_arg("cores", |a| a.hide_default_value(true))
}

/// `aperture completions SHELL`: the completion script for `shell`, to `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut documented_command(), "aperture", out);
}

/// `aperture man`: the man page (section 1, roff), to `out`.
pub fn man_page(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(documented_command()).render(out)
}

/// Runs a `token` or `import` subcommand against `db`; prints to stdout, errors to stderr.
/// Returns the exit code (0 done, 1 database failure, 64 unsupported backend).
pub fn store_command(db: &Db, command: &Command) -> i32 {
    let result = store::open(db).and_then(|mut s| match command {
        Command::Token(t) => token_command(s.as_mut(), t),
        Command::Import(args) => import_command(s.as_mut(), args),
        Command::Fetch(_) | Command::Admin(_) | Command::Completions { .. } | Command::Man => {
            Ok(())
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            if e.is_config_error() {
                config::EXIT_CONFIG
            } else {
                1
            }
        }
    }
}

fn token_command(s: &mut dyn Store, command: &TokenCommand) -> Result<(), DbError> {
    match command {
        TokenCommand::Revoke { token_id } => {
            let new = s.revoke(*token_id)?;
            let known = !s
                .list_tokens(&TokenQuery {
                    token_id: Some(*token_id),
                    limit: 1,
                })?
                .is_empty();
            let id = hex::encode(token_id);
            println!(
                "{}",
                if new {
                    format!("revoked {id}")
                } else {
                    format!("{id} was already revoked")
                }
            );
            if !known {
                println!("note: this database's ledger has no challenge for {id} (minted elsewhere or mistyped?); it is revoked anyway");
            }
        }
        TokenCommand::List { limit } => {
            let rows = s.list_tokens(&TokenQuery {
                token_id: None,
                limit: *limit,
            })?;
            println!(
                "{:<64}  {:<16} {:>10}  {:<20}  {:<20}  REVOKED",
                "TOKEN ID", "SERVICE", "SATS", "CREATED", "SETTLED"
            );
            for r in &rows {
                println!(
                    "{:<64}  {:<16} {:>10}  {:<20}  {:<20}  {}",
                    hex::encode(r.token_id),
                    r.service,
                    r.price_sat,
                    r.created_at,
                    r.settled_at
                        .map_or_else(|| "-".to_owned(), |t| t.to_string()),
                    r.revoked_at
                        .map_or_else(|| "-".to_owned(), |t| t.to_string()),
                );
            }
        }
        TokenCommand::Show { token_id } => {
            let rows = s.list_tokens(&TokenQuery {
                token_id: Some(*token_id),
                limit: 0,
            })?;
            println!("token id:     {}", hex::encode(token_id));
            match s.revoked_at(*token_id)? {
                Some(at) => println!("revoked at:   {at} (unix)"),
                None => println!("revoked:      no"),
            }
            if rows.is_empty() {
                println!("challenges:   none in this database's ledger");
            }
            for r in &rows {
                println!("challenge:    payment hash {}", hex::encode(r.payment_hash));
                println!("  service:    {} ({} sats)", r.service, r.price_sat);
                println!("  created at: {} (unix)", r.created_at);
                match r.settled_at {
                    Some(at) => println!("  settled at: {at} (unix)"),
                    None => println!("  settled:    no"),
                }
            }
        }
    }
    Ok(())
}

fn import_command(s: &mut dyn Store, args: &ImportArgs) -> Result<(), DbError> {
    let source = match (&args.from_sqlite, &args.from_postgres) {
        (Some(path), _) => ImportSource::Sqlite(path),
        (None, Some(dsn)) => ImportSource::Postgres(dsn),
        (None, None) => {
            return Err(DbError::Import(
                "pass --from-sqlite PATH or --from-postgres DSN".into(),
            ))
        }
    };
    let report = store::import(s, source)?;
    let keys = report
        .imported
        .saturating_sub(usize::from(report.mpp_secret));
    println!(
        "read {} row(s) from Go aperture's secrets table: imported {} new root key(s), skipped {} (malformed){}",
        report.read,
        keys,
        report.skipped,
        if report.mpp_secret { "; carried the Payment (MPP) HMAC secret" } else { "" }
    );
    Ok(())
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

    #[test]
    fn version_names_the_crate_version_and_revision() {
        let version = parse(&["--version"]).unwrap_err().to_string();
        let rest = version
            .strip_prefix(&format!("aperture {} (rev ", env!("CARGO_PKG_VERSION")))
            .unwrap_or_else(|| panic!("{version}"));
        let rev = rest.trim_end().strip_suffix(')').expect(&version);
        assert!(
            rev == "unknown" || (!rev.is_empty() && rev.bytes().all(|b| b.is_ascii_hexdigit())),
            "{version}"
        );
    }

    #[test]
    fn completions_and_man_page_cover_every_subcommand() {
        for (shell, marker) in [
            (Shell::Bash, "_aperture()"),
            (Shell::Zsh, "#compdef aperture"),
            (Shell::Fish, "complete -c aperture"),
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains(marker), "{shell}: {text}");
            for word in [
                "fetch",
                "token",
                "import",
                "admin",
                "completions",
                "check-config",
            ] {
                assert!(text.contains(word), "{shell} lacks {word}");
            }
            // Nothing of the machine that generated it (the package is built on one machine).
            assert!(
                !text.contains("/root/") && !text.contains("/home/"),
                "{text}"
            );
        }
        let mut out = Vec::new();
        man_page(&mut out).unwrap();
        let roff = String::from_utf8(out).unwrap();
        assert!(
            roff.starts_with(".ie") || roff.contains(".TH aperture 1"),
            "{roff}"
        );
        assert!(roff.contains(".TH aperture 1"), "{roff}");
        for word in ["EXIT CODES", "fetch", "token", "~/.aperture/aperture.yaml"] {
            assert!(roff.contains(word), "the man page lacks {word}");
        }
        assert!(!roff.contains("/root/") && !roff.contains("/home/"));
        assert!(parse(&["completions", "bash"]).is_ok());
        assert!(parse(&["completions", "tcsh"]).is_err());
        assert!(matches!(
            parse(&["man"]).unwrap().command,
            Some(Command::Man)
        ));
    }

    fn admin_request(args: &[&str]) -> admin_client::Request {
        let cli = parse(&[&["admin"], args].concat()).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let Some(Command::Admin(a)) = cli.command else {
            panic!("no admin")
        };
        a.command.to_request().unwrap()
    }

    #[test]
    fn admin_arguments_map_to_requests() {
        use admin_client::{Request, TxFilter};
        use serde_json::json;
        assert_eq!(admin_request(&["info"]), Request::Info);
        assert_eq!(admin_request(&["health"]), Request::Health);
        assert_eq!(admin_request(&["services"]), Request::ListServices);
        assert_eq!(admin_request(&["services", "list"]), Request::ListServices);
        assert_eq!(
            admin_request(&[
                "transactions",
                "--service",
                "echo",
                "--state",
                "settled",
                "--from",
                "1773176400",
                "--to",
                "2026-03-31T23:59:59Z",
                "--limit",
                "20",
                "--offset",
                "40",
            ]),
            Request::ListTransactions(TxFilter {
                service: Some("echo".into()),
                state: Some(TxState::Settled),
                range: Range {
                    from: Some("2026-03-10T21:00:00Z".into()),
                    to: Some("2026-03-31T23:59:59Z".into()),
                },
                page: Page {
                    limit: Some(20),
                    offset: Some(40),
                },
            })
        );
        assert_eq!(
            admin_request(&["tokens", "--limit", "5"]),
            Request::ListTokens(Page {
                limit: Some(5),
                offset: None
            })
        );
        assert_eq!(
            admin_request(&["stats", "--from", "0"]),
            Request::Stats(Range {
                from: Some("1970-01-01T00:00:00Z".into()),
                to: None
            })
        );
        let id = "0f".repeat(32);
        assert_eq!(
            admin_request(&["revoke", &id]),
            Request::RevokeToken { token_id: id }
        );
        let Request::CreateService(body) = admin_request(&[
            "services",
            "create",
            "api",
            "--address",
            "127.0.0.1:9000",
            "--price",
            "100",
            "--auth-scheme",
            "l402+mpp",
            "--path-regexp",
            "^/api/",
        ]) else {
            panic!("not a create")
        };
        assert_eq!(
            serde_json::Value::Object(body),
            json!({"name": "api", "address": "127.0.0.1:9000", "price": 100,
                   "path_regexp": "^/api/", "auth_scheme": "AUTH_SCHEME_L402_MPP"})
        );
        assert_eq!(
            admin_request(&["services", "update", "--name", "api", "--price", "250"]),
            Request::UpdateService {
                name: "api".into(),
                body: json!({"price": 250})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            }
        );
        assert_eq!(
            admin_request(&["services", "delete", "api"]),
            Request::DeleteService { name: "api".into() }
        );
        assert_eq!(
            admin_request(&["services", "delete", "--name", "api"]),
            Request::DeleteService { name: "api".into() }
        );
    }

    #[test]
    fn admin_options_and_mistakes() {
        let cli = parse(&[
            "admin",
            "services",
            "list",
            "--admin",
            "http://h:1",
            "--macaroon",
            "/m",
            "--json",
        ])
        .unwrap();
        let Some(Command::Admin(a)) = cli.command else {
            panic!("no admin")
        };
        assert_eq!(a.admin.as_deref(), Some("http://h:1"));
        assert_eq!(a.macaroon.as_deref(), Some(Path::new("/m")));
        assert!(a.json && !a.human);
        for bad in [
            &["admin"][..],
            &["admin", "info", "--json", "--human"],
            &["admin", "transactions", "--state", "paid"],
            &["admin", "transactions", "--limit", "0"],
            &["admin", "transactions", "--limit", "1001"],
            &["admin", "stats", "--from", "yesterday"],
            &["admin", "revoke", "abc"],
            &["admin", "services", "delete"],
            &["admin", "services", "delete", "a", "--name", "b"],
            &["admin", "services", "create", "--auth-scheme", "lnurl"],
            &["admin", "services", "create", "--protocol", "ftp"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let usage = |args: &[&str]| {
            let cli = parse(args).unwrap();
            let Some(Command::Admin(a)) = cli.command else {
                panic!("no admin")
            };
            a.command.to_request().unwrap_err()
        };
        let e = usage(&["admin", "services", "create", "--address", "h:1"]);
        assert_eq!(e.exit_code(), 64, "{e}");
        let e = usage(&["admin", "services", "update", "--price", "1"]);
        assert!(e.to_string().contains("which service"), "{e}");
        let e = usage(&["admin", "services", "update", "api"]);
        assert!(e.to_string().contains("nothing to update"), "{e}");
    }

    #[test]
    fn admin_spec_file() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("svc.yaml");
        std::fs::write(
            &spec,
            "name: api\naddress: 127.0.0.1:9000\npathregexp: '^/api/'\nprice: 10\n\
             headers:\n  X-Tier: gold\n",
        )
        .unwrap();
        let spec = spec.to_str().unwrap();
        let admin_client::Request::UpdateService { name, body } =
            admin_request(&["services", "update", "--spec", spec, "--price", "20"])
        else {
            panic!("not an update")
        };
        assert_eq!(name, "api", "the spec names the service");
        assert_eq!(body["price"], 20);
        assert_eq!(body["path_regexp"], "^/api/");
        assert_eq!(body["headers"]["X-Tier"], "gold");
        assert!(
            body.get("name").is_none(),
            "an update's name is in the path"
        );
    }

    impl Cli {
        fn command_for_test() -> clap::Command {
            <Cli as clap::CommandFactory>::command()
        }
    }
}
