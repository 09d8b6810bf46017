//! Metered pricing on the data path (`dynamicprice.metered`): Go aperture's prepaid-bundle
//! protocol with the service's pricer. Every 402 minted for a metered service is booked with the
//! pricer (`ChallengeMinted`: the L402 token id, and each Payment charge's payment hash); a paid
//! request (an L402 token or a Payment charge) is admitted by the pricer after the rate limiter
//! (`AuthorizeRequest`; refused → a fresh 402 at the pricer's price); its response body is
//! observed as it streams (a rolling tail of the last `usagetailbytes` bytes of the de-chunked
//! body, [`Observer`]) and reported when it ends (`ReportUsage`, handed to the bridge, which
//! retries and persists it off the data path).
//!
//! Owns only what a metered request adds; the unmetered paths never reach this module (the
//! forwarder's tap is the no-op `()` for them, compiled away). Must not buffer a body: the
//! request text takes the bounded prefix already read ahead, the tail is bounded by its size.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use lnd_bridge::{AuthorizeQuery, MintedChallenge, PricerTarget, UsageReport};

use crate::error::Synthetic;

use super::auth;
use super::h1::{ChunkScanner, Framing, Head};
use super::io::{BufStream, Io, READ_BUF};
use super::price;
use super::{CoreCtx, Route, BRIDGE_WAIT};

/// Go aperture's body when a challenge could not be booked (500; the challenge is not sent).
pub const CHALLENGE_FAILURE: &str = "challenge failure";
/// Go aperture's body when the pricer could not be asked to admit a request (500).
pub const AUTHORIZE_FAILURE: &str = "failure authorizing metered request";
/// Go aperture's body for a credential that cannot name its token (500).
pub const MALFORMED_CREDENTIAL: &str = "malformed credential";

/// The last `cap` bytes pushed through it, in a ring that grows to at most `cap` bytes.
#[derive(Debug, Default)]
pub struct Tail {
    buf: Vec<u8>,
    cap: usize,
    /// Where the oldest byte is once the ring is full.
    pos: usize,
}

