//! Forwarding one HTTP/2 stream upstream, by the service's `protocol`:
//! - `h2c`: HTTP/2 over plaintext on one multiplexed client connection per core and upstream
//!   (reused), bodies and trailers streamed both ways with flow control;
//! - `http`: HTTP/1.1 on the core's pooled connections ([`super::h1_upstream`]);
//! - `https`: TLS offering ALPN `h2` and `http/1.1`; on `h2` the h2c path runs over the TLS
//!   stream (gRPC through a Go-aperture style config), on `http/1.1` the HTTP/1.1 path does, on
//!   the core's pool of TLS connections.
//!
//! Header rewriting follows the HTTP/1.1 path (Go aperture's director): hop-by-hop fields
//! dropped (`te: trailers` kept for gRPC), `Authorization` replaced by the credential,
//! `X-Forwarded-For` appended, the CORS set merged into the response.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::SendStream;

use super::super::h2n::frame::ErrorCode;
use super::super::h2n::stream::{RecvBody, Stream};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::Protocol;
use crate::error::Synthetic;
use crate::l402::UpstreamAuthorization;
use crate::metrics::Counter;

use super::super::h1::{self, Head};
use super::super::pool::TlsUpstream;
use super::super::respond::{self, CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS, CORS_EXPOSE_HEADERS};
use super::super::{grpc, CoreCtx, Route};
use super::h1_upstream::forward_h1;
use super::replay;
use monoio::net::TcpStream;

/// Receive windows of our h2 client connections to upstreams (per stream, per connection).
const UPSTREAM_STREAM_WINDOW: u32 = 1 << 20;
const UPSTREAM_CONNECTION_WINDOW: u32 = 4 << 20;

/// The request side of one forward.
pub struct Outbound<'a> {
    pub route: &'a Route,
    pub peer: IpAddr,
    /// The `Payment-Receipt` of a Payment charge, sent on a 2xx answer.
    pub receipt: Option<std::rc::Rc<str>>,
    pub upstream_auth: Option<&'a [String; 2]>,
    pub authorization: UpstreamAuthorization,
    pub is_grpc: bool,
    /// A metered request's response observer (HTTP/1.1 upstreams only).
    pub observer: Option<&'a std::cell::RefCell<crate::proxy::meter::Observer>>,
}

/// h2 over TLS: poll-based rustls on the compat adapter, whose reads and writes h2's driver may
/// interleave (monoio-rustls's owned-buffer stream panics on that).
type H2Tls = tokio_rustls::client::TlsStream<monoio_compat::StreamWrapper<TcpStream>>;

/// An h2 connection's key: the upstream and whether it runs over TLS.
type H2Key = (SocketAddr, bool);

thread_local! {
    // One multiplexed h2 connection per upstream on this core (workers are one thread each).
    static H2C: RefCell<HashMap<H2Key, SendRequest<Bytes>>> = RefCell::new(HashMap::new());
    // `https` upstreams that answered an `h2` offer with HTTP/1.1: not asked again on this core.
    static NO_H2: RefCell<HashSet<SocketAddr>> = RefCell::new(HashSet::new());
}

/// Forwards the request and relays the response; `Err` only while nothing was sent downstream.
pub async fn forward(
    core: &CoreCtx,
    out: Outbound<'_>,
    head: &Head,
    respond: &Stream,
) -> Result<u16, Synthetic> {
    // The h2 and TLS paths hold large futures (handshakes, two h2 streams): boxed, so that the
    // task spawned per stream stays small for the common HTTP/1.1 upstream (moving a task's
    // future costs a copy of its whole size, three times at spawn).
    match out.route.service.protocol {
        Protocol::H2c => {
            Box::pin(async {
                let req = http_request(head, respond, &out)?;
                let send = h2c_sender(core, out.route).await?;
                forward_h2(core, &out, req, respond, send, "http").await
            })
            .await
        }
        Protocol::Http => forward_h1::<TcpStream>(core, &out, head, respond).await,
        Protocol::Https => Box::pin(forward_https(core, &out, head, respond)).await,
    }
}

