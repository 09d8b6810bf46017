//! Raw serde mirror of every key Go aperture reads from `aperture.yaml`, plus our additions, and
//! the ONE function that turns YAML text into it ([`from_yaml`]). Every struct denies unknown
//! fields, because Go aperture silently ignores them and that hid real misconfigurations
//! (`dbfile`, `requireSSL`, ...). No validation and no defaults here: everything is `Option` so
//! the validator can tell "unset" from "set to zero".

// Some Go keys are mirrored only so that valid Go files parse (admin, tor, LNC, ...); their
// values are checked and reported by the validator, never silently dropped.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Deserialize;

use super::values::closest_key;
use super::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub listenaddr: Option<String>,
    pub staticroot: Option<String>,
    pub servestatic: Option<bool>,
    pub debuglevel: Option<String>,
    pub configfile: Option<String>,
    pub basedir: Option<String>,
    pub autocert: Option<bool>,
    pub servername: Option<String>,
    pub insecure: Option<bool>,
    pub strictverify: Option<bool>,
    pub invoicebatchsize: Option<i64>,
    pub profile: Option<i64>,
    pub idletimeout: Option<String>,
    pub readtimeout: Option<String>,
    pub writetimeout: Option<String>,
    pub wspinginterval: Option<String>,
    pub wspongwait: Option<String>,
    pub blocklist: Option<Vec<String>>,
    pub dbbackend: Option<String>,
    pub authenticator: Option<RawAuthenticator>,
    pub sqlite: Option<RawSqlite>,
    pub postgres: Option<RawPostgres>,
    pub etcd: Option<RawEtcd>,
    pub admin: Option<RawAdmin>,
    pub tor: Option<RawTor>,
    pub hashmail: Option<RawHashmail>,
    pub prometheus: Option<RawPrometheus>,
    pub logging: Option<RawLogging>,
    pub services: Option<Vec<RawService>>,
    // Our additions (not in Go aperture).
    pub maxheaderbytes: Option<u64>,
    pub maxbodybytes: Option<u64>,
    pub upstreamtimeout: Option<String>,
    pub upstreamidletimeout: Option<String>,
    pub upstreammaxidle: Option<u64>,
    pub challengeshape: Option<String>,
    pub upstreamauthorization: Option<String>,
    pub ratelimitsteering: Option<String>,
    pub trustedproxies: Option<Vec<String>>,
    pub proxyprotocol: Option<bool>,
    pub challengeratelimits: Option<Vec<RawRateLimit>>,
    pub ratelimitbackend: Option<String>,
    pub redis: Option<RawRedis>,
    pub http2: Option<RawHttp2>,
    pub autocertdirectory: Option<String>,
    pub autocertdirectoryca: Option<String>,
    pub autocerthttplisten: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuthenticator {
    pub network: Option<String>,
    pub disable: Option<bool>,
    pub lndhost: Option<String>,
    pub tlspath: Option<String>,
    pub macdir: Option<String>,
    pub passphrase: Option<String>,
    pub mailboxaddress: Option<String>,
    pub devserver: Option<bool>,
    pub wavelengthgateway: Option<String>,
    pub wavelengthmacaroonpath: Option<String>,
    pub enablempp: Option<bool>,
    pub mpprealm: Option<String>,
    pub enablesessions: Option<bool>,
    pub sessiondepositmultiplier: Option<i64>,
    pub sessionidletimeout: Option<i64>,
    /// Ours: the embedded dev Lightning backend.
    pub dev: Option<RawDev>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDev {
    pub listenaddr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSqlite {
    pub databasefilename: Option<String>,
    pub skipmigrations: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPostgres {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    pub maxopenconnections: Option<i64>,
    pub requiressl: Option<bool>,
    pub skipmigrations: Option<bool>,
    /// Ours: the CA certificates (PEM) the server's certificate is verified against.
    pub tlscertpath: Option<String>,
    /// Ours: `full` (chain and host name, the default) or `ca` (chain only).
    pub tlsverify: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEtcd {
    pub host: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub enabled: Option<bool>,
    pub macaroonpath: Option<String>,
    pub corsorigins: Option<Vec<String>>,
    /// Ours: the admin listener's address when it is not the prometheus one.
    pub listenaddr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTor {
    pub control: Option<String>,
    pub listenport: Option<u16>,
    pub virtualport: Option<u16>,
    pub v3: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHashmail {
    pub enabled: Option<bool>,
    pub messagerate: Option<String>,
    pub messageburstallowance: Option<i64>,
    pub staletimeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPrometheus {
    pub enabled: Option<bool>,
    pub listenaddr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLogging {
    pub console: Option<RawLogTarget>,
    pub file: Option<RawLogTarget>,
    /// Ours: `text` (default) or `json`. Go aperture ignores the key, so a file keeps working
    /// with both.
    pub format: Option<String>,
}

/// lnd's `build.LogConfig` console/file sections (a superset of both, so either parses).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLogTarget {
    pub disable: Option<bool>,
    pub notimestamps: Option<bool>,
    pub callsite: Option<String>,
    pub style: Option<bool>,
    pub level: Option<String>,
    pub compressor: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub name: Option<String>,
    pub hostregexp: Option<String>,
    pub pathregexp: Option<String>,
    pub address: Option<String>,
    pub protocol: Option<String>,
    pub tlscertpath: Option<String>,
    /// Ours: explicit opt-out of backend certificate verification.
    pub tlsskipverify: Option<bool>,
    pub auth: Option<String>,
    pub authscheme: Option<String>,
    pub authwhitelistpaths: Option<Vec<String>>,
    pub authskipinvoicecreationpaths: Option<Vec<String>>,
    /// Values are `Option` so that an unquoted `!file+hex:...` (which YAML reads as a tag on an
    /// empty value) gets a clear "quote it" error instead of a type error.
    pub headers: Option<BTreeMap<String, Option<String>>>,
    pub rewrite: Option<RawRewrite>,
    pub capabilities: Option<String>,
    pub constraints: Option<BTreeMap<String, String>>,
    pub timeout: Option<i64>,
    pub price: Option<i64>,
    pub ratelimits: Option<Vec<RawRateLimit>>,
    pub dynamicprice: Option<RawDynamicPrice>,
    /// Ours: `openai` meters the service with the built-in meter (no pricer daemon).
    pub metering: Option<String>,
    /// Ours: the built-in meter's bundles and per-model prices.
    pub meter: Option<RawMeter>,
}

/// Ours: the built-in meter of a `metering: openai` service.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMeter {
    pub bundletokens: Option<i64>,
    pub estimatedtokens: Option<i64>,
    pub defaultmodel: Option<String>,
    pub models: Option<BTreeMap<String, RawModelPrice>>,
}

/// Ours: one model's prices under `meter.models`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModelPrice {
    pub inputmsatpertoken: Option<i64>,
    pub outputmsatpertoken: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRewrite {
    pub prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub pathregexp: Option<String>,
    pub requests: Option<i64>,
    pub per: Option<String>,
    pub burst: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDynamicPrice {
    pub enabled: Option<bool>,
    pub grpcaddress: Option<String>,
    pub insecure: Option<bool>,
    pub tlscertpath: Option<String>,
    pub metered: Option<bool>,
    pub usagetailbytes: Option<i64>,
}

/// Ours: the Redis server that holds fleet-wide rate-limit buckets (`ratelimitbackend: redis`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    pub address: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<bool>,
    pub tlscafile: Option<String>,
    pub keyprefix: Option<String>,
    pub timeout: Option<String>,
}

/// Ours: HTTP/2 limits of the downstream listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp2 {
    pub maxconcurrentstreams: Option<i64>,
    pub maxheaderlistsize: Option<i64>,
    pub initialstreamwindow: Option<i64>,
    pub initialconnectionwindow: Option<i64>,
    pub idletimeout: Option<String>,
}

/// Parses YAML text into the raw mirror. This is the only place that touches the YAML library.
/// One service block (the admin API's stored form), with the file's rules: unknown keys refused.
pub(crate) fn service_from_yaml(text: &str, origin: &str) -> Result<RawService, ConfigError> {
    serde_saphyr::from_str::<RawService>(text).map_err(|err| yaml_error(&err, origin, None))
}

pub(crate) fn from_yaml(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    serde_saphyr::from_str::<RawConfig>(text).map_err(|err| yaml_error(&err, origin, Some(text)))
}

/// A YAML error as a [`ConfigError`] naming `origin`; an unknown key gets its hint and, with
/// `text`, its line.
fn yaml_error(err: &serde_saphyr::Error, origin: &str, text: Option<&str>) -> ConfigError {
    if let serde_saphyr::Error::SerdeUnknownField {
        field,
        expected,
        location,
    } = err.without_snippet()
    {
        let line = text.and_then(|text| match location.line() {
            0 => find_key_line(text, field),
            n => Some(n),
        });
        return unknown_key(origin, field, expected, line);
    }
    // The library names the text `<input>`; name the real file instead.
    let rendered = err.to_string().replace("<input>", origin);
    let message = rendered
        .strip_prefix("error: ")
        .unwrap_or(&rendered)
        .to_owned();
    ConfigError::Yaml {
        origin: origin.to_owned(),
        message,
    }
}

/// Fallback when the YAML library gives no location: the first line that sets `key`.
fn find_key_line(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .position(|line| {
            let t = line.trim_start().trim_start_matches("- ").trim_start();
            let t = t.trim_start_matches(['"', '\'']);
            t.strip_prefix(key)
                .map(|r| {
                    r.trim_start_matches(['"', '\''])
                        .trim_start()
                        .starts_with(':')
                })
                .unwrap_or(false)
        })
        .map(|i| i as u64 + 1)
}

/// Builds the error for an unknown key, with the targeted hint for Go aperture's known pitfalls
/// (`config-reference.md` §4) or a "did you mean" for typos.
fn unknown_key(origin: &str, key: &str, expected: &[&str], line: Option<u64>) -> ConfigError {
    let has = |k: &str| expected.contains(&k);
    let hint = match key {
        "dbfile" if has("databasefilename") => "the sqlite file key is `databasefilename` \
            (`dbfile` is only the command-line flag name). Go aperture ignored `dbfile` and used \
            the default ~/.aperture/aperture.db; if you are migrating, point `databasefilename` \
            at the file that actually holds your tokens (usually that default)."
            .to_owned(),
        "corsorigin" if has("corsorigins") => "the key is `corsorigins` (a list); Go aperture \
            ignored `corsorigin`, so admin CORS was off."
            .to_owned(),
        "maxconnections" if has("maxopenconnections") => "the key is `maxopenconnections`; Go \
            aperture ignored `maxconnections` and used 25."
            .to_owned(),
        "requireSSL" if has("requiressl") => "the key is `requiressl` (all lowercase). SECURITY: \
            Go aperture ignored `requireSSL` and connected to postgres with sslmode=disable, so \
            the database traffic was NOT encrypted."
            .to_owned(),
        _ => match closest_key(key, expected) {
            Some(k) if k == key.to_ascii_lowercase() => {
                format!("keys are all lowercase: write `{k}`.")
            }
            Some(k) => format!("did you mean `{k}`?"),
            None if expected.is_empty() => "this section takes no keys.".to_owned(),
            None => format!("valid keys here: {}.", expected.join(", ")),
        },
    };
    ConfigError::UnknownKey {
        origin: origin.to_owned(),
        key: key.to_owned(),
        line,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        from_yaml(text, "t.yaml").unwrap_err()
    }

    #[test]
    fn unknown_keys_name_line_and_fix() {
        let e = err("listenaddr: x\nsqlite:\n  dbfile: /a.db\n");
        let msg = e.to_string();
        assert!(msg.contains("t.yaml:3"), "{msg}");
        assert!(msg.contains("databasefilename"), "{msg}");
        let msg = err("postgres:\n  requireSSL: true\n").to_string();
        assert!(
            msg.contains("requiressl") && msg.contains("sslmode=disable"),
            "{msg}"
        );
        let msg = err("admin:\n  corsorigin: [x]\n").to_string();
        assert!(msg.contains("`corsorigins`"), "{msg}");
        let msg = err("postgres:\n  maxconnections: 3\n").to_string();
        assert!(msg.contains("`maxopenconnections`"), "{msg}");
        let msg =
            err("services:\n  - name: a\n    dynamicprice:\n      enbled: true\n").to_string();
        assert!(
            msg.contains("t.yaml:4") && msg.contains("did you mean `enabled`"),
            "{msg}"
        );
        let msg = err("ListenAddr: x\n").to_string();
        assert!(msg.contains("lowercase"), "{msg}");
    }

    #[test]
    fn key_line_fallback() {
        assert_eq!(find_key_line("a: 1\n  - b: 2\n", "b"), Some(2));
        assert_eq!(find_key_line("ab: 1\n", "a"), None);
    }

    #[test]
    fn empty_and_type_errors() {
        assert!(from_yaml("", "t").unwrap().listenaddr.is_none());
        let msg = err("price: [\n").to_string();
        assert!(msg.starts_with("t.yaml"), "{msg}");
        let msg = err("services:\n  - price: abc\n").to_string();
        assert!(msg.contains("line 2"), "{msg}");
    }
}
