//! The `admin` section: Go aperture's `enabled`, `macaroonpath` and `corsorigins`, and our
//! `listenaddr`, validated into [`AdminConfig`]. Errors name the key. Pure: no file I/O (the
//! macaroon is created by the admin server at start).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::raw::RawConfig;
use super::validate::{nonempty, Ctx};
use super::values::{expand_tilde, parse_listen_addr};
use super::ConfigError;

/// `admin.listenaddr`'s default when no prometheus listener is there to share.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:8082";
/// The macaroon's file name in `basedir` when `admin.macaroonpath` is unset.
pub const DEFAULT_MACAROON_FILE: &str = "admin.macaroon";

/// The admin API (`admin.enabled: true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where the admin API listens: `admin.listenaddr` (ours) when set; else the prometheus
    /// listener's address when prometheus is enabled (one listener serves both); else
    /// `127.0.0.1:8082`. When it differs from [`Config::prometheus`](super::Config), the
    /// prometheus address keeps serving the metrics and health probes alone.
    pub listen_addr: SocketAddr,
    /// The admin macaroon (`admin.macaroonpath`, `~` expanded; default
    /// `<basedir>/admin.macaroon`); its root key lies beside it as `.rootkey`.
    pub macaroon_path: PathBuf,
    /// Origins allowed to call the REST API from a browser (`admin.corsorigins`): exact
    /// `scheme://host[:port]` values, or `*` for any. Empty: no CORS answers.
    pub cors_origins: Vec<String>,
}

/// Whether `s` is an origin as a browser sends it: `scheme://host[:port]`, nothing after.
fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let host = rest.rsplit_once(':').map_or(rest, |(h, port)| {
        if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            rest
        }
    });
    scheme_ok
        && !host.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
        && !rest.chars().any(char::is_control)
}

/// The admin section, `None` unless `admin.enabled`. `basedir` is the validated one;
/// `prometheus` the metrics listener, if enabled.
pub(crate) fn admin(
    raw: &RawConfig,
    basedir: &std::path::Path,
    prometheus: Option<SocketAddr>,
    cx: &mut Ctx<'_>,
) -> Result<Option<AdminConfig>, ConfigError> {
    let Some(a) = &raw.admin else {
        return Ok(None);
    };
    // Checked even when disabled, so a typo does not wait for the day it is switched on.
    let listen_addr = nonempty(a.listenaddr.as_deref())
        .map(|s| parse_listen_addr(s).map_err(|m| cx.invalid("admin.listenaddr", m)))
        .transpose()?;
    let mut cors_origins = Vec::new();
    for (i, o) in a.corsorigins.iter().flatten().enumerate() {
        let o = o.trim();
        if o != "*" && !is_origin(o) {
            return Err(cx.invalid(
                format!("admin.corsorigins[{i}]"),
                format!(
                    "{o:?} is not an origin; write scheme://host[:port] (e.g. \
                     https://dashboard.example.com, no path or trailing slash) or \"*\""
                ),
            ));
        }
        cors_origins.push(o.to_owned());
    }
    if !a.enabled.unwrap_or(false) {
        return Ok(None);
    }
    let macaroon_path = nonempty(a.macaroonpath.as_deref())
        .map(expand_tilde)
        .unwrap_or_else(|| basedir.join(DEFAULT_MACAROON_FILE));
    let listen_addr = listen_addr.or(prometheus).map_or_else(
        || parse_listen_addr(DEFAULT_ADMIN_ADDR).map_err(|m| cx.invalid("admin.listenaddr", m)),
        Ok,
    )?;
    if !listen_addr.ip().is_loopback() {
        cx.warn(format!(
            "admin.listenaddr: the admin API listens on {listen_addr}, beyond loopback; every \
             call but GetHealth needs the admin macaroon, but keep the address firewalled"
        ));
    }
    Ok(Some(AdminConfig {
        listen_addr,
        macaroon_path,
        cors_origins,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const MIN: &str =
        "listenaddr: \"127.0.0.1:8081\"\ndbbackend: sqlite\nauthenticator:\n  dev: {}\n";

    fn admin_of(extra: &str) -> Result<Option<AdminConfig>, ConfigError> {
        parse(&format!("{MIN}basedir: /var/lib/ap\n{extra}"), "t").map(|c| c.admin)
    }

    #[test]
    fn defaults_and_the_shared_prometheus_listener() {
        assert_eq!(admin_of("").unwrap(), None);
        assert_eq!(admin_of("admin:\n  enabled: false\n").unwrap(), None);
        let a = admin_of("admin:\n  enabled: true\n").unwrap().unwrap();
        assert_eq!(a.listen_addr, "127.0.0.1:8082".parse().unwrap());
        assert_eq!(a.macaroon_path, PathBuf::from("/var/lib/ap/admin.macaroon"));
        assert!(a.cors_origins.is_empty());
        let a = admin_of("admin:\n  enabled: true\nprometheus:\n  enabled: true\n  listenaddr: \"127.0.0.1:9100\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            a.listen_addr,
            "127.0.0.1:9100".parse().unwrap(),
            "one listener"
        );
        let a = admin_of("admin:\n  enabled: true\n  listenaddr: \"127.0.0.1:9200\"\n  macaroonpath: /m/a.macaroon\n  corsorigins: [\"https://d.example\", \"http://localhost:3000\", \"*\"]\nprometheus:\n  enabled: true\n")
            .unwrap()
            .unwrap();
        assert_eq!(a.listen_addr, "127.0.0.1:9200".parse().unwrap());
        assert_eq!(a.macaroon_path, PathBuf::from("/m/a.macaroon"));
        assert_eq!(a.cors_origins.len(), 3);
    }

    #[test]
    fn errors_name_the_key_and_wide_listeners_warn() {
        let e = admin_of("admin:\n  enabled: true\n  listenaddr: nope\n").unwrap_err();
        assert!(e.to_string().contains("admin.listenaddr"), "{e}");
        for bad in [
            "https://d.example/",
            "d.example",
            "https://",
            "https://a b",
            "https://d.example/x",
        ] {
            let e = admin_of(&format!(
                "admin:\n  corsorigins: [\"https://ok.example\", \"{bad}\"]\n"
            ))
            .unwrap_err();
            assert!(e.to_string().contains("admin.corsorigins[1]"), "{bad}: {e}");
        }
        let c = parse(
            &format!("{MIN}admin:\n  enabled: true\n  listenaddr: \"0.0.0.0:8082\"\n"),
            "t",
        )
        .unwrap();
        assert!(
            c.warnings.iter().any(|w| w.contains("admin.listenaddr")),
            "{:?}",
            c.warnings
        );
        assert!(is_origin("http://[::1]:8080"));
        assert!(is_origin("https://d.example:443"));
    }
}