/// The request in `http`'s form for an h2 upstream (`Accept-Encoding` dropped for a metered one).
fn http_request(
    head: &Head,
    respond: &Stream,
    out: &Outbound<'_>,
) -> Result<http::Request<RecvBody>, Synthetic> {
    let mut req = super::http_request(head, respond)?;
    if out.observer.is_some() {
        req.headers_mut().remove(http::header::ACCEPT_ENCODING);
    }
    Ok(req)
}

/// `https`: h2 when the upstream agrees to it through ALPN, HTTP/1.1 otherwise.
async fn forward_https(
    core: &CoreCtx,
    out: &Outbound<'_>,
    head: &Head,
    respond: &Stream,
) -> Result<u16, Synthetic> {
    let route = out.route;
    let addr = route.upstream;
    // A metered response is observed on HTTP/1.1 only: no h2 offer for it.
    if out.observer.is_some() || NO_H2.with(|s| s.borrow().contains(&addr)) {
        return forward_h1::<TlsUpstream>(core, out, head, respond).await;
    }
    if let Some(send) = cached_sender((addr, true)).await {
        let req = http_request(head, respond, out)?;
        return forward_h2(core, out, req, respond, send, "https").await;
    }
    let tls = route
        .upstream_tls
        .as_ref()
        .ok_or_else(|| failed(core, route, &"no TLS settings for this upstream"))?;
    let within = core.routes().limits.upstream_timeout;
    let stream = connect_h2_tls(addr, tls, within)
        .await
        .map_err(|e| failed(core, route, &e))?;
    if stream.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2) {
        let send = h2_handshake(core, route, (addr, true), stream).await?;
        let req = http_request(head, respond, out)?;
        forward_h2(core, out, req, respond, send, "https").await
    } else {
        // The upstream speaks HTTP/1.1 only: remember it and use the TLS pool from now on (this
        // probe connection is poll-based TLS, not the pool's kind, so it is dropped).
        NO_H2.with(|s| s.borrow_mut().insert(addr));
        forward_h1::<TlsUpstream>(core, out, head, respond).await
    }
}

/// A TLS connection offering ALPN `h2` then `http/1.1`, within `within`.
async fn connect_h2_tls(
    addr: SocketAddr,
    tls: &crate::upstream_tls::UpstreamTls,
    within: std::time::Duration,
) -> std::io::Result<H2Tls> {
    let connector = tokio_rustls::TlsConnector::from(tls.any.clone());
    let handshake = async {
        let tcp = TcpStream::connect_addr(addr).await?;
        let _ = tcp.set_nodelay(true);
        let io = monoio_compat::StreamWrapper::new_with_buffer_size(tcp, 16 * 1024, 16 * 1024);
        connector.connect(tls.server_name.clone(), io).await
    };
    match monoio::time::timeout(within, handshake).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "upstream connect or TLS handshake timed out",
        )),
    }
}

pub(super) fn failed(core: &CoreCtx, route: &Route, why: &dyn std::fmt::Display) -> Synthetic {
    core.counters().incr(Counter::UpstreamErrors);
    route.counters(core.id).upstream_error();
    tracing::debug!(core = core.id, service = %route.service.name, "upstream failed: {why}");
    Synthetic::BadGateway
}

/// The upstream request target: the path and query, behind `rewrite.prefix` when set.
pub(super) fn target(route: &Route, uri: &http::Uri) -> String {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    match &route.service.rewrite_prefix {
        Some(prefix) => format!("{}{}", prefix.trim_end_matches('/'), pq),
        None => pq.to_string(),
    }
}

