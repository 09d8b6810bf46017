//! The token database behind one trait ([`Store`]): the ledger of minted challenges, revoked
//! token IDs, imported legacy root keys, consumed Payment charges, Payment sessions (their
//! balances, leases and refunds; the values in [`super::session`]) and what the admin API reads
//! and writes (services, transactions, revenue; the values in [`super::admin`]), with schema
//! migrations for SQLite and PostgreSQL.
//! Every call blocks on disk or network I/O, so a [`Store`] lives on the `aperture-store` thread
//! (or in a short-lived CLI command), never on a worker core.

use std::time::{SystemTime, UNIX_EPOCH};

use super::admin::{DayRevenue, DbService, Stats, TxKind, TxQuery, TxRow, TxState};
use super::session::{
    CloseOutcome, LeaseOutcome, OpenOutcome, RefundRow, RefundStatus, SessionOpen, SessionRow,
    TopUpOutcome,
};
use crate::config::Db;

/// 32 bytes: a token ID, a payment hash, a root key or a `sha256(identifier)`.
pub type Key32 = [u8; 32];

/// Errors from the token database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("etcd is not supported; use sqlite (default) or postgres (`dbbackend: sqlite` or `dbbackend: postgres`)")]
    EtcdUnsupported,
    #[error("cannot create the directory of the database {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("sqlite {context}: {source}")]
    Sqlite {
        context: String,
        source: rusqlite::Error,
    },
    #[error("postgres {context}: {source}")]
    Postgres {
        context: String,
        source: postgres::Error,
    },
    /// A TLS connection to PostgreSQL failed for a reason the operator fixes.
    #[error("postgres at {server}: {reason}")]
    PostgresTls { server: String, reason: String },
    #[error("the database holds a malformed {what} ({len} bytes, expected 32)")]
    Corrupt { what: &'static str, len: usize },
    #[error(
        "the database schema is at version {found}, newer than this aperture understands \
         ({supported}); upgrade aperture"
    )]
    TooNew { found: i64, supported: i64 },
    #[error("the database holds an invalid {what}: {value:?}")]
    Invalid { what: &'static str, value: String },
    /// Reading Go aperture's database for an import failed.
    #[error("{0}")]
    Import(String),
    /// The database cannot be used: an unsupported connection setting, no thread.
    #[error("{0}")]
    Unavailable(String),
}

impl DbError {
    /// Whether the operator fixes this in the config (exit 64) rather than it being an outage.
    pub fn is_config_error(&self) -> bool {
        matches!(self, DbError::EtcdUnsupported)
    }
}

/// One minted challenge, as a worker core reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub token_id: Key32,
    pub payment_hash: Key32,
    pub service: String,
    pub price_sat: u64,
    /// Unix seconds.
    pub created_at: u64,
}

/// One write. A batch of them commits in a single transaction ([`Store::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert a ledger row (a duplicate payment hash is ignored), of the kind
    /// [`TxKind::infer`] gives it.
    Challenge(Challenge),
    /// Insert a ledger row of `kind` (a duplicate payment hash is ignored).
    Transaction { challenge: Challenge, kind: TxKind },
    /// Set `settled_at` on the row with this payment hash, if it is not settled yet.
    Settle {
        payment_hash: Key32,
        settled_at: u64,
    },
    /// A session holder's write-behind debits: `spent += used` (while the session is open,
    /// capped at the deposit), the holder's lease `−= used + returned` (the row goes at 0,
    /// never below: clamped and logged), `updated_at = now`. `refunded_sats` is then taken off
    /// `spent` (at most down to 0): a session settlement that cost less than was debited.
    SessionSettle {
        session_id: String,
        holder: String,
        used_sats: u64,
        returned_sats: u64,
        refunded_sats: u64,
        now: u64,
    },
    /// Keep a metered usage report its pricer did not take, for a replay at the next start.
    PendingUsage(Box<lnd_bridge::UsageReport>),
    /// A kept usage report was delivered on a replay: delete its row.
    UsageDelivered(i64),
    /// The built-in meter sold a bundle: insert its row unless the token has one already.
    BundleCreated(Box<BundleRow>),
    /// The built-in meter debited a bundle: `remaining −= tokens` (never below 0).
    BundleDebited { token_id: Key32, tokens: u64 },
}

