//! The operator's dashboard on the admin listener: server-rendered pages at `/` (overview),
//! `/dashboard/transactions`, `/dashboard/services` and `/dashboard/node`, one small vanilla
//! script and one stylesheet (`assets/`, embedded with `include_str!`: no Node toolchain, no
//! third-party code, nothing fetched from elsewhere), and the same-origin JSON endpoints under
//! `/dashboard/api/` ([`api`]) that the script calls and that call the [`AdminBackend`].
//!
//! **Who may use it.** Like Go's `/api/proxy/*`, which injects the admin macaroon for the
//! browser and so only accepts loopback clients, the dashboard is authorised by where the
//! request comes from: the admin listener (loopback by default) and a loopback peer
//! ([`PeerAddr`]); anyone else gets 403 unless the operator opts in with
//! [`Options::allow_remote`] (then put the admin listener behind something that authenticates).
//! The admin macaroon never reaches the browser: the endpoints call the backend directly.
//! Because a loopback check alone does not stop DNS rebinding (a hostile page on a name that
//! resolves to 127.0.0.1 is "same origin" to the browser), the `Host` must be an IP literal,
//! `localhost` (or `*.localhost`), or one of [`Options::allowed_hosts`].
//!
//! **CSRF.** Every mutation (POST, PUT, DELETE) must carry the per-process random token that
//! the page embeds (`<meta name="csrf-token">`) in an `X-CSRF-Token` header, compared in
//! constant time; an `Origin` header, when sent, must be this host's; `Sec-Fetch-Site`, when
//! sent, must be `same-origin`; a body must be `application/json`. A cross-site page can set
//! none of these without a CORS preflight, which is never granted. Any request a browser marks
//! `Sec-Fetch-Site: cross-site`, other than navigating to a page, is refused too.
//!
//! **Headers.** Every answer carries Go's security headers (`X-Frame-Options: DENY`,
//! `X-Content-Type-Options: nosniff`, `Referrer-Policy: strict-origin-when-cross-origin`) and a
//! CSP stricter than Go's: scripts and styles from this origin only, no inline code
//! (`default-src 'none'; script-src 'self'; style-src 'self'; ...`). Pages and data are
//! `Cache-Control: no-store`.
//!
//! Everything here runs on the `aperture-admin` thread, never on a worker core; no input can
//! make it panic (the unit tests feed it hostile requests).

mod api;
mod format;
mod page;
mod service_form;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AdminBackend, DashboardHandler, PeerAddr};
use page::View;

const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");

/// The page's Content-Security-Policy: nothing inline, nothing from elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";

/// The header the page sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Who may use the dashboard beyond loopback clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Answer peers that are not loopback addresses (off: 403, as Go's `/api/proxy/*`).
    pub allow_remote: bool,
    /// Host names (without port, any case) accepted in `Host` besides IP literals and
    /// `localhost`, for reaching the admin listener by name.
    pub allowed_hosts: Vec<String>,
}

/// The dashboard over `backend`, loopback clients only.
pub fn handler(backend: Arc<dyn AdminBackend>) -> DashboardHandler {
    handler_with(backend, Options::default())
}

/// The dashboard over `backend` with `options`.
pub fn handler_with(backend: Arc<dyn AdminBackend>, options: Options) -> DashboardHandler {
    let dashboard = Dashboard::new(backend, options);
    Arc::new(move |req| dashboard.serve(req))
}

/// The dashboard's state: the backend, the options, this process's CSRF token and the assets'
/// version (their hash: the `?v=` of their URLs and their ETag).
struct Dashboard {
    backend: Arc<dyn AdminBackend>,
    options: Options,
    csrf: String,
    asset_version: String,
}

impl Dashboard {
    fn new(backend: Arc<dyn AdminBackend>, options: Options) -> Dashboard {
        let mut hash = Sha256::new();
        hash.update(SCRIPT);
        hash.update(STYLE);
        Dashboard {
            backend,
            options,
            csrf: hex::encode(rand::random::<[u8; 32]>()),
            asset_version: hex::encode(&hash.finalize()[..8]),
        }
    }

    fn serve(&self, req: Request<Bytes>) -> Response<Bytes> {
        let head = req.method() == Method::HEAD;
        let mut resp = self.route(&req);
        secure(resp.headers_mut());
        if head {
            *resp.body_mut() = Bytes::new();
        }
        resp
    }

