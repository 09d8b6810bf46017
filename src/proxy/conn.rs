//! One downstream connection: protocol selection on plaintext (the HTTP/2 preface; TLS and ALPN
//! are in [`super::tls_accept`]), then HTTP/1.1 here: read a head, run the request phases
//! (route → authenticate → forward, or the static site when nothing matched), answer, repeat
//! while keep-alive holds. HTTP/2 connections go to [`super::h2`]. Every failure becomes either
//! a synthetic answer or a closed connection; nothing here panics on network input.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use monoio::net::TcpStream;

use crate::error::Synthetic;
use crate::metrics::Counter;

use super::auth::{self, Decision};
use super::bundles;
use super::forward::{self, ForwardError, Outbound};
use super::h1::{FrameError, Framing, Head, Parse};
use super::io::{BufStream, Io, ReadError};
use super::limit;
use super::meter;
use super::price;
use super::proxyproto;
use super::respond;
use super::route::DISCOVERY_PATH;
use super::session_meter;
use super::{CoreCtx, Route, Routes, ShutdownWait};

/// Largest body drained after a local answer so the connection can stay open.
const DRAIN_LIMIT: u64 = 256 * 1024;

/// The HTTP/2 connection preface (RFC 9113 §3.4); a cleartext connection that opens with it is
/// h2c with prior knowledge.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves a plaintext connection until it closes: HTTP/1.1, or h2c when it opens with the
/// HTTP/2 preface (both on the same port, as behind a TLS-terminating load balancer).
pub async fn serve(core: Rc<CoreCtx>, stream: TcpStream, peer: SocketAddr) {
    let Some(peer) = client_of(&core, &stream, peer).await else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let mut client = BufStream::new(stream);
    match sniff_preface(&core, &mut client).await {
        Some(true) => {
            use monoio::io::Splitable;
            let buffered = client.take_buffered();
            let (read, write) = client.stream.into_split();
            super::h2n::conn::serve(core, read, write, buffered, peer, fd, true).await
        }
        Some(false) => serve_h1(core, client, peer, fd).await,
        None => {}
    }
}

/// Reads until the first bytes tell HTTP/1.1 from the HTTP/2 preface. `None`: the peer left, was
/// idle too long, or the core is draining.
async fn sniff_preface<C: Io>(core: &CoreCtx, client: &mut BufStream<C>) -> Option<bool> {
    let limits = core.routes().limits.clone();
    let mut stop = core.shutdown.wait();
    loop {
        let data = client.data();
        if data.len() >= H2_PREFACE.len() || !H2_PREFACE.starts_with(data) {
            return Some(data.starts_with(H2_PREFACE));
        }
        let within = if data.is_empty() {
            limits.idle_timeout
        } else {
            limits.read_timeout
        };
        let read = monoio::select! {
            r = client.fill_within(limits.max_header_bytes + 1, within) => r,
            _ = &mut stop => return None,
        };
        read.ok()?;
    }
}

/// The connection's client: the TCP peer, or, when the peer is a trusted proxy and
/// `proxyprotocol` is on, the source its PROXY header names (the peer itself for `LOCAL`).
/// `None`: the header was missing, malformed or late; the connection is closed (counted, logged
/// at debug).
pub(super) async fn client_of(
    core: &CoreCtx,
    stream: &TcpStream,
    peer: SocketAddr,
) -> Option<SocketAddr> {
    if !core.routes().expects_proxy_header(peer.ip()) {
        return Some(peer);
    }
    match proxyproto::read_header(stream).await {
        Ok(source) => Some(source.unwrap_or(peer)),
        Err(e) => {
            core.counters().incr(Counter::ProxyHeaderRejected);
            tracing::debug!(core = core.id, %peer, "closing connection: {e}");
            None
        }
    }
}

/// Serves HTTP/1.1 on a connection until it closes; `fd` is its socket (under TLS too), watched
/// while a request waits on the upstream.
pub async fn serve_h1<C: Io>(
    core: Rc<CoreCtx>,
    mut client: BufStream<C>,
    peer: SocketAddr,
    fd: RawFd,
) {
    let mut head = Head::default();
    let mut resp = Head::default();
    let mut out = Vec::with_capacity(4096);
    let shutdown = core.shutdown.clone();
    let mut stop = shutdown.wait();
    loop {
        match read_head(&core, &mut client, &mut head, &mut stop).await {
            Ok(()) => {}
            Err(None) => return,
            Err(Some(answer)) => {
                answer_and_close(&core, &mut client, &answer, out).await;
                return;
            }
        }
        core.counters().incr(Counter::Requests);
        let conn = Conn { peer, fd };
        let keep = handle(&core, &mut client, &head, &mut resp, conn, &mut out).await;
        if !keep || core.shutdown.is_set() {
            return;
        }
    }
}

