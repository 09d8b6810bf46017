//! HTTP/2 downstream: one connection served by upstream hyperium `h2` 0.4 (its rapid-reset and
//! local-error-reset protections on) over monoio through `monoio-compat`'s stream adapter (TLS:
//! poll-based tokio-rustls over it, see [`super::tls_accept`]), limits from `http2:`. Each
//! stream runs the same phases as HTTP/1.1 (route → authorize → rate limit → forward, or the
//! static site for an unmatched non-gRPC request) in its own task on this core. gRPC requests
//! get every synthetic answer in the Trailers-Only form. Nothing here panics on network input; a
//! broken stream is reset, a broken connection closed.

mod h1_fields;
mod h1_upstream;
mod replay;
mod rewind;
mod upstream;

pub use rewind::Rewind;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use monoio::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};

use super::auth;
use super::h1::{Head, Parse};
use super::{grpc, limit, respond, CoreCtx};
use crate::error::Synthetic;
use crate::metrics::Counter;

/// Serves one HTTP/2 connection on `io` (a tokio stream: the compat adapter over the socket,
/// or poll-based TLS over it), with the limits of the `http2:` config block.
pub async fn serve<T>(core: Rc<CoreCtx>, io: T, peer: SocketAddr)
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let limits = core.routes().limits.clone();
    let cfg = limits.http2;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .max_header_list_size(cfg.max_header_list_size)
        .initial_window_size(cfg.initial_stream_window)
        .initial_connection_window_size(cfg.initial_connection_window)
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(Some(1024))
        .max_send_buffer_size(1 << 20);
    let within = limits.read_timeout;
    let conn = match monoio::time::timeout(within, builder.handshake::<_, Bytes>(io)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return tracing::debug!(core = core.id, %peer, "h2 handshake failed: {e}"),
        Err(_) => return tracing::debug!(core = core.id, %peer, "h2 handshake timed out"),
    };
    accept_streams(core, conn, peer, cfg).await
}

/// Open streams of one connection and since when it has had none (for the idle timeout).
struct Activity {
    /// Stream tasks alive, counting reset streams whose tasks still wind down.
    open: Cell<usize>,
    idle_since: Cell<Instant>,
    /// Streams the client reset while their work ran, or that were refused, less streams that
    /// completed: a client that resets faster than its work completes drives it up.
    strikes: Cell<usize>,
}

impl Activity {
    fn strike(&self) {
        self.strikes.set(self.strikes.get() + 1);
    }

    fn completed(&self) {
        self.strikes.set(self.strikes.get().saturating_sub(1));
    }
}

/// Decrements the open-stream count when a stream task ends, however it ends.
struct StreamGuard(Rc<Activity>);

/// A stream's response side, shared by the stream's work (which answers through it) and the
/// reset watch around that work: the `RefCell` is borrowed only inside synchronous calls, never
/// across an await, so the two never collide.
pub(super) struct Responder {
    inner: RefCell<SendResponse<Bytes>>,
    head_sent: Cell<bool>,
}

impl Responder {
    fn new(inner: SendResponse<Bytes>) -> Self {
        Self {
            inner: RefCell::new(inner),
            head_sent: Cell::new(false),
        }
    }

    /// Sends the response head (and ends the stream when `end`).
    pub(super) fn send_response(
        &self,
        head: http::Response<()>,
        end: bool,
    ) -> Result<SendStream<Bytes>, h2::Error> {
        self.head_sent.set(true);
        self.inner.borrow_mut().send_response(head, end)
    }