/// The request fields for the upstream (Go aperture's director).
pub(super) fn request_headers(out: &Outbound<'_>, incoming: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(incoming.len() + 4);
    let mut forwarded_for = String::new();
    for (name, value) in incoming {
        let n = name.as_str();
        let te_trailers = n == "te" && value.as_bytes().eq_ignore_ascii_case(b"trailers");
        if (h1::is_hop_by_hop(n) && !te_trailers)
            || name == http::header::HOST
            || name == http::header::CONTENT_LENGTH
            || (out.upstream_auth.is_some() && name == http::header::AUTHORIZATION)
            || out
                .route
                .service
                .headers
                .iter()
                .any(|(h, _)| h.eq_ignore_ascii_case(n))
        {
            continue;
        }
        if name == "x-forwarded-for" {
            forwarded_for.push_str(value.to_str().unwrap_or(""));
            forwarded_for.push_str(", ");
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    let credential = out
        .upstream_auth
        .filter(|_| out.route.service.forwards_credential());
    if let Some([lsat, l402]) = credential {
        let auth = http::header::AUTHORIZATION;
        if out.authorization == UpstreamAuthorization::Aperture {
            if let Ok(v) = HeaderValue::from_str(lsat) {
                headers.append(auth.clone(), v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(l402) {
            headers.append(auth, v);
        }
    }
    for (name, value) in &out.route.service.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    forwarded_for.push_str(&out.peer.to_string());
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", v);
    }
    headers
}

/// The response fields for the client: connection-specific ones dropped, `WWW-Authenticate`
/// kept only on a 402, the CORS set merged.
pub(super) fn response_headers(status: u16, incoming: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(incoming.len() + 4);
    for (name, value) in incoming {
        let n = name.as_str();
        if h1::is_hop_by_hop(n)
            || n == "proxy-authenticate"
            || (name == http::header::WWW_AUTHENTICATE && status != 402)
            || n.starts_with("access-control-")
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY_ORIGIN);
    for (i, name) in CORS_LISTS.into_iter().enumerate() {
        let theirs: Vec<&[u8]> = incoming
            .get_all(&name)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        if let Some(v) = cors_value(&theirs, i) {
            headers.insert(name, v);
        }
    }
    headers
}

/// A Payment charge's receipt on a 2xx answer, with `Cache-Control: private` replacing the
/// upstream's (the HTTP/1.1 writer's rule, for h2 answers).
pub(super) fn add_receipt(headers: &mut HeaderMap, status: u16, receipt: Option<&str>) {
    let Some(receipt) = receipt.filter(|_| (200..300).contains(&status)) else {
        return;
    };
    if let Ok(v) = HeaderValue::from_str(receipt) {
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("private"),
        );
        headers.insert("payment-receipt", v);
    }
}

/// `Access-Control-Allow-Origin: *`.
pub(super) const ANY_ORIGIN: HeaderValue = HeaderValue::from_static("*");

/// The three list-valued CORS fields, in the order [`cors_value`] numbers them.
pub(super) const CORS_LISTS: [HeaderName; 3] = [
    http::header::ACCESS_CONTROL_ALLOW_METHODS,
    http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
    http::header::ACCESS_CONTROL_ALLOW_HEADERS,
];

/// Our values of the three CORS lists (methods, expose, allow headers), checked at compile time.
static OURS: [HeaderValue; 3] = [
    HeaderValue::from_static(CORS_ALLOW_METHODS),
    HeaderValue::from_static(CORS_EXPOSE_HEADERS),
    HeaderValue::from_static(CORS_ALLOW_HEADERS),
];

/// CORS list `i` (methods, expose, allow headers) merged with what the upstream sent: our
/// constant when it sent nothing (the usual case: no allocation, no validation).
pub(super) fn cors_value(theirs: &[&[u8]], i: usize) -> Option<HeaderValue> {
    let ours = OURS.get(i)?;
    if theirs.is_empty() {
        return Some(ours.clone());
    }
    let mut merged = Vec::new();
    respond::merge_cors_list(theirs, ours.to_str().unwrap_or(""), &mut merged);
    HeaderValue::from_bytes(&merged).ok()
}

/// This core's live h2 connection for `key`, ready for a new stream.
async fn cached_sender(key: H2Key) -> Option<SendRequest<Bytes>> {
    let send = H2C.with(|m| m.borrow().get(&key).cloned())?;
    match send.ready().await {
        Ok(send) => Some(send),
        Err(_) => {
            H2C.with(|m| m.borrow_mut().remove(&key));
            None
        }
    }
}

async fn h2c_sender(core: &CoreCtx, route: &Route) -> Result<SendRequest<Bytes>, Synthetic> {
    let addr = route.upstream;
    if let Some(send) = cached_sender((addr, false)).await {
        return Ok(send);
    }
    let within = core.routes().limits.upstream_timeout;
    let tcp = match monoio::time::timeout(within, monoio::net::TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(failed(core, route, &e)),
        Err(_) => return Err(failed(core, route, &"connect timed out")),
    };
    let _ = tcp.set_nodelay(true);
    let io = monoio_compat::StreamWrapper::new_with_buffer_size(tcp, 16 * 1024, 16 * 1024);
    h2_handshake(core, route, (addr, false), io).await
}

/// Runs the h2 client handshake over `stream` and caches the connection under `key`.
async fn h2_handshake<T>(
    core: &CoreCtx,
    route: &Route,
    key: H2Key,
    stream: T,
) -> Result<SendRequest<Bytes>, Synthetic>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let io = stream;
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(UPSTREAM_STREAM_WINDOW)
        .initial_connection_window_size(UPSTREAM_CONNECTION_WINDOW)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| failed(core, route, &e))?;
    monoio::spawn(async move {
        let _ = conn.await;
        H2C.with(|m| m.borrow_mut().remove(&key));
    });
    H2C.with(|m| m.borrow_mut().insert(key, send.clone()));
    send.ready().await.map_err(|e| failed(core, route, &e))
}

/// Forwards on an h2 connection (`scheme` is `http` for h2c, `https` over TLS).
async fn forward_h2(
    core: &CoreCtx,
    out: &Outbound<'_>,
    req: http::Request<RecvBody>,
    respond: &Stream,
    mut send: SendRequest<Bytes>,
    scheme: &str,
) -> Result<u16, Synthetic> {
    let route = out.route;
    let uri = format!(
        "{scheme}://{}{}",
        route.service.address,
        target(route, req.uri())
    );
    let (parts, body) = req.into_parts();
    let mut upreq = http::Request::new(());
    *upreq.method_mut() = parts.method;
    *upreq.uri_mut() = uri.parse().map_err(|e| failed(core, route, &e))?;
    *upreq.headers_mut() = request_headers(out, &parts.headers);
    let end = body.is_end_stream();
    let started = std::time::Instant::now();
    let (response, up_send) = send
        .send_request(upreq.clone(), end)
        .map_err(|e| failed(core, route, &e))?;
    let limits = core.routes().limits.clone();
    let kept = replay::Shared::default();
    if !end {
        monoio::spawn(pump(body, up_send, limits.read_timeout, kept.clone()));
    }
    let within = limits.upstream_timeout;
    let resp = match monoio::time::timeout(within, response).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) if replay::refused_unprocessed(&e) && (end || kept.borrow().replayable()) => {
            // Never processed upstream: once more on a fresh connection.
            let mut send = fresh_sender(core, route, scheme == "https").await?;
            let (response, mut up_send) = send
                .send_request(upreq, end)
                .map_err(|e| failed(core, route, &e))?;
            // A copy (refcounted chunks): no borrow of the pump's state across the sends.
            let body = kept.borrow().clone();
            if !end && !body.send(&mut up_send, limits.write_timeout).await {
                return Err(failed(core, route, &"replaying the request body failed"));
            }
            match monoio::time::timeout(within, response).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => return Err(failed(core, route, &e)),
                Err(_) => return Err(failed(core, route, &"no response head in time")),
            }
        }
        Ok(Err(_)) if kept.borrow().client_stalled => return Err(Synthetic::RequestTimeout),
        Ok(Err(e)) => return Err(failed(core, route, &e)),
        Err(_) => return Err(failed(core, route, &"no response head in time")),
    };
    route.counters(core.id).upstream_latency(started.elapsed());
    let (parts, body) = resp.into_parts();
    let status = parts.status.as_u16();
    let mut head = http::Response::new(());
    *head.status_mut() = parts.status;
    *head.headers_mut() = response_headers(status, &parts.headers);
    add_receipt(head.headers_mut(), status, out.receipt.as_deref());
    if body.is_end_stream() {
        let _ = respond.send_response(&head, true);
        return Ok(status);
    }
    if respond.send_response(&head, false).is_err() {
        return Ok(status);
    }
    let idle = super::idle_window(core);
    let fallback = out
        .is_grpc
        .then(|| grpc::status_trailers(&parts.headers))
        .flatten();
    pump_response(body, respond, idle, fallback).await;
    Ok(status)
}