/// Reads the next request head. `Err(None)`: close quietly; `Err(Some(answer))`: answer, close.
async fn read_head<C: Io>(
    core: &CoreCtx,
    client: &mut BufStream<C>,
    head: &mut Head,
    stop: &mut ShutdownWait<'_>,
) -> Result<(), Option<Synthetic>> {
    let limits = core.routes().limits.clone();
    // A head that started arriving must be whole within `readtimeout` of its first read, not of
    // each read: a slowloris client trickling a byte at a time is cut (Go's total deadline).
    // Set only when a head arrives in pieces, so the usual one-read head reads no clock.
    let mut head_deadline: Option<monoio::time::Instant> = None;
    loop {
        if !client.data().is_empty() {
            match head.parse_request(client.data()) {
                Ok(Parse::Complete(n)) => {
                    client.consume(n);
                    return Ok(());
                }
                Ok(Parse::Partial) if client.data().len() >= limits.max_header_bytes => {
                    return Err(Some(Synthetic::HeaderTooLarge))
                }
                Ok(Parse::Partial) => {}
                Err(FrameError::TooManyHeaders) => return Err(Some(Synthetic::HeaderTooLarge)),
                Err(FrameError::Version) => {
                    return Err(Some(Synthetic::BadRequest("unsupported HTTP version")))
                }
                Err(_) => return Err(Some(Synthetic::BadRequest("malformed request"))),
            }
        }
        let idle = client.data().is_empty();
        let within = if idle {
            limits.idle_timeout
        } else {
            let now = monoio::time::Instant::now();
            let deadline = *head_deadline.get_or_insert(now + limits.read_timeout);
            deadline.saturating_duration_since(now)
        };
        if within.is_zero() {
            return Err(Some(Synthetic::RequestTimeout));
        }
        let limit = limits.max_header_bytes + 1;
        let read = if idle {
            monoio::select! {
                r = client.fill_within(limit, within) => r,
                _ = &mut *stop => return Err(None),
            }
        } else {
            client.fill_within(limit, within).await
        };
        match read {
            Ok(0) => return Err(Some(Synthetic::HeaderTooLarge)),
            Ok(_) => {}
            Err(ReadError::Timeout) if !idle => return Err(Some(Synthetic::RequestTimeout)),
            Err(_) => return Err(None),
        }
    }
}

/// A request answered locally: the answer, the body framing left to drain, and whether the
/// connection may stay open afterwards.
struct Local(Synthetic, Framing, bool);

/// The checks before routing: framing, size, blocklist, CORS preflight.
fn admit(routes: &Routes, head: &Head, client_ip: IpAddr) -> Result<Framing, Local> {
    if !head.host_field_ok() {
        // RFC 9112 §3.2: no `Host` on HTTP/1.1, or two of them. Closed afterwards: the body
        // framing of such a request is not trusted either.
        return Err(Local(
            Synthetic::BadRequest("missing or repeated Host header"),
            Framing::Length(0),
            false,
        ));
    }
    let framing = head.request_framing().map_err(|_| {
        Local(
            Synthetic::BadRequest("bad message framing"),
            Framing::Length(0),
            false,
        )
    })?;
    if matches!(framing, Framing::Length(n) if n > routes.limits.max_body_bytes) {
        return Err(Local(Synthetic::PayloadTooLarge, framing, false));
    }
    if routes.blocked(client_ip) {
        return Err(Local(Synthetic::Forbidden, framing, false));
    }
    if head.method() == b"OPTIONS" {
        return Err(Local(Synthetic::Options, framing, true));
    }
    Ok(framing)
}

/// Who is on the other end of a connection: its TCP peer and socket.
#[derive(Clone, Copy)]
struct Conn {
    peer: SocketAddr,
    fd: RawFd,
}

