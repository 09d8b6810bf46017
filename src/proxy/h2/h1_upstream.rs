//! An HTTP/2 stream forwarded to an HTTP/1.1 upstream (`protocol: http`, or `https` that
//! negotiated HTTP/1.1) on the core's pooled connections. The request body is read whole (it is
//! bounded by `maxbodybytes`) so that a pooled connection found stale — closed or reset before
//! any response byte — is retried once on a fresh one. The response body streams to the client
//! under h2 flow control (memory bounded by the read buffer and the client's window) when it is
//! length-delimited or close-delimited; a chunked one is de-chunked in a bounded buffer
//! ([`MAX_CHUNKED_RESPONSE`]). No panics on upstream input.

use crate::proxy::meter::Tap;
use bytes::{Bytes, BytesMut};

use crate::error::Synthetic;

use super::super::forward::{self, is_stale};
use super::super::h1::{self, ChunkScanner, Framing, Head};
use super::super::h2n::frame::ErrorCode;
use super::super::h2n::stream::{RecvBody, Stream};
use super::super::io::{BufStream, ReadError};
use super::super::pool::Upstream;
use super::super::{CoreCtx, Route};
use super::h1_fields::{request_bytes, response_fields};
use super::upstream::{failed, Outbound};

/// Largest chunked response body de-chunked in memory for an HTTP/2 client; a larger one is a
/// 502 (length- and close-delimited bodies stream and have no such limit).
const MAX_CHUNKED_RESPONSE: usize = 64 << 20;
/// Upstream read size while streaming a response body.
const BODY_CHUNK: usize = 64 * 1024;

/// Forwards over HTTP/1.1 on connections of type `U` (plain TCP or TLS).
pub(super) async fn forward_h1<U: Upstream>(
    core: &CoreCtx,
    out: &Outbound<'_>,
    req: &Head,
    respond: &Stream,
) -> Result<u16, Synthetic> {
    let route = out.route;
    let limits = core.routes().limits.clone();
    let body = if respond.request_ended() {
        // No body (a GET): no timer, no buffer.
        Bytes::new()
    } else {
        read_request_body(respond.body(), limits.max_body_bytes, limits.read_timeout).await?
    };
    let raw = request_bytes(out, req, &body);
    let (mut up, resp) = exchange::<U>(core, route, raw).await?;
    let status = resp.status;
    let framing = resp
        .response_framing(req.method())
        .map_err(|e| failed(core, route, &e))?;
    if !(100..=999).contains(&status) {
        return Err(failed(core, route, &"bad status code"));
    }
    let receipt = out
        .receipt
        .as_deref()
        .filter(|_| (200..300).contains(&status));
    // The head, straight from the upstream's fields into the client's header block.
    let send_head = |len: Option<u64>, end: bool| {
        respond.send_head(status, end, |f| {
            response_fields(&resp, |n, v, lower| {
                // A Payment receipt's answer is private, whatever the upstream said.
                if receipt.is_some() && n.eq_ignore_ascii_case(b"cache-control") {
                    return;
                }
                if lower {
                    f.lowercase(n, v)
                } else {
                    f.field(n, v)
                }
            });
            if let Some(len) = len {
                let mut digits = [0u8; 20];
                f.lowercase(b"content-length", h1::decimal(len, &mut digits));
            }
            if let Some(receipt) = receipt {
                f.lowercase(b"cache-control", b"private");
                f.lowercase(b"payment-receipt", receipt.as_bytes());
            }
        })
    };
    let reusable = resp.keep_alive();
    let observer = out.observer;
    if let Some(obs) = observer {
        // A chunked body reaches the observer de-chunked (it is buffered whole here).
        let seen = if framing == Framing::Chunked {
            Framing::Length(0)
        } else {
            framing
        };
        obs.borrow_mut().begin(&resp, seen);
    }
    let payload = match framing {
        Framing::Chunked => Some(read_chunked(core, route, &mut up).await?),
        Framing::Length(0) => Some(Bytes::new()),
        _ => None,
    };
    if let Some(payload) = payload {
        if reusable && up.is_drained() {
            U::pool(core).put(route.upstream, up, &limits);
        }
        let sent = if payload.is_empty() {
            send_head(Some(0), true).is_ok()
        } else if send_head(Some(payload.len() as u64), false).is_ok() {
            let tail = payload.clone(); // refcounted: no copy
            let sent = respond.send_all(payload, true, limits.write_timeout).await;
            if let Some(obs) = observer {
                obs.borrow_mut().body(&tail);
            }
            sent.is_ok()
        } else {
            false
        };
        if let Some(obs) = observer {
            obs.borrow_mut().ended = sent;
        }
        return Ok(status);
    }
    let len = match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    if send_head(len, false).is_err() {
        return Ok(status);
    }
    match stream_body(&mut up, respond, framing, limits.write_timeout, observer).await {
        Ok(()) => {
            if let Some(obs) = observer {
                obs.borrow_mut().ended = true;
            }
            if reusable && framing != Framing::Close && up.is_drained() {
                U::pool(core).put(route.upstream, up, &limits);
            }
        }
        // The response started: all that is left is to reset the stream.
        Err(()) => respond.send_reset(ErrorCode::InternalError),
    }
    Ok(status)
}

