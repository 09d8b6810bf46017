//! Fleet-wide rate limits over Redis (layer 1, off the worker cores): the `aperture-fleet` thread
//! that owns the one Redis connection, and the handle the cores use to ask it for leases.
//!
//! A core never talks to Redis and never waits on it per request: it spends tokens it holds on
//! lease (`ratelimit::LeaseTable`) and asks this thread for a new lease only when a rule's lease
//! is empty (the request waits for that one round trip) or running low (in the background). The
//! thread runs the lease script (`lease.lua`, atomic in Redis) for a batch of asks at once, as
//! one pipeline. While Redis is unreachable it answers nothing ([`FleetHandle::is_up`] is false,
//! so the cores decide per instance with their local limiters), logs the outage once, counts
//! errors, and reconnects by itself every [`RETRY`].
//!
//! It must not touch the data path's state: only plain values cross (keys, numbers, answers).

mod conn;
pub mod resp;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use futures_channel::oneshot;

use crate::config::Redis;
use crate::ratelimit::Answer;
pub use conn::LEASE_SCRIPT;
use conn::{Conn, ConnError};
use resp::Reply;

/// How long the thread waits between reconnection attempts while Redis is unreachable.
pub const RETRY: Duration = Duration::from_secs(1);
/// An idle connection is checked (PING) this often, so an outage shows in the metric and the log
/// even when no client is asking.
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// The longest a request waits for a lease, whatever `redis.timeout` says.
pub const MAX_WAIT: Duration = Duration::from_millis(500);
/// Asks sent in one pipeline at most.
const MAX_BATCH: usize = 256;
/// Asks queued at most; past it a core decides per instance rather than wait.
const QUEUE: usize = 65_536;

/// Starting the fleet thread failed (a configuration problem: the CA file).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("redis.tlscafile: {0}")]
    Tls(String),
    #[error("cannot start the fleet thread: {0}")]
    Thread(std::io::Error),
}

/// One shared bucket to draw from.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketAsk {
    /// The Redis key (prefix, scope, rule and client).
    pub key: String,
    /// Tokens per second.
    pub rate: f64,
    /// Capacity.
    pub burst: u32,
    /// The request needs one token of it now (else a top-up).
    pub need: bool,
    /// Tokens to take at most.
    pub want: u32,
}

/// What the cores send.
enum Msg {
    Lease {
        asks: Vec<BucketAsk>,
        reply: oneshot::Sender<Option<Answer>>,
    },
    Stop,
}

/// Counters and state for the metrics.
#[derive(Debug, Default)]
struct State {
    up: AtomicBool,
    errors: AtomicU64,
    leases: AtomicU64,
}

/// A snapshot of the fleet backend's state, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetStats {
    /// Redis answers: limits are fleet-wide (else per instance).
    pub up: bool,
    /// Connection failures, I/O errors and error replies.
    pub errors: u64,
    /// Lease asks answered by Redis.
    pub leases: u64,
}

/// The cores' way to the fleet thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FleetHandle {
    tx: Sender<Msg>,
    state: Arc<State>,
    prefix: Arc<str>,
    wait: Duration,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Lease { .. } => "Lease",
            Msg::Stop => "Stop",
        })
    }
}

impl FleetHandle {
    /// Whether Redis answers now. While false, decide per instance without asking.
    #[inline]
    pub fn is_up(&self) -> bool {
        self.state.up.load(Ordering::Relaxed)
    }

    /// `redis.keyprefix`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How long a core waits for an answer before it decides per instance.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Queues a lease ask; `None` when Redis is down or the queue is full (decide locally).
    /// The answer is `None` when Redis could not answer it.
    pub fn lease(&self, asks: Vec<BucketAsk>) -> Option<oneshot::Receiver<Option<Answer>>> {
        if !self.is_up() {
            return None;
        }
        let (reply, answer) = oneshot::channel();
        match self.tx.try_send(Msg::Lease { asks, reply }) {
            Ok(()) => Some(answer),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => None,
        }
    }

    /// The state for the metrics.
    pub fn stats(&self) -> FleetStats {
        FleetStats {
            up: self.is_up(),
            errors: self.state.errors.load(Ordering::Relaxed),
            leases: self.state.leases.load(Ordering::Relaxed),
        }
    }
}

/// The running fleet thread.
pub struct Fleet {
    handle: FleetHandle,
    thread: Option<JoinHandle<()>>,
}

impl Fleet {
    /// The handle for the cores and the metrics.
    pub fn handle(&self) -> FleetHandle {
        self.handle.clone()
    }

