//! An HTTP/2 request's work, on the stream handle the native server ([`super::h2n`]) gives it:
//! the same phases as HTTP/1.1 (route → authorize → rate limit → forward, or the static site for
//! an unmatched non-gRPC request), raced against the client resetting the stream. Forwarding is
//! by the service's protocol: HTTP/1.1 upstreams straight from the request's `Head`
//! (`h1_upstream`), h2 upstreams on the `h2` client crate (`upstream`). gRPC requests get
//! every synthetic answer in the Trailers-Only form. Nothing here panics on network input; a
//! broken stream is reset.

mod h1_fields;
mod h1_upstream;
mod replay;
mod upstream;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::auth;
use super::h1::Head;
use super::h2n::frame::ErrorCode;
use super::h2n::stream::{RecvBody, Stream};
use super::{grpc, limit, respond, CoreCtx};
use crate::error::Synthetic;
use crate::metrics::Counter;

/// Serves one request stream of a native HTTP/2 connection ([`super::h2n`]): the request
/// phases, then the answer or the forwarded response. A reset from the client (or the
/// connection going away) drops the phases wherever they are: an upstream HTTP/1.1 connection
/// is closed, an upstream h2 stream reset.
pub async fn serve_native(core: Rc<CoreCtx>, stream: Stream, head: Head, peer: SocketAddr) {
    core.counters().incr(Counter::Requests);
    let is_grpc = grpc::is_grpc(head.get("content-type"));
    let head_only = head.method() == b"HEAD";
    // `gone` is polled first: when the client leaves, the body pump resets the upstream stream,
    // which fails `phases` in the same wake-up, and in random order that failure was counted
    // (one time in four) as an upstream error and a 5xx. `gone` is set before any task runs.
    let outcome = monoio::select! {
        biased;
        _ = stream.gone() => None,
        r = phases(&core, head, &stream, peer, is_grpc) => Some(r),
    };
    match outcome {
        Some(Ok(())) => {}
        Some(Err(answer)) => {
            core.counters().status(answer.status());
            send_answer(&stream, &answer, is_grpc, head_only);
        }
        None => {
            core.counters().incr(Counter::ClientAborts);
            tracing::debug!(core = core.id, %peer, "h2 stream reset by the client; its work dropped");
        }
    }
}

/// Writes a synthetic answer on a stream (Trailers-Only for gRPC).
pub(super) fn send_answer(stream: &Stream, answer: &Synthetic, is_grpc: bool, head_only: bool) {
    if is_grpc {
        let _ = stream.send_response(&respond::render_grpc(answer), true);
        return;
    }
    let (resp, body) = respond::render_h2(answer, head_only);
    let empty = body.is_empty();
    if stream.send_response(&resp, empty).is_ok() && !empty {
        let _ = stream.send_data(body, true);
    }
}

/// Route → authorize → rate limit → forward. `Err`: answer locally.
async fn phases(
    core: &CoreCtx,
    head: Head,
    stream: &Stream,
    peer: SocketAddr,
    is_grpc: bool,
) -> Result<(), Synthetic> {
    let routes = core.routes();
    // The client behind a trusted load balancer, else the TCP peer.
    let client_ip = routes.client_ip(peer.ip(), &head);
    if routes.blocked(client_ip) {
        return Err(Synthetic::Forbidden);
    }
    if head.method() == b"OPTIONS" {
        return Err(Synthetic::Options);
    }
    let path = std::str::from_utf8(head.path()).unwrap_or("");
    let host = head
        .host()
        .and_then(|h| std::str::from_utf8(h).ok())
        .unwrap_or("");
    let Some(route) = routes.find(host, path) else {
        return match &routes.statics {
            Some(site) if !is_grpc && !super::route::is_admin_path(path) => {
                // Boxed: the rare path must not grow every stream's task.
                Box::pin(serve_static(core, site, &head, stream)).await
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
    let observed = match (metering.as_mut(), settling.as_mut()) {
        (Some(m), _) => Some(&mut m.observer),
        (None, Some(s)) => Some(&mut s.observer),
        (None, None) => None,
    };
    // Plain text in the tail, as on HTTP/1.1: the forwarders drop `Accept-Encoding` for it.
    let observer =
        observed.map(|o| RefCell::new(std::mem::replace(o, super::meter::Observer::new(0))));
    let out = upstream::Outbound {
        route,
        peer: peer.ip(),
        receipt,
        upstream_auth: grant.upstream.as_deref(),
        authorization: routes.upstream_authorization,
        is_grpc,
        observer: observer.as_ref(),
    };
    let forwarded = upstream::forward(core, out, &head, stream).await;
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
    req: &Head,
    stream: &Stream,
) -> Result<(), Synthetic> {
    use super::statics::{self, Body};
    let target = req.target();
    let query = target
        .iter()
        .position(|&b| b == b'?')
        .map_or(&[][..], |i| &target[i + 1..]);
    let ask = statics::Ask {
        method: req.method(),
        path: req.path(),
        query,
        if_none_match: req.get("if-none-match"),
        if_modified_since: req.get("if-modified-since"),
        range: req.get("range"),
        if_range: req.get("if-range"),
    };
    let answer = statics::prepare(site, &ask).await?;
    core.counters().status(answer.head.status);
    let head = respond::render_static_h2(&answer.head);
    let body = match answer.body {
        _ if req.method() == b"HEAD" => Body::Empty,
        body => body,
    };
    let (reader, mut at, len) = match body {
        Body::Empty => {
            let _ = stream.send_response(&head, true);
            return Ok(());
        }
        Body::Text(text) => {
            if stream.send_response(&head, false).is_ok() {
                let _ = stream.send_data(Bytes::from_static(text.as_bytes()), true);
            }
            return Ok(());
        }
        Body::File {
            reader,
            offset,
            len,
        } => (reader, offset, len),
    };
    if stream.send_response(&head, false).is_err() {
        return Ok(());
    }
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
                stream.send_reset(ErrorCode::InternalError);
                return Ok(());
            }
        }
        let last = at >= end;
        if stream
            .send_all(Bytes::from(buf), last, within)
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// The request in `http`'s form, for the forwarders that speak it: method, target, fields,
/// and the body as it arrives.
pub(super) fn http_request(
    head: &Head,
    stream: &Stream,
) -> Result<http::Request<RecvBody>, Synthetic> {
    let mut req = http::Request::new(stream.body());
    *req.method_mut() =
        http::Method::from_bytes(head.method()).map_err(|_| Synthetic::BadRequest("bad method"))?;
    let mut uri = http::uri::Builder::new().path_and_query(head.target());
    if let Some(host) = head.host() {
        uri = uri.scheme("http").authority(host);
    }
    *req.uri_mut() = uri
        .build()
        .map_err(|_| Synthetic::BadRequest("bad request target"))?;
    let headers = req.headers_mut();
    headers.reserve(head.fields().count());
    for (name, value) in head.fields() {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Synthetic::BadRequest("malformed field name"))?;
        let value = http::HeaderValue::from_bytes(value)
            .map_err(|_| Synthetic::BadRequest("malformed field value"))?;
        headers.append(name, value);
    }
    Ok(req)
}

/// How long an idle upstream read may stall before the stream is reset (long-lived gRPC
/// streams are not cut by a request deadline, only by silence).
pub fn idle_window(core: &CoreCtx) -> Duration {
    let limits = core.routes().limits.clone();
    limits.idle_timeout.max(limits.write_timeout)
}
