//! The forward phase: writes the request to a pooled upstream connection, relays the body, reads
//! the response head and relays the response back. Bodies stream through the connection buffers
//! (bounded memory whatever their size); chunked bodies pass through verbatim and a scanner only
//! finds their end. Header rewriting follows Go aperture's director: `Host` set to the upstream,
//! hop-by-hop fields dropped, `X-Forwarded-For` appended, `Authorization` rewritten from the
//! credential, the CORS set merged into the response, `WWW-Authenticate` kept only on a 402.

use std::future::Future;
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::error::Synthetic;
use crate::l402::UpstreamAuthorization;
use crate::metrics::Counter;

use super::h1::{self, push_field, ChunkScanner, Framing, Head, Parse};
use super::io::{BufStream, Io, ReadError};
use super::meter::{Observer, Tap};
use super::pool::{TlsUpstream, Upstream};
use super::respond::{self, CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS, CORS_EXPOSE_HEADERS};
use super::{CoreCtx, Limits, Route};
use monoio::net::TcpStream;

/// Read-ahead for streamed bodies.
const BODY_CHUNK: usize = 64 * 1024;
/// Buffered response bytes copied behind the head to send both in one write.
const COALESCE: usize = 16 * 1024;

/// Why forwarding stopped; the client connection is closed after any of these.
#[derive(Debug)]
pub enum ForwardError {
    /// Nothing was written to the client yet: send this answer.
    Answer(Synthetic),
    /// The response had started or the client connection failed: just close.
    Abort,
    /// The client went away while the upstream worked; the exchange was dropped: just close.
    ClientGone,
}

/// A response relayed in full.
pub struct Forwarded {
    /// The upstream status.
    pub status: u16,
    /// Whether the client connection stays open.
    pub keep_alive: bool,
}

/// The request side of one forward.
pub struct Outbound<'a> {
    /// The parsed request head.
    pub head: &'a Head,
    /// Its body framing.
    pub framing: Framing,
    /// The TCP peer, for `X-Forwarded-For`.
    pub peer: IpAddr,
    /// The `Authorization` fields (`LSAT …`, `L402 …`) that replace the client's.
    pub upstream_auth: Option<&'a [String; 2]>,
    /// Which `Authorization` fields to send for it.
    pub authorization: UpstreamAuthorization,
    /// The client's socket, watched while the upstream works ([`super::watch`]).
    pub client_fd: RawFd,
    /// The `Payment-Receipt` of a Payment charge, sent on a 2xx answer.
    pub receipt: Option<std::rc::Rc<str>>,
}

/// Forwards one request on `route` and relays the response.
pub async fn forward<C: Io>(
    core: &CoreCtx,
    route: &Route,
    req: Outbound<'_>,
    client: &mut BufStream<C>,
    resp: &mut Head,
    out: &mut Vec<u8>,
) -> Result<Forwarded, ForwardError> {
    if route.upstream_tls.is_some() {
        forward_on::<C, TlsUpstream, ()>(core, route, req, client, resp, out, &mut ()).await
    } else {
        forward_on::<C, TcpStream, ()>(core, route, req, client, resp, out, &mut ()).await
    }
}

/// [`forward`] for a metered request: `Accept-Encoding` is not sent upstream (so the tail is
/// plain text) and the response is shown to `observer` as it streams.
pub async fn forward_metered<C: Io>(
    core: &CoreCtx,
    route: &Route,
    req: Outbound<'_>,
    client: &mut BufStream<C>,
    resp: &mut Head,
    out: &mut Vec<u8>,
    observer: &mut Observer,
) -> Result<Forwarded, ForwardError> {
    if route.upstream_tls.is_some() {
        forward_on::<C, TlsUpstream, Observer>(core, route, req, client, resp, out, observer).await
    } else {
        forward_on::<C, TcpStream, Observer>(core, route, req, client, resp, out, observer).await
    }
}