/// Runs the request phases for one parsed head; returns whether the connection stays open.
async fn handle<C: Io>(
    core: &CoreCtx,
    client: &mut BufStream<C>,
    head: &Head,
    resp: &mut Head,
    conn: Conn,
    out: &mut Vec<u8>,
) -> bool {
    let peer = conn.peer;
    let routes = core.routes();
    // The client behind a trusted load balancer, else the TCP peer.
    let client_ip = routes.client_ip(peer.ip(), head);
    // The service the request was routed to, for its per-service status counters.
    let mut routed: Option<&Route> = None;
    let local = match admit(&routes, head, client_ip) {
        Err(local) => local,
        Ok(_) if head.path() == DISCOVERY_PATH && matches!(head.method(), b"GET" | b"HEAD") => {
            return discovery(core, client, head, &routes, out).await;
        }
        Ok(framing) => {
            let host = std::str::from_utf8(head.host().unwrap_or_default()).unwrap_or("");
            let path = std::str::from_utf8(head.path()).unwrap_or("");
            match routes.find(host, path) {
                None => match &routes.statics {
                    Some(site) if !super::route::is_admin_path(path) => {
                        // Boxed: inline, the static path's state machine grew every
                        // request's and kept `handle` from being inlined (+8% instructions
                        // on the free row).
                        let answer = static_phase(core, client, head, framing, site, out);
                        return Box::pin(answer).await;
                    }
                    _ => Local(Synthetic::NotFound, framing, true),
                },
                Some(route) => {
                    let decision = authorize(core, client, route, head, client_ip, framing).await;
                    routed = Some(route);
                    match decision.into_grant(client_ip) {
                        Err(synthetic) => Local(synthetic, framing, true),
                        Ok(grant) => {
                            let inbound = Inbound {
                                head,
                                framing,
                                conn,
                                path,
                                authorization: routes.upstream_authorization,
                            };
                            return forward_phase(core, route, grant, inbound, client, resp, out)
                                .await;
                        }
                    }
                }
            }
        }
    };
    let Local(synthetic, framing, may_keep) = local;
    if let Some(route) = routed {
        route.counters(core.id).status(synthetic.status());
    }
    answer(core, client, head, framing, synthetic, out, may_keep).await
}

/// Answers a request no service matched from the static site (`servestatic`); returns whether
/// the connection stays open. A body sent with the request is drained (small) or the connection
/// closed, as for any local answer.
async fn static_phase<C: Io>(
    core: &CoreCtx,
    client: &mut BufStream<C>,
    head: &Head,
    framing: Framing,
    site: &super::statics::Site,
    out: &mut Vec<u8>,
) -> bool {
    let ask = super::statics::Ask {
        method: head.method(),
        path: head.path(),
        query: head
            .target()
            .get(head.path().len() + 1..)
            .unwrap_or_default(),
        if_none_match: head.get("if-none-match"),
        if_modified_since: head.get("if-modified-since"),
        range: head.get("range"),
        if_range: head.get("if-range"),
    };
    let answer = match super::statics::prepare(site, &ask).await {
        Ok(answer) => answer,
        Err(synthetic) => return answer(core, client, head, framing, synthetic, out, true).await,
    };
    let expects_body = head.get("expect").is_some();
    let mut keep = head.keep_alive() && !core.shutdown.is_set() && !expects_body;
    if keep && framing != Framing::Length(0) {
        keep = drain_body(core, client, framing).await;
    }
    let status = answer.head.status;
    core.counters().status(status);
    log_request(core, head, status, None);
    let within = core.routes().limits.write_timeout;
    let head_only = head.method() == b"HEAD";
    super::statics::send_h1(answer, client, head_only, !keep, within, out).await && keep
}

/// The request as the phases after authentication see it.
struct Inbound<'a> {
    head: &'a Head,
    framing: Framing,
    conn: Conn,
    path: &'a str,
    authorization: crate::l402::UpstreamAuthorization,
}

/// The authenticate phase, with the body prefix a dynamic pricer (or the built-in meter) is
/// shown: for a dynamically priced or built-in metered route and a `Content-Length` body, up
/// to [`price::MAX_BODY_PREFIX`] bytes are read ahead into the connection buffer (not consumed: they are forwarded as usual). Chunked bodies
/// and clients waiting for `100 Continue` are priced on their head alone.
async fn authorize<C: Io>(
    core: &CoreCtx,
    client: &mut BufStream<C>,
    route: &Route,
    head: &Head,
    client_ip: IpAddr,
    framing: Framing,
) -> Decision {
    let mut want = 0;
    if let (true, Framing::Length(n)) = (route.reads_body, framing) {
        if head.get("expect").is_none() {
            want = usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(price::MAX_BODY_PREFIX);
        }
    }
    let within = core.routes().limits.read_timeout;
    while client.data().len() < want {
        // A slow or vanished client is priced on what arrived; forwarding then deals with it.
        if client.fill_within(want, within).await.is_err() {
            break;
        }
    }
    let body = &client.data()[..want.min(client.data().len())];
    let input = auth::PriceInput {
        version: "1.1",
        body,
    };
    auth::authorize(core, route, head, client_ip, input).await
}