/// One built-in meter bundle (`meter_bundles`): the model a token bought and its unspent tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRow {
    pub token_id: Key32,
    pub service: String,
    pub model: String,
    pub remaining: u64,
}

/// One use of a Payment charge credential, claimed before the request is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeClaim {
    /// The charge's payment hash: its consumption key (one use per hash).
    pub payment_hash: Key32,
    /// The challenge id the credential echoed (for the operator's eyes).
    pub challenge_id: String,
    /// When the challenge expires (unix seconds); rows are pruned an hour after.
    pub expires_at: u64,
    /// When it was claimed (unix seconds).
    pub consumed_at: u64,
}

/// Where the Payment scheme's HMAC secret lives: Go aperture's `secrets` key for it,
/// `sha256("aperture-mpp-hmac-secret-v1")`, in the legacy-keys table that an import from Go
/// fills (so challenges minted by Go before a cut-over keep verifying, and a fleet sharing a
/// database shares the secret).
pub const MPP_SECRET_KEY: Key32 = [
    0xa3, 0xf0, 0xd9, 0x6f, 0xf0, 0x0a, 0xb3, 0x0f, 0xad, 0x9b, 0xb7, 0x3a, 0x02, 0xe0, 0x2c, 0x01,
    0x02, 0xc6, 0x90, 0x91, 0x39, 0xb0, 0x6f, 0x04, 0xdd, 0x7b, 0x3e, 0x7c, 0x0e, 0xf2, 0x31, 0xbd,
];

/// One ledger row, joined with the token's revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub token_id: Key32,
    pub payment_hash: Key32,
    pub service: String,
    pub price_sat: u64,
    pub created_at: u64,
    pub settled_at: Option<u64>,
    pub revoked_at: Option<u64>,
}

/// Which ledger rows [`Store::list_tokens`] returns, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenQuery {
    /// Only this token's rows.
    pub token_id: Option<Key32>,
    /// At most this many rows (0: no limit).
    pub limit: u32,
}

/// A ledger row before its blobs are checked (the blobs travel beside it).
pub(crate) struct LedgerRaw {
    pub service: String,
    pub price_sat: i64,
    pub created_at: i64,
    pub settled_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl LedgerRaw {
    pub(crate) fn into_row(
        self,
        token_id: &[u8],
        payment_hash: &[u8],
    ) -> Result<LedgerRow, DbError> {
        Ok(LedgerRow {
            token_id: key32(token_id, "token id")?,
            payment_hash: key32(payment_hash, "payment hash")?,
            service: self.service,
            price_sat: to_u64(self.price_sat),
            created_at: to_u64(self.created_at),
            settled_at: self.settled_at.map(to_u64),
            revoked_at: self.revoked_at.map(to_u64),
        })
    }
}

/// Ledger columns as both backends select them for [`LedgerRaw`].
pub(crate) const LEDGER_SELECT: &str =
    "SELECT l.token_id, l.payment_hash, l.service, l.price_sat, \
    l.created_at, l.settled_at, r.revoked_at FROM ledger l \
    LEFT JOIN revoked_tokens r ON r.token_id = l.token_id";

/// What another connection committed, as a [`ChangeFeed`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A token was revoked.
    Revocations,
    /// A service was created, updated or deleted.
    Services,
    /// The feed (re)connected: changes may have been missed while it was away, so read both.
    Resync,
    /// The feed lost its connection: until the next [`Change::Resync`], only polling sees
    /// changes.
    Lost,
}

/// A push channel for changes made through other connections (PostgreSQL's `LISTEN`): the
/// store thread reads a change as soon as it is reported instead of at its next poll.
pub trait ChangeFeed: Send {
    /// Starts a thread of its own that calls `report` for each change until `stop` is set;
    /// it reports [`Change::Lost`] when its connection goes, reconnects by itself and then
    /// reports [`Change::Resync`].
    /// `report` must return quickly.
    fn spawn(
        self: Box<Self>,
        report: Box<dyn Fn(Change) + Send>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<std::thread::JoinHandle<()>, DbError>;
}

/// The token database. Implementations: SQLite (embedded default) and PostgreSQL (shared by a
/// fleet). Methods take `&mut self` because a database connection is used by one thread at once.
pub trait Store: Send {
    /// Applies `ops` in one transaction: all or nothing.
    fn apply(&mut self, ops: &[Op]) -> Result<(), DbError>;