    fn route(&self, req: &Request<Bytes>) -> Response<Bytes> {
        let remote_ok = match req.extensions().get::<PeerAddr>() {
            Some(PeerAddr(peer)) => {
                self.options.allow_remote || peer.ip().to_canonical().is_loopback()
            }
            None => false,
        };
        if !remote_ok {
            return text(
                StatusCode::FORBIDDEN,
                "forbidden: the dashboard answers loopback clients only\n",
            );
        }
        let Some(host) = host_of(req) else {
            return text(StatusCode::BAD_REQUEST, "bad request: no Host\n");
        };
        if !self.host_allowed(&host) {
            return text(
                StatusCode::FORBIDDEN,
                "forbidden: unknown Host (use an IP address or localhost)\n",
            );
        }
        let path = req.uri().path();
        let site = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok());
        let method = req.method();
        let is_page = View::at(path).is_some();
        if site == Some("cross-site") && !(is_page && matches!(*method, Method::GET | Method::HEAD))
        {
            return text(StatusCode::FORBIDDEN, "forbidden: cross-site request\n");
        }
        if !matches!(*method, Method::GET | Method::HEAD) {
            if let Err(why) = self.csrf_ok(req) {
                return text(StatusCode::FORBIDDEN, &format!("forbidden: {why}\n"));
            }
        }
        let api_method = if *method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        if let Some(rest) = path.strip_prefix("/dashboard/api/") {
            let query = req.uri().query().unwrap_or("");
            return api::route(&*self.backend, api_method, rest, query, req.body(), now());
        }
        let (is_get, etag) = (
            *api_method == Method::GET,
            req.headers().get(header::IF_NONE_MATCH),
        );
        match path {
            "/dashboard/static/dashboard.js" if is_get => {
                self.asset(etag, "text/javascript; charset=utf-8", SCRIPT)
            }
            "/dashboard/static/dashboard.css" if is_get => {
                self.asset(etag, "text/css; charset=utf-8", STYLE)
            }
            "/dashboard/static/dashboard.js" | "/dashboard/static/dashboard.css" => {
                method_not_allowed()
            }
            _ => match View::at(path) {
                Some(view) if is_get => respond(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    page::render(
                        view,
                        &self.csrf,
                        &self.asset_version,
                        &self.backend.info(),
                        &self.backend.node(),
                    ),
                ),
                Some(_) => method_not_allowed(),
                None => text(StatusCode::NOT_FOUND, "404 page not found\n"),
            },
        }
    }

    /// Whether `host` (no port) may name the dashboard: an IP literal, `localhost`,
    /// `*.localhost`, or an operator's name. Anything else may be a rebinding attack.
    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        host.parse::<std::net::IpAddr>().is_ok()
            || host == "localhost"
            || host.ends_with(".localhost")
            || self
                .options
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&host))
    }

    /// The CSRF checks of a mutation.
    fn csrf_ok(&self, req: &Request<Bytes>) -> Result<(), &'static str> {
        let h = req.headers();
        let token = h.get(CSRF_HEADER).map(HeaderValue::as_bytes).unwrap_or(b"");
        if !bool::from(token.ct_eq(self.csrf.as_bytes())) {
            return Err("missing or wrong X-CSRF-Token");
        }
        if let Some(site) = h.get("sec-fetch-site") {
            if site.as_bytes() != b"same-origin" {
                return Err("not a same-origin request (Sec-Fetch-Site)");
            }
        }
        if let Some(origin) = h.get(header::ORIGIN) {
            let authority = authority_of(req).unwrap_or_default();
            let ok = origin.to_str().ok().is_some_and(|o| {
                let o = o.to_ascii_lowercase();
                let rest = o
                    .strip_prefix("http://")
                    .or_else(|| o.strip_prefix("https://"));
                rest.is_some_and(|r| r == authority.to_ascii_lowercase())
            });
            if !ok {
                return Err("cross-origin request (Origin)");
            }
        }
        if !req.body().is_empty() {
            let json = h
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .eq_ignore_ascii_case("application/json")
                });
            if !json {
                return Err("a body must be application/json");
            }
        }
        Ok(())
    }

    fn asset(
        &self,
        etag: Option<&HeaderValue>,
        content_type: &str,
        body: &'static str,
    ) -> Response<Bytes> {
        let tag = format!("\"{}\"", self.asset_version);
        let mut resp = if etag.is_some_and(|e| e.as_bytes() == tag.as_bytes()) {
            let mut r = Response::new(Bytes::new());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            respond(
                StatusCode::OK,
                content_type,
                Bytes::from_static(body.as_bytes()),
            )
        };
        let headers = resp.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Ok(v) = HeaderValue::from_str(&tag) {
            headers.insert(header::ETAG, v);
        }
        resp
    }
}

/// `host:port` as the client named it (`Host`, or the URI's authority on HTTP/2).
fn authority_of(req: &Request<Bytes>) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
        .filter(|a| !a.is_empty())
}

/// The host part of the authority, without port or IPv6 brackets, lowercased.
fn host_of(req: &Request<Bytes>) -> Option<String> {
    let authority = authority_of(req)?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h)
    };
    Some(host.to_ascii_lowercase())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An answer with a body of `content_type`.
fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Bytes> {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

fn text(status: StatusCode, body: &str) -> Response<Bytes> {
    respond(status, "text/plain; charset=utf-8", body.to_owned())
}

fn method_not_allowed() -> Response<Bytes> {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    resp
}

/// Go's security headers, our CSP, and no caching unless the answer chose its own.
fn secure(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, name: HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(
        h,
        header::REFERRER_POLICY,
        "strict-origin-when-cross-origin",
    );
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(
        h,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        h,
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