    /// Stops the thread and waits for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.handle.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the fleet thread and waits for its first connection attempt (at most the configured
/// timeout), so an instance that starts with Redis reachable starts fleet-wide. An unreachable
/// Redis is not an error: the instance starts per instance and recovers by itself.
pub fn start(cfg: &Redis) -> Result<Fleet, FleetError> {
    let tls = cfg
        .tls
        .then(|| conn::tls_config(cfg))
        .transpose()
        .map_err(|e| FleetError::Tls(e.to_string()))?;
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    let state = Arc::new(State::default());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = {
        let (cfg, state) = (cfg.clone(), state.clone());
        std::thread::Builder::new()
            .name("aperture-fleet".into())
            .spawn(move || run(&cfg, tls, &rx, &state, ready_tx))
            .map_err(FleetError::Thread)?
    };
    let _ = ready_rx.recv_timeout(cfg.timeout * 2 + Duration::from_millis(100));
    Ok(Fleet {
        handle: FleetHandle {
            tx,
            state,
            prefix: cfg.key_prefix.as_str().into(),
            // Below the 1 s a core waits for another core's decision (`limit::PEER_WAIT`), so a
            // request hopping cores is decided per instance rather than let through.
            wait: cfg.timeout.min(MAX_WAIT),
        },
        thread: Some(thread),
    })
}

/// A lease ask waiting for its answer.
type Pending = (Vec<BucketAsk>, oneshot::Sender<Option<Answer>>);

/// The thread's connection and what it logged.
struct Link<'a> {
    cfg: &'a Redis,
    tls: Option<Arc<rustls::ClientConfig>>,
    state: &'a State,
    conn: Option<Conn>,
    /// Whether the outage was logged (once per outage, including one at start).
    logged_down: bool,
}

impl Link<'_> {
    /// One connection attempt; marks the backend up or logs the outage (once).
    fn connect(&mut self) {
        let address = &self.cfg.address;
        match Conn::open(self.cfg, self.tls.as_ref()) {
            Ok(c) => {
                self.conn = Some(c);
                self.state.up.store(true, Ordering::Relaxed);
                if self.logged_down {
                    tracing::info!(%address, "Redis is reachable again: rate limits are fleet-wide again");
                } else {
                    tracing::info!(%address, "rate limits are fleet-wide (Redis)");
                }
                self.logged_down = false;
            }
            Err(e) => {
                self.state.errors.fetch_add(1, Ordering::Relaxed);
                if !self.logged_down {
                    tracing::warn!(%address, "Redis is unreachable ({e}): rate limits are per instance until it is back (retrying every {RETRY:?})");
                    self.logged_down = true;
                }
            }
        }
    }

    /// The live connection failed: per instance until a reconnect succeeds.
    fn lost(&mut self, e: &ConnError) {
        self.conn = None;
        self.state.up.store(false, Ordering::Relaxed);
        self.state.errors.fetch_add(1, Ordering::Relaxed);
        if !self.logged_down {
            tracing::warn!(address = %self.cfg.address, "lost Redis ({e}): rate limits are per instance until it is back (retrying every {RETRY:?})");
            self.logged_down = true;
        }
    }

    /// Answers a batch in one pipeline (every ask unanswered when the connection fails).
    fn answer(&mut self, batch: Vec<Pending>) {
        let Some(c) = self.conn.as_mut() else {
            return;
        };
        let asks: Vec<&[BucketAsk]> = batch.iter().map(|(a, _)| &a[..]).collect();
        match serve(c, &asks, self.state) {
            Ok(answers) => {
                for ((_, reply), answer) in batch.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                for (_, reply) in batch {
                    let _ = reply.send(None);
                }
                self.lost(&e);
            }
        }
    }
}

/// The thread: connect, serve batches of asks, check an idle connection, reconnect.
fn run(
    cfg: &Redis,
    tls: Option<Arc<rustls::ClientConfig>>,
    rx: &Receiver<Msg>,
    state: &State,
    ready: std::sync::mpsc::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut link = Link {
        cfg,
        tls,
        state,
        conn: None,
        logged_down: false,
    };
    loop {
        if link.conn.is_none() {
            link.connect();
            if let Some(r) = ready.take() {
                let _ = r.send(());
            }
            if link.conn.is_none() && !refuse_until(rx, Instant::now() + RETRY) {
                return;
            }
            continue;
        }
        let first = match rx.recv_timeout(PING_EVERY) {
            Ok(Msg::Lease { asks, reply }) => (asks, reply),
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                if let Some(Err(e)) = link.conn.as_mut().map(ping) {
                    link.lost(&e);
                }
                continue;
            }
        };
        let (batch, stop) = gather(rx, first);
        link.answer(batch);
        if stop {
            return;
        }
    }
}