async fn read_request_body(
    body: RecvBody,
    max: u64,
    within: std::time::Duration,
) -> Result<Bytes, Synthetic> {
    let mut buf = BytesMut::new();
    loop {
        match monoio::time::timeout(within, body.data()).await {
            Ok(Some(Ok(chunk))) => {
                if (buf.len() + chunk.len()) as u64 > max {
                    return Err(Synthetic::PayloadTooLarge);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(_))) => return Err(Synthetic::BadRequest("request stream failed")),
            Err(_) => return Err(Synthetic::RequestTimeout),
        }
    }
}

/// Sends the whole request on a pooled (or new) connection and reads the response head. A
/// pooled connection that turns out stale (write failed, or closed/reset before any response
/// byte) is retried once on a fresh connection: the request is in `raw`, so it replays as is.
async fn exchange<U: Upstream>(
    core: &CoreCtx,
    route: &Route,
    mut raw: Vec<u8>,
) -> Result<(BufStream<U>, Head), Synthetic> {
    let limits = core.routes().limits.clone();
    let mut retried = false;
    let started = std::time::Instant::now();
    loop {
        let (mut up, reused) = match U::pool(core).take(route.upstream) {
            Some(c) => (c, true),
            None => (
                U::open(route, limits.upstream_timeout)
                    .await
                    .map_err(|e| failed(core, route, &e))?,
                false,
            ),
        };
        let retryable = reused && !retried;
        let (res, buf) = up.write_all(raw).await;
        raw = buf;
        if let Err(e) = res {
            if retryable {
                retried = true;
                continue;
            }
            return Err(failed(core, route, &e));
        }
        let mut resp = Head::default();
        // The client's stream reset is watched by the stream task around this whole exchange.
        let gone = std::future::pending::<()>;
        match forward::read_response_head(&mut up, &mut resp, &limits, gone).await {
            Ok(()) => {
                route.counters(core.id).upstream_latency(started.elapsed());
                return Ok((up, resp));
            }
            Err(e) if retryable && is_stale(&e, &up) => retried = true,
            Err(e) => return Err(failed(core, route, &format!("{e:?}"))),
        }
    }
}

/// Relays a length- or close-delimited body to the client as the client's window allows.
async fn stream_body<U: Upstream>(
    up: &mut BufStream<U>,
    down: &Stream,
    framing: Framing,
    within: std::time::Duration,
    observer: Option<&std::cell::RefCell<crate::proxy::meter::Observer>>,
) -> Result<(), ()> {
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    while remaining > 0 {
        if up.data().is_empty() {
            // A reset stream drops the read (and so the upstream connection) at once.
            match up.fill_watched(BODY_CHUNK, within, || down.gone()).await {
                Ok(_) => {}
                Err(ReadError::Eof) if framing == Framing::Close => break,
                Err(_) => return Err(()),
            }
        }
        let n = remaining.min(up.data().len() as u64) as usize;
        if let Some(obs) = observer {
            obs.borrow_mut().body(&up.data()[..n]);
        }
        if framing != Framing::Close {
            remaining -= n as u64;
        }
        // The last piece of a length-delimited body ends the stream in the same frame.
        let last = remaining == 0;
        down.send_slice(&up.data()[..n], last, within)
            .await
            .map_err(|_| ())?;
        up.consume(n);
        if last {
            return Ok(());
        }
    }
    // Close-delimited: the end is known only now.
    down.send_data(Bytes::new(), true).map_err(|_| ())
}

/// Reads a whole chunked body (bounded) and de-chunks it.
async fn read_chunked<U: Upstream>(
    core: &CoreCtx,
    route: &Route,
    up: &mut BufStream<U>,
) -> Result<Bytes, Synthetic> {
    let within = core.routes().limits.write_timeout;
    let mut body = Vec::new();
    let mut scanner = ChunkScanner::default();
    while !scanner.done() {
        if up.data().is_empty() {
            up.fill_within(BODY_CHUNK, within)
                .await
                .map_err(|e| failed(core, route, &format!("{e:?}")))?;
        }
        let n = scanner
            .feed(up.data())
            .map_err(|e| failed(core, route, &e))?;
        up.take_into(&mut body, n);
        if body.len() > MAX_CHUNKED_RESPONSE {
            return Err(failed(
                core,
                route,
                &"chunked response too large to buffer for HTTP/2",
            ));
        }
    }
    let body = dechunk(&body).ok_or_else(|| failed(core, route, &"bad chunk"))?;
    Ok(Bytes::from(body))
}

/// Decodes a complete chunked body (already delimited by the scanner); trailers are dropped.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_field = std::str::from_utf8(&raw[..eol]).ok()?;
        let size = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode() {
        let raw = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\n";
        assert_eq!(dechunk(raw).unwrap(), b"hello world");
        assert!(dechunk(b"5\r\nhel").is_none());
    }
}