/// Copies the client's request body and trailers to the upstream stream, keeping what it sent
/// in `kept` for a replay ([`replay`]). A send that fails (the upstream refused the stream)
/// still reads the client's body to its end, so it can be replayed.
async fn pump(
    from: RecvBody,
    mut to: SendStream<Bytes>,
    idle: std::time::Duration,
    kept: replay::Shared,
) {
    let mut sending = true;
    loop {
        match monoio::time::timeout(idle, from.data()).await {
            Ok(Some(Ok(chunk))) => {
                kept.borrow_mut().sent(&chunk);
                if sending && send_all(&mut to, chunk, idle).await.is_err() {
                    sending = false;
                }
            }
            Ok(None) => break,
            Err(_) => {
                // The client stalled mid-body: its fault, answered 408 (not an upstream error).
                kept.borrow_mut().client_stalled = true;
                return to.send_reset(h2::Reason::CANCEL);
            }
            _ => return to.send_reset(h2::Reason::CANCEL),
        }
    }
    match from.trailers() {
        Ok(trailers) => {
            kept.borrow_mut().ended(trailers.clone());
            match trailers {
                Some(t) if sending => drop(to.send_trailers(t)),
                None if sending => drop(to.send_data(Bytes::new(), true)),
                _ => {}
            }
        }
        Err(_) => to.send_reset(h2::Reason::CANCEL),
    }
}

