//! The admin listener's read-only endpoints, as they have always answered: `/metrics`
//! (Prometheus text exposition of the per-core counters, plus what other subsystems append),
//! `/healthz` and `/readyz`. It only *reads* the counters (each core stays their single
//! writer). No pprof or anything else here (Go aperture exposes pprof on this listener; we do
//! not). Pure: one request in, one answer out.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};

use crate::exposition::render;
use crate::metrics::Metrics;

/// Whether the process should receive traffic (`/readyz`).
pub type Ready = Arc<dyn Fn() -> bool + Send + Sync>;
/// Appends more exposition text (other subsystems' metrics) to a `/metrics` body.
pub type Extra = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Prometheus text exposition format 0.0.4.
pub const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const TEXT: &str = "text/plain; charset=utf-8";

/// What the probes read.
pub struct Probes {
    pub metrics: Metrics,
    pub ready: Ready,
    pub extra: Extra,
}

/// A plain-text answer.
pub fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Bytes> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Go's `404 page not found`.
pub fn not_found() -> Response<Bytes> {
    text(StatusCode::NOT_FOUND, TEXT, "404 page not found\n")
}

impl Probes {
    /// Whether `path` is one of ours.
    pub fn owns(path: &str) -> bool {
        matches!(path, "/metrics" | "/healthz" | "/readyz")
    }

    /// The answer for `path` (one of [`Probes::owns`]); GET and HEAD only (a HEAD answer keeps
    /// its length and the server sends no body).
    pub fn answer(&self, method: &Method, path: &str) -> Response<Bytes> {
        if method != Method::GET && method != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match path {
            "/metrics" => {
                let mut body = String::with_capacity(4096);
                render(&self.metrics, &mut body);
                (self.extra)(&mut body);
                text(StatusCode::OK, EXPOSITION, body)
            }
            "/readyz" if !(self.ready)() => {
                text(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready\n")
            }
            "/readyz" => text(StatusCode::OK, TEXT, "ready\n"),
            "/healthz" => text(StatusCode::OK, TEXT, "ok\n"),
            _ => not_found(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn probes(ready: bool) -> Probes {
        Probes {
            metrics: crate::exposition::tests::sample_metrics(),
            ready: Arc::new(move || ready),
            extra: Arc::new(|s: &mut String| s.push_str("# extra\n")),
        }
    }

    fn body(r: &Response<Bytes>) -> &str {
        std::str::from_utf8(r.body()).unwrap()
    }

    #[test]
    fn routes() {
        let ready = probes(true);
        let r = ready.answer(&Method::GET, "/metrics");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CONTENT_TYPE], EXPOSITION);
        assert!(body(&r).ends_with("# extra\n"), "{}", body(&r));
        let r = ready.answer(&Method::GET, "/healthz");
        assert_eq!((r.status().as_u16(), body(&r)), (200, "ok\n"));
        let r = ready.answer(&Method::GET, "/readyz");
        assert_eq!((r.status().as_u16(), body(&r)), (200, "ready\n"));
        let r = probes(false).answer(&Method::GET, "/readyz");
        assert_eq!((r.status().as_u16(), body(&r)), (503, "not ready\n"));
        for path in ["/debug/pprof/", "/debug/pprof/heap", "/", "/metrics/x"] {
            assert!(!Probes::owns(path), "{path}");
        }
        let r = ready.answer(&Method::POST, "/metrics");
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
        assert_eq!(ready.answer(&Method::HEAD, "/healthz").status(), 200);
    }
}