/// [`forward`] over upstream connections of type `U`, the response shown to `tap`.
async fn forward_on<C: Io, U: Upstream, T: Tap>(
    core: &CoreCtx,
    route: &Route,
    req: Outbound<'_>,
    client: &mut BufStream<C>,
    resp: &mut Head,
    out: &mut Vec<u8>,
    tap: &mut T,
) -> Result<Forwarded, ForwardError> {
    let limits = core.routes().limits.clone();
    let bad_gateway = |why: &dyn std::fmt::Display| upstream_failed(core, route, why);
    if req.framing != Framing::Length(0) && expects_continue(req.head) {
        let (res, _) = client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await;
        res.map_err(|_| ForwardError::Abort)?;
    }
    out.clear();
    if T::METERED {
        write_request_head::<true>(route, &req, out);
    } else {
        write_request_head::<false>(route, &req, out);
    }
    let started = std::time::Instant::now();
    let mut up: BufStream<U> = exchange(core, route, &req, client, resp, out, &limits).await?;
    route.counters(core.id).upstream_latency(started.elapsed());
    let method = req.head.method();
    let framing = resp.response_framing(method).map_err(|e| bad_gateway(&e))?;
    tap.begin(resp, framing);
    let keep_alive = req.head.keep_alive() && !core.shutdown.is_set();
    let encode = framing == Framing::Close && req.head.minor == 1;
    let keep_alive = keep_alive && (framing != Framing::Close || encode);
    out.clear();
    let receipt = req
        .receipt
        .as_deref()
        .filter(|_| (200..300).contains(&resp.status));
    write_response_head(resp, framing, encode, !keep_alive, receipt, out);
    let fd = req.client_fd;
    relay_response(&mut up, client, framing, encode, out, &limits, fd, tap).await?;
    if framing != Framing::Close && resp.keep_alive() {
        U::pool(core).put(route.upstream, up, &limits);
    }
    Ok(Forwarded {
        status: resp.status,
        keep_alive,
    })
}

/// Sends the request head in `out` and the body, then reads the response head into `resp`.
/// Takes a pooled connection when there is one, retrying once on a fresh one when the pooled
/// one turns out closed or reset before any response byte and the request had no body.
async fn exchange<C: Io, U: Upstream>(
    core: &CoreCtx,
    route: &Route,
    req: &Outbound<'_>,
    client: &mut BufStream<C>,
    resp: &mut Head,
    out: &mut Vec<u8>,
    limits: &Limits,
) -> Result<BufStream<U>, ForwardError> {
    let bad_gateway = |why: &dyn std::fmt::Display| upstream_failed(core, route, why);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut up, reused) = match U::pool(core).take(route.upstream) {
            Some(c) => (c, true),
            None => (
                U::open(route, limits.upstream_timeout)
                    .await
                    .map_err(|e| bad_gateway(&e))?,
                false,
            ),
        };
        let retryable = reused && req.framing == Framing::Length(0) && attempt == 1;
        let (res, buf) = up.write_all(std::mem::take(out)).await;
        *out = buf;
        if let Err(e) = res {
            if retryable {
                continue;
            }
            return Err(bad_gateway(&e));
        }
        send_body(client, &mut up, req.framing, limits).await?;
        let gone = || super::watch::closed(req.client_fd);
        match read_response_head(&mut up, resp, limits, gone).await {
            Ok(()) => return Ok(up),
            Err(ReadError::Gone) => return Err(ForwardError::ClientGone),
            Err(e) if retryable && is_stale(&e, &up) => continue,
            Err(e) => return Err(bad_gateway(&format!("{e:?}"))),
        }
    }
}

/// Whether a read error on a reused connection means it was stale (the upstream closed or reset
/// it while idle) rather than a failure of this request: no response byte arrived.
pub(crate) fn is_stale<U: Io>(e: &ReadError, up: &BufStream<U>) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    let closed = match e {
        ReadError::Eof => true,
        ReadError::Io(e) => matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted),
        ReadError::Timeout | ReadError::Gone => false,
    };
    closed && up.data().is_empty()
}

/// Counts and logs an upstream failure; the client gets a 502.
fn upstream_failed(core: &CoreCtx, route: &Route, why: &dyn std::fmt::Display) -> ForwardError {
    core.counters().incr(Counter::UpstreamErrors);
    route.counters(core.id).upstream_error();
    tracing::debug!(core = core.id, service = %route.service.name, "upstream failed: {why}");
    ForwardError::Answer(Synthetic::BadGateway)
}

fn expects_continue(head: &Head) -> bool {
    head.get("expect")
        .is_some_and(|v| h1::trim(v).eq_ignore_ascii_case(b"100-continue"))
}