    /// Records one minted challenge.
    fn record_challenge(&mut self, challenge: &Challenge) -> Result<(), DbError> {
        self.apply(&[Op::Challenge(challenge.clone())])
    }

    /// Marks the challenge with `payment_hash` settled at `settled_at` (unix seconds).
    fn mark_settled(&mut self, payment_hash: Key32, settled_at: u64) -> Result<(), DbError> {
        self.apply(&[Op::Settle {
            payment_hash,
            settled_at,
        }])
    }

    /// Revokes `token_id` now. Returns false when it was already revoked. Unknown token IDs are
    /// accepted: the token may have been minted by another instance or by Go aperture.
    fn revoke(&mut self, token_id: Key32) -> Result<bool, DbError>;

    /// Token IDs revoked after `cursor` (0: all), and the cursor to pass next time.
    fn revoked_since(&mut self, cursor: i64) -> Result<(Vec<Key32>, i64), DbError>;

    /// A push feed of other connections' revocations and service changes, when this database
    /// has one (PostgreSQL); `None`: changes are only seen by polling.
    fn change_feed(&self) -> Option<Box<dyn ChangeFeed>> {
        None
    }

    /// When `token_id` was revoked, if it was.
    fn revoked_at(&mut self, token_id: Key32) -> Result<Option<u64>, DbError>;

    /// Ledger rows, newest first.
    fn list_tokens(&mut self, query: &TokenQuery) -> Result<Vec<LedgerRow>, DbError>;

    /// Stores `(sha256(identifier), root key)` pairs; returns how many were new.
    fn import_legacy_keys(&mut self, keys: &[(Key32, Key32)]) -> Result<usize, DbError>;

    /// The imported root key for `sha256(identifier)`.
    fn legacy_root_key(&mut self, identifier_hash: &Key32) -> Result<Option<Key32>, DbError>;

    /// Every imported `(sha256(identifier), root key)` pair.
    fn legacy_keys(&mut self) -> Result<Vec<(Key32, Key32)>, DbError>;

    /// Claims Payment charges in one transaction: for each, true when this is its first use
    /// (false: a replay). All or nothing.
    fn claim_charges(&mut self, claims: &[ChargeClaim]) -> Result<Vec<bool>, DbError>;

    /// Deletes claims whose challenge expired before `before` (unix seconds): a credential
    /// that old is refused by its expiry anyway. Returns how many went.
    fn prune_charges(&mut self, before: u64) -> Result<usize, DbError>;

    /// The Payment scheme's HMAC secret: the stored one, else `fresh`, stored first. Two
    /// instances starting together agree (insert-if-absent, then read back).
    fn mpp_secret(&mut self, fresh: Key32) -> Result<Key32, DbError> {
        if let Some(secret) = self.legacy_root_key(&MPP_SECRET_KEY)? {
            return Ok(secret);
        }
        self.import_legacy_keys(&[(MPP_SECRET_KEY, fresh)])?;
        self.legacy_root_key(&MPP_SECRET_KEY)?
            .ok_or_else(|| DbError::Unavailable("the MPP secret was not stored".into()))
    }

    // Payment sessions. Each method is one transaction; on PostgreSQL the session's row is
    // locked first, so instances sharing the database never lease or spend a balance twice.
    // The defaults describe a store without sessions (reads find nothing, writes fail).

    /// Credits `open.payment_hash`, inserts the session and leases the whole deposit to
    /// `open.holder`.
    fn open_session(&mut self, open: &SessionOpen) -> Result<OpenOutcome, DbError> {
        let _ = open;
        Err(no_sessions())
    }