    /// Completes when the client reset the stream (RST_STREAM, a GOAWAY below it) or the
    /// connection failed, while no response head was sent; after the head, the body relay
    /// watches its [`SendStream`] instead ([`stream_reset`]).
    async fn reset(&self) {
        std::future::poll_fn(|cx| {
            if self.head_sent.get() {
                return std::task::Poll::Pending;
            }
            match self.inner.borrow_mut().poll_reset(cx) {
                std::task::Poll::Ready(_) => std::task::Poll::Ready(()),
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        })
        .await
    }
}

/// Completes when the client reset a stream whose response is streaming (or its connection
/// failed): the upstream read waiting for the next piece is dropped.
pub(super) async fn stream_reset(down: &mut SendStream<Bytes>) {
    std::future::poll_fn(|cx| down.poll_reset(cx).map(|_| ())).await
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let open = self.0.open.get().saturating_sub(1);
        self.0.open.set(open);
        if open == 0 {
            self.0.idle_since.set(Instant::now());
        }
    }
}

/// Accepts streams until the connection ends: GOAWAY on shutdown, and after `idle` (non-zero)
/// without an open stream. Streams in flight are never cut by either. Work is bounded: past
/// `maxconcurrentstreams` stream tasks alive (reset ones that still wind down included) a new
/// stream is refused, and a client whose resets and refusals outrun its completed streams by
/// [`calm_limit`] gets GOAWAY ENHANCE_YOUR_CALM and is closed.
async fn accept_streams<T>(
    core: Rc<CoreCtx>,
    mut conn: h2::server::Connection<T, Bytes>,
    peer: SocketAddr,
    cfg: crate::config::Http2,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let idle = cfg.idle_timeout;
    let max_open = cfg.max_concurrent_streams as usize;
    let activity = Rc::new(Activity {
        open: Cell::new(0),
        idle_since: Cell::new(Instant::now()),
        strikes: Cell::new(0),
    });
    let shutdown = core.shutdown.clone();
    let mut stop = shutdown.wait();
    let mut draining = false;
    loop {
        let next = if draining {
            conn.accept().await
        } else {
            // Re-armed on every turn: while streams are open it only wakes the loop to look again.
            let wake = if activity.open.get() == 0 {
                activity.idle_since.get() + idle
            } else {
                Instant::now() + idle
            };
            monoio::select! {
                r = conn.accept() => r,
                _ = &mut stop => {
                    // GOAWAY: in-flight streams finish, new ones are refused.
                    conn.graceful_shutdown();
                    draining = true;
                    continue;
                }
                _ = monoio::time::sleep_until(wake), if !idle.is_zero() => {
                    if activity.open.get() == 0 && activity.idle_since.get() + idle <= Instant::now() {
                        tracing::debug!(core = core.id, %peer, "h2 connection idle; GOAWAY");
                        conn.graceful_shutdown();
                        draining = true;
                    }
                    continue;
                }
            }
        };
        match next {
            Some(Ok((_, mut respond))) if activity.open.get() >= max_open => {
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                core.counters().incr(Counter::H2StreamsRefused);
                activity.strike();
            }
            Some(Ok((req, respond))) => {
                activity.open.set(activity.open.get() + 1);
                let guard = StreamGuard(activity.clone());
                let core = core.clone();
                // The stream's state (kilobytes: every phase's future) is built once in its
                // own allocation; the task itself holds only the arguments, because spawning
                // moves a task's whole future several times.
                monoio::spawn(async move {
                    let activity = guard.0.clone();
                    let _guard = guard;
                    Box::pin(serve_stream(core, req, respond, peer, activity)).await
                });
            }
            Some(Err(e)) => {
                tracing::debug!(core = core.id, %peer, "h2 connection error: {e}");
                return;
            }
            None => return,
        }
        if activity.strikes.get() > calm_limit(max_open) {
            core.counters().incr(Counter::H2Calmed);
            tracing::debug!(core = core.id, %peer, "h2 client resets faster than its work completes; GOAWAY ENHANCE_YOUR_CALM");
            return calm(&core, conn).await;
        }
    }
}

/// How far a connection's resets and refusals may outrun its completed streams.
fn calm_limit(max_open: usize) -> usize {
    max_open.max(100)
}

