//! The `aperture` binary as a user runs it: signals, exit codes, memory, `fetch`, `--dev`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{get, service, wait_until, Conn, Origin, Proxy};

/// A running `aperture` process and the addresses it logged.
struct Running {
    child: Child,
    addr: SocketAddr,
    wallet: Option<SocketAddr>,
    _dir: tempfile::TempDir,
    logs: mpsc::Receiver<String>,
    /// Every line logged up to the "listening" line.
    startup: Vec<String>,
}

impl Running {
    fn start(services_yaml: &str) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("aperture.yaml");
        let yaml = format!(
            "listenaddr: \"127.0.0.1:0\"\ninsecure: true\ndbbackend: sqlite\n\
             authenticator:\n  network: regtest\n  dev:\n    listenaddr: \"127.0.0.1:0\"\n\
             services:\n{services_yaml}"
        );
        std::fs::write(&config, yaml).unwrap();
        let base = dir.path().to_str().unwrap().to_owned();
        let config = config.to_str().unwrap().to_owned();
        let args = ["--config", &config, "--basedir", &base, "--cores", "2"];
        Self::spawn(&args, dir)
    }

    fn spawn(args: &[&str], dir: tempfile::TempDir) -> Running {
        Self::spawn_logging(args, dir, "info")
    }

    fn spawn_logging(args: &[&str], dir: tempfile::TempDir, level: &str) -> Running {
        Self::spawn_command(crate::support::aperture_command(), args, dir, level)
    }

    /// Runs the binary under `taskset -c CPUS` (taskset execs it, so the pid is aperture's).
    fn spawn_under_taskset(cpus: &str, args: &[&str], dir: tempfile::TempDir) -> Running {
        let template = crate::support::aperture_command();
        let mut cmd = std::process::Command::new("taskset");
        cmd.arg("-c").arg(cpus).arg(template.get_program());
        for (k, v) in template.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        Self::spawn_command(cmd, args, dir, "info")
    }

    fn spawn_command(
        mut cmd: std::process::Command,
        args: &[&str],
        dir: tempfile::TempDir,
        level: &str,
    ) -> Running {
        let mut child = cmd
            .args(args)
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn aperture");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut addr, mut wallet, mut startup) = (None, None, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(20);
        while addr.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("aperture did not log its address");
            if let Some(a) = after(&line, "aperture listening on http://") {
                addr = Some(a);
            }
            if let Some(w) = after(&line, "wallet at http://") {
                wallet = Some(w);
            }
            startup.push(line);
        }
        Running {
            child,
            addr: addr.unwrap(),
            wallet,
            _dir: dir,
            logs: rx,
            startup,
        }
    }

    /// Waits for a log line containing every one of `parts`.
    fn wait_log(&self, parts: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .logs
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line with {parts:?}"));
            if parts.iter().all(|p| line.contains(p)) {
                return line;
            }
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Peak and current resident memory in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    fn wait_exit(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "aperture did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let end = rest
        .find(|c: char| {
            !(c.is_ascii_alphanumeric() || c == '.' || c == ':' || c == '[' || c == ']')
        })
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let origin = Origin::start();
    let mut proc = Running::start(&service("free", origin.addr, "    auth: \"off\"\n"));
    let mut conn = Conn::open(proc.addr);
    conn.send(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_until(
        "the request to reach the origin",
        Duration::from_secs(10),
        || origin.holding() == 1,
    );
    proc.signal(libc::SIGTERM);
    let addr = proc.addr;
    wait_until("the listeners to close", Duration::from_secs(10), || {
        !crate::support::listening(addr)
    });
    origin.release();
    let r = conn.read_response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "released"));
    assert_eq!(proc.wait_exit(Duration::from_secs(10)), 0);
}

#[test]
fn a_50_mib_response_streams_in_bounded_memory() {
    let origin = Origin::start();
    let proc = Running::start(&service("free", origin.addr, "    auth: \"off\"\n"));
    assert_eq!(get(proc.addr, "/warm", "").status, 200);
    let (_, before) = proc.memory_kib();
    let n = 50 * 1024 * 1024;
    let r = get(proc.addr, &format!("/big?n={n}"), "");
    assert_eq!((r.status, r.body.len()), (200, n));
    let (peak, _) = proc.memory_kib();
    assert!(
        peak < before + 16 * 1024,
        "proxy peak RSS grew by {} KiB while streaming 50 MiB",
        peak - before
    );
}

#[test]
fn check_config_exit_codes() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-conf.yaml");
    let ok = crate::support::aperture_command()
        .args(["--check-config", "--config", sample])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "listenaddr: \"127.0.0.1:8081\"\ninsecure: true\nsqlite:\n  dbfile: /tmp/x.db\n",
    )
    .unwrap();
    let out = crate::support::aperture_command()
        .args(["--check-config", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("databasefilename"), "{text}");
}

