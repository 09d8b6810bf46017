//! The Prometheus text exposition format 0.0.4 (layer 1): renders the per-core counters, the
//! per-service and per-rule registry, the Lightning bridge's stats and the fleet rate-limit
//! backend's state as text. Pure formatting
//! over snapshots it is handed: no I/O, no locks of its own (the registry's is taken only while
//! copying its list), never called from a worker core.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::metrics::{
    Counter, Metrics, Reject, RuleKey, RuleStats, ServiceStats, CLASSES, LATENCY_BOUNDS_US,
};

/// Reads one per-service figure.
type Read = fn(&ServiceStats) -> u64;

/// Counters exported as one sum over the cores: (name, help, counter).
const TOTALS: &[(&str, &str, Counter)] = &[
    (
        "aperture_requests_total",
        "Requests whose head was parsed.",
        Counter::Requests,
    ),
    (
        "aperture_forwarded_total",
        "Requests forwarded upstream (paid or free).",
        Counter::Forwarded,
    ),
    (
        "aperture_bridge_unavailable_total",
        "503s because the Lightning bridge queue was full or timed out.",
        Counter::BridgeUnavailable,
    ),
    (
        "aperture_connections_accepted_total",
        "Client connections accepted.",
        Counter::ConnectionsAccepted,
    ),
    (
        "aperture_tls_handshake_failures_total",
        "TLS handshakes that failed or timed out (the connection was closed).",
        Counter::TlsHandshakeFailures,
    ),
    (
        "aperture_proxy_header_rejected_total",
        "Connections from trusted proxies closed for a missing or malformed PROXY header.",
        Counter::ProxyHeaderRejected,
    ),
    (
        "aperture_token_cache_hits_total",
        "Credentials accepted from the per-core verification cache (no HMAC work).",
        Counter::TokenCacheHits,
    ),
    (
        "aperture_client_aborts_total",
        "Requests whose client went away while the upstream worked (the upstream exchange was dropped).",
        Counter::ClientAborts,
    ),
    (
        "aperture_h2_streams_refused_total",
        "HTTP/2 streams refused because the connection already had maxconcurrentstreams streams of work alive.",
        Counter::H2StreamsRefused,
    ),
    (
        "aperture_h2_enhance_your_calm_total",
        "HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM for resetting streams faster than their work completed.",
        Counter::H2Calmed,
    ),
    (
        "aperture_upstream_pool_evictions_total",
        "Idle upstream connections closed by the pool (idle timeout, per-core cap, or closed by the upstream).",
        Counter::UpstreamPoolEvictions,
    ),
    (
        "aperture_mpp_challenges_total",
        "Payment (MPP) charge challenges offered in 402s.",
        Counter::PaymentChallenges,
    ),
    (
        "aperture_mpp_credentials_rejected_total",
        "Payment credentials refused (malformed, bad challenge id, expired, wrong preimage, underpaid, already used).",
        Counter::PaymentRejected,
    ),
    (
        "aperture_connection_panics_total",
        "Connection tasks that panicked (only that connection was closed).",
        Counter::ConnectionPanics,
    ),
];

/// Responses by status class, in [`CLASSES`] order.
const BY_CLASS: [Counter; 4] = [
    Counter::Status2xx,
    Counter::Status3xx,
    Counter::Status4xx,
    Counter::Status5xx,
];

/// Renders the proxy's counters in the Prometheus text format 0.0.4.
pub fn render(metrics: &Metrics, out: &mut String) {
    for &(name, help, counter) in TOTALS {
        family(out, name, help, "counter");
        let _ = writeln!(out, "{name} {}", metrics.total(counter));
    }
    let name = "aperture_responses_total";
    family(out, name, "Responses sent, by status class.", "counter");
    for (class, counter) in CLASSES.iter().zip(BY_CLASS) {
        let _ = writeln!(
            out,
            "{name}{{class=\"{class}\"}} {}",
            metrics.total(counter)
        );
    }
    let name = "aperture_requests_core_total";
    family(
        out,
        name,
        "Requests whose head was parsed, by worker core.",
        "counter",
    );
    for (core, n) in metrics.per_core(Counter::Requests).into_iter().enumerate() {
        let _ = writeln!(out, "{name}{{core=\"{core}\"}} {n}");
    }
    let name = "aperture_connections_active";
    family(
        out,
        name,
        "Client connections open now, by worker core.",
        "gauge",
    );
    for (core, n) in metrics
        .per_core(Counter::ConnectionsActive)
        .into_iter()
        .enumerate()
    {
        // A gauge kept with wrapping add/sub: read it back as signed so a transient
        // decrement-before-increment never shows as 2^64.
        let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", n as i64);
    }
    let (services, rules) = (metrics.services(), metrics.rules());
    render_services(&services, out);
    render_rules(&rules, out);
    render_limiters(&services, &rules, out);
}

