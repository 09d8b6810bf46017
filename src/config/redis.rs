//! Validation of `ratelimitbackend` and the `redis:` block (ours): where rate-limit buckets live.
//! `local` (the default) keeps them exact per instance with no dependency; `redis` shares them
//! across a fleet through one Redis server. Pure: no I/O (the CA file is read when the Redis
//! thread starts, not here).

use std::path::PathBuf;
use std::time::Duration;

use super::raw::RawConfig;
use super::validate::{nonempty, Ctx};
use super::values::{check_backend_address, expand_env, expand_tilde};
use super::ConfigError;

/// Where rate-limit buckets live (`ratelimitbackend`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RateLimitBackend {
    /// In this process, exact per instance (the default).
    #[default]
    Local,
    /// Shared by every instance through one Redis server.
    Redis(Redis),
}

/// The `redis:` block. `Debug` redacts the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Redis {
    /// `host:port`.
    pub address: String,
    /// ACL user name (`AUTH user pass`); `None`: `AUTH pass` (the default user) when a
    /// password is set.
    pub username: Option<String>,
    /// `None`: no AUTH.
    pub password: Option<String>,
    /// Connect over TLS (verify-full against `tls_ca_file`, else the public web PKI roots).
    pub tls: bool,
    /// PEM file of the CAs to trust for the server's certificate.
    pub tls_ca_file: Option<PathBuf>,
    /// Prepended to every key this proxy writes (several fleets can share one Redis).
    pub key_prefix: String,
    /// Connect, read and write timeout of the Redis connection, and the longest a request waits
    /// for a lease before it is decided per instance (capped at 500 ms by the fleet thread).
    pub timeout: Duration,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The default `redis.keyprefix`.
pub const DEFAULT_KEY_PREFIX: &str = "aperture:";

/// `ratelimitbackend` and `redis:`.
pub(crate) fn backend(raw: &RawConfig, cx: &mut Ctx<'_>) -> Result<RateLimitBackend, ConfigError> {
    let redis_wanted = match nonempty(raw.ratelimitbackend.as_deref()) {
        None | Some("local") => false,
        Some("redis") => true,
        Some(other) => {
            return Err(cx.invalid(
                "ratelimitbackend",
                format!("unknown value {other:?}: use local (exact per instance, the default) or redis (shared by a fleet; needs the redis: block)"),
            ))
        }
    };
    if !redis_wanted {
        if raw.redis.is_some() {
            cx.warn("redis: has no effect without `ratelimitbackend: redis`; ignored");
        }
        return Ok(RateLimitBackend::Local);
    }
    let Some(r) = &raw.redis else {
        return Err(cx.invalid(
            "redis",
            "is required with `ratelimitbackend: redis`: add a redis: block with at least address: \"host:6379\"",
        ));
    };
    let address = nonempty(r.address.as_deref()).ok_or_else(|| {
        cx.invalid(
            "redis.address",
            "is required: the Redis server's host:port, e.g. \"127.0.0.1:6379\"",
        )
    })?;
    check_backend_address(address).map_err(|m| cx.invalid("redis.address", m))?;
    let secret = |key: &str, v: Option<&str>| -> Result<Option<String>, ConfigError> {
        nonempty(v)
            .map(|s| expand_env(s).map_err(|m| cx.invalid(format!("redis.{key}"), m)))
            .transpose()
    };
    let username = secret("username", r.username.as_deref())?;
    let password = secret("password", r.password.as_deref())?;
    if username.is_some() && password.is_none() {
        return Err(cx.invalid(
            "redis.username",
            "needs redis.password (Redis authenticates a user name with its password)",
        ));
    }
    let tls = r.tls.unwrap_or(false);
    let tls_ca_file = nonempty(r.tlscafile.as_deref()).map(expand_tilde);
    if tls_ca_file.is_some() && !tls {
        return Err(cx.invalid(
            "redis.tlscafile",
            "has no effect without redis.tls: true; set tls: true (or remove the CA file)",
        ));
    }
    if password.is_some() && !tls && !is_loopback(address) {
        cx.warn(format!(
            "redis.password: sent in clear text to {address}; set redis.tls: true"
        ));
    }
    let timeout = cx.duration(
        "redis.timeout",
        r.timeout.as_deref(),
        Duration::from_millis(250),
    )?;
    if timeout.is_zero() || timeout > Duration::from_secs(1) {
        return Err(cx.invalid(
            "redis.timeout",
            "must be between 1ms and 1s (default 250ms): a request that needs a new lease waits at most this long before it is decided per instance",
        ));
    }
    Ok(RateLimitBackend::Redis(Redis {
        address: address.to_owned(),
        username,
        password,
        tls,
        tls_ca_file,
        key_prefix: r
            .keyprefix
            .clone()
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned()),
        timeout,
    }))
}

