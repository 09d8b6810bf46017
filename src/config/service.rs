//! Validation of `services[]`: regexes, backend address and protocol, auth level, price, caveat
//! material (timeout, capabilities, sorted constraints), upstream headers (`${ENV}` and
//! `!file+hex:`/`!file+base64:` values, the only file reads in config), rate-limit rules and the
//! dynamic pricer. Errors name the service (index and name) and the field.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use regex::Regex;

use super::raw::{RawDynamicPrice, RawRateLimit, RawService};
use super::validate::{nonempty, Ctx};
use super::values::{check_backend_address, expand_env, expand_tilde, parse_duration};
use super::{Auth, ConfigError, DynamicPrice, Protocol, RateLimitRule, Schemes, Service};

/// Go aperture's price ceiling (10^13 sats).
const MAX_PRICE: i64 = 10_000_000_000_000;
/// Largest response tail sent to a metered pricer.
const MAX_USAGE_TAIL: i64 = 1 << 20;

pub(crate) fn services(
    raw: Vec<RawService>,
    cx: &mut Ctx<'_>,
) -> Result<Vec<Service>, ConfigError> {
    let mut out: Vec<Service> = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let svc = service(i, s, cx)?;
        if out.iter().any(|o| o.name == svc.name) {
            cx.warn(format!(
                "services[{i}]: name {:?} is used twice; tokens minted for one are valid for both",
                svc.name
            ));
        }
        out.push(svc);
    }
    if out.is_empty() {
        cx.warn("no services are configured: every request will get 404");
    }
    Ok(out)
}

/// Key prefix for errors: `services[1] (llm).` so the operator finds the entry either way.
struct At {
    prefix: String,
}

impl At {
    fn key(&self, field: &str) -> String {
        if self.prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.prefix)
        }
    }
}

fn regex(cx: &Ctx<'_>, key: String, pattern: &str) -> Result<Regex, ConfigError> {
    Regex::new(pattern).map_err(|e| {
        cx.invalid(
            key,
            format!(
                "regex {pattern:?} does not compile (RE2 syntax; single-quote it in YAML): {e}"
            ),
        )
    })
}

fn regex_list(
    cx: &Ctx<'_>,
    at: &At,
    field: &str,
    v: Option<Vec<String>>,
) -> Result<Vec<Regex>, ConfigError> {
    v.unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(j, p)| regex(cx, at.key(&format!("{field}[{j}]")), p))
        .collect()
}

fn service(i: usize, s: RawService, cx: &mut Ctx<'_>) -> Result<Service, ConfigError> {
    let name = nonempty(s.name.as_deref())
        .ok_or_else(|| {
            cx.invalid(
                format!("services[{i}].name"),
                "is required (it goes into the token's caveats)",
            )
        })?
        .to_owned();
    let at = At {
        prefix: format!("services[{i}] ({name})"),
    };
    if name.contains([',', ':', '=']) {
        return Err(cx.invalid(
            at.key("name"),
            "must not contain ',', ':' or '=' (they delimit caveats)",
        ));
    }
    let (host_regexp, path_regexp) = matchers(&at, &s, cx)?;
    let address = nonempty(s.address.as_deref())
        .ok_or_else(|| {
            cx.invalid(
                at.key("address"),
                "is required: the backend host:port, e.g. \"127.0.0.1:8080\"",
            )
        })?
        .to_owned();
    check_backend_address(&address).map_err(|m| cx.invalid(at.key("address"), m))?;
    let (protocol, tls_cert_path, tls_skip_verify) = transport(&at, &s, cx)?;
    let auth = parse_auth(s.auth.as_deref()).map_err(|m| cx.invalid(at.key("auth"), m))?;
    let auth_scheme_raw = auth_scheme(&at, s.authscheme.as_deref(), cx)?;
    let rewrite_prefix = rewrite_prefix(&at, &s, cx)?;
    let dynamic_price = dynamic_price(&at, s.dynamicprice, cx)?;
    let meter = super::meter::meter(&at.prefix, s.metering, s.meter, dynamic_price.is_some(), cx)?;
    if meter.is_some() && s.price.is_some() {
        return Err(cx.invalid(
            at.key("price"),
            "must be unset with metering: openai (a 402 sells a bundle, priced from meter.models)",
        ));
    }
    Ok(Service {
        source: super::ServiceSource::File,
        schemes: Schemes::default(),
        auth_scheme_raw,
        host_regexp,
        path_regexp,
        address,
        protocol,
        tls_cert_path,
        tls_skip_verify,
        rewrite_prefix,
        auth,
        price: price(
            &at,
            s.price,
            auth,
            dynamic_price.is_some() || meter.is_some(),
            cx,
        )?,
        timeout: timeout(&at, s.timeout, cx)?,
        capabilities: nonempty(s.capabilities.as_deref()).map(str::to_owned),
        constraints: constraints(&at, s.constraints, cx)?,
        auth_whitelist_paths: regex_list(cx, &at, "authwhitelistpaths", s.authwhitelistpaths)?,
        auth_skip_invoice_creation_paths: regex_list(
            cx,
            &at,
            "authskipinvoicecreationpaths",
            s.authskipinvoicecreationpaths,
        )?,
        headers: headers(&at, s.headers, cx)?,
        rate_limits: rate_limits(&at, s.ratelimits, cx)?,
        dynamic_price,
        meter,
        name,
    })
}