/// A new h2 connection to `route`'s upstream (h2c, or h2 over TLS), replacing the cached one:
/// the old one is going away.
async fn fresh_sender(
    core: &CoreCtx,
    route: &Route,
    tls: bool,
) -> Result<SendRequest<Bytes>, Synthetic> {
    let key = (route.upstream, tls);
    H2C.with(|m| m.borrow_mut().remove(&key));
    if !tls {
        return h2c_sender(core, route).await;
    }
    let settings = route
        .upstream_tls
        .as_ref()
        .ok_or_else(|| failed(core, route, &"no TLS settings for this upstream"))?;
    let within = core.routes().limits.upstream_timeout;
    let stream = connect_h2_tls(route.upstream, settings, within)
        .await
        .map_err(|e| failed(core, route, &e))?;
    h2_handshake(core, route, key, stream).await
}

/// Copies an upstream response body and trailers to the client; `fallback` trailers end a
/// gRPC response whose upstream sent none.
async fn pump_response(
    mut from: h2::RecvStream,
    to: &Stream,
    idle: std::time::Duration,
    fallback: Option<HeaderMap>,
) {
    loop {
        let next = monoio::select! {
            r = monoio::time::timeout(idle, from.data()) => r,
            // The client left: dropping `from` resets the upstream stream.
            _ = to.gone() => return,
        };
        match next {
            Ok(Some(Ok(chunk))) => {
                let n = chunk.len();
                if to.send_all(chunk, false, idle).await.is_err() {
                    return;
                }
                let _ = from.flow_control().release_capacity(n);
            }
            Ok(None) => break,
            _ => return to.send_reset(ErrorCode::InternalError),
        }
    }
    match (from.trailers().await, fallback) {
        (Ok(Some(trailers)), _) | (Ok(None), Some(trailers)) => {
            let _ = to.send_trailers(trailers);
        }
        (Ok(None), None) => {
            let _ = to.send_data(Bytes::new(), true);
        }
        (Err(_), _) => to.send_reset(ErrorCode::InternalError),
    }
}

/// Sends `data` as the peer's flow-control window allows (never buffering past it); a peer
/// that grants no window for `within` (rolling: each grant restarts it) fails the send.
pub(super) async fn send_all(
    to: &mut SendStream<Bytes>,
    data: Bytes,
    within: std::time::Duration,
) -> Result<(), h2::Error> {
    send_all_then(to, data, false, within).await
}

/// [`send_all`], its last DATA frame carrying END_STREAM when `end` (one frame less than an
/// empty closing DATA frame after it).
pub(super) async fn send_all_then(
    to: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    within: std::time::Duration,
) -> Result<(), h2::Error> {
    if data.is_empty() {
        return if end {
            to.send_data(data, true)
        } else {
            Ok(())
        };
    }
    while !data.is_empty() {
        to.reserve_capacity(data.len());
        let granted = std::future::poll_fn(|cx| to.poll_capacity(cx));
        let n = match monoio::time::timeout(within, granted).await {
            Ok(Some(Ok(n))) => n,
            Ok(Some(Err(e))) => return Err(e),
            // A reader that stopped reading: the stream is reset, its upstream work dropped.
            Ok(None) | Err(_) => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        if n == 0 {
            continue;
        }
        let chunk = data.split_to(n.min(data.len()));
        to.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}
