//! Validation of the `http2:` block (ours): the downstream HTTP/2 limits, each with a safe
//! default and a range that keeps a misconfiguration from opening the listener to abuse (no
//! unbounded streams or header lists) or from breaking the protocol (windows within RFC 9113's
//! bounds). Pure: no I/O.

use std::time::Duration;

use super::raw::RawHttp2;
use super::validate::Ctx;
use super::ConfigError;

/// The downstream HTTP/2 limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2 {
    /// Streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Largest decoded header list a client may send (SETTINGS_MAX_HEADER_LIST_SIZE); a larger
    /// one gets its stream refused.
    pub max_header_list_size: u32,
    /// Per-stream receive window (SETTINGS_INITIAL_WINDOW_SIZE).
    pub initial_stream_window: u32,
    /// Per-connection receive window.
    pub initial_connection_window: u32,
    /// A connection with no open stream for this long gets GOAWAY and is closed; zero: never.
    /// Open streams (long gRPC streams) are never cut by it.
    pub idle_timeout: Duration,
}

/// RFC 9113 §6.5.2: the largest flow-control window.
const MAX_WINDOW: i64 = (1 << 31) - 1;
/// RFC 9113 §6.9.2: the initial (and smallest useful) window.
const MIN_WINDOW: i64 = 65_535;

impl Default for Http2 {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 256,
            max_header_list_size: 64 * 1024,
            initial_stream_window: 1 << 20,
            initial_connection_window: 4 << 20,
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// The validated block; `idle_default` (the top-level `idletimeout`) applies when
/// `http2.idletimeout` is unset, as Go's http2 server inherits the HTTP server's.
pub(crate) fn http2(
    raw: Option<&RawHttp2>,
    idle_default: Duration,
    cx: &Ctx<'_>,
) -> Result<Http2, ConfigError> {
    let d = Http2::default();
    let Some(raw) = raw else {
        return Ok(Http2 {
            idle_timeout: idle_default,
            ..d
        });
    };
    let ranged = |key: &str, v: Option<i64>, lo: i64, hi: i64, default: u32, unit: &str| {
        match v {
            None => Ok(default),
            Some(n) if (lo..=hi).contains(&n) => Ok(n as u32),
            Some(n) => Err(cx.invalid(
                format!("http2.{key}"),
                format!("{n} is out of range: use {lo} to {hi}{unit} (default {default}), or remove the key"),
            )),
        }
    };
    let stream_window = ranged(
        "initialstreamwindow",
        raw.initialstreamwindow,
        MIN_WINDOW,
        MAX_WINDOW,
        d.initial_stream_window,
        " bytes",
    )?;
    let connection_window = ranged(
        "initialconnectionwindow",
        raw.initialconnectionwindow,
        MIN_WINDOW,
        MAX_WINDOW,
        d.initial_connection_window,
        " bytes",
    )?;
    if connection_window < stream_window {
        return Err(cx.invalid(
            "http2.initialconnectionwindow",
            format!("{connection_window} is smaller than http2.initialstreamwindow ({stream_window}): one stream could stall the whole connection; raise it to at least {stream_window}"),
        ));
    }
    Ok(Http2 {
        max_concurrent_streams: ranged(
            "maxconcurrentstreams",
            raw.maxconcurrentstreams,
            1,
            10_000,
            d.max_concurrent_streams,
            "",
        )?,
        max_header_list_size: ranged(
            "maxheaderlistsize",
            raw.maxheaderlistsize,
            1024,
            16 << 20,
            d.max_header_list_size,
            " bytes",
        )?,
        initial_stream_window: stream_window,
        initial_connection_window: connection_window,
        idle_timeout: cx.duration(
            "http2.idletimeout",
            raw.idletimeout.as_deref(),
            idle_default,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const MIN: &str =
        "listenaddr: \"127.0.0.1:8081\"\ndbbackend: sqlite\nauthenticator:\n  dev: {}\n";

    fn err(block: &str) -> String {
        parse(&format!("{MIN}http2:\n{block}"), "t")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_and_the_top_level_idle_timeout() {
        let c = parse(MIN, "t").unwrap();
        assert_eq!(c.http2, Http2::default());
        let c = parse(&format!("{MIN}idletimeout: 7s\n"), "t").unwrap();
        assert_eq!(c.http2.idle_timeout, Duration::from_secs(7));
        let c = parse(
            &format!("{MIN}idletimeout: 7s\nhttp2:\n  idletimeout: 0s\n"),
            "t",
        )
        .unwrap();
        assert_eq!(c.http2.idle_timeout, Duration::ZERO, "zero: never");
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            &format!(
                "{MIN}http2:\n  maxconcurrentstreams: 10\n  maxheaderlistsize: 4096\n  \
                 initialstreamwindow: 65535\n  initialconnectionwindow: 131070\n  idletimeout: 1m\n"
            ),
            "t",
        )
        .unwrap();
        assert_eq!(
            c.http2,
            Http2 {
                max_concurrent_streams: 10,
                max_header_list_size: 4096,
                initial_stream_window: 65_535,
                initial_connection_window: 131_070,
                idle_timeout: Duration::from_secs(60),
            }
        );
    }

    #[test]
    fn out_of_range_values_say_how_to_fix_them() {
        let msg = err("  maxconcurrentstreams: 0\n");
        assert!(
            msg.contains("http2.maxconcurrentstreams") && msg.contains("use 1 to"),
            "{msg}"
        );
        let msg = err("  maxheaderlistsize: 10\n");
        assert!(
            msg.contains("http2.maxheaderlistsize") && msg.contains("1024"),
            "{msg}"
        );
        let msg = err("  initialstreamwindow: 2147483648\n");
        assert!(
            msg.contains("http2.initialstreamwindow") && msg.contains("2147483647"),
            "{msg}"
        );
        let msg = err("  initialstreamwindow: 1048576\n  initialconnectionwindow: 65535\n");
        assert!(msg.contains("raise it to at least 1048576"), "{msg}");
        let msg = err("  idletimeout: soon\n");
        assert!(msg.contains("http2.idletimeout"), "{msg}");
        let msg = err("  maxstreams: 5\n");
        assert!(msg.contains("maxconcurrentstreams"), "{msg}");
    }
}