#[test]
fn fetch_subcommand_pays_and_prints_the_resource() {
    let origin = Origin::start();
    let proxy = Proxy::start(&service("svc", origin.addr, ""), 1);
    let url = format!("http://{}/paid/thing", proxy.addr);
    let wallet = format!("http://{}", proxy.wallet);
    let out = crate::support::aperture_command()
        .args(["fetch", &url, "--wallet", &wallet])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("origin saw /paid/thing"), "{stdout}");
}

#[test]
fn dev_mode_needs_nothing_and_serves_the_whole_flow() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_str().unwrap().to_owned();
    let mut proc = Running::spawn(&["--dev", "--basedir", &base, "--cores", "1"], dir);
    let wallet = proc.wallet.expect("the dev wallet address is logged");
    let out = crate::support::aperture_command()
        .args([
            "fetch",
            &format!("http://{}/hello", proc.addr),
            "--wallet",
            &format!("http://{wallet}"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("demo origin"), "{stdout}");
    proc.signal(libc::SIGINT);
    assert_eq!(proc.wait_exit(Duration::from_secs(10)), 0);
}

#[test]
fn bad_lnd_files_are_a_config_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aperture.yaml");
    let missing = dir.path().join("nope/tls.cert");
    let yaml = format!(
        "listenaddr: \"127.0.0.1:0\"\ninsecure: true\ndbbackend: sqlite\nauthenticator:\n  network: regtest\n  lndhost: \"127.0.0.1:10009\"\n  tlspath: \"{}\"\n  macdir: \"{}\"\nservices: []\n",
        missing.display(),
        dir.path().display()
    );
    std::fs::write(&config, yaml).unwrap();
    let out = crate::support::aperture_command()
        .args([
            "--config",
            config.to_str().unwrap(),
            "--basedir",
            dir.path().to_str().unwrap(),
            "--cores",
            "1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("tls.cert") || stderr.contains("invoice.macaroon"),
        "{stderr}"
    );
}

#[test]
fn unreachable_lnd_is_a_startup_error_naming_the_address() {
    let lnd_dir = tempfile::tempdir().unwrap();
    let fake =
        lnd_bridge::fake::FakeLnd::start(lnd_dir.path(), lnd_bridge::Network::Regtest).unwrap();
    let (cert, macdir) = (fake.tls_cert_path(), lnd_dir.path().to_path_buf());
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aperture.yaml");
    let yaml = format!(
        "listenaddr: \"127.0.0.1:0\"\ninsecure: true\ndbbackend: sqlite\nauthenticator:\n  network: regtest\n  lndhost: \"{closed}\"\n  tlspath: \"{}\"\n  macdir: \"{}\"\nservices: []\n",
        cert.display(),
        macdir.display()
    );
    std::fs::write(&config, yaml).unwrap();
    let out = crate::support::aperture_command()
        .args([
            "--config",
            config.to_str().unwrap(),
            "--basedir",
            dir.path().to_str().unwrap(),
            "--cores",
            "1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&closed.to_string()), "{stderr}");
}

#[test]
fn sighup_reloads_the_config_and_a_bad_file_keeps_the_running_one() {
    let origin = Origin::start();
    let proc = Running::start(&service("svc", origin.addr, ""));
    let invoice = |addr| crate::support::challenge(&get(addr, "/", "")).1;
    assert!(invoice(proc.addr).starts_with("lnbcrt100n1"));
    let path = proc._dir.path().join("aperture.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, yaml.replace("price: 10", "price: 20")).unwrap();
    proc.signal(libc::SIGHUP);
    let addr = proc.addr;
    wait_until("the new price", Duration::from_secs(10), || {
        (0..4).all(|_| invoice(addr).starts_with("lnbcrt200n1"))
    });
    proc.wait_log(&["configuration reloaded"], Duration::from_secs(10));
    std::fs::write(&path, "listenaddr: [broken\n").unwrap();
    proc.signal(libc::SIGHUP);
    proc.wait_log(
        &["reload of", "failed, keeping the running config"],
        Duration::from_secs(10),
    );
    // The broken file was refused: still the price-20 service, still serving.
    assert!(invoice(addr).starts_with("lnbcrt200n1"));
}

#[test]
fn debug_logs_name_requests_but_never_credentials() {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aperture.yaml");
    let yaml = format!(
        "listenaddr: \"127.0.0.1:0\"\ninsecure: true\ndbbackend: sqlite\nsqlite:\n  databasefilename: \"{}/a.db\"\n\
         authenticator:\n  network: regtest\n  dev:\n    listenaddr: \"127.0.0.1:0\"\nservices:\n{}",
        dir.path().display(),
        service("svc", origin.addr, "")
    );
    std::fs::write(&config, yaml).unwrap();
    let (config, base) = (
        config.to_str().unwrap().to_owned(),
        dir.path().to_str().unwrap().to_owned(),
    );
    let proc = Running::spawn_logging(
        &["--config", &config, "--basedir", &base, "--cores", "1"],
        dir,
        "debug",
    );
    let (mac, invoice) = crate::support::challenge(&get(proc.addr, "/secret", ""));
    let preimage = crate::support::pay(proc.wallet.unwrap(), &invoice);
    let r = get(
        proc.addr,
        "/paid-path",
        &format!("Authorization: L402 {mac}:{preimage}\r\n"),
    );
    assert_eq!(r.status, 200);
    let line = proc.wait_log(&["request", "/paid-path", "200"], Duration::from_secs(10));
    assert!(
        line.contains("upstream=svc") || line.contains("upstream: svc") || line.contains("svc"),
        "{line}"
    );
    // Everything logged up to now: no macaroon, no preimage.
    let mut seen = vec![line];
    while let Ok(l) = proc.logs.recv_timeout(Duration::from_millis(200)) {
        seen.push(l);
    }
    for l in &seen {
        assert!(
            !l.contains(&mac[..40]) && !l.contains(&preimage),
            "credential in the log: {l}"
        );
    }
}

/// The CPUs in a kernel CPU list (`0-2,5`), as in `Cpus_allowed_list`.
fn cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(lo.parse::<usize>().unwrap()..=hi.parse::<usize>().unwrap());
    }
    cpus
}

fn allowed_cpus(status_path: &str) -> Vec<usize> {
    let status = std::fs::read_to_string(status_path).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap();
    cpu_list(line)
}

/// Each worker thread (`aperture-core-N`, by its name in /proc) and the CPUs it may run on.
fn worker_affinity(pid: i32) -> Vec<(String, Vec<usize>)> {
    let mut workers = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if name.starts_with("aperture-core-") {
            let status = dir.join("status");
            workers.push((
                name.trim().to_owned(),
                allowed_cpus(status.to_str().unwrap()),
            ));
        }
    }
    workers.sort();
    workers
}

/// Two CPUs this test may use, or why the pinning tests cannot run here.
fn two_cpus() -> Result<(usize, usize), String> {
    let mine = allowed_cpus("/proc/self/status");
    if mine.len() < 2 {
        return Err(format!(
            "this process may run on {mine:?} only; need 2 CPUs"
        ));
    }
    let taskset = std::process::Command::new("taskset")
        .arg("-V")
        .output()
        .map_err(|e| format!("no taskset ({e})"))?;
    if !taskset.status.success() {
        return Err("taskset -V failed".into());
    }
    Ok((mine[0], mine[1]))
}

fn free_service_args(dir: &tempfile::TempDir, origin: SocketAddr) -> (String, String) {
    let config = dir.path().join("aperture.yaml");
    let yaml = format!(
        "listenaddr: \"127.0.0.1:0\"\ninsecure: true\ndbbackend: sqlite\n\
         authenticator:\n  network: regtest\n  dev:\n    listenaddr: \"127.0.0.1:0\"\n\
         services:\n{}",
        service("free", origin, "    auth: \"off\"\n")
    );
    std::fs::write(&config, yaml).unwrap();
    (
        config.to_str().unwrap().to_owned(),
        dir.path().to_str().unwrap().to_owned(),
    )
}

#[test]
fn workers_are_pinned_inside_the_inherited_cpu_set() {
    let (first, second) = match two_cpus() {
        Ok(cpus) => cpus,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let origin = Origin::start();
    // `taskset -c <second> aperture --cores 1`: the one worker runs on that CPU, not on the
    // first CPU of the machine.
    let dir = tempfile::tempdir().unwrap();
    let (config, base) = free_service_args(&dir, origin.addr);
    let args = ["--config", &config, "--basedir", &base, "--cores", "1"];
    let proc = Running::spawn_under_taskset(&second.to_string(), &args, dir);
    assert_eq!(
        worker_affinity(proc.pid()),
        vec![("aperture-core-0".to_owned(), vec![second])]
    );
    assert_eq!(get(proc.addr, "/", "").status, 200);
    drop(proc);

    // More workers than the set holds: clamped to the set, with a warning naming --no-pin.
    let dir = tempfile::tempdir().unwrap();
    let (config, base) = free_service_args(&dir, origin.addr);
    let args = ["--config", &config, "--basedir", &base, "--cores", "2"];
    let proc = Running::spawn_under_taskset(&second.to_string(), &args, dir);
    assert_eq!(
        worker_affinity(proc.pid()),
        vec![("aperture-core-0".to_owned(), vec![second])]
    );
    assert!(
        proc.startup
            .iter()
            .any(|l| l.contains("WARN") && l.contains("--no-pin")),
        "{:?}",
        proc.startup
    );
    drop(proc);

    // --no-pin: every worker keeps the whole inherited set, and --cores is not clamped.
    let dir = tempfile::tempdir().unwrap();
    let (config, base) = free_service_args(&dir, origin.addr);
    let args = [
        "--config",
        &config,
        "--basedir",
        &base,
        "--cores",
        "3",
        "--no-pin",
    ];
    let set = format!("{first},{second}");
    let proc = Running::spawn_under_taskset(&set, &args, dir);
    let both = vec![first, second];
    assert_eq!(
        worker_affinity(proc.pid()),
        (0..3)
            .map(|i| (format!("aperture-core-{i}"), both.clone()))
            .collect::<Vec<_>>()
    );
}

/// The revision logic of the build script, compiled here too (`OVERRIDE` is the script's).
#[allow(dead_code)]
#[path = "../../build/git_revision.rs"]
mod git_revision;

#[test]
fn version_names_the_crate_version_and_the_git_revision() {
    let out = crate::support::aperture_command()
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let prefix = format!("aperture {} (rev ", env!("CARGO_PKG_VERSION"));
    let rev = text
        .trim_end()
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{text:?}"));
    // The build script stamps the same value into every target of the package.
    assert_eq!(rev, env!("APERTURE_GIT_REV"));
    assert!(
        rev == "unknown" || (rev.len() == 12 && rev.bytes().all(|b| b.is_ascii_hexdigit())),
        "{text:?}"
    );
    // A tarball without .git (even one unpacked inside another repository) says "unknown"; a
    // packager may name the revision instead.
    let tarball = tempfile::tempdir().unwrap();
    assert_eq!(git_revision::git_revision(tarball.path(), None), "unknown");
    assert_eq!(
        git_revision::git_revision(tarball.path(), Some("1a2b3c")),
        "1a2b3c"
    );
    assert!(git_revision::watched_files(tarball.path()).is_empty());
    let checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let here = git_revision::git_revision(checkout, None);
    assert!(
        here == "unknown" || (here.len() == 12 && here.bytes().all(|b| b.is_ascii_hexdigit())),
        "{here}"
    );
}

/// A config serving one free service, with `extra` top-level YAML.
fn free_service_config(dir: &tempfile::TempDir, origin: SocketAddr, extra: &str) -> [String; 2] {
    let (config, base) = free_service_args(dir, origin);
    let yaml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{extra}{yaml}")).unwrap();
    [config, base]
}

#[test]
fn json_log_lines_parse() {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let [config, base] = free_service_config(&dir, origin.addr, "logging:\n  format: json\n");
    let args = ["--config", &config, "--basedir", &base, "--cores", "1"];
    let mut proc = Running::spawn(&args, dir);
    assert_eq!(get(proc.addr, "/", "").status, 200);
    proc.signal(libc::SIGTERM);
    assert_eq!(proc.wait_exit(Duration::from_secs(10)), 0);
    let mut lines = proc.startup.clone();
    lines.extend(proc.logs.try_iter());
    assert!(lines.iter().any(|l| l.contains("drained")), "{lines:?}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(),
            "{line}"
        );
    }
    let listening = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("aperture listening on"))
        })
        .expect("the listening line");
    assert_eq!(listening["cores"], 1, "{listening}");
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let systemd = UnixDatagram::bind(&socket_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 1024];
        let n = systemd.recv(&mut buf).expect("a notification");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    let [config, base] = free_service_config(&dir, origin.addr, "");
    let mut cmd = crate::support::aperture_command();
    cmd.env(aperture::systemd::NOTIFY_SOCKET, &socket_path);
    let args = ["--config", &config, "--basedir", &base, "--cores", "2"];
    let mut proc = Running::spawn_command(cmd, &args, dir, "info");
    let ready = next();
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving on http://")
            && ready.contains(&proc.addr.to_string())
            && ready.contains("2 cores"),
        "{ready:?}"
    );
    assert_eq!(get(proc.addr, "/", "").status, 200);
    proc.signal(libc::SIGHUP);
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    assert_eq!(next(), "READY=1\nSTATUS=serving, configuration reloaded");
    proc.signal(libc::SIGTERM);
    assert!(next().starts_with("STOPPING=1"));
    assert_eq!(proc.wait_exit(Duration::from_secs(10)), 0);
}