/// The per-service families. Every service ever configured in this process is listed (the
/// registry only grows), so a series never goes back to zero after a reload.
fn render_services(services: &[(String, Arc<ServiceStats>)], out: &mut String) {
    let name = "aperture_service_requests_total";
    let help = "Requests routed to a service, by the status class of the answer.";
    family(out, name, help, "counter");
    for (service, s) in services {
        let service = escape(service);
        for (class, n) in CLASSES.iter().zip(s.classes()) {
            let _ = writeln!(out, "{name}{{service=\"{service}\",class=\"{class}\"}} {n}");
        }
    }
    let simple: [(&str, &str, Read); 3] = [
        (
            "aperture_challenges_minted_total",
            "402 challenges minted, by service.",
            ServiceStats::minted,
        ),
        (
            "aperture_tokens_accepted_total",
            "Requests with a credential that verified, by service.",
            ServiceStats::accepted,
        ),
        (
            "aperture_upstream_errors_total",
            "Upstream connect, TLS, write or read failures (each a 502), by service.",
            ServiceStats::upstream_errors,
        ),
    ];
    for (name, help, read) in simple {
        family(out, name, help, "counter");
        for (service, s) in services {
            let _ = writeln!(out, "{name}{{service=\"{}\"}} {}", escape(service), read(s));
        }
    }
    let name = "aperture_tokens_rejected_total";
    let help = "Requests with a credential that was rejected, by service and reason.";
    family(out, name, help, "counter");
    for (service, s) in services {
        let service = escape(service);
        for reason in Reject::ALL {
            let _ = writeln!(
                out,
                "{name}{{service=\"{service}\",reason=\"{}\"}} {}",
                reason.label(),
                s.rejected(reason)
            );
        }
    }
    let name = "aperture_upstream_latency_seconds";
    let help = "Time from starting an upstream request (connect included) to its response head, by service.";
    family(out, name, help, "histogram");
    for (service, s) in services {
        let labels = format!("service=\"{}\"", escape(service));
        let h = s.upstream_latency();
        histogram(out, name, &labels, &LATENCY_BOUNDS_US, &h.buckets, h.sum_us);
    }
}

/// Go aperture's rate-limit families (same names and labels: every rule that matched a request
/// counts it), and the same for `challengeratelimits`.
fn render_rules(rules: &[(RuleKey, Arc<RuleStats>)], out: &mut String) {
    let families = [
        (
            "aperture_ratelimit_allowed_total",
            "Requests a rate-limit rule matched that every matching rule allowed, by service and rule.",
            true,
        ),
        (
            "aperture_ratelimit_denied_total",
            "Requests a rate-limit rule matched that some matching rule denied (429), by service and rule.",
            false,
        ),
    ];
    for (name, help, allowed) in families {
        family(out, name, help, "counter");
        for (key, r) in rules {
            let Some(service) = &key.service else {
                continue;
            };
            let (a, d) = r.totals();
            let n = if allowed { a } else { d };
            let _ = writeln!(
                out,
                "{name}{{service=\"{}\",path_pattern=\"{}\"}} {n}",
                escape(service),
                escape(&key.pattern)
            );
        }
    }
    for (name, help, allowed) in [
        (
            "aperture_challenge_ratelimit_allowed_total",
            "Challenges the challengeratelimits allowed, by rule (every matching rule counts).",
            true,
        ),
        (
            "aperture_challenge_ratelimit_denied_total",
            "Challenges the challengeratelimits denied (429), by rule (every matching rule counts).",
            false,
        ),
    ] {
        family(out, name, help, "counter");
        for (key, r) in rules.iter().filter(|(k, _)| k.service.is_none()) {
            let (a, d) = r.totals();
            let n = if allowed { a } else { d };
            let _ = writeln!(
                out,
                "{name}{{path_pattern=\"{}\"}} {n}",
                escape(&key.pattern)
            );
        }
    }
}