impl Tail {
    pub fn new(cap: usize) -> Self {
        Tail {
            buf: Vec::new(),
            cap,
            pos: 0,
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        if self.cap == 0 || data.is_empty() {
            return;
        }
        if data.len() >= self.cap {
            self.buf.clear();
            self.buf.extend_from_slice(&data[data.len() - self.cap..]);
            self.pos = 0;
            return;
        }
        if self.buf.len() < self.cap {
            let take = (self.cap - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        while !data.is_empty() {
            let n = (self.cap - self.pos).min(data.len());
            self.buf[self.pos..self.pos + n].copy_from_slice(&data[..n]);
            self.pos = (self.pos + n) % self.cap;
            data = &data[n..];
        }
    }

    /// Forgets every byte (all older than what comes next, none of it can end in the tail).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }

    /// The bytes, oldest first.
    pub fn into_vec(mut self) -> Vec<u8> {
        self.buf.rotate_left(self.pos);
        self.buf
    }
}

/// What the HTTP/1.1 forwarder shows a response to. `()` sees nothing and costs nothing (every
/// call inlines to the unobserved code: `relay` is `relay_to` itself); [`Observer`] keeps what
/// `ReportUsage` needs.
pub trait Tap {
    /// Whether this tap meters (the forwarder then strips `Accept-Encoding` upstream).
    const METERED: bool;
    /// The response head arrived; its body is framed by `framing`.
    fn begin(&mut self, resp: &Head, framing: Framing);
    /// Body bytes about to be sent on by copying them (chunk framing included when chunked).
    fn body(&mut self, raw: &[u8]);
    /// Relays the first `n` buffered bytes of `up` to `client` (body bytes, framing included).
    fn relay<C: Io, U: Io>(
        &mut self,
        up: &mut BufStream<U>,
        client: &mut BufStream<C>,
        n: usize,
        within: Duration,
    ) -> impl Future<Output = std::io::Result<()>>;
}

impl Tap for () {
    const METERED: bool = false;
    #[inline(always)]
    fn begin(&mut self, _: &Head, _: Framing) {}
    #[inline(always)]
    fn body(&mut self, _: &[u8]) {}
    #[inline(always)]
    fn relay<C: Io, U: Io>(
        &mut self,
        up: &mut BufStream<U>,
        client: &mut BufStream<C>,
        n: usize,
        within: Duration,
    ) -> impl Future<Output = std::io::Result<()>> {
        up.relay_to(&mut client.stream, n, within)
    }
}

/// The response side of a metered request: status, content type and encoding, and the tail of
/// the de-chunked body. The tail costs no copy of a streamed body: the buffer of the last read
/// is kept whole (swapped for a spare one, [`BufStream::swap_exact`]) and only the bytes of it
/// that a shorter next read leaves in the tail are copied into the ring.
#[derive(Debug)]
pub struct Observer {
    tail: Tail,
    /// Set for a chunked body: decodes the framing out of the tail.
    chunks: Option<ChunkScanner>,
    /// The data runs of the bytes at hand, reused from read to read.
    runs: Vec<Range<usize>>,
    /// The last read, kept whole, and its data runs; newer than everything in `tail`.
    held: Vec<u8>,
    held_runs: Vec<Range<usize>>,
    /// An empty buffer to give the upstream for its next read.
    spare: Vec<u8>,
    /// 0 until the response head arrived.
    status: u16,
    content_type: String,
    content_encoding: String,
    /// The whole body reached the client (set by the HTTP/2 forwarder, which answers `Ok`
    /// after a broken-off stream too).
    pub ended: bool,
}

impl Observer {
    pub fn new(tail_bytes: usize) -> Self {
        Observer {
            tail: Tail::new(tail_bytes),
            chunks: None,
            runs: Vec::new(),
            held: Vec::new(),
            held_runs: Vec::new(),
            spare: Vec::new(),
            status: 0,
            content_type: String::new(),
            content_encoding: String::new(),
            ended: false,
        }
    }

    /// The response's status (0: none came), content type and encoding, and the tail.
    pub fn into_parts(mut self) -> (u16, String, String, Vec<u8>) {
        let (ty, enc) = (
            std::mem::take(&mut self.content_type),
            std::mem::take(&mut self.content_encoding),
        );
        (self.status, ty, enc, self.into_tail())
    }

    /// Finds the data runs of `raw` (all of it unless chunked) into `runs`.
    fn scan(&mut self, raw: &[u8]) {
        let runs = &mut self.runs;
        runs.clear();
        match &mut self.chunks {
            // The forwarder's own scanner already refused malformed framing.
            Some(scanner) => drop(scanner.feed_observed(raw, |run| runs.push(run))),
            None => runs.push(0..raw.len()),
        }
    }

    /// Moves the kept read into the ring (before anything newer goes there).
    fn flush_held(&mut self) {
        let cap = self.tail.cap;
        push_last(&mut self.tail, &self.held, &self.held_runs, cap);
        self.held.clear();
        self.held_runs.clear();
    }

    /// The status (0: no response arrived), the content type and the tail, oldest byte first
    /// (the built-in meter's view of the response).
    pub fn finish(mut self) -> (u16, String, Vec<u8>) {
        let content_type = std::mem::take(&mut self.content_type);
        (self.status, content_type, self.into_tail())
    }

    /// The tail, oldest byte first.
    pub fn into_tail(mut self) -> Vec<u8> {
        self.flush_held();
        self.tail.into_vec()
    }
}

/// Pushes the last (about) `want` bytes of `raw`'s data `runs` into `tail`: only what can still
/// end up in it is copied.
fn push_last(tail: &mut Tail, raw: &[u8], runs: &[Range<usize>], want: usize) {
    let mut first = runs.len();
    let mut need = want;
    while first > 0 && need > 0 {
        first -= 1;
        need = need.saturating_sub(runs[first].len());
    }
    for run in &runs[first..] {
        tail.push(&raw[run.clone()]);
    }
}

impl Tap for Observer {
    const METERED: bool = true;

    fn begin(&mut self, resp: &Head, framing: Framing) {
        let text = |v: Option<&[u8]>| String::from_utf8_lossy(v.unwrap_or_default()).into_owned();
        self.status = resp.status;
        self.content_type = text(resp.get("content-type"));
        self.content_encoding = text(resp.get("content-encoding"));
        self.chunks = (framing == Framing::Chunked).then(ChunkScanner::default);
    }

    fn body(&mut self, raw: &[u8]) {
        self.flush_held();
        self.scan(raw);
        let cap = self.tail.cap;
        push_last(&mut self.tail, raw, &self.runs, cap);
    }

    async fn relay<C: Io, U: Io>(
        &mut self,
        up: &mut BufStream<U>,
        client: &mut BufStream<C>,
        n: usize,
        within: Duration,
    ) -> std::io::Result<()> {
        let n = n.min(up.data().len());
        self.scan(&up.data()[..n]);
        if self.spare.capacity() == 0 {
            self.spare = Vec::with_capacity(up.capacity().max(READ_BUF));
        }
        if !up.swap_exact(n, &mut self.spare) {
            // Not a whole buffer of body (rare: a body that ends mid-buffer): copy.
            self.flush_held();
            let cap = self.tail.cap;
            push_last(&mut self.tail, &up.data()[..n], &self.runs, cap);
            return up.relay_to(&mut client.stream, n, within).await;
        }
        // `spare` holds the bytes now. Of the kept read, only what this one leaves in the tail
        // is copied; a read as long as the tail makes everything older irrelevant.
        let fresh: usize = self.runs.iter().map(|r| r.len()).sum();
        let cap = self.tail.cap;
        if fresh >= cap {
            self.tail.reset();
        } else {
            push_last(&mut self.tail, &self.held, &self.held_runs, cap - fresh);
        }
        let old = std::mem::take(&mut self.held);
        self.held_runs.clear();
        let buf = std::mem::take(&mut self.spare);
        let (res, buf) = client.write_all_keep(buf, within).await;
        if let Some(buf) = buf {
            self.held = buf;
            std::mem::swap(&mut self.held_runs, &mut self.runs);
        }
        self.spare = old;
        self.spare.clear();
        res
    }
}

/// A metered request admitted by its pricer: what its usage report needs.
pub struct Metering {
    target: Arc<PricerTarget>,
    token_id: String,
    path: String,
    reserved_estimate: i64,
    /// The response, as the forwarder shows it.
    pub observer: Observer,
}

impl Metering {
    /// Hands the usage report to the bridge (never waits): `complete` when the body reached its
    /// end. Without a response (upstream unreachable: 502) or for an upgrade (101), only a
    /// reservation is released, as in Go.
    pub fn report(self, core: &CoreCtx, route: &Route, complete: bool) {
        let mut obs = self.observer;
        let (content_type, content_encoding) = (
            std::mem::take(&mut obs.content_type),
            std::mem::take(&mut obs.content_encoding),
        );
        let (status, complete, tail) = match obs.status {
            0 | 101 if self.reserved_estimate == 0 => return,
            0 => (502, false, Vec::new()),
            101 => (101, false, Vec::new()),
            s => (s, complete, obs.into_tail()),
        };
        core.bridge.report_usage(UsageReport {
            target: (*self.target).clone(),
            token_id: self.token_id,
            path: self.path,
            service_name: route.service.name.clone(),
            http_status: i32::from(status),
            content_type,
            content_encoding,
            complete,
            response_tail: tail,
            reserved_estimate: self.reserved_estimate,
            persisted_id: None,
        });
    }
}

/// The token a paid request on a metered service is known to its pricer by: the L402 token id,
/// or a Payment charge's payment hash. `None` (not metered): no credential (a freebie), or a
/// session.
pub fn token_of(grant: &auth::Grant) -> Option<[u8; 32]> {
    match (&grant.key, &grant.payment) {
        (Some(crate::ratelimit::ClientKey::Token(id)), _) => Some(*id),
        (_, Some(pending)) => pending.charge_hash(),
        _ => None,
    }
}

/// What the pricer decided about a paid request on a metered service.
pub enum Verdict {
    /// Admitted: forward it, observed.
    Meter(Box<Metering>),
    /// Refused, and the pricer's fresh price is 0: forward it unmetered (Go's free path).
    Free,
    /// Answer instead (a fresh 402, or a 500).
    Answer(Synthetic),
}

/// The request as the pricer is shown it, and the paid request's token.
pub struct Ask<'a> {
    pub head: &'a Head,
    /// `"1.1"` or `"2.0"`.
    pub version: &'static str,
    /// The body prefix at hand (at most [`price::MAX_BODY_PREFIX`] bytes are sent).
    pub body: &'a [u8],
    pub accept_payment: Option<&'a [u8]>,
}

/// `AuthorizeRequest` for a request paid with `token` (an L402 token id or a charge's payment
/// hash) on the metered `route`.
pub async fn authorize(core: &CoreCtx, route: &Route, ask: Ask<'_>, token: [u8; 32]) -> Verdict {
    let (Some(target), Some(tail)) = (route.pricer.as_ref(), route.metered_tail) else {
        return Verdict::Answer(Synthetic::Internal(AUTHORIZE_FAILURE));
    };
    let service = &route.service.name;
    let path = price::decoded_path(ask.head.path());
    let text = price::request_text(ask.head, ask.version, ask.body);
    let query = AuthorizeQuery {
        path: path.clone(),
        http_request_text: text,
        token_id: hex::encode(token),
        service_name: service.clone(),
    };
    let fail = |why: &dyn std::fmt::Display| {
        tracing::warn!(core = core.id, service = %service, "error authorizing metered request: {why}");
        Verdict::Answer(Synthetic::Internal(AUTHORIZE_FAILURE))
    };
    let rx = match core.bridge.try_authorize_request(target.clone(), query) {
        Ok(rx) => rx,
        Err(e) => return fail(&e),
    };
    let verdict = match monoio::time::timeout(BRIDGE_WAIT, rx).await {
        Ok(Ok(Ok(v))) => v,
        Ok(Ok(Err(e))) => return fail(&e),
        Ok(Err(_)) => return fail(&"the bridge dropped the request"),
        Err(_) => return fail(&"the pricer did not answer in time"),
    };
    if verdict.allowed {
        return Verdict::Meter(Box::new(Metering {
            target: target.clone(),
            token_id: hex::encode(token),
            path,
            reserved_estimate: verdict.reserved_estimate,
            observer: Observer::new(tail),
        }));
    }
    tracing::debug!(core = core.id, service = %service, reason = %verdict.reason, "metered request refused by the pricer");
    let price = match u64::try_from(verdict.price_sats) {
        Ok(p) if p > 0 => p,
        _ => {
            let text = price::request_text(ask.head, ask.version, ask.body);
            match price::ask(core, service, target, path, text).await {
                Ok(0) => return Verdict::Free,
                Ok(p) => p,
                Err(answer) => return Verdict::Answer(answer),
            }
        }
    };
    Verdict::Answer(challenge(core, route, &ask, price, auth::now_unix()).await)
}

/// `AuthorizeRequest` for a paid request on a metered service, shown the body prefix read ahead
/// for the pricer (a `Content-Length` body; see `conn::authorize`).
pub async fn authorize_h1<C: Io>(
    core: &CoreCtx,
    route: &Route,
    head: &Head,
    framing: Framing,
    client: &mut BufStream<C>,
    token: [u8; 32],
) -> Verdict {
    let ask = Ask {
        head,
        version: "1.1",
        body: body_prefix(client, head, framing),
        accept_payment: head.get("accept-payment"),
    };
    authorize(core, route, ask, token).await
}

/// The body bytes a pricer is shown: the prefix of a `Content-Length` body read ahead for it
/// (see `conn::authorize`), none for chunked bodies and `Expect: 100-continue` clients.
pub fn body_prefix<'a, C: Io>(client: &'a BufStream<C>, head: &Head, framing: Framing) -> &'a [u8] {
    let prefix = match framing {
        Framing::Length(n) if head.get("expect").is_none() => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            n.min(price::MAX_BODY_PREFIX).min(client.data().len())
        }
        _ => 0,
    };
    &client.data()[..prefix]
}