/// Sends GOAWAY ENHANCE_YOUR_CALM and drives the connection a short while so it goes out; then
/// the connection is dropped, which fails (and so cancels) every stream still running.
async fn calm<T>(core: &CoreCtx, mut conn: h2::server::Connection<T, Bytes>)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
    let flush = async {
        while let Some(Ok((_, mut respond))) = conn.accept().await {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        }
    };
    let within = core
        .routes()
        .limits
        .write_timeout
        .min(Duration::from_secs(1));
    let _ = monoio::time::timeout(within, flush).await;
}

/// One request stream: the request phases, then the answer or the forwarded response. A reset
/// from the client (or the connection going away) drops the phases wherever they are: an
/// upstream HTTP/1.1 connection is closed, an upstream h2 stream reset.
async fn serve_stream(
    core: Rc<CoreCtx>,
    req: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
    peer: SocketAddr,
    activity: Rc<Activity>,
) {
    core.counters().incr(Counter::Requests);
    let is_grpc = grpc::is_grpc(req.headers());
    let head_only = req.method() == http::Method::HEAD;
    let respond = Responder::new(respond);
    let outcome = monoio::select! {
        r = phases(&core, req, &respond, peer, is_grpc) => Some(r),
        _ = respond.reset() => None,
    };
    match outcome {
        Some(Ok(())) => activity.completed(),
        Some(Err(answer)) => {
            activity.completed();
            core.counters().status(answer.status());
            send_answer(&respond, &answer, is_grpc, head_only);
        }
        None => {
            activity.strike();
            core.counters().incr(Counter::ClientAborts);
            tracing::debug!(core = core.id, %peer, "h2 stream reset by the client; its work dropped");
        }
    }
}

/// Writes a synthetic answer on a stream (Trailers-Only for gRPC).
pub(super) fn send_answer(respond: &Responder, answer: &Synthetic, is_grpc: bool, head_only: bool) {
    if is_grpc {
        let _ = respond.send_response(respond::render_grpc(answer), true);
        return;
    }
    let (resp, body) = respond::render_h2(answer, head_only);
    let empty = body.is_empty();
    if let Ok(mut send) = respond.send_response(resp, empty) {
        if !empty {
            let _ = send.send_data(body, true);
        }
    }
}