    /// Credits `amount_sats` paid to `credit_hash` to the session, once per hash; the deposit
    /// and `holder`'s lease grow by it.
    fn top_up(
        &mut self,
        session_id: &str,
        credit_hash: Key32,
        amount_sats: u64,
        holder: &str,
        now: u64,
    ) -> Result<TopUpOutcome, DbError> {
        let _ = (session_id, credit_hash, amount_sats, holder, now);
        Err(no_sessions())
    }

    /// Adds min(`want_sats`, available) to `holder`'s lease.
    fn lease(
        &mut self,
        session_id: &str,
        want_sats: u64,
        holder: &str,
        now: u64,
    ) -> Result<LeaseOutcome, DbError> {
        let _ = (session_id, want_sats, holder, now);
        Err(no_sessions())
    }

    /// Write-behind debits of `holder` (see [`Op::SessionSettle`]), in a transaction of its own.
    fn settle_session(
        &mut self,
        session_id: &str,
        holder: &str,
        used_sats: u64,
        returned_sats: u64,
        now: u64,
    ) -> Result<(), DbError> {
        self.apply(&[Op::SessionSettle {
            session_id: session_id.to_owned(),
            holder: holder.to_owned(),
            used_sats,
            returned_sats,
            refunded_sats: 0,
            now,
        }])
    }

    /// Settles `holder` (its remaining lease is released too), then closes the session unless
    /// other holders still lease part of it; the close inserts the refund row
    /// ([`super::session::refund_split`] of `deposit − spent`) in the same transaction.
    fn close_session(
        &mut self,
        session_id: &str,
        holder: &str,
        used_sats: u64,
        returned_sats: u64,
        now: u64,
    ) -> Result<CloseOutcome, DbError> {
        let _ = (session_id, holder, used_sats, returned_sats, now);
        Err(no_sessions())
    }

    /// Closes the session even while others hold leases: those are forfeited (counted as
    /// spent, logged), the refund is what remains.
    fn force_close(&mut self, session_id: &str, now: u64) -> Result<CloseOutcome, DbError> {
        let _ = (session_id, now);
        Err(no_sessions())
    }

    /// Deletes every lease of `holder` (a restarted instance's unused leases go back to the
    /// balances); returns how many.
    fn release_holder(&mut self, holder: &str) -> Result<usize, DbError> {
        let _ = holder;
        Ok(0)
    }

    /// The built-in meter's bundle of `token_id` (see [`Op::BundleCreated`]); `None`: no bundle
    /// was sold for it yet. Stores without the table have none.
    fn bundle(&mut self, token_id: Key32) -> Result<Option<BundleRow>, DbError> {
        let _ = token_id;
        Ok(None)
    }

    /// Kept usage reports (see [`Op::PendingUsage`]), oldest first, at most `limit`, each with its
    /// row id in `persisted_id`.
    fn pending_usage(&mut self, limit: u32) -> Result<Vec<lnd_bridge::UsageReport>, DbError> {
        let _ = limit;
        Ok(Vec::new())
    }

    /// Open sessions nobody leases whose `updated_at + idle_timeout_secs ≤ now`, oldest first.
    fn idle_sessions(&mut self, now: u64, limit: u32) -> Result<Vec<String>, DbError> {
        let _ = (now, limit);
        Ok(Vec::new())
    }

    /// Refunds to attempt now: `pending` ones never attempted whose row is at least
    /// [`super::session::REFUND_RETRY_SECS`] old (a fresh one is paid by the instance that
    /// closed it), and `failed` ones with fewer than
    /// [`super::session::REFUND_MAX_ATTEMPTS`] attempts, the last that long ago.
    fn refunds_due(&mut self, now: u64, limit: u32) -> Result<Vec<RefundRow>, DbError> {
        let _ = (now, limit);
        Ok(Vec::new())
    }

    /// Records an attempt's result: `status`, `last_error`, `attempts += 1`, `updated_at = now`.
    /// False when there is no such refund.
    fn record_refund(
        &mut self,
        session_id: &str,
        status: RefundStatus,
        last_error: Option<&str>,
        now: u64,
    ) -> Result<bool, DbError> {
        let _ = (session_id, status, last_error, now);
        Err(no_sessions())
    }