/// One line per request at debug level: method, path, status and the upstream service when the
/// request was forwarded. Never a credential (Go aperture logs the whole `Authorization`).
fn log_request(core: &CoreCtx, head: &Head, status: u16, service: Option<&str>) {
    tracing::debug!(
        core = core.id,
        method = %String::from_utf8_lossy(head.method()),
        path = %String::from_utf8_lossy(head.path()),
        status,
        upstream = service.unwrap_or("-"),
        "request"
    );
}

/// Serves the discovery document (never payment-gated).
async fn discovery<C: Io>(
    core: &CoreCtx,
    client: &mut BufStream<C>,
    head: &Head,
    routes: &Routes,
    out: &mut Vec<u8>,
) -> bool {
    let keep = head.keep_alive() && !core.shutdown.is_set();
    core.counters().status(200);
    out.clear();
    respond::render_json_h1(&routes.discovery, head.method() == b"HEAD", !keep, out);
    let within = routes.limits.write_timeout;
    match client.write_all_within(std::mem::take(out), within).await {
        Ok(buf) => {
            *out = buf;
            out.clear();
            keep
        }
        Err(_) => false,
    }
}

/// The rate-limit phase, a Payment charge's claim, then the forward: one async step after
/// authentication (each nested async layer costs the request path a state machine).
async fn forward_phase<C: Io>(
    core: &CoreCtx,
    route: &Route,
    grant: auth::Grant,
    inbound: Inbound<'_>,
    client: &mut BufStream<C>,
    resp: &mut Head,
    out: &mut Vec<u8>,
) -> bool {
    let (head, framing) = (inbound.head, inbound.framing);
    // A metered service's paid request: named by its token (checked before the grant is used).
    let metered = route.metered_tail.and_then(|_| meter::token_of(&grant));
    let denied = match grant.key {
        Some(key) => limit::limit(core, route, key, inbound.path).await,
        None => None,
    };
    // A session bearer on a service with a pricer: settled once its response ended.
    let mut settling = None;
    let receipt = match (denied, grant.payment) {
        (Some(denied), _) => Err(denied),
        (None, Some(pending)) => {
            // What a fresh 402 needs when the credential is refused after all (booked with the
            // pricer on a metered service).
            let ask = meter::Ask {
                head,
                version: "1.1",
                body: meter::body_prefix(client, head, framing),
                accept_payment: head.get("accept-payment"),
            };
            // Boxed: Payment credentials are the rare case, and their state machine must not
            // grow every request's.
            Box::pin(auth::settle(core, route, pending, &ask))
                .await
                .map(|(receipt, bearer)| {
                    settling = session_meter::begin(route, bearer, &ask);
                    Some(receipt)
                })
        }
        (None, None) => Ok(None),
    };
    let receipt = match receipt {
        Ok(receipt) => receipt,
        Err(synthetic) => {
            route.counters(core.id).status(synthetic.status());
            return answer(core, client, head, framing, synthetic, out, true).await;
        }
    };
    let mut metering = None;
    let mut bundle = None;
    if let Some(token) = metered {
        let verdict = match &route.service.meter {
            // Boxed: the owner core's round trip must not grow the unmetered request's future.
            Some(table) => match Box::pin(bundles::authorize(
                core, route, table, head, framing, client, token,
            ))
            .await
            {
                bundles::Admit::Go(held) => {
                    bundle = Some(held);
                    meter::Verdict::Free
                }
                bundles::Admit::Answer(synthetic) => meter::Verdict::Answer(synthetic),
            },
            // Boxed: the pricer round trip must not grow the unmetered request's state machine.
            None => {
                Box::pin(meter::authorize_h1(
                    core, route, head, framing, client, token,
                ))
                .await
            }
        };
        match verdict {
            meter::Verdict::Meter(m) => metering = Some(m),
            meter::Verdict::Free => {}
            meter::Verdict::Answer(synthetic) => {
                route.counters(core.id).status(synthetic.status());
                return answer(core, client, head, framing, synthetic, out, true).await;
            }
        }
    }
    let req = Outbound {
        head,
        framing,
        peer: inbound.conn.peer.ip(),
        upstream_auth: grant.upstream.as_deref(),
        authorization: inbound.authorization,
        client_fd: inbound.conn.fd,
        receipt,
    };
    let forwarded = match (metering, settling, bundle) {
        (None, None, None) => forward::forward(core, route, req, client, resp, out).await,
        (None, Some(mut s), _) => {
            // Observed like a metered response (`Accept-Encoding` stripped: a plain tail).
            let relay =
                forward::forward_metered(core, route, req, client, resp, out, &mut s.observer);
            let forwarded = Box::pin(relay).await;
            s.settle(core, route, forwarded.is_ok());
            forwarded
        }
        (None, None, Some(mut held)) => {
            let relay =
                forward::forward_metered(core, route, req, client, resp, out, &mut held.observer);
            let forwarded = Box::pin(relay).await;
            // Complete only when the body reached its end; either side leaving is not.
            held.settle(core, forwarded.is_ok());
            forwarded
        }
        (Some(mut m), _, _) => {
            let relay =
                forward::forward_metered(core, route, req, client, resp, out, &mut m.observer);
            let forwarded = Box::pin(relay).await;
            // Complete only when the body reached its end; either side leaving is not.
            m.report(core, route, forwarded.is_ok());
            forwarded
        }
    };
    match forwarded {
        Ok(done) => {
            core.counters().incr(Counter::Forwarded);
            core.counters().status(done.status);
            route.counters(core.id).status(done.status);
            log_request(core, head, done.status, Some(&route.service.name));
            done.keep_alive
        }
        Err(ForwardError::Answer(synthetic)) => {
            route.counters(core.id).status(synthetic.status());
            let framing = Framing::Length(0);
            answer(core, client, head, framing, synthetic, out, false).await;
            false
        }
        Err(ForwardError::Abort) => false,
        Err(ForwardError::ClientGone) => {
            core.counters().incr(Counter::ClientAborts);
            tracing::debug!(core = core.id, service = %route.service.name, "client went away; upstream exchange dropped");
            false
        }
    }
}