/// Route → authorize → rate limit → forward. `Err`: answer locally.
async fn phases(
    core: &CoreCtx,
    req: http::Request<RecvStream>,
    respond: &Responder,
    peer: SocketAddr,
    is_grpc: bool,
) -> Result<(), Synthetic> {
    let routes = core.routes();
    let head = h1_head(&req, authority(&req))?;
    // The client behind a trusted load balancer, else the TCP peer.
    let client_ip = routes.client_ip(peer.ip(), &head);
    if routes.blocked(client_ip) {
        return Err(Synthetic::Forbidden);
    }
    if req.method() == http::Method::OPTIONS {
        return Err(Synthetic::Options);
    }
    let path = req.uri().path();
    let Some(route) = routes.find(authority(&req), path) else {
        return match &routes.statics {
            Some(site) if !is_grpc && !super::route::is_admin_path(path) => {
                // Boxed: the rare path must not grow every stream's task.
                Box::pin(serve_static(core, site, &req, respond)).await
            }
            _ => Err(Synthetic::NotFound),
        };
    };
    if route.service.meter.is_some() {
        // The built-in meter reads the model from the body's first bytes, still a stream here.
        let answer = Synthetic::Internal(BUILTIN_H1_ONLY);
        route.counters(core.id).status(answer.status());
        return Err(answer);
    }
    // The pricer sees the head only: the body is still a stream here.
    let input = auth::PriceInput {
        version: "2.0",
        body: &[],
    };
    let decision = auth::authorize(core, route, &head, client_ip, input).await;
    let answered = |answer: Synthetic| {
        route.counters(core.id).status(answer.status());
        answer
    };
    let grant = decision.into_grant(client_ip).map_err(answered)?;
    // A metered service's paid request: named by its token (checked before the grant is used).
    let metered = route
        .metered_tail
        .and_then(|_| super::meter::token_of(&grant));
    if metered.is_some() && route.service.protocol == crate::config::Protocol::H2c {
        // The response tail is observed on HTTP/1.1 upstreams only: a paid request that would
        // go unmetered is refused rather than served free.
        return Err(answered(Synthetic::Internal(METERED_H1_ONLY)));
    }
    if let Some(key) = grant.key {
        if let Some(denied) = limit::limit(core, route, key, path).await {
            return Err(answered(denied));
        }
    }
    let mut settling = None;
    let receipt = match grant.payment {
        Some(pending) => {
            let ask = super::meter::Ask {
                head: &head,
                version: "2.0",
                body: &[],
                accept_payment: head.get("accept-payment"),
            };
            // Boxed: the rare case must not grow every stream's task.
            let (receipt, bearer) = Box::pin(auth::settle(core, route, pending, &ask))
                .await
                .map_err(answered)?;
            // A session bearer on a service with a pricer: settled once its response ended.
            // (Observed on HTTP/1.1 upstreams only: on h2c the estimate stands.)
            if route.service.protocol != crate::config::Protocol::H2c {
                settling = super::session_meter::begin(route, bearer, &ask);
            }
            Some(receipt)
        }
        None => None,
    };
    let mut metering = None;
    if let Some(token) = metered {
        let ask = super::meter::Ask {
            head: &head,
            version: "2.0",
            body: &[],
            accept_payment: head.get("accept-payment"),
        };
        // Boxed: the rare case must not grow every stream's task.
        match Box::pin(super::meter::authorize(core, route, ask, token)).await {
            super::meter::Verdict::Meter(m) => metering = Some(m),
            super::meter::Verdict::Free => {}
            super::meter::Verdict::Answer(answer) => return Err(answered(answer)),
        }
    }
    let mut req = req;
    let observed = match (metering.as_mut(), settling.as_mut()) {
        (Some(m), _) => Some(&mut m.observer),
        (None, Some(s)) => Some(&mut s.observer),
        (None, None) => None,
    };
    let observer = observed.map(|o| {
        // Plain text in the tail, as on HTTP/1.1.
        req.headers_mut().remove(http::header::ACCEPT_ENCODING);
        RefCell::new(std::mem::replace(o, super::meter::Observer::new(0)))
    });
    let out = upstream::Outbound {
        route,
        peer: peer.ip(),
        receipt,
        upstream_auth: grant.upstream.as_deref(),
        authorization: routes.upstream_authorization,
        is_grpc,
        observer: observer.as_ref(),
    };
    let forwarded = upstream::forward(core, out, req, respond).await;
    match (metering, settling, observer) {
        (Some(mut m), _, Some(observer)) => {
            m.observer = observer.into_inner();
            let complete = m.observer.ended;
            m.report(core, route, complete);
        }
        (None, Some(mut s), Some(observer)) => {
            s.observer = observer.into_inner();
            let complete = s.observer.ended;
            s.settle(core, route, complete);
        }
        _ => {}
    }
    let status = forwarded.inspect_err(|answer| route.counters(core.id).status(answer.status()))?;
    core.counters().incr(Counter::Forwarded);
    core.counters().status(status);
    route.counters(core.id).status(status);
    Ok(())
}

/// The 500 body for any HTTP/2 request on a `metering: openai` service.
const BUILTIN_H1_ONLY: &str = "the built-in meter serves HTTP/1.1 clients only";

/// The 500 body for a paid HTTP/2 request on a metered service whose upstream speaks h2c.
const METERED_H1_ONLY: &str = "metered services need an HTTP/1.1 upstream";

