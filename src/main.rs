//! The `aperture` binary: wiring only. Parse the command line, load and validate the config (no
//! side effects), start the bridge, start the workers, log the addresses, wait for a signal,
//! drain. Exit codes: 0 clean, 1 runtime failure, 64 configuration error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use aperture::admin::Admin;
use aperture::cli::{self, Cli, Command};
use aperture::config::{self, Backend, Config, ConfigError, Network};
use aperture::proxy::Routes;
use aperture::runtime::{self, signal, Settings};
use aperture::{client, origin, store};

/// Exit code for configuration errors (BSD `EX_USAGE`).
const EXIT_CONFIG: u8 = 64;
/// How long in-flight requests may take after SIGTERM.
const GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    match &cli.command {
        Some(Command::Fetch(args)) => return fetch(args),
        Some(Command::Admin(args)) => return admin(&cli, args),
        Some(Command::Completions { shell }) => {
            cli::completions(*shell, &mut std::io::stdout().lock());
            return ExitCode::SUCCESS;
        }
        Some(Command::Man) => {
            return match cli::man_page(&mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("aperture man: {e}");
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
    if let Some(command @ (Command::Token(_) | Command::Import(_))) = &cli.command {
        return store_command(&cli, command);
    }
    if cli.check_config {
        return ExitCode::from(cli::check_config(&config_path(&cli)) as u8);
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.downcast_ref::<ConfigError>().is_some()
                || e.downcast_ref::<UsageError>().is_some() =>
        {
            eprintln!("aperture: {e:#}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("aperture: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn fetch(args: &cli::FetchArgs) -> ExitCode {
    use std::io::Write;
    if let Some(n) = args.session {
        return fetch_session(args, n);
    }
    match client::fetch(&args.to_options()) {
        Ok(resp) => {
            if let Some(paid) = &resp.paid {
                eprintln!(
                    "paid {} via {} (preimage {})",
                    paid.invoice, paid.scheme, paid.preimage_hex
                );
                if let Some(receipt) = resp.header("payment-receipt") {
                    eprintln!("Payment-Receipt: {receipt}");
                }
            }
            eprintln!("HTTP {}", resp.status);
            let _ = std::io::stdout().write_all(&resp.body);
            if (200..300).contains(&resp.status) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("aperture fetch: {e}");
            ExitCode::from(1)
        }
    }
}

/// `aperture admin …`: the config file, when there is one, names the admin listener and the
/// macaroon; the instance's API does the rest.
fn admin(cli: &Cli, args: &cli::AdminArgs) -> ExitCode {
    let config = std::fs::read_to_string(config_path(cli)).ok();
    ExitCode::from(cli::admin_command(args, config.as_deref(), cli.basedir.as_deref()) as u8)
}

/// `aperture token …` / `aperture import …`: opens the database the config names, directly (no
/// running proxy needed). Without a config file at the default path (e.g. after `--dev`), the
/// database is `<basedir>/aperture.db`.
fn store_command(cli: &Cli, command: &Command) -> ExitCode {
    let basedir_db = || config::Db::Sqlite {
        path: cli
            .basedir
            .clone()
            .unwrap_or_else(Config::default_basedir)
            .join("aperture.db"),
        skip_migrations: false,
    };
    let db = if cli.dev && default_config(cli) {
        basedir_db()
    } else {
        match config::load(&config_path(cli)) {
            Ok(config) => config.db,
            Err(ConfigError::Read { source, .. })
                if default_config(cli) && source.kind() == std::io::ErrorKind::NotFound =>
            {
                basedir_db()
            }
            Err(e) => {
                eprintln!("aperture: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    };
    ExitCode::from(cli::store_command(&db, command) as u8)
}

/// Opens the token database and starts the `aperture-store` thread (ledger, revocation polling),
/// and loads Go aperture's imported root keys for the cores.
fn start_store(
    config: &Config,
    bridge: &lnd_bridge::Bridge,
    holder: &str,
) -> Result<(store::StoreService, store::LegacyKeys)> {
    let db_error = |e: store::DbError| -> anyhow::Error {
        let message = format!("token database: {e}");
        if e.is_config_error() {
            UsageError(message).into()
        } else {
            anyhow!(message)
        }
    };
    let service = store::start(&config.db, &bridge.handle(), holder).map_err(db_error)?;
    let legacy = store::load_legacy_keys(config).map_err(db_error)?;
    let revoked = service.handle().revoked_snapshot().len();
    tracing::info!(
        revoked,
        legacy_keys = legacy.len(),
        "token database open: {}",
        describe_db(&config.db)
    );
    Ok((service, legacy))
}

fn describe_db(db: &config::Db) -> String {
    match db {
        config::Db::Sqlite { path, .. } => format!("sqlite {}", path.display()),
        config::Db::Postgres(pg) => format!("postgres {}:{}/{}", pg.host, pg.port, pg.dbname),
        config::Db::Etcd { host, .. } => format!("etcd {host}"),
    }
}

/// A start-up problem the user fixes in the config or on the command line (exit 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// Whether `--config` was left at its default (`~/.aperture/aperture.yaml`).
fn default_config(cli: &Cli) -> bool {
    cli.config == Config::default_path()
}

fn config_path(cli: &Cli) -> PathBuf {
    match &cli.basedir {
        // As Go aperture: the config file lives in the basedir unless named explicitly.
        Some(basedir) if default_config(cli) => basedir.join("aperture.yaml"),
        _ => cli.config.clone(),
    }
}

/// Where the running config is re-read from, with the database's services.
fn config_source(cli: &Cli, config: &Config) -> aperture::admin::live::ConfigSource {
    use aperture::admin::live::ConfigSource;
    if cli.dev && default_config(cli) {
        let origin = config
            .services
            .iter()
            .find(|s| s.name == "demo")
            .and_then(|s| s.address.parse().ok())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        ConfigSource::Dev {
            basedir: config.basedir.clone(),
            origin,
        }
    } else {
        ConfigSource::File(config_path(cli))
    }
}

/// The services stored in the token database (created through the admin API).
fn db_services(config: &Config) -> Result<Vec<config::DbService>> {
    let mut db = store::open(&config.db).map_err(|e| anyhow!("token database: {e}"))?;
    let rows = db
        .list_db_services()
        .map_err(|e| anyhow!("token database: the services table: {e}"))?;
    Ok(rows
        .into_iter()
        .map(|r| config::DbService {
            name: r.name,
            spec: r.spec,
        })
        .collect())
}

/// `config` with the database's services applied (unchanged when there are none).
fn with_db_services(cli: &Cli, config: Config) -> Result<Config> {
    let db = db_services(&config)?;
    if db.is_empty() {
        return Ok(config);
    }
    let merged = config_source(cli, &config).load(&db).map_err(|e| {
        UsageError(format!(
            "the services stored through the admin API do not load with this config: {e}"
        ))
    })?;
    Ok(cli_overrides(cli, merged))
}

/// Asks the main thread to reload, as SIGHUP does (the signal is blocked in every thread and
/// taken by the main thread's wait).
fn raise_reload() {
    // SAFETY: kill(2) on our own pid with a signal every thread blocks; touches no memory.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGHUP);
    }
}

fn load_config(cli: &Cli) -> Result<Config> {
    let config = if cli.dev && default_config(cli) {
        let basedir = cli.basedir.clone().unwrap_or_else(Config::default_basedir);
        let origin = origin::start(SocketAddr::from(([127, 0, 0, 1], 0)))
            .context("cannot start the demo origin")?;
        config::dev(&basedir, origin)
    } else {
        config::load(&config_path(cli))?
    };
    Ok(cli_overrides(cli, config))
}

/// What the command line changes in a loaded config: `--basedir`, and `--dev` with a file.
fn cli_overrides(cli: &Cli, mut config: Config) -> Config {
    if cli.dev
        && !default_config(cli)
        && !matches!(config.authenticator.backend, Backend::Dev { .. })
    {
        config.authenticator.backend = Backend::Dev {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8089)),
        };
    }
    if let Some(basedir) = &cli.basedir {
        // The admin macaroon's default lives in the basedir: it moves with it.
        if let Some(admin) = &mut config.admin {
            if admin.macaroon_path == config.basedir.join("admin.macaroon") {
                admin.macaroon_path = basedir.join("admin.macaroon");
            }
        }
        config.basedir = basedir.clone();
    }
    config
}

/// The TLS identity for `insecure: false`: `<basedir>/tls.cert` + `tls.key`, generated
/// self-signed on first start, or under `autocert` the ACME resolver (started once the cores
/// serve). A broken or half pair is a configuration error (exit 64).
fn load_tls(
    config: &Config,
) -> Result<(
    Option<Arc<rustls::ServerConfig>>,
    Option<aperture::acme::Autocert>,
)> {
    if config.insecure {
        return Ok((None, None));
    }
    if let Some(settings) = &config.autocert {
        let autocert =
            aperture::acme::Autocert::prepare(settings, &config.basedir, config.listen_addr)
                .map_err(|e| UsageError(e.to_string()))?;
        return Ok((Some(autocert.server_config()), Some(autocert)));
    }
    let identity = aperture::tls::load_or_create(&config.basedir, config.server_name.as_deref())
        .map_err(|e| UsageError(format!("TLS: {e}")))?;
    let verb = if identity.generated {
        "generated a self-signed"
    } else {
        "loaded the"
    };
    tracing::info!(
        fingerprint = %identity.fingerprint,
        "TLS: {verb} certificate {}",
        config.basedir.join(aperture::tls::CERT_FILE).display()
    );
    Ok((Some(identity.config), None))
}

/// Tells systemd (`$NOTIFY_SOCKET`, `Type=notify`) about a state change; nothing without it.
fn sd_notify(state: &str) {
    if let Err(e) = aperture::systemd::notify(state) {
        tracing::warn!("cannot notify systemd ({state:?}): {e}");
    }
}

/// Refuses to start when lnd cannot be reached at all: a typo in `lndhost` should fail loudly at
/// start-up. Once running, the bridge rides out lnd restarts on its own.
fn probe_lnd(host: &str) -> Result<()> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = host
        .to_socket_addrs()
        .with_context(|| format!("authenticator.lndhost: cannot resolve {host:?}"))?
        .collect();
    let reachable = addrs
        .iter()
        .any(|a| std::net::TcpStream::connect_timeout(a, Duration::from_secs(3)).is_ok());
    if !reachable {
        return Err(anyhow!(
            "authenticator.lndhost: cannot reach lnd at {host} ({addrs:?}); is lnd running and is its gRPC port open?"
        ));
    }
    Ok(())
}

fn start_bridge(config: &Config) -> Result<lnd_bridge::Bridge> {
    let backend = match &config.authenticator.backend {
        Backend::Dev { listen_addr } => lnd_bridge::BackendConfig::Dev {
            basedir: config.basedir.clone(),
            wallet_listen: *listen_addr,
            network: Network::to_bridge(config.authenticator.network),
        },
        Backend::Lnd {
            host,
            tls_path,
            mac_dir,
        } => lnd_bridge::BackendConfig::Lnd {
            host: host.clone(),
            tls_path: tls_path.clone(),
            // Go aperture uses the invoice macaroon from macdir: enough for AddInvoice,
            // LookupInvoice and SubscribeInvoices, nothing more.
            macaroon_path: mac_dir.join("invoice.macaroon"),
            network: Network::to_bridge(config.authenticator.network),
        },
        Backend::None => lnd_bridge::BackendConfig::Disabled,
    };
    lnd_bridge::start(lnd_bridge::BridgeConfig::new(backend)).map_err(|e| {
        let message = format!("cannot start the Lightning bridge: {e}");
        if e.is_config_error() {
            UsageError(message).into()
        } else {
            anyhow!(message)
        }
    })
}

/// `aperture fetch --session N`: one line per request on stderr, the last body on stdout, the
/// close answer (with the refund) last.
fn fetch_session(args: &cli::FetchArgs, n: u32) -> ExitCode {
    use std::io::Write;
    match client::fetch_session(&args.to_options(), n) {
        Ok(report) => {
            eprintln!(
                "session {} opened with a deposit of {} sats",
                report.session_id, report.deposit_sats
            );
            for (i, resp) in report.responses.iter().enumerate() {
                eprintln!("request {}: HTTP {}", i + 1, resp.status);
            }
            for sats in &report.top_ups_sats {
                eprintln!("topped up {sats} sats");
            }
            eprintln!(
                "closed: HTTP {} {}",
                report.close.status,
                String::from_utf8_lossy(&report.close.body)
            );
            eprintln!(
                "refund invoice: {} (hash {})",
                report.return_invoice, report.return_hash
            );
            if let Some(last) = report.responses.last() {
                let _ = std::io::stdout().write_all(&last.body);
            }
            let all_ok = report
                .responses
                .iter()
                .all(|r| (200..300).contains(&r.status));
            if all_ok && report.close.status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("aperture fetch --session: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    // Before any thread exists, so that only this thread ever receives the signals.
    signal::block();
    let config = load_config(cli)?;
    aperture::logging::init(&config.logging);
    for warning in &config.warnings {
        tracing::warn!("config: {warning}");
    }
    let master_secret = store::load_or_create_master_secret(&config.basedir)?;
    let (tls, autocert) = load_tls(&config)?;
    let bridge = start_bridge(&config)?;
    // This process's name as a holder of Payment session leases (kept across restarts, so a
    // restarted instance hands back the leases it held).
    let holder = store::load_or_create_instance_id(&config.basedir)
        .map_err(|e| anyhow!("instance id in {}: {e}", config.basedir.display()))?;
    let (store, legacy_keys) = start_store(&config, &bridge, &holder)?;
    // Metered usage the pricer does not take is kept in the database; an earlier run's is
    // replayed now.
    store.keep_usage(&bridge.handle());
    // Services created through the admin API live in the database and apply over the file's;
    // a change there (by this instance or another on the same database) reloads like SIGHUP.
    let config = with_db_services(cli, config)?;
    let routes = Routes::resolve(&config).map_err(|e| UsageError(e.to_string()))?;
    store
        .on_services_changed(Box::new(raise_reload))
        .map_err(|e| anyhow!("token database: {e}"))?;
    let payment_secret = match &config.authenticator.mpp {
        Some(_) => Some(
            store::load_mpp_secret(&config)
                .map_err(|e| anyhow!("token database: the Payment (MPP) secret: {e}"))?,
        ),
        None => None,
    };
    if let Backend::Lnd { host, .. } = &config.authenticator.backend {
        probe_lnd(host)?;
    }
    if let Some(wallet) = bridge.wallet_addr() {
        tracing::warn!("DEV LIGHTNING BACKEND: payments are SIMULATED; wallet at http://{wallet}");
    }
    // Fleet-wide rate limits: the Redis thread starts first, so the cores start fleet-wide.
    let fleet = match &config.rate_limit_backend {
        aperture::config::RateLimitBackend::Redis(redis) => {
            Some(aperture::fleet::start(redis).map_err(|e| UsageError(e.to_string()))?)
        }
        aperture::config::RateLimitBackend::Local => None,
    };
    let server = runtime::start(Settings {
        cores: cli.cores,
        pin: !cli.no_pin,
        listen: config.listen_addr,
        routes: Arc::new(routes),
        master_secret,
        bridge: bridge.handle(),
        steer: config.rate_limit_steering,
        legacy_keys: Arc::new(legacy_keys),
        revoked: store.handle().revoked_snapshot().into(),
        store: Some(store.handle()),
        tls,
        payment_secret,
        session_holder: config
            .authenticator
            .mpp
            .as_ref()
            .and_then(|m| m.sessions)
            .map(|_| holder.clone()),
        fleet: fleet.as_ref().map(|f| f.handle()),
    })?;
    let addr = server.local_addr();
    let scheme = if config.insecure { "http" } else { "https" };
    tracing::info!(
        cores = server.cores(),
        drivers = ?server.drivers(),
        "aperture listening on {scheme}://{addr}"
    );
    // The CA validates against the listener, so the ACME client starts once the cores serve.
    let autocert = autocert.map(aperture::acme::Autocert::start).transpose()?;
    let ready = Arc::new(AtomicBool::new(true)); // the workers serve once `start` returns
    let fleet_handle = fleet.as_ref().map(|f| f.handle());
    let admin = start_admin(cli, &config, &server, &ready, &store, &bridge, fleet_handle)?;
    if cli.dev {
        print_dev_walkthrough(addr, bridge.wallet_addr());
    }
    // Every core serves (`start` returned) and the admin listener is up.
    sd_notify(&aperture::systemd::ready(&format!(
        "serving on {scheme}://{addr} with {} cores",
        server.cores()
    )));
    wait_and_drain(server, &ready, cli, &config);
    if let Some(autocert) = autocert {
        autocert.shutdown();
    }
    for listener in admin {
        listener.shutdown();
    }
    if let Some(fleet) = fleet {
        fleet.shutdown();
    }
    // Usage reports still being delivered are kept while the store can take them.
    bridge.handle().persist_unfinished_usage();
    store.shutdown(); // commits pending ledger writes; before the bridge ends its event stream
    bridge.shutdown();
    Ok(())
}

/// The admin listeners: the metrics and health probes when `prometheus` is enabled (`/readyz`
/// follows `ready`), and with `admin.enabled` the admin API and dashboard on
/// `admin.listenaddr` (one listener when the two addresses are the same).
fn start_admin(
    cli: &Cli,
    config: &Config,
    server: &runtime::Server,
    ready: &Arc<AtomicBool>,
    store: &store::StoreService,
    bridge: &lnd_bridge::Bridge,
    fleet: Option<aperture::fleet::FleetHandle>,
) -> Result<Vec<Admin>> {
    let probes = |addr| {
        let (ready, store, bridge) = (ready.clone(), store.handle(), bridge.handle());
        let fleet = fleet.clone();
        aperture::admin::AdminOptions {
            addr,
            metrics: server.metrics().clone(),
            ready: Arc::new(move || ready.load(Ordering::Relaxed)),
            extra: Arc::new(move |out: &mut String| {
                aperture::exposition::render_bridge(&bridge.stats(), out);
                store.render_metrics(out);
                if let Some(fleet) = &fleet {
                    aperture::exposition::render_fleet(&fleet.stats(), out);
                }
            }),
            api: None,
            dashboard: None,
        }
    };
    let mut listeners = Vec::new();
    if let Some(admin) = &config.admin {
        let (key, created) = aperture::admin::AdminKey::load_or_create(&admin.macaroon_path)
            .with_context(|| format!("admin macaroon {}", admin.macaroon_path.display()))?;
        if created {
            tracing::info!(
                "admin macaroon created at {}",
                admin.macaroon_path.display()
            );
        }
        let db = store::open(&config.db).map_err(|e| anyhow!("token database (admin): {e}"))?;
        let backend: Arc<dyn aperture::admin::AdminBackend> =
            Arc::new(aperture::admin::live::LiveBackend::new(
                config_source(cli, config),
                Arc::new(config.clone()),
                db,
                bridge.handle(),
                server.cores(),
                Box::new(raise_reload),
            ));
        let mut options = probes(admin.listen_addr);
        // The dashboard calls the same backend; it answers loopback clients only.
        options.dashboard = Some(aperture::admin::dashboard::handler(backend.clone()));
        options.api = Some(aperture::admin::ApiOptions {
            backend,
            key,
            cors_origins: admin.cors_origins.clone(),
        });
        let api = Admin::start_with(options).with_context(|| {
            format!(
                "cannot listen for the admin API on {} (admin.listenaddr)",
                admin.listen_addr
            )
        })?;
        tracing::info!("admin API and dashboard on http://{}", api.local_addr());
        listeners.push(api);
    }
    if let Some(addr) = config.prometheus {
        if config.admin.as_ref().is_none_or(|a| a.listen_addr != addr) {
            let metrics = Admin::start_with(probes(addr)).with_context(|| {
                format!("cannot listen for metrics on {addr} (prometheus.listenaddr)")
            })?;
            tracing::info!("admin listening on http://{}", metrics.local_addr());
            listeners.push(metrics);
        }
    }
    Ok(listeners)
}

/// SIGHUP: re-reads and validates the config here, off the data path, then hands every core the
/// new routing snapshot. A file that fails validation leaves the running config in place.
/// Returns the outcome in a few words (systemd's status line).
fn reload(server: &runtime::Server, cli: &Cli, running: &Config) -> &'static str {
    let source = config_source(cli, running);
    let path = match &source {
        aperture::admin::live::ConfigSource::File(path) => path.clone(),
        aperture::admin::live::ConfigSource::Dev { .. } => PathBuf::from("<dev config>"),
    };
    let loaded = db_services(running)
        .and_then(|db| Ok(source.load(&db)?))
        .map(|c| cli_overrides(cli, c))
        .and_then(|c| Ok((Routes::resolve(&c)?, c)));
    let (routes, new) = match loaded {
        Ok(ok) => ok,
        Err(e) => {
            tracing::error!(
                "SIGHUP: reload of {} failed, keeping the running config: {e:#}",
                path.display()
            );
            return "reload failed, serving the previous configuration";
        }
    };
    for warning in &new.warnings {
        tracing::warn!("config: {warning}");
    }
    if new.listen_addr != running.listen_addr || new.insecure != running.insecure {
        tracing::warn!("SIGHUP: listenaddr and insecure take effect only after a restart");
    }
    if new.autocert != running.autocert || new.server_name != running.server_name {
        tracing::warn!(
            "SIGHUP: autocert, servername and the autocert* keys take effect only after a restart"
        );
    }
    if new.logging != running.logging {
        tracing::warn!("SIGHUP: debuglevel and logging take effect only after a restart");
    }
    server.reload(&routes);
    tracing::info!(
        services = routes.routes.len(),
        "SIGHUP: configuration reloaded"
    );
    "serving, configuration reloaded"
}

fn wait_and_drain(server: runtime::Server, ready: &AtomicBool, cli: &Cli, running: &Config) {
    loop {
        match signal::wait(runtime::TRIM_EVERY) {
            Some(signal::Signal::Terminate) => break,
            Some(signal::Signal::Reload) => {
                sd_notify(&aperture::systemd::reloading());
                let outcome = reload(&server, cli, running);
                sd_notify(&aperture::systemd::ready(outcome));
            }
            None => runtime::release_free_memory(),
        }
    }
    sd_notify(&aperture::systemd::stopping());
    tracing::info!("draining: finishing in-flight requests (a second signal exits at once)");
    ready.store(false, Ordering::Relaxed); // load balancers stop sending while we drain
    server.begin_shutdown(GRACE);
    while !server.finished() {
        if signal::wait(Duration::from_millis(50)) == Some(signal::Signal::Terminate) {
            tracing::warn!("second signal: exiting at once");
            std::process::exit(1);
        }
    }
    server.join();
    tracing::info!("drained; bye");
}

fn print_dev_walkthrough(addr: SocketAddr, wallet: Option<SocketAddr>) {
    let wallet = wallet.map_or_else(|| "127.0.0.1:8089".to_string(), |w| w.to_string());
    println!(
        "\naperture --dev is serving the demo service at http://{addr}/ (price 10 sats, simulated payments)\n\
         \n\
         1. Ask for the resource and get a 402 with a macaroon and an invoice:\n\
         \x20  curl -i http://{addr}/hello\n\
         2. Pay the invoice at the dev wallet, which returns the preimage:\n\
         \x20  curl -s -X POST http://{wallet}/pay -d '{{\"invoice\": \"<invoice from step 1>\"}}'\n\
         3. Retry with the token:\n\
         \x20  curl -i -H 'Authorization: L402 <macaroon from step 1>:<preimage from step 2>' http://{addr}/hello\n\
         \n\
         Or all three at once: aperture fetch http://{addr}/hello --wallet http://{wallet}\n\
         \n\
         Metered per token (the built-in meter: 20 sats buy 10,000 tokens of demo-small):\n\
         \x20  curl -i http://{addr}/v1/chat/completions -d '{{\"model\": \"demo-small\", \"messages\": []}}'\n"
    );
}
