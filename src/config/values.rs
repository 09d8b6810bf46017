//! Scalar value parsers for the config loader: Go durations, listen addresses, `host:port`
//! backend addresses, IP/CIDR blocklist entries, `~` paths, `${ENV}` expansion and the key
//! suggestion distance. Pure string work except [`expand_env`] (reads the environment) and
//! [`expand_tilde`] (reads `HOME`); no file I/O here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Parses a Go `time.ParseDuration` string (`500ms`, `15s`, `1h30m`, `-1s`, `1.5h`) into signed
/// nanoseconds. A bare `0` is allowed; any other number needs a unit, because Go would read a bare
/// integer as nanoseconds, which is never what a config author meant.
pub(crate) fn parse_go_duration(text: &str) -> Result<i128, String> {
    let s = text.trim();
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(format!(
            "{text:?} is not a duration (use Go syntax such as 500ms, 15s, 2m, 1h30m)"
        ));
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "{text:?} has a number without a unit (write e.g. 30s, 500ms, 2m or 1h)"
                ))
            }
            other => {
                return Err(format!(
                    "{text:?} has unknown unit {other:?} (valid units: ns, us, ms, s, m, h)"
                ))
            }
        };
        total = total.saturating_add(scaled(num, scale).ok_or_else(|| {
            format!("{text:?} is not a duration (use Go syntax such as 500ms, 15s, 2m, 1h30m)")
        })?);
        rest = next;
    }
    Ok(if neg { -total } else { total })
}

/// `num` (decimal, maybe fractional) times `scale` nanoseconds, truncated like Go.
fn scaled(num: &str, scale: i128) -> Option<i128> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let whole: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = whole.checked_mul(scale)?;
    let mut unit = scale;
    for d in frac.chars() {
        let digit = i128::from(d.to_digit(10)?);
        unit /= 10;
        value = value.checked_add(digit * unit)?;
    }
    Some(value)
}

/// A non-negative Go duration as [`Duration`].
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let nanos = parse_go_duration(text)?;
    if nanos < 0 {
        return Err(format!("{text:?} is negative; use a duration of 0 or more"));
    }
    let nanos = u64::try_from(nanos).map_err(|_| format!("{text:?} is too long"))?;
    Ok(Duration::from_nanos(nanos))
}

/// Parses a listen address: `ip:port`, `[v6]:port`, `localhost:port` (→ 127.0.0.1) or `:port`
/// (→ every interface, as Go's `net.Listen` reads it).
pub(crate) fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let s = text.trim();
    if let Ok(addr) = SocketAddr::from_str(s) {
        return Ok(addr);
    }
    let hint = "use host:port with an IP address, e.g. \"0.0.0.0:8081\", \"127.0.0.1:8081\", \"[::]:8081\" or \"localhost:8081\"";
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} has no port; {hint}"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{text:?} has an invalid port; {hint}"))?;
    let ip = match host {
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => {
            return Err(format!(
                "{text:?}: host {host:?} is not an IP address (host names are not resolved); {hint}"
            ))
        }
    };
    Ok(SocketAddr::new(ip, port))
}

/// Checks a backend `address`: `host:port` only, never a URL (Go aperture gives 502 at runtime).
pub(crate) fn check_backend_address(text: &str) -> Result<(), String> {
    if text.contains("://") || text.contains('/') || text.contains('?') || text.contains('#') {
        return Err(format!(
            "{text:?} is a URL, but address takes host:port only (e.g. \"127.0.0.1:8080\"); put \
             the scheme in `protocol` and a path prefix in `rewrite.prefix`"
        ));
    }
    let (host, port) = match text.strip_prefix('[') {
        Some(v6) => {
            let (h, p) = v6
                .split_once("]:")
                .ok_or_else(|| format!("{text:?} must be [ipv6]:port"))?;
            Ipv6Addr::from_str(h).map_err(|_| format!("{text:?}: {h:?} is not an IPv6 address"))?;
            (h, p)
        }
        None => text.rsplit_once(':').ok_or_else(|| {
            format!("{text:?} has no port; use host:port, e.g. \"127.0.0.1:8080\"")
        })?,
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!(
            "{text:?} has no valid host; use host:port, e.g. \"127.0.0.1:8080\""
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!(
            "{text:?} has an invalid port; use host:port with a port 1..65535"
        )),
    }
}

/// A blocklist entry: one address (`/32`, `/128`) or a CIDR network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    /// Network address, host bits cleared.
    pub addr: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix_len: u8,
}

impl IpNet {
    /// Whether `ip` lies in this network. IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`) count as IPv4,
    /// so a dual-stack listener cannot be used to dodge an IPv4 entry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_u32(u32::from(ip), self.prefix_len) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_u128(u128::from(ip), self.prefix_len) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask_u32(v: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        v & (u32::MAX << (32 - u32::from(len.min(32))))
    }
}