fn is_loopback(address: &str) -> bool {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, RateLimitBackend};

    const BASE: &str = "listenaddr: \"127.0.0.1:8081\"\nauthenticator:\n  disable: true\n";

    fn backend(extra: &str) -> Result<(RateLimitBackend, Vec<String>), String> {
        parse(&format!("{BASE}{extra}"), "t.yaml")
            .map(|c| (c.rate_limit_backend, c.warnings))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn local_is_the_default() {
        assert_eq!(backend("").unwrap().0, RateLimitBackend::Local);
        assert_eq!(
            backend("ratelimitbackend: local\n").unwrap().0,
            RateLimitBackend::Local
        );
        let (b, warnings) = backend("redis:\n  address: \"h:6379\"\n").unwrap();
        assert_eq!(b, RateLimitBackend::Local);
        assert!(warnings.iter().any(|w| w.contains("ratelimitbackend")));
    }

    #[test]
    fn redis_block_validates() {
        let (b, _) = backend(
            "ratelimitbackend: redis\nredis:\n  address: \"10.0.0.5:6380\"\n  username: u\n  password: p\n  tls: true\n  tlscafile: /etc/ca.pem\n  keyprefix: \"fleet1:\"\n  timeout: 250ms\n",
        )
        .unwrap();
        let RateLimitBackend::Redis(r) = b else {
            panic!("{b:?}")
        };
        assert_eq!(r.address, "10.0.0.5:6380");
        assert_eq!(
            (r.username.as_deref(), r.password.as_deref()),
            (Some("u"), Some("p"))
        );
        assert!(r.tls && r.tls_ca_file.as_deref() == Some("/etc/ca.pem".as_ref()));
        assert_eq!(r.key_prefix, "fleet1:");
        assert_eq!(r.timeout, std::time::Duration::from_millis(250));
        assert!(!format!("{r:?}").contains("\"p\""));
        let (b, _) =
            backend("ratelimitbackend: redis\nredis:\n  address: \"127.0.0.1:6379\"\n").unwrap();
        let RateLimitBackend::Redis(r) = b else {
            panic!()
        };
        assert_eq!(r.key_prefix, "aperture:");
        assert!(!r.tls && r.password.is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let e = backend("ratelimitbackend: memcached\n").unwrap_err();
        assert!(
            e.contains("`ratelimitbackend`") && e.contains("redis"),
            "{e}"
        );
        let e = backend("ratelimitbackend: redis\n").unwrap_err();
        assert!(e.contains("`redis`") && e.contains("address"), "{e}");
        let e =
            backend("ratelimitbackend: redis\nredis:\n  address: \"redis://h:1\"\n").unwrap_err();
        assert!(e.contains("`redis.address`"), "{e}");
        let e = backend("ratelimitbackend: redis\nredis:\n  address: \"h:1\"\n  tlscafile: x\n")
            .unwrap_err();
        assert!(e.contains("`redis.tlscafile`"), "{e}");
        let e = backend("ratelimitbackend: redis\nredis:\n  address: \"h:1\"\n  username: u\n")
            .unwrap_err();
        assert!(e.contains("`redis.username`"), "{e}");
        let e = backend("ratelimitbackend: redis\nredis:\n  address: \"h:1\"\n  timeout: 0s\n")
            .unwrap_err();
        assert!(e.contains("`redis.timeout`"), "{e}");
        let e = backend("redis:\n  adress: x\n").unwrap_err();
        assert!(e.contains("did you mean `address`"), "{e}");
    }

    #[test]
    fn clear_text_password_to_a_remote_host_warns() {
        let (_, w) = backend(
            "ratelimitbackend: redis\nredis:\n  address: \"10.1.1.1:6379\"\n  password: p\n",
        )
        .unwrap();
        assert!(w.iter().any(|w| w.contains("clear text")), "{w:?}");
        let (_, w) = backend(
            "ratelimitbackend: redis\nredis:\n  address: \"127.0.0.1:6379\"\n  password: p\n",
        )
        .unwrap();
        assert!(!w.iter().any(|w| w.contains("clear text")), "{w:?}");
    }
}