/// Mints a 402 at `price` for a request on the metered `route` and books each of its challenges
/// with the pricer (`ChallengeMinted`); any booking failure answers 500 `challenge failure`
/// instead, and the challenge is not sent.
pub async fn challenge(
    core: &CoreCtx,
    route: &Route,
    ask: &Ask<'_>,
    price: u64,
    now: u64,
) -> Synthetic {
    let Some(target) = route.pricer.as_ref() else {
        return Synthetic::Internal(CHALLENGE_FAILURE);
    };
    let path = price::decoded_path(ask.head.path());
    let resource = format!("{}{path}", route.service.name);
    let mut minted = Vec::new();
    let answer = auth::mint(core, route, &resource, price, now, ask, &mut minted).await;
    if !matches!(answer, Synthetic::PaymentRequired(_)) {
        return answer;
    }
    let text = price::request_text(ask.head, ask.version, ask.body);
    for token in minted {
        let booking = MintedChallenge {
            path: path.clone(),
            http_request_text: text.clone(),
            token_id: hex::encode(token),
            price_sats: i64::try_from(price).unwrap_or(i64::MAX),
            service_name: route.service.name.clone(),
        };
        if let Err(why) = book(core, target, booking).await {
            tracing::warn!(core = core.id, service = %route.service.name, "cannot book a minted challenge: {why}");
            return Synthetic::Internal(CHALLENGE_FAILURE);
        }
    }
    answer
}