    /// The session, with Σ of its leases.
    fn session(&mut self, session_id: &str) -> Result<Option<SessionRow>, DbError> {
        let _ = session_id;
        Ok(None)
    }

    /// The session's refund, once it is closed.
    fn refund(&mut self, session_id: &str) -> Result<Option<RefundRow>, DbError> {
        let _ = session_id;
        Ok(None)
    }

    // The admin API: services stored in the database, the ledger as transactions, revenue.
    // The defaults describe a store without them (reads find nothing, writes fail).

    /// Every service created through the admin API, by name.
    fn list_db_services(&mut self) -> Result<Vec<DbService>, DbError> {
        Ok(Vec::new())
    }

    /// Stores a new service (`spec`: the admin layer's JSON, kept as is) and bumps
    /// [`Self::services_version`] in the same transaction. False (nothing changed) when one of
    /// that name exists.
    fn create_service(&mut self, name: &str, spec: &str, now: u64) -> Result<bool, DbError> {
        let _ = (name, spec, now);
        Err(no_admin())
    }

    /// Replaces the service's spec (`updated_at = now`) and bumps the version. False (nothing
    /// changed) when there is no such service.
    fn update_service(&mut self, name: &str, spec: &str, now: u64) -> Result<bool, DbError> {
        let _ = (name, spec, now);
        Err(no_admin())
    }

    /// Deletes the service and bumps the version. False when there is no such service.
    fn delete_service(&mut self, name: &str) -> Result<bool, DbError> {
        let _ = name;
        Err(no_admin())
    }

    /// The services' change counter: it grows with every committed create, update and delete,
    /// by any instance sharing the database.
    fn services_version(&mut self) -> Result<i64, DbError> {
        Ok(0)
    }

    /// One page of ledger rows, newest first, and how many rows match the query in all.
    fn list_transactions(&mut self, query: &TxQuery) -> Result<(Vec<TxRow>, u64), DbError> {
        let _ = query;
        Ok((Vec::new(), 0))
    }

    /// Go's ListTokens: one page of settled rows, newest first, and how many there are.
    fn list_settled_tokens(
        &mut self,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<TxRow>, u64), DbError> {
        self.list_transactions(&TxQuery {
            state: Some(TxState::Settled),
            limit,
            offset,
            ..TxQuery::default()
        })
    }

    /// Go's GetStats: settled rows only, `settled_at` within `[from, to]` (either end open).
    fn stats(&mut self, from: Option<u64>, to: Option<u64>) -> Result<Stats, DbError> {
        let _ = (from, to);
        Ok(Stats::default())
    }

    /// Settled revenue per UTC day and service, `settled_at` within `[from, to]`, by day then
    /// service.
    fn revenue_by_day(
        &mut self,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<Vec<DayRevenue>, DbError> {
        let _ = (from, to);
        Ok(Vec::new())
    }
}

fn no_admin() -> DbError {
    DbError::Unavailable("this store does not keep services".into())
}

fn no_sessions() -> DbError {
    DbError::Unavailable("this store does not keep Payment sessions".into())
}

/// Opens (and unless `skipmigrations`, migrates) the configured database.
pub fn open(db: &Db) -> Result<Box<dyn Store>, DbError> {
    match db {
        Db::Sqlite {
            path,
            skip_migrations,
        } => Ok(Box::new(super::sqlite::SqliteStore::open(
            path,
            !skip_migrations,
        )?)),
        Db::Postgres(pg) => Ok(Box::new(super::postgres::PgStore::open(
            super::postgres::PgTarget::from_config(pg)?,
            !pg.skip_migrations,
        )?)),
        Db::Etcd { .. } => Err(DbError::EtcdUnsupported),
    }
}

/// The current time in unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A 32-byte column value, or [`DbError::Corrupt`].
pub(crate) fn key32(bytes: &[u8], what: &'static str) -> Result<Key32, DbError> {
    Key32::try_from(bytes).map_err(|_| DbError::Corrupt {
        what,
        len: bytes.len(),
    })
}

/// Unix seconds as stored (BIGINT); saturates instead of wrapping.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored BIGINT back to unix seconds / sats; negative values (never written) read as 0.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