/// Go aperture's limiter size families, for the services that have (or had) rate-limit rules.
/// Ours count client keys (each holding a bucket per rule), summed over the cores' limiters.
fn render_limiters(
    services: &[(String, Arc<ServiceStats>)],
    rules: &[(RuleKey, Arc<RuleStats>)],
    out: &mut String,
) {
    let limited = services
        .iter()
        .filter(|(name, _)| rules.iter().any(|(k, _)| k.service.as_ref() == Some(name)));
    let families: [(&str, &str, &str, Read); 2] = [
        (
            "aperture_ratelimit_cache_size",
            "Client keys the rate limiters hold now, by service.",
            "gauge",
            ServiceStats::ratelimit_keys,
        ),
        (
            "aperture_ratelimit_evictions_total",
            "Client keys the rate limiters evicted to make room, by service.",
            "counter",
            ServiceStats::ratelimit_evictions,
        ),
    ];
    for (name, help, kind, read) in families {
        family(out, name, help, kind);
        for (service, s) in limited.clone() {
            let _ = writeln!(out, "{name}{{service=\"{}\"}} {}", escape(service), read(s));
        }
    }
}

/// Renders the Lightning bridge's state: queue depth, invoice latency, LND connection.
pub fn render_bridge(stats: &lnd_bridge::BridgeStats, out: &mut String) {
    let gauges = [
        (
            "aperture_bridge_in_flight",
            "Invoice calls queued or running on the Lightning bridge.",
            stats.in_flight as u64,
        ),
        (
            "aperture_bridge_queue_capacity",
            "Most invoice calls in flight before new challenges get 503.",
            stats.capacity as u64,
        ),
        (
            "aperture_lnd_connected",
            "Whether the Lightning backend is reachable (1) or not (0); the dev backend is always 1.",
            u64::from(stats.backend.connected),
        ),
    ];
    for (name, help, v) in gauges {
        family(out, name, help, "gauge");
        let _ = writeln!(out, "{name} {v}");
    }
    let counters = [
        (
            "aperture_lnd_subscription_restarts_total",
            "Times the LND invoice subscription was restarted after failing.",
            stats.backend.subscription_restarts,
        ),
        (
            "aperture_invoice_failures_total",
            "Invoice calls that failed (backend error or deadline).",
            stats.invoice_failures,
        ),
        (
            "aperture_usage_reports_delivered_total",
            "Metered usage reports (ReportUsage) the pricer took.",
            stats.usage.delivered,
        ),
        (
            "aperture_usage_report_failures_total",
            "ReportUsage attempts that failed (each retried, or the report kept).",
            stats.usage.failed_attempts,
        ),
        (
            "aperture_usage_reports_kept_total",
            "Usage reports handed to the database undelivered, for a replay at the next start.",
            stats.usage.persisted,
        ),
        (
            "aperture_usage_reports_lost_total",
            "Undelivered usage reports with no database to keep them.",
            stats.usage.lost,
        ),
    ];
    for (name, help, v) in counters {
        family(out, name, help, "counter");
        let _ = writeln!(out, "{name} {v}");
    }
    let name = "aperture_invoice_latency_seconds";
    let help =
        "Invoice calls for challenges, from queued on the bridge to answered (failures included).";
    family(out, name, help, "histogram");
    histogram(
        out,
        name,
        "",
        stats.invoice_latency_bounds_us,
        &stats.invoice_latency_buckets,
        stats.invoice_latency_sum_us,
    );
}