/// Writes the upstream request head (Go aperture's director); `STRIP_ENCODING` (a metered
/// request) leaves `Accept-Encoding` out, so that the observed body is not compressed.
pub(crate) fn write_request_head<const STRIP_ENCODING: bool>(
    route: &Route,
    req: &Outbound<'_>,
    out: &mut Vec<u8>,
) {
    let head = req.head;
    out.extend_from_slice(head.method());
    out.push(b' ');
    if let Some(prefix) = &route.service.rewrite_prefix {
        let target = head.target();
        out.extend_from_slice(prefix.trim_end_matches('/').as_bytes());
        if !target.starts_with(b"/") {
            out.push(b'/');
        }
        out.extend_from_slice(target);
    } else {
        out.extend_from_slice(head.target());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(route.service.address.as_bytes());
    out.extend_from_slice(b"\r\n");
    let has_connection = head.connection_names_fields();
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    for (name, value) in head.fields() {
        if h1::is_hop_by_hop(name)
            || (has_connection && head.connection_has(name))
            || name.eq_ignore_ascii_case("host")
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("expect")
            || (req.upstream_auth.is_some() && name.eq_ignore_ascii_case("authorization"))
            || (STRIP_ENCODING && name.eq_ignore_ascii_case("accept-encoding"))
            || route
                .service
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for.push(value);
            continue;
        }
        push_field(out, name.as_bytes(), value);
    }
    let credential = req
        .upstream_auth
        .filter(|_| route.service.forwards_credential());
    if let Some([lsat, l402]) = credential {
        if req.authorization == UpstreamAuthorization::Aperture {
            push_field(out, b"Authorization", lsat.as_bytes());
        }
        push_field(out, b"Authorization", l402.as_bytes());
    }
    for (name, value) in &route.service.headers {
        push_field(out, name.as_bytes(), value.as_bytes());
    }
    finish_request_head(&forwarded_for, req, out);
}