/// Answers a request no service matched from the static site (`servestatic`): the head, then
/// the file in chunks as the client's window allows (each grant within `writetimeout`). A
/// client that stalls or resets, or a file that shrinks, ends the stream with a reset.
async fn serve_static(
    core: &CoreCtx,
    site: &super::statics::Site,
    req: &http::Request<RecvStream>,
    respond: &Responder,
) -> Result<(), Synthetic> {
    use super::statics::{self, Body};
    let fields = req.headers();
    let field = |name: http::header::HeaderName| fields.get(name).map(|v| v.as_bytes());
    let ask = statics::Ask {
        method: req.method().as_str().as_bytes(),
        path: req.uri().path().as_bytes(),
        query: req.uri().query().unwrap_or_default().as_bytes(),
        if_none_match: field(http::header::IF_NONE_MATCH),
        if_modified_since: field(http::header::IF_MODIFIED_SINCE),
        range: field(http::header::RANGE),
        if_range: field(http::header::IF_RANGE),
    };
    let answer = statics::prepare(site, &ask).await?;
    core.counters().status(answer.head.status);
    let head = respond::render_static_h2(&answer.head);
    let body = match answer.body {
        _ if req.method() == http::Method::HEAD => Body::Empty,
        body => body,
    };
    let (reader, mut at, len) = match body {
        Body::Empty => {
            let _ = respond.send_response(head, true);
            return Ok(());
        }
        Body::Text(text) => {
            if let Ok(mut send) = respond.send_response(head, false) {
                let _ = send.send_data(Bytes::from_static(text.as_bytes()), true);
            }
            return Ok(());
        }
        Body::File {
            reader,
            offset,
            len,
        } => (reader, offset, len),
    };
    let Ok(mut send) = respond.send_response(head, false) else {
        return Ok(());
    };
    let within = core.routes().limits.write_timeout;
    let end = at.saturating_add(len);
    while at < end {
        let want = usize::try_from(end - at).map_or(statics::CHUNK, |l| l.min(statics::CHUNK));
        let (res, buf) = reader.read_into(Vec::with_capacity(want), at, want).await;
        match res {
            Ok(n) if n > 0 => at += n as u64,
            _ => {
                tracing::debug!(
                    core = core.id,
                    "static file read failed or shrank; stream reset"
                );
                send.send_reset(h2::Reason::INTERNAL_ERROR);
                return Ok(());
            }
        }
        let last = at >= end;
        if upstream::send_all_then(&mut send, Bytes::from(buf), last, within)
            .await
            .is_err()
        {
            send.send_reset(h2::Reason::CANCEL);
            return Ok(());
        }
    }
    Ok(())
}

/// `:authority`, else `host`, without surprises for the host regexp.
fn authority(req: &http::Request<RecvStream>) -> &str {
    match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req
            .headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    }
}

/// The request as an HTTP/1.1 head, for the phases written against [`Head`] (authorization
/// reads credentials from it): a minimal head serialised and parsed back.
fn h1_head(req: &http::Request<RecvStream>, host: &str) -> Result<Head, Synthetic> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let fields: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    // Sized once: an L402 credential alone is longer than a guess would be.
    let mut raw = Vec::with_capacity(32 + target.len() + host.len() + fields);
    raw.extend_from_slice(req.method().as_str().as_bytes());
    raw.push(b' ');
    raw.extend_from_slice(target.as_bytes());
    raw.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    raw.extend_from_slice(host.as_bytes());
    raw.extend_from_slice(b"\r\n");
    for (name, value) in req.headers() {
        if name == http::header::HOST {
            continue;
        }
        raw.extend_from_slice(name.as_str().as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value.as_bytes());
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    let mut head = Head::default();
    match head.parse_request(&raw) {
        Ok(Parse::Complete(_)) => Ok(head),
        Err(super::h1::FrameError::TooManyHeaders) => Err(Synthetic::HeaderTooLarge),
        _ => Err(Synthetic::BadRequest("malformed request")),
    }
}

/// How long an idle upstream read may stall before the stream is reset (long-lived gRPC
/// streams are not cut by a request deadline, only by silence).
pub fn idle_window(core: &CoreCtx) -> Duration {
    let limits = core.routes().limits.clone();
    limits.idle_timeout.max(limits.write_timeout)
}