/// `first` and whatever else is queued, up to [`MAX_BATCH`]; true when a stop was seen.
fn gather(rx: &Receiver<Msg>, first: Pending) -> (Vec<Pending>, bool) {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(Msg::Lease { asks, reply }) => batch.push((asks, reply)),
            Ok(Msg::Stop) => return (batch, true),
            Err(_) => break,
        }
    }
    (batch, false)
}

/// While Redis is down: answers every ask with "no answer" until `deadline`. False on stop.
fn refuse_until(rx: &Receiver<Msg>, deadline: Instant) -> bool {
    loop {
        match rx.recv_deadline(deadline) {
            Ok(Msg::Lease { reply, .. }) => {
                let _ = reply.send(None);
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
            Err(RecvTimeoutError::Timeout) => return true,
        }
    }
}

fn ping(c: &mut Conn) -> Result<(), ConnError> {
    match c.call(&[b"PING"])? {
        Reply::Simple(_) | Reply::Bulk(_) => Ok(()),
        Reply::Error(e) => Err(ConnError::Server(e)),
        _ => Err(ConnError::Unexpected("PING")),
    }
}

/// Runs the lease script for every ask in one pipeline; an ask whose script Redis lost
/// (`NOSCRIPT`, after a restart or `SCRIPT FLUSH`) is retried once after reloading it.
fn serve(
    c: &mut Conn,
    asks: &[&[BucketAsk]],
    state: &State,
) -> Result<Vec<Option<Answer>>, ConnError> {
    let mut answers = vec![None; asks.len()];
    let mut todo: Vec<usize> = (0..asks.len()).collect();
    for attempt in 0..2 {
        for &i in &todo {
            queue_eval(c, asks[i]);
        }
        c.flush()?;
        let mut again = Vec::new();
        for &i in &todo {
            match c.read_reply()? {
                Reply::Error(e) if e.starts_with("NOSCRIPT") && attempt == 0 => again.push(i),
                reply => match answer(&reply, asks[i].len()) {
                    Some(a) => {
                        state.leases.fetch_add(1, Ordering::Relaxed);
                        answers[i] = Some(a);
                    }
                    None => {
                        state.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("Redis lease script answered {reply:?}");
                    }
                },
            }
        }
        if again.is_empty() {
            break;
        }
        c.load_script()?;
        todo = again;
    }
    Ok(answers)
}

fn queue_eval(c: &mut Conn, asks: &[BucketAsk]) {
    let numbers: Vec<[String; 4]> = asks
        .iter()
        .map(|a| {
            [
                a.rate.to_string(),
                a.burst.to_string(),
                u8::from(a.need).to_string(),
                a.want.to_string(),
            ]
        })
        .collect();
    let (sha, n) = (c.sha.clone(), asks.len().to_string());
    let mut args: Vec<&[u8]> = vec![b"EVALSHA", sha.as_bytes(), n.as_bytes()];
    args.extend(asks.iter().map(|a| a.key.as_bytes()));
    args.extend(numbers.iter().flatten().map(|s| s.as_bytes()));
    c.queue(&args);
}

/// The script's reply as an [`Answer`]: `{1, grants…}` or `{0, waits in µs…}`.
fn answer(reply: &Reply, rules: usize) -> Option<Answer> {
    let Reply::Array(Some(items)) = reply else {
        return None;
    };
    let mut ints = items.iter().map(|i| match i {
        Reply::Int(n) => Some(*n),
        _ => None,
    });
    let head = ints.next()??;
    let rest: Option<Vec<i64>> = ints.collect();
    let rest = rest?;
    if rest.len() != rules {
        return None;
    }
    match head {
        1 => Some(Answer::Granted(
            rest.iter()
                .map(|&g| u32::try_from(g.max(0)).unwrap_or(u32::MAX))
                .collect(),
        )),
        0 => Some(Answer::Denied(
            rest.iter()
                .map(|&w| u64::try_from(w.max(0)).unwrap_or(0).saturating_mul(1000))
                .collect(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_replies_become_answers() {
        let arr = |v: Vec<i64>| Reply::Array(Some(v.into_iter().map(Reply::Int).collect()));
        assert_eq!(
            answer(&arr(vec![1, 3, 1]), 2),
            Some(Answer::Granted(vec![3, 1]))
        );
        assert_eq!(
            answer(&arr(vec![0, 0, 12_000_000]), 2),
            Some(Answer::Denied(vec![0, 12_000_000_000]))
        );
        assert_eq!(answer(&arr(vec![1, 3]), 2), None);
        assert_eq!(answer(&arr(vec![7, 3]), 1), None);
        assert_eq!(answer(&Reply::Error("ERR".into()), 1), None);
    }
}