/// `hostregexp` (required; warns when unanchored) and the optional `pathregexp`.
fn matchers(
    at: &At,
    s: &RawService,
    cx: &mut Ctx<'_>,
) -> Result<(Regex, Option<Regex>), ConfigError> {
    let host = nonempty(s.hostregexp.as_deref()).ok_or_else(|| {
        cx.invalid(
            at.key("hostregexp"),
            "is required; use '.*' to match every host",
        )
    })?;
    let host_regexp = regex(cx, at.key("hostregexp"), host)?;
    if host != ".*" && !(host.starts_with('^') && host.ends_with('$')) {
        cx.warn(format!("{}: {host:?} is unanchored, so it also matches hosts that merely contain it (and '.' matches any character); prefer e.g. '^api\\.example\\.com(:\\d+)?$'", at.key("hostregexp")));
    }
    let path_regexp = match nonempty(s.pathregexp.as_deref()) {
        Some(p) => Some(regex(cx, at.key("pathregexp"), p)?),
        None => None,
    };
    Ok((host_regexp, path_regexp))
}

fn timeout(at: &At, v: Option<i64>, cx: &Ctx<'_>) -> Result<Option<u64>, ConfigError> {
    match v {
        None | Some(0) => Ok(None),
        Some(t) if t > 0 => Ok(Some(t as u64)),
        Some(t) => Err(cx.invalid(
            at.key("timeout"),
            format!("{t} is negative; use seconds ≥ 0 (0: tokens never expire)"),
        )),
    }
}

fn rewrite_prefix(at: &At, s: &RawService, cx: &Ctx<'_>) -> Result<Option<String>, ConfigError> {
    match nonempty(s.rewrite.as_ref().and_then(|r| r.prefix.as_deref())) {
        None => Ok(None),
        Some(p) if p.starts_with('/') && !p.contains(['?', '#', ' ']) && !p.contains("://") => Ok(Some(p.to_owned())),
        Some(p) => Err(cx.invalid(at.key("rewrite.prefix"), format!("{p:?} must be an absolute path such as \"/openai\" (no scheme, host, query or fragment)"))),
    }
}

type Transport = (Protocol, Option<std::path::PathBuf>, bool);

fn transport(at: &At, s: &RawService, cx: &mut Ctx<'_>) -> Result<Transport, ConfigError> {
    let protocol = match nonempty(s.protocol.as_deref())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("http") => Protocol::Http,
        Some("https") => Protocol::Https,
        Some("h2c") => Protocol::H2c,
        Some(p) => {
            return Err(cx.invalid(
                at.key("protocol"),
                format!("{p:?} is not a protocol; use http, https or h2c"),
            ))
        }
    };
    let cert = nonempty(s.tlscertpath.as_deref()).map(expand_tilde);
    let skip = s.tlsskipverify.unwrap_or(false);
    match (protocol, &cert, skip) {
        (Protocol::Https, Some(_), false) => cx.warn(format!("{}: Go aperture ignored this (it never verified backend TLS); we verify the backend's certificate against it", at.key("tlscertpath"))),
        (Protocol::Https, None, false) => cx.warn(format!("{}: the backend's TLS certificate is now verified against the system roots (Go aperture never verified it); for a self-signed backend set tlscertpath to its CA, or tlsskipverify: true", at.key("protocol"))),
        (Protocol::Https, Some(_), true) => cx.warn(format!("{}: tlsskipverify is true, so tlscertpath is ignored", at.key("tlscertpath"))),
        (Protocol::Https, None, true) | (_, None, false) => {}
        _ => cx.warn(format!("{}: tlscertpath/tlsskipverify only apply to protocol https; ignored", at.key("protocol"))),
    }
    Ok((protocol, cert, skip))
}