fn mask_u128(v: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        v & (u128::MAX << (128 - u32::from(len.min(128))))
    }
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not an IP address or CIDR network (e.g. \"192.0.2.10\", \"10.0.0.0/8\", \"2001:db8::/32\")")
        };
        let (ip_text, len_text) = match s.trim().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s.trim(), None),
        };
        let ip = IpAddr::from_str(ip_text).map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len_text {
            None => max,
            Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(bad)?,
        };
        let addr = match ip {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(mask_u32(u32::from(v4), prefix_len))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(mask_u128(u128::from(v6), prefix_len))),
        };
        Ok(Self { addr, prefix_len })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Expands a leading `~` or `~/` to `$HOME`, as Go aperture does for its paths.
pub(crate) fn expand_tilde(path: &str) -> PathBuf {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    match (path, home) {
        ("~", Some(home)) => PathBuf::from(home),
        (p, Some(home)) if p.starts_with("~/") => PathBuf::from(home).join(&p[2..]),
        (p, _) => PathBuf::from(p),
    }
}

/// Replaces every `${NAME}` with the environment variable's value. An unset or empty variable is
/// an error (Go aperture refuses to start, so an empty bearer token never goes upstream).
pub(crate) fn expand_env(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated \"${{\" in {value:?}; write ${{NAME}}"))?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid variable name {name:?} in {value:?}"));
        }
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => out.push_str(&v),
            Ok(_) => {
                return Err(format!(
                    "environment variable {name} is empty; export it with a value"
                ))
            }
            Err(_) => {
                return Err(format!(
                    "environment variable {name} is not set; export it before starting aperture"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Levenshtein distance, for "did you mean" suggestions on unknown keys.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known key closest to `key` (case-insensitive), if it is close enough to be a typo.
pub(crate) fn closest_key<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1) && *d < lower.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_go_duration("15s"), Ok(15_000_000_000));
        assert_eq!(parse_go_duration("2m"), Ok(120_000_000_000));
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("-1s"), Ok(-1_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("250us"), Ok(250_000));
        assert!(parse_go_duration("15")
            .unwrap_err()
            .contains("without a unit"));
        assert!(parse_go_duration("1d")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
    }

    #[test]
    fn listen_addrs() {
        assert_eq!(
            parse_listen_addr("0.0.0.0:8081").unwrap().to_string(),
            "0.0.0.0:8081"
        );
        assert_eq!(
            parse_listen_addr("localhost:8081").unwrap().to_string(),
            "127.0.0.1:8081"
        );
        assert_eq!(
            parse_listen_addr(":8081").unwrap().to_string(),
            "0.0.0.0:8081"
        );
        assert_eq!(parse_listen_addr("[::1]:9").unwrap().to_string(), "[::1]:9");
        assert!(parse_listen_addr("8081").is_err());
        assert!(parse_listen_addr("example.com:80")
            .unwrap_err()
            .contains("not an IP"));
        assert!(parse_listen_addr("1.2.3.4:99999").is_err());
    }

    #[test]
    fn backend_addresses() {
        assert!(check_backend_address("127.0.0.1:8080").is_ok());
        assert!(check_backend_address("backend.internal:443").is_ok());
        assert!(check_backend_address("[::1]:80").is_ok());
        assert!(check_backend_address("https://host/path")
            .unwrap_err()
            .contains("rewrite.prefix"));
        assert!(check_backend_address("host").is_err());
        assert!(check_backend_address("host:0").is_err());
        assert!(check_backend_address(":80").is_err());
    }

    #[test]
    fn ipnets() {
        let net: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains("10.200.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one: IpNet = "192.0.2.10".parse().unwrap();
        assert!(one.contains("192.0.2.10".parse().unwrap()));
        assert!(!one.contains("192.0.2.11".parse().unwrap()));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nope".parse::<IpNet>().is_err());
    }

    #[test]
    fn env_expansion() {
        std::env::set_var("APERTURE_VALUES_TEST_SET", "s3cret");
        assert_eq!(
            expand_env("Bearer ${APERTURE_VALUES_TEST_SET}!").unwrap(),
            "Bearer s3cret!"
        );
        assert_eq!(expand_env("no vars $HOME").unwrap(), "no vars $HOME");
        assert!(expand_env("${APERTURE_VALUES_TEST_UNSET_X}")
            .unwrap_err()
            .contains("not set"));
        assert!(expand_env("${oops").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            closest_key("enbled", &["enabled", "metered"]),
            Some("enabled")
        );
        assert_eq!(closest_key("zzzzzzzz", &["enabled", "metered"]), None);
        assert_eq!(closest_key("foo", &["tor", "etcd"]), None);
        assert_eq!(
            closest_key("requirssl", &["requiressl", "host"]),
            Some("requiressl")
        );
        assert_eq!(
            closest_key("ListenAddr", &["listenaddr"]),
            Some("listenaddr")
        );
    }
}