/// Writes a synthetic answer. When the request body was not read, it is drained (small) or the
/// connection is closed, so the next request is never parsed out of a body.
#[allow(clippy::too_many_arguments)]
async fn answer<C: Io>(
    core: &CoreCtx,
    client: &mut BufStream<C>,
    head: &Head,
    framing: Framing,
    synthetic: Synthetic,
    out: &mut Vec<u8>,
    may_keep: bool,
) -> bool {
    // A client waiting for `100 Continue` never sends the body we would drain: close instead.
    let expects_body = head.get("expect").is_some();
    let mut keep = may_keep && head.keep_alive() && !core.shutdown.is_set() && !expects_body;
    if keep && framing != Framing::Length(0) {
        keep = drain_body(core, client, framing).await;
    }
    core.counters().status(synthetic.status());
    log_request(core, head, synthetic.status(), None);
    out.clear();
    respond::render_h1(&synthetic, head.method() == b"HEAD", !keep, out);
    let limits = core.routes().limits.clone();
    match client
        .write_all_within(std::mem::take(out), limits.write_timeout)
        .await
    {
        Ok(buf) => {
            *out = buf;
            out.clear();
            keep
        }
        Err(_) => false,
    }
}

async fn answer_and_close<C: Io>(
    core: &CoreCtx,
    client: &mut BufStream<C>,
    synthetic: &Synthetic,
    mut out: Vec<u8>,
) {
    core.counters().status(synthetic.status());
    out.clear();
    respond::render_h1(synthetic, false, true, &mut out);
    let within = core.routes().limits.write_timeout;
    let _ = client.write_all_within(out, within).await;
}

/// Reads and discards a request body of known small length; false when the connection must close.
async fn drain_body<C: Io>(core: &CoreCtx, client: &mut BufStream<C>, framing: Framing) -> bool {
    let Framing::Length(mut remaining) = framing else {
        return false;
    };
    if remaining > DRAIN_LIMIT {
        return false;
    }
    let within = core.routes().limits.read_timeout;
    while remaining > 0 {
        if client.data().is_empty() && client.fill_within(64 * 1024, within).await.is_err() {
            return false;
        }
        let n = remaining.min(client.data().len() as u64);
        client.consume(n as usize);
        remaining -= n;
    }
    true
}