/// Go aperture's auth values, but strict: unknown values are errors instead of "off", and a
/// malformed freebie is an error instead of a startup panic.
fn parse_auth(v: Option<&str>) -> Result<Auth, String> {
    let raw = v.unwrap_or("").trim();
    let lower = raw.to_ascii_lowercase();
    match lower.as_str() {
        "" | "on" | "true" => return Ok(Auth::On),
        "off" | "false" => return Ok(Auth::Off),
        _ => {}
    }
    if lower.starts_with("freebie") {
        let bad = || {
            format!("{raw:?} is malformed; write \"freebie <count>\" with one space and a count of 1..65535, e.g. \"freebie 5\"")
        };
        let parts: Vec<&str> = raw.split(' ').collect();
        return match parts.as_slice() {
            [_, n] => n
                .parse::<u16>()
                .ok()
                .filter(|n| *n > 0)
                .map(Auth::Freebie)
                .ok_or_else(bad),
            _ => Err(bad()),
        };
    }
    Err(format!("{raw:?} is not an auth level; use \"on\", \"off\" or \"freebie <count>\" (Go aperture silently treated unknown values as off)"))
}

/// `authscheme`: `l402`, `mpp` or `l402+mpp` (case-insensitive, where Go aperture's substring
/// test made `L402` accept nothing). Resolved against `enablempp` in [`resolve_schemes`].
fn auth_scheme(at: &At, v: Option<&str>, cx: &Ctx<'_>) -> Result<Option<Schemes>, ConfigError> {
    let both = Schemes {
        l402: true,
        payment: true,
    };
    match nonempty(v).map(str::to_ascii_lowercase).as_deref() {
        None => Ok(None),
        Some("l402") => Ok(Some(Schemes::default())),
        Some("mpp") => Ok(Some(Schemes {
            l402: false,
            payment: true,
        })),
        Some("l402+mpp" | "mpp+l402") => Ok(Some(both)),
        Some(o) => Err(cx.invalid(
            at.key("authscheme"),
            format!("{o:?} is not an auth scheme; use l402, mpp or l402+mpp"),
        )),
    }
}

/// Each service's schemes once `enablempp` is known: unset accepts every enabled scheme (as in
/// Go); with `enablempp` off only L402 exists, and a service asking for `mpp` is told so.
pub(super) fn resolve_schemes(services: &mut [Service], mpp_on: bool, cx: &mut Ctx<'_>) {
    for (i, s) in services.iter_mut().enumerate() {
        s.schemes = match (s.auth_scheme_raw, mpp_on) {
            (None, true) => Schemes {
                l402: true,
                payment: true,
            },
            (Some(raw), true) => raw,
            (raw, false) => {
                if raw.is_some_and(|r| r.payment) {
                    cx.warn(format!("services[{i}].authscheme: asks for mpp, but authenticator.enablempp is off; only L402 is offered and accepted (set enablempp: true)"));
                }
                Schemes::default()
            }
        };
    }
}

fn price(
    at: &At,
    v: Option<i64>,
    auth: Auth,
    dynamic: bool,
    cx: &mut Ctx<'_>,
) -> Result<u64, ConfigError> {
    match v.unwrap_or(0) {
        p if !(0..=MAX_PRICE).contains(&p) => Err(cx.invalid(
            at.key("price"),
            format!("{p} is out of range; use 0..=10000000000000 sats"),
        )),
        0 => {
            if auth != Auth::Off && !dynamic {
                cx.warn(format!(
                    "{}: 0 or unset means 1 sat (as in Go aperture); set it explicitly",
                    at.key("price")
                ));
            }
            Ok(1)
        }
        p => Ok(p as u64),
    }
}

fn constraints(
    at: &At,
    v: Option<BTreeMap<String, String>>,
    cx: &mut Ctx<'_>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut out = Vec::new();
    // BTreeMap iteration is sorted by key: minting is deterministic (Go's map order is random).
    for (k, val) in v.unwrap_or_default() {
        if k.is_empty() || k.contains(['=', ' ']) {
            return Err(cx.invalid(
                at.key("constraints"),
                format!(
                    "key {k:?} must be non-empty without '=' or spaces (caveats are key=value)"
                ),
            ));
        }
        if k == "valid_until" || k.ends_with("_valid_until") {
            let past = val.trim().parse::<u64>().map(|t| t <= now).unwrap_or(false);
            let when = if past { "is in the past" } else { "is set" };
            cx.warn(format!("{}: {k}={val} {when}; Go aperture never checked this caveat, but once it is enforced every token carrying it {} — remove it unless that is intended", at.key("constraints"), if past { "is expired" } else { "expires then" }));
        }
        out.push((k, val));
    }
    Ok(out)
}