/// One histogram's samples: cumulative `_bucket`s (bounds in seconds, then `+Inf`), `_sum` in
/// seconds and `_count`. `buckets` holds per-bucket counts, one more than `bounds_us`.
fn histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds_us: &[u64],
    buckets: &[u64],
    sum_us: u64,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0u64;
    for (i, n) in buckets.iter().enumerate() {
        cumulative = cumulative.wrapping_add(*n);
        let le = match bounds_us.get(i) {
            Some(&us) => seconds(us),
            None => "+Inf".to_string(),
        };
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
        );
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", seconds(sum_us));
    let _ = writeln!(out, "{name}_count{braces} {cumulative}");
}

/// Microseconds as seconds in Prometheus' float syntax (`0.0005`, `1`, `2.5`).
fn seconds(us: u64) -> String {
    (us as f64 / 1e6).to_string()
}

/// A label value escaped as the text format requires: backslash, double quote and newline.
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.into()
}

/// Appends the fleet-wide rate-limit backend's state (`ratelimitbackend: redis`).
pub fn render_fleet(stats: &crate::fleet::FleetStats, out: &mut String) {
    let rows = [
        (
            "aperture_ratelimit_backend_fleet",
            "Whether rate limits are fleet-wide now (1: Redis answers) or per instance (0: Redis unreachable, falling back).",
            "gauge",
            u64::from(stats.up),
        ),
        (
            "aperture_ratelimit_backend_errors_total",
            "Redis connection failures, I/O errors and error replies of the fleet rate-limit backend.",
            "counter",
            stats.errors,
        ),
        (
            "aperture_ratelimit_backend_leases_total",
            "Lease round trips to Redis answered (one per empty or low lease, not per request).",
            "counter",
            stats.leases,
        ),
    ];
    for (name, help, kind, v) in rows {
        family(out, name, help, kind);
        let _ = writeln!(out, "{name} {v}");
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// A small registry with values on both cores; the admin listener's tests serve it too.
    pub(crate) fn sample_metrics() -> Metrics {
        let m = Metrics::new(2);
        m.core(0).add(Counter::Requests, 3);
        m.core(1).add(Counter::Requests, 4);
        m.core(0).status(200);
        m.core(1).status(402);
        m.core(1).status(503);
        m.core(0).incr(Counter::ConnectionsActive);
        let paid = m.service("paid");
        paid.core(1).minted();
        paid.core(1).status(402);
        paid.core(0).rejected(Reject::BadSignature);
        m.rule(Some("paid"), "^/api").core(0).unwrap().denied();
        m
    }

    /// Checks the exposition's shape: every sample follows the `# TYPE` of its family (a
    /// histogram's `_bucket`, `_sum` and `_count` included), each family announced once, no
    /// series twice. Returns the number of families.
    fn families(out: &str) -> usize {
        let mut types = std::collections::HashMap::new();
        let mut series = std::collections::HashSet::new();
        for l in out.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "{l}"
                );
            } else if !l.starts_with('#') {
                let (key, value) = l.rsplit_once(' ').unwrap();
                assert!(value.parse::<f64>().is_ok(), "{l}");
                assert!(series.insert(key.to_string()), "series twice: {l}");
                let name = key.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|b| types.get(*b).is_some_and(|k| k == "histogram"));
                let name = base.unwrap_or(name);
                assert!(types.contains_key(name), "sample before its TYPE: {l}");
            }
        }
        assert!(out.ends_with('\n'));
        types.len()
    }

    #[test]
    fn exposition_has_help_type_and_values() {
        let mut out = String::new();
        render(&sample_metrics(), &mut out);
        for line in [
            "# HELP aperture_requests_total Requests whose head was parsed.",
            "# TYPE aperture_requests_total counter",
            "aperture_requests_total 7",
            "aperture_forwarded_total 0",
            "# TYPE aperture_responses_total counter",
            "aperture_responses_total{class=\"2xx\"} 1",
            "aperture_responses_total{class=\"3xx\"} 0",
            "aperture_responses_total{class=\"4xx\"} 1",
            "aperture_responses_total{class=\"5xx\"} 1",
            "aperture_requests_core_total{core=\"0\"} 3",
            "aperture_requests_core_total{core=\"1\"} 4",
            "# TYPE aperture_connections_active gauge",
            "aperture_connections_active{core=\"0\"} 1",
            "aperture_connections_active{core=\"1\"} 0",
            "aperture_connection_panics_total 0",
            "aperture_challenges_minted_total{service=\"paid\"} 1",
            "aperture_service_requests_total{service=\"paid\",class=\"4xx\"} 1",
            "aperture_tokens_rejected_total{service=\"paid\",reason=\"bad_signature\"} 1",
            "aperture_tokens_rejected_total{service=\"paid\",reason=\"expired\"} 0",
            "# TYPE aperture_upstream_latency_seconds histogram",
            "aperture_upstream_latency_seconds_count{service=\"paid\"} 0",
            "aperture_ratelimit_denied_total{service=\"paid\",path_pattern=\"^/api\"} 1",
            "aperture_ratelimit_allowed_total{service=\"paid\",path_pattern=\"^/api\"} 0",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        // 17 process-wide families, 6 per service, 4 per rate-limit rule, 2 per limiter.
        assert_eq!(families(&out), 29);
        assert!(out.contains("\naperture_ratelimit_cache_size{service=\"paid\"} 0\n"));
    }

    #[test]
    fn per_service_families_render_exactly() {
        let m = Metrics::new(2);
        // A name that needs escaping in a label value: quote, backslash, newline.
        let s = m.service("a\"b\\c\nd");
        s.core(0).status(200);
        s.core(1).status(204);
        s.core(1).status(429);
        s.core(0).minted();
        s.core(0).accepted();
        s.core(1).accepted();
        s.core(1).rejected(Reject::Revoked);
        s.core(0).upstream_error();
        s.core(0).upstream_latency(Duration::from_micros(700)); // le 0.001
        s.core(1).upstream_latency(Duration::from_millis(30)); // le 0.05
        s.core(1).upstream_latency(Duration::from_secs(11)); // +Inf only
        let r = m.rule(Some("svc"), r"^/v\d+");
        r.core(0).unwrap().allowed();
        r.core(1).unwrap().allowed();
        r.core(1).unwrap().denied();
        m.rule(None, "").core(0).unwrap().denied();
        let mut out = String::new();
        render_services(&m.services(), &mut out);
        render_rules(&m.rules(), &mut out);
        let svc = r#"service="a\"b\\c\nd""#;
        let mut want = String::new();
        want.push_str(
            "# HELP aperture_service_requests_total Requests routed to a service, by the status class of the answer.\n\
             # TYPE aperture_service_requests_total counter\n",
        );
        for (class, n) in [("2xx", 2), ("3xx", 0), ("4xx", 1), ("5xx", 0)] {
            want += &format!("aperture_service_requests_total{{{svc},class=\"{class}\"}} {n}\n");
        }
        want += &format!(
            "# HELP aperture_challenges_minted_total 402 challenges minted, by service.\n\
             # TYPE aperture_challenges_minted_total counter\n\
             aperture_challenges_minted_total{{{svc}}} 1\n\
             # HELP aperture_tokens_accepted_total Requests with a credential that verified, by service.\n\
             # TYPE aperture_tokens_accepted_total counter\n\
             aperture_tokens_accepted_total{{{svc}}} 2\n\
             # HELP aperture_upstream_errors_total Upstream connect, TLS, write or read failures (each a 502), by service.\n\
             # TYPE aperture_upstream_errors_total counter\n\
             aperture_upstream_errors_total{{{svc}}} 1\n\
             # HELP aperture_tokens_rejected_total Requests with a credential that was rejected, by service and reason.\n\
             # TYPE aperture_tokens_rejected_total counter\n"
        );
        for reason in [
            "malformed",
            "bad_identifier",
            "third_party_caveat",
            "bad_preimage",
            "bad_signature",
            "wrong_service",
            "expired",
            "capability",
            "widened_caveat",
            "bad_caveat",
            "preimage_caveat",
            "revoked",
            "not_settled",
        ] {
            let n = u8::from(reason == "revoked");
            want += &format!("aperture_tokens_rejected_total{{{svc},reason=\"{reason}\"}} {n}\n");
        }
        want.push_str(
            "# HELP aperture_upstream_latency_seconds Time from starting an upstream request (connect included) to its response head, by service.\n\
             # TYPE aperture_upstream_latency_seconds histogram\n",
        );
        for (le, n) in [
            ("0.0005", 0),
            ("0.001", 1),
            ("0.0025", 1),
            ("0.005", 1),
            ("0.01", 1),
            ("0.025", 1),
            ("0.05", 2),
            ("0.1", 2),
            ("0.25", 2),
            ("0.5", 2),
            ("1", 2),
            ("2.5", 2),
            ("5", 2),
            ("10", 2),
            ("+Inf", 3),
        ] {
            want += &format!("aperture_upstream_latency_seconds_bucket{{{svc},le=\"{le}\"}} {n}\n");
        }
        want += &format!(
            "aperture_upstream_latency_seconds_sum{{{svc}}} 11.0307\n\
             aperture_upstream_latency_seconds_count{{{svc}}} 3\n"
        );
        want.push_str(
            "# HELP aperture_ratelimit_allowed_total Requests a rate-limit rule matched that every matching rule allowed, by service and rule.\n\
             # TYPE aperture_ratelimit_allowed_total counter\n\
             aperture_ratelimit_allowed_total{service=\"svc\",path_pattern=\"^/v\\\\d+\"} 2\n\
             # HELP aperture_ratelimit_denied_total Requests a rate-limit rule matched that some matching rule denied (429), by service and rule.\n\
             # TYPE aperture_ratelimit_denied_total counter\n\
             aperture_ratelimit_denied_total{service=\"svc\",path_pattern=\"^/v\\\\d+\"} 1\n\
             # HELP aperture_challenge_ratelimit_allowed_total Challenges the challengeratelimits allowed, by rule (every matching rule counts).\n\
             # TYPE aperture_challenge_ratelimit_allowed_total counter\n\
             aperture_challenge_ratelimit_allowed_total{path_pattern=\"\"} 0\n\
             # HELP aperture_challenge_ratelimit_denied_total Challenges the challengeratelimits denied (429), by rule (every matching rule counts).\n\
             # TYPE aperture_challenge_ratelimit_denied_total counter\n\
             aperture_challenge_ratelimit_denied_total{path_pattern=\"\"} 1\n",
        );
        assert_eq!(out, want);
        assert_eq!(families(&out), 10);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert!(matches!(escape("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(escape("a\"b"), "a\\\"b");
        assert_eq!(escape("a\\b"), "a\\\\b");
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("ünï"), "ünï");
    }

    #[test]
    fn bridge_state_renders_with_a_cumulative_histogram() {
        let stats = lnd_bridge::BridgeStats {
            in_flight: 3,
            capacity: 4096,
            invoice_latency_bounds_us: &[1_000, 10_000],
            invoice_latency_buckets: vec![2, 0, 1],
            invoice_latency_sum_us: 6_001_500,
            invoice_failures: 1,
            backend: lnd_bridge::BackendStats {
                connected: false,
                subscription_restarts: 5,
                ..Default::default()
            },
            usage: lnd_bridge::UsageStats {
                persisted: 2,
                ..Default::default()
            },
        };
        let mut out = String::new();
        render_bridge(&stats, &mut out);
        for line in [
            "aperture_bridge_in_flight 3",
            "aperture_bridge_queue_capacity 4096",
            "# TYPE aperture_lnd_connected gauge",
            "aperture_lnd_connected 0",
            "aperture_lnd_subscription_restarts_total 5",
            "aperture_invoice_failures_total 1",
            "aperture_usage_reports_kept_total 2",
            "# TYPE aperture_invoice_latency_seconds histogram",
            "aperture_invoice_latency_seconds_bucket{le=\"0.001\"} 2",
            "aperture_invoice_latency_seconds_bucket{le=\"0.01\"} 2",
            "aperture_invoice_latency_seconds_bucket{le=\"+Inf\"} 3",
            "aperture_invoice_latency_seconds_sum 6.0015",
            "aperture_invoice_latency_seconds_count 3",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        assert_eq!(families(&out), 10);
    }
}