/// One `ChallengeMinted` through the bridge, within [`BRIDGE_WAIT`].
async fn book(
    core: &CoreCtx,
    target: &Arc<PricerTarget>,
    booking: MintedChallenge,
) -> Result<(), String> {
    let rx = core
        .bridge
        .try_challenge_minted(target.clone(), booking)
        .map_err(|e| e.to_string())?;
    match monoio::time::timeout(BRIDGE_WAIT, rx).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(_)) => Err("the bridge dropped the request".into()),
        Err(_) => Err("the pricer did not answer in time".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes_in_order() {
        let mut t = Tail::new(5);
        t.push(b"ab");
        assert_eq!(t.into_vec(), b"ab");
        let mut t = Tail::new(5);
        for piece in [&b"abc"[..], b"def", b"g", b"hi"] {
            t.push(piece);
        }
        assert_eq!(t.into_vec(), b"efghi");
        let mut t = Tail::new(4);
        t.push(b"xy");
        t.push(b"0123456789");
        assert_eq!(t.into_vec(), b"6789");
        let mut t = Tail::new(3);
        for b in b"streaming" {
            t.push(&[*b]);
        }
        assert_eq!(t.into_vec(), b"ing");
        let mut t = Tail::new(0);
        t.push(b"x");
        assert!(t.into_vec().is_empty());
    }

    #[test]
    fn a_chunked_body_is_observed_without_its_framing() {
        let mut head = Head::default();
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(head.parse_response(raw).is_ok());
        let mut obs = Observer::new(64);
        obs.begin(&head, Framing::Chunked);
        let body = b"6\r\ndata: \r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        // Split anywhere: framing is tracked across pieces.
        for piece in body.chunks(3) {
            obs.body(piece);
        }
        assert_eq!(obs.content_type, "text/event-stream");
        assert_eq!(obs.status, 200);
        assert_eq!(obs.into_tail(), b"data: {\"a\":1}");
    }
}