fn headers(
    at: &At,
    v: Option<BTreeMap<String, Option<String>>>,
    cx: &Ctx<'_>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (name, value) in v.unwrap_or_default() {
        let key = at.key(&format!("headers.{name}"));
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(cx.invalid(key, "is not a valid HTTP header name"));
        }
        if ["content-length", "transfer-encoding", "connection"]
            .contains(&name.to_ascii_lowercase().as_str())
        {
            return Err(cx.invalid(
                key,
                "cannot be set: it controls message framing, which the proxy owns",
            ));
        }
        let value = value.ok_or_else(|| {
            cx.invalid(
                key.clone(),
                "has no value; quote values that start with '!', e.g. \"!file+hex:/path/to/file\"",
            )
        })?;
        let value = expand_env(&value).map_err(|m| cx.invalid(key.clone(), m))?;
        let value = match value.strip_prefix("!file+") {
            Some(_) => file_value(&key, &value, cx)?,
            None => value,
        };
        if http::HeaderValue::from_str(&value).is_err() {
            return Err(cx.invalid(
                key,
                "value contains characters not allowed in an HTTP header (e.g. a newline)",
            ));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// `!file+hex:<path>` / `!file+base64:<path>`: the file's bytes, encoded. Like Go aperture, the
/// value must split on ':' into exactly two parts, so the path cannot contain ':'.
fn file_value(key: &str, value: &str, cx: &Ctx<'_>) -> Result<String, ConfigError> {
    let parts: Vec<&str> = value.split(':').collect();
    let [kind, path] = parts.as_slice() else {
        return Err(cx.invalid(key, format!("{value:?} must be !file+hex:<path> or !file+base64:<path>, with no ':' in the path")));
    };
    if *kind != "!file+hex" && *kind != "!file+base64" {
        return Err(cx.invalid(
            key,
            format!("unknown prefix {kind:?}; use !file+hex:<path> or !file+base64:<path>"),
        ));
    }
    let path = expand_tilde(path.trim());
    let bytes = std::fs::read(&path).map_err(|source| ConfigError::HeaderFile {
        origin: cx.origin.to_owned(),
        key: key.to_owned(),
        path,
        source,
    })?;
    Ok(if *kind == "!file+hex" {
        hex::encode(bytes)
    } else {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    })
}

/// The top-level `challengeratelimits` (ours): rules on minting 402 challenges, per client IP.
pub(super) fn challenge_rate_limits(
    v: Option<Vec<RawRateLimit>>,
    cx: &mut Ctx<'_>,
) -> Result<Vec<RateLimitRule>, ConfigError> {
    let at = At {
        prefix: String::new(),
    };
    rate_limits_at(&at, "challengeratelimits", v, cx)
}

fn rate_limits(
    at: &At,
    v: Option<Vec<RawRateLimit>>,
    cx: &mut Ctx<'_>,
) -> Result<Vec<RateLimitRule>, ConfigError> {
    rate_limits_at(at, "ratelimits", v, cx)
}

fn rate_limits_at(
    at: &At,
    list: &str,
    v: Option<Vec<RawRateLimit>>,
    cx: &mut Ctx<'_>,
) -> Result<Vec<RateLimitRule>, ConfigError> {
    let mut out: Vec<RateLimitRule> = Vec::new();
    for (j, r) in v.unwrap_or_default().into_iter().enumerate() {
        let key = |f: &str| at.key(&format!("{list}[{j}].{f}"));
        let path_regexp = match nonempty(r.pathregexp.as_deref()) {
            Some(p) => Some(regex(cx, key("pathregexp"), p)?),
            None => None,
        };
        let requests = match r.requests {
            Some(n) if n > 0 => u32::try_from(n)
                .map_err(|_| cx.invalid(key("requests"), format!("{n} is too large")))?,
            other => {
                return Err(cx.invalid(
                    key("requests"),
                    format!(
                        "must be greater than 0 (got {})",
                        other.map_or("nothing".to_owned(), |n| n.to_string())
                    ),
                ))
            }
        };
        let per = match nonempty(r.per.as_deref()) {
            None => {
                return Err(cx.invalid(
                    key("per"),
                    "is required: the window for `requests`, e.g. 1s or 1m",
                ))
            }
            Some(p) => parse_duration(p).map_err(|m| cx.invalid(key("per"), m))?,
        };
        if per.is_zero() {
            return Err(cx.invalid(key("per"), "must be greater than 0, e.g. 1s or 1m"));
        }
        let burst = match r.burst.unwrap_or(0) {
            0 => requests,
            b if b < 0 => return Err(cx.invalid(key("burst"), format!("{b} is negative (Go aperture would deny every request); use 0 or omit it for burst = requests"))),
            b => u32::try_from(b).map_err(|_| cx.invalid(key("burst"), format!("{b} is too large")))?,
        };
        let pattern = path_regexp.as_ref().map(Regex::as_str);
        if out
            .iter()
            .any(|o| o.path_regexp.as_ref().map(Regex::as_str) == pattern)
        {
            cx.warn(format!("{}: another rule has the same pathregexp; Go aperture made them share one bucket, here each rule has its own", key("pathregexp")));
        }
        out.push(RateLimitRule {
            path_regexp,
            requests,
            per,
            burst,
        });
    }
    Ok(out)
}

fn dynamic_price(
    at: &At,
    v: Option<RawDynamicPrice>,
    cx: &Ctx<'_>,
) -> Result<Option<DynamicPrice>, ConfigError> {
    let Some(d) = v else { return Ok(None) };
    let enabled = d.enabled.unwrap_or(false);
    let metered = d.metered.unwrap_or(false);
    if metered && !enabled {
        return Err(cx.invalid(
            at.key("dynamicprice.metered"),
            "requires dynamicprice.enabled: true",
        ));
    }
    if !enabled {
        return Ok(None);
    }
    let insecure = d.insecure.unwrap_or(false);
    let tls_cert_path = nonempty(d.tlscertpath.as_deref()).map(expand_tilde);
    if !insecure && tls_cert_path.is_none() {
        // Go aperture fails at start-up too (it cannot load an empty certificate path).
        return Err(cx.invalid(
            at.key("dynamicprice.tlscertpath"),
            "is required unless dynamicprice.insecure is true (the pricer's TLS certificate)",
        ));
    }
    let grpc_address = nonempty(d.grpcaddress.as_deref()).ok_or_else(|| {
        cx.invalid(
            at.key("dynamicprice.grpcaddress"),
            "is required when dynamicprice is enabled (the pricer's host:port)",
        )
    })?;
    check_backend_address(grpc_address)
        .map_err(|m| cx.invalid(at.key("dynamicprice.grpcaddress"), m))?;
    let usage_tail_bytes = match d.usagetailbytes.unwrap_or(0) {
        0 => 16384,
        n if (1..=MAX_USAGE_TAIL).contains(&n) => n as u32,
        n => {
            return Err(cx.invalid(
                at.key("dynamicprice.usagetailbytes"),
                format!("{n} is out of range; use 1..=1048576 (default 16384)"),
            ))
        }
    };
    Ok(Some(DynamicPrice {
        grpc_address: grpc_address.to_owned(),
        insecure,
        tls_cert_path,
        metered,
        usage_tail_bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_levels() {
        assert_eq!(parse_auth(None), Ok(Auth::On));
        assert_eq!(parse_auth(Some("ON")), Ok(Auth::On));
        assert_eq!(parse_auth(Some("true")), Ok(Auth::On));
        assert_eq!(parse_auth(Some("")), Ok(Auth::On));
        assert_eq!(parse_auth(Some("Off")), Ok(Auth::Off));
        assert_eq!(parse_auth(Some("false")), Ok(Auth::Off));
        assert_eq!(parse_auth(Some("freebie 5")), Ok(Auth::Freebie(5)));
        assert_eq!(parse_auth(Some("FREEBIE 65535")), Ok(Auth::Freebie(65535)));
        for bad in [
            "freebie",
            "freebie  5",
            "freebie x",
            "freebie 0",
            "freebie 70000",
            "freebie 1 2",
        ] {
            assert!(
                parse_auth(Some(bad))
                    .unwrap_err()
                    .contains("freebie <count>"),
                "{bad}"
            );
        }
        assert!(parse_auth(Some("yes please"))
            .unwrap_err()
            .contains("not an auth level"));
    }
}