/// Appends `X-Forwarded-For` (prior hops, then the peer), the body framing and the blank line.
fn finish_request_head(forwarded_for: &[&[u8]], req: &Outbound<'_>, out: &mut Vec<u8>) {
    let head = req.head;
    out.extend_from_slice(b"X-Forwarded-For: ");
    for prior in forwarded_for.iter().copied() {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    h1::push_ip(out, req.peer);
    out.extend_from_slice(b"\r\n");
    match req.framing {
        Framing::Length(0) if head.get("content-length").is_none() => {}
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            h1::push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked | Framing::Close => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n")
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the response head for the client.
fn write_response_head(
    resp: &Head,
    framing: Framing,
    encode: bool,
    close: bool,
    receipt: Option<&str>,
    out: &mut Vec<u8>,
) {
    let reason = match crate::error::reason_phrase(resp.status) {
        "" => resp.reason(),
        known => known.as_bytes(),
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    h1::push_decimal(out, u64::from(resp.status));
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
    let has_connection = resp.connection_names_fields();
    let bodyless = framing == Framing::Length(0);
    let mut cors: [Vec<&[u8]>; 3] = Default::default();
    for (name, value) in resp.fields() {
        let lower = |n: &str| name.eq_ignore_ascii_case(n);
        if (h1::is_hop_by_hop(name) && !lower("proxy-authenticate"))
            || (has_connection && resp.connection_has(name))
            || (lower("content-length") && !bodyless)
            || lower("proxy-authenticate")
            || (lower("www-authenticate") && resp.status != 402)
            || lower("access-control-allow-origin")
            || (receipt.is_some() && (lower("cache-control") || lower("payment-receipt")))
        {
            continue;
        }
        let slot = [
            "access-control-allow-methods",
            "access-control-expose-headers",
            "access-control-allow-headers",
        ]
        .iter()
        .position(|n| lower(n));
        match slot {
            Some(i) => cors[i].push(value),
            None => push_field(out, name.as_bytes(), value),
        }
    }
    write_cors(&cors, out);
    if let Some(receipt) = receipt {
        // A paid answer is for this client only (Go aperture, and the spec: 2xx only).
        push_field(out, b"Cache-Control", b"private");
        push_field(out, b"Payment-Receipt", receipt.as_bytes());
    }
    match framing {
        Framing::Length(n) if !bodyless => {
            out.extend_from_slice(b"Content-Length: ");
            h1::push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Close if encode => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        _ => {}
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The three list fields when the upstream sent none of them.
const CORS_BLOCK: &str = concat!(
    "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n",
    "Access-Control-Expose-Headers: WWW-Authenticate, Payment-Receipt\r\n",
    "Access-Control-Allow-Headers: Content-Type, Authorization, Grpc-Metadata-macaroon, WWW-Authenticate, Payment-Receipt\r\n",
);

/// Go aperture's CORS set on a proxied response: `Allow-Origin: *` replaces the upstream's, the
/// three lists are merged with what the upstream sent.
fn write_cors(cors: &[Vec<&[u8]>; 3], out: &mut Vec<u8>) {
    out.extend_from_slice(b"Access-Control-Allow-Origin: *\r\n");
    if cors.iter().all(Vec::is_empty) {
        // The usual case: nothing to merge, so the set is a constant.
        out.extend_from_slice(CORS_BLOCK.as_bytes());
        return;
    }
    let ours = [CORS_ALLOW_METHODS, CORS_EXPOSE_HEADERS, CORS_ALLOW_HEADERS];
    let names = [
        "Access-Control-Allow-Methods",
        "Access-Control-Expose-Headers",
        "Access-Control-Allow-Headers",
    ];
    for i in 0..3 {
        out.extend_from_slice(names[i].as_bytes());
        out.extend_from_slice(b": ");
        respond::merge_cors_list(&cors[i], ours[i], out);
        out.extend_from_slice(b"\r\n");
    }
}

/// Relays the request body from the client to the upstream.
async fn send_body<C: Io, U: Io>(
    client: &mut BufStream<C>,
    up: &mut BufStream<U>,
    framing: Framing,
    limits: &Limits,
) -> Result<(), ForwardError> {
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let mut scanner = ChunkScanner::default();
    let mut sent = 0u64;
    while remaining > 0 && !scanner.done() {
        if client.data().is_empty() {
            client
                .fill_within(BODY_CHUNK, limits.read_timeout)
                .await
                .map_err(|_| ForwardError::Abort)?;
        }
        let n = match framing {
            Framing::Length(_) => remaining.min(client.data().len() as u64) as usize,
            _ => scanner.feed(client.data()).map_err(|_| {
                ForwardError::Answer(Synthetic::BadRequest("malformed chunked body"))
            })?,
        };
        sent += n as u64;
        if sent > limits.max_body_bytes {
            return Err(ForwardError::Answer(Synthetic::PayloadTooLarge));
        }
        client
            .relay_to(&mut up.stream, n, limits.write_timeout)
            .await
            .map_err(|_| ForwardError::Answer(Synthetic::BadGateway))?;
        if let Framing::Length(_) = framing {
            remaining -= n as u64;
        }
    }
    Ok(())
}

/// Reads the final response head (skipping 1xx interim responses) within the upstream timeout;
/// `Err(Gone)` when a future from `gone` says the client left first.
pub(crate) async fn read_response_head<U: Io, G: Future<Output = ()>>(
    up: &mut BufStream<U>,
    resp: &mut Head,
    limits: &Limits,
    mut gone: impl FnMut() -> G,
) -> Result<(), ReadError> {
    // Set at the first read: the clock is read once for an answer that comes in one read.
    let mut deadline = None;
    loop {
        if !up.data().is_empty() {
            match resp.parse_response(up.data()) {
                Ok(Parse::Complete(n)) => {
                    up.consume(n);
                    if (100..200).contains(&resp.status) && resp.status != 101 {
                        continue;
                    }
                    return Ok(());
                }
                Ok(Parse::Partial) if up.data().len() < 64 * 1024 => {}
                _ => return Err(ReadError::Io(std::io::ErrorKind::InvalidData.into())),
            }
        }
        let now = monoio::time::Instant::now();
        let left = match deadline {
            None => {
                deadline = Some(now + limits.upstream_timeout);
                limits.upstream_timeout
            }
            Some(d) => d.saturating_duration_since(now),
        };
        if left.is_zero() {
            return Err(ReadError::Timeout);
        }
        up.fill_watched(64 * 1024, left, &mut gone).await?;
    }
}

/// Relays the response body from the upstream to the client, after the head in `out`; each
/// body byte is shown to `tap` before it is relayed.
#[allow(clippy::too_many_arguments)]
async fn relay_response<C: Io, U: Io, T: Tap>(
    up: &mut BufStream<U>,
    client: &mut BufStream<C>,
    framing: Framing,
    encode: bool,
    out: &mut Vec<u8>,
    limits: &Limits,
    client_fd: RawFd,
    tap: &mut T,
) -> Result<(), ForwardError> {
    let window = limits.write_timeout;
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let mut scanner = ChunkScanner::default();
    if !encode {
        let n = send_head_and_buffered(
            up,
            client,
            framing,
            remaining,
            &mut scanner,
            out,
            window,
            tap,
        )
        .await?;
        remaining = remaining.saturating_sub(n as u64);
    }
    write_out(client, out, window).await?;
    loop {
        let finished = match framing {
            Framing::Length(_) => remaining == 0,
            Framing::Chunked => scanner.done(),
            Framing::Close => false,
        };
        if finished {
            return Ok(());
        }
        if up.data().is_empty() {
            // A stalled stream (an LLM thinking) is the moment a client gives up: watch it.
            let gone = || super::watch::closed(client_fd);
            match up.fill_watched(BODY_CHUNK, window, gone).await {
                Ok(_) => {}
                Err(ReadError::Eof) if framing == Framing::Close => {
                    if encode {
                        out.extend_from_slice(b"0\r\n\r\n");
                        write_out(client, out, window).await?;
                    }
                    return Ok(());
                }
                Err(ReadError::Gone) => return Err(ForwardError::ClientGone),
                Err(_) => return Err(ForwardError::Abort),
            }
        }
        let n = match framing {
            Framing::Length(_) => remaining.min(up.data().len() as u64) as usize,
            Framing::Chunked => scanner.feed(up.data()).map_err(|_| ForwardError::Abort)?,
            Framing::Close => up.data().len(),
        };
        if encode {
            tap.body(&up.data()[..n]);
            let _ = write!(out, "{n:x}\r\n");
            up.take_into(out, n);
            out.extend_from_slice(b"\r\n");
            write_out(client, out, window).await?;
        } else {
            // `relay_to` itself for an unmetered response.
            tap.relay(up, client, n, window)
                .await
                .map_err(|_| ForwardError::Abort)?;
        }
        remaining = remaining.saturating_sub(n as u64);
    }
}

/// Sends the response head together with the body bytes already buffered: small ones are
/// copied behind the head (one write), larger ones relayed without copying. Returns how many body
/// bytes went out (or were queued in `out`).
#[allow(clippy::too_many_arguments)]
async fn send_head_and_buffered<C: Io, U: Io, T: Tap>(
    up: &mut BufStream<U>,
    client: &mut BufStream<C>,
    framing: Framing,
    remaining: u64,
    scanner: &mut ChunkScanner,
    out: &mut Vec<u8>,
    window: Duration,
    tap: &mut T,
) -> Result<usize, ForwardError> {
    let n = match framing {
        Framing::Length(_) => remaining.min(up.data().len() as u64) as usize,
        Framing::Chunked => scanner.feed(up.data()).map_err(|_| ForwardError::Abort)?,
        Framing::Close => up.data().len(),
    };
    tap.body(&up.data()[..n]);
    if n <= COALESCE {
        up.take_into(out, n);
    } else {
        write_out(client, out, window).await?;
        up.relay_to(&mut client.stream, n, window)
            .await
            .map_err(|_| ForwardError::Abort)?;
    }
    Ok(n)
}

async fn write_out<C: Io>(
    client: &mut BufStream<C>,
    out: &mut Vec<u8>,
    within: Duration,
) -> Result<(), ForwardError> {
    if out.is_empty() {
        return Ok(());
    }
    let buf = client
        .write_all_within(std::mem::take(out), within)
        .await
        .map_err(|_| ForwardError::Abort)?;
    *out = buf;
    out.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_constant_cors_block_equals_merging_nothing() {
        let mut fast = Vec::new();
        super::write_cors(&Default::default(), &mut fast);
        let mut merged = Vec::new();
        super::write_cors(
            &[vec![&b""[..]], vec![&b" "[..]], vec![&b""[..]]],
            &mut merged,
        );
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            String::from_utf8(merged).unwrap()
        );
    }
}
