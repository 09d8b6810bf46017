//! The persistent side of MPP Payment sessions (intent `session`): the values that cross the
//! [`Store`](super::Store) session methods (a session row, a refund row, each method's outcome),
//! the refund's fee split ([`refund_split`]), and the tables' shared SQL text. The balance of a
//! session is `deposit − spent − Σ leases`: a lease is the part of the balance one holder (one
//! proxy instance, by its instance id) may debit without asking the database, so two instances
//! sharing a database never spend a balance twice.

use super::db::{DbError, Key32};

/// Session columns as both backends select them, in [`SessionRaw`]'s order.
pub(crate) const SESSION_SELECT: &str = "SELECT s.session_id, s.payment_hash, s.status, \
    s.deposit_sats, s.spent_sats, s.idle_timeout_secs, s.return_invoice, s.created_at, \
    s.updated_at, (SELECT CAST(COALESCE(SUM(l.leased_sats), 0) AS BIGINT) \
    FROM mpp_session_leases l WHERE l.session_id = s.session_id) FROM mpp_sessions s";

/// Refund columns as both backends select them, in [`RefundRaw`]'s order.
pub(crate) const REFUND_SELECT: &str = "SELECT session_id, return_invoice, amount_sats, \
    fee_limit_sats, status, attempts, last_error, created_at, updated_at FROM mpp_refunds";

/// A failed refund is retried at most this often (seconds since its last attempt).
pub const REFUND_RETRY_SECS: u64 = 60;
/// A refund is attempted at most this many times.
pub const REFUND_MAX_ATTEMPTS: u32 = 5;

/// What [`Store::open_session`](super::Store::open_session) records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOpen {
    /// Hex of `payment_hash` (the id clients send back).
    pub session_id: String,
    /// The deposit invoice's payment hash: credited once, ever.
    pub payment_hash: Key32,
    pub deposit_sats: u64,
    /// The client's amountless BOLT11 invoice the unspent balance goes back to.
    pub return_invoice: String,
    pub idle_timeout_secs: u64,
    /// The instance that opened it: it holds a lease of the whole deposit.
    pub holder: String,
    /// Unix seconds.
    pub now: u64,
}

/// The outcome of [`Store::open_session`](super::Store::open_session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenOutcome {
    /// Credit, session and the opener's lease of the whole deposit were recorded.
    Opened,
    /// The payment hash was already credited, or the session exists: nothing changed.
    Duplicate,
}

/// The outcome of [`Store::top_up`](super::Store::top_up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopUpOutcome {
    /// Credited: the deposit and the caller's lease grew by the amount.
    Applied,
    /// This hash was already credited to this session: nothing changed (accept, credit nothing).
    Replayed,
    /// This hash was credited to another session: refuse.
    Foreign,
    /// No such session, or it is closed.
    NotOpen,
}

/// The outcome of [`Store::lease`](super::Store::lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// `granted` = min(want, available) sats were added to the caller's lease (may be 0).
    /// `payment_hash` is the session's deposit hash (bearer credentials prove its preimage).
    Granted { granted: u64, payment_hash: Key32 },
    /// No such session, or it is closed.
    NotOpen,
}

/// The outcome of [`Store::close_session`](super::Store::close_session) and
/// [`Store::force_close`](super::Store::force_close).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseOutcome {
    /// Closed; `refund` is the refund row written in the same transaction (a force close
    /// counted the forfeited leases as spent, and logged them).
    Closed { refund: RefundRow },
    /// Other holders still lease `leased` sats: nothing closed (the caller's settle and the
    /// release of its own lease were committed). Retry later, or force close.
    Outstanding { leased: u64 },
    /// No such session, or it is closed already.
    NotOpen,
}

/// A session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Open,
    /// Closed by the client, the idle sweep or a force close (any stored status but `open`).
    Closed,
}

impl SessionStatus {
    pub(crate) fn parse(s: &str) -> SessionStatus {
        if s == "open" {
            SessionStatus::Open
        } else {
            SessionStatus::Closed
        }
    }
}

/// One session, as [`Store::session`](super::Store::session) reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub session_id: String,
    pub payment_hash: Key32,
    pub status: SessionStatus,
    pub deposit_sats: u64,
    pub spent_sats: u64,
    /// Σ of every holder's lease.
    pub leased_sats: u64,
    pub idle_timeout_secs: u64,
    pub return_invoice: String,
    pub created_at: u64,
    pub updated_at: u64,
}

impl SessionRow {
    /// What nobody holds yet: `deposit − spent − Σ leases`.
    pub fn available_sats(&self) -> u64 {
        self.deposit_sats
            .saturating_sub(self.spent_sats)
            .saturating_sub(self.leased_sats)
    }
}

/// A refund's state (`mpp_refunds.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefundStatus {
    /// Not paid yet (never attempted, or the close answer stopped waiting for it).
    Pending,
    Succeeded,
    /// The last attempt failed; retried every [`REFUND_RETRY_SECS`] up to
    /// [`REFUND_MAX_ATTEMPTS`] attempts.
    Failed,
    /// Nothing to pay after the fee budget.
    Skipped,
}

impl RefundStatus {
    /// The stored (and wire) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
            RefundStatus::Skipped => "skipped",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<RefundStatus, DbError> {
        Ok(match s {
            "pending" => RefundStatus::Pending,
            "succeeded" => RefundStatus::Succeeded,
            "failed" => RefundStatus::Failed,
            "skipped" => RefundStatus::Skipped,
            other => {
                return Err(DbError::Invalid {
                    what: "refund status",
                    value: other.to_owned(),
                })
            }
        })
    }
}

/// One refund (`mpp_refunds`), one per closed session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRow {
    pub session_id: String,
    pub return_invoice: String,
    /// What is paid to the return invoice: the balance less the fee budget.
    pub amount_sats: u64,
    /// The routing fee budget; `amount_sats + fee_limit_sats` is the balance at close.
    pub fee_limit_sats: u64,
    pub status: RefundStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
}

impl RefundRow {
    /// The session's balance when it closed (what the client is owed before fees).
    pub fn balance_sats(&self) -> u64 {
        self.amount_sats.saturating_add(self.fee_limit_sats)
    }
}

/// Splits a closed session's balance into `(amount, fee_limit)`: the fee budget is 1 % rounded
/// up, at least 1 sat, never more than the balance; the amount is the rest (0: skipped).
pub fn refund_split(balance: u64) -> (u64, u64) {
    let fee_limit = balance.div_ceil(100).max(1).min(balance);
    (balance - fee_limit, fee_limit)
}

/// A session row before its blob and numbers are checked.
pub(crate) struct SessionRaw {
    pub session_id: String,
    pub payment_hash: Vec<u8>,
    pub status: String,
    pub deposit_sats: i64,
    pub spent_sats: i64,
    pub idle_timeout_secs: i64,
    pub return_invoice: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub leased_sats: i64,
}

impl SessionRaw {
    pub(crate) fn into_row(self) -> Result<SessionRow, DbError> {
        use super::db::{key32, to_u64};
        Ok(SessionRow {
            payment_hash: key32(&self.payment_hash, "session payment hash")?,
            session_id: self.session_id,
            status: SessionStatus::parse(&self.status),
            deposit_sats: to_u64(self.deposit_sats),
            spent_sats: to_u64(self.spent_sats),
            leased_sats: to_u64(self.leased_sats),
            idle_timeout_secs: to_u64(self.idle_timeout_secs),
            return_invoice: self.return_invoice.unwrap_or_default(),
            created_at: to_u64(self.created_at),
            updated_at: to_u64(self.updated_at),
        })
    }
}

/// A lease grant before the session's payment hash is checked.
pub(crate) enum LeaseRaw {
    Granted { granted: u64, payment_hash: Vec<u8> },
    NotOpen,
}

impl LeaseRaw {
    pub(crate) fn into_outcome(self) -> Result<LeaseOutcome, DbError> {
        Ok(match self {
            LeaseRaw::Granted {
                granted,
                payment_hash,
            } => LeaseOutcome::Granted {
                granted,
                payment_hash: super::db::key32(&payment_hash, "session payment hash")?,
            },
            LeaseRaw::NotOpen => LeaseOutcome::NotOpen,
        })
    }
}

/// A refund row before its numbers and status are checked.
pub(crate) struct RefundRaw {
    pub session_id: String,
    pub return_invoice: Option<String>,
    pub amount_sats: i64,
    pub fee_limit_sats: i64,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl RefundRaw {
    pub(crate) fn into_row(self) -> Result<RefundRow, DbError> {
        use super::db::to_u64;
        Ok(RefundRow {
            status: RefundStatus::parse(&self.status)?,
            session_id: self.session_id,
            return_invoice: self.return_invoice.unwrap_or_default(),
            amount_sats: to_u64(self.amount_sats),
            fee_limit_sats: to_u64(self.fee_limit_sats),
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            last_error: self.last_error,
            created_at: to_u64(self.created_at),
            updated_at: to_u64(self.updated_at),
        })
    }
}

/// The refund row a close inserts for `balance`.
pub(crate) fn new_refund(
    session_id: &str,
    return_invoice: &str,
    balance: u64,
    now: u64,
) -> RefundRow {
    let (amount_sats, fee_limit_sats) = refund_split(balance);
    RefundRow {
        session_id: session_id.to_owned(),
        return_invoice: return_invoice.to_owned(),
        amount_sats,
        fee_limit_sats,
        status: if amount_sats == 0 {
            RefundStatus::Skipped
        } else {
            RefundStatus::Pending
        },
        attempts: 0,
        last_error: None,
        created_at: now,
        updated_at: now,
    }
}

/// Subtracts `used + returned` from a lease of `leased`, clamping at 0 (and logging: a holder
/// never gives back more than it held, unless its lease was forfeited or released).
pub(crate) fn lease_after_settle(
    session_id: &str,
    holder: &str,
    leased: u64,
    used: u64,
    returned: u64,
) -> u64 {
    let give_back = used.saturating_add(returned);
    if give_back > leased {
        tracing::warn!(
            session_id,
            holder,
            leased,
            used,
            returned,
            "session settle gives back more than the holder's lease; clamped at 0"
        );
    }
    leased.saturating_sub(give_back)
}

#[cfg(test)]
pub(crate) mod suite;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refund_split_keeps_one_percent_rounded_up_at_least_one_sat() {
        assert_eq!(refund_split(0), (0, 0));
        assert_eq!(refund_split(1), (0, 1));
        assert_eq!(refund_split(2), (1, 1));
        assert_eq!(refund_split(100), (99, 1));
        assert_eq!(refund_split(101), (99, 2));
        assert_eq!(refund_split(1000), (990, 10));
        assert_eq!(
            refund_split(u64::MAX).0 + refund_split(u64::MAX).1,
            u64::MAX
        );
        for b in 0..500 {
            let (amount, fee) = refund_split(b);
            assert_eq!(amount + fee, b);
        }
    }

    #[test]
    fn new_refund_skips_an_empty_balance() {
        assert_eq!(new_refund("s", "lnbc", 1, 5).status, RefundStatus::Skipped);
        let r = new_refund("s", "lnbc", 500, 5);
        assert_eq!((r.amount_sats, r.fee_limit_sats), (495, 5));
        assert_eq!((r.status, r.balance_sats()), (RefundStatus::Pending, 500));
    }

    #[test]
    fn lease_after_settle_clamps() {
        assert_eq!(lease_after_settle("s", "h", 10, 3, 2), 5);
        assert_eq!(lease_after_settle("s", "h", 10, 8, 5), 0);
        assert_eq!(lease_after_settle("s", "h", 0, u64::MAX, u64::MAX), 0);
    }

    #[test]
    fn statuses_roundtrip() {
        for s in [
            RefundStatus::Pending,
            RefundStatus::Succeeded,
            RefundStatus::Failed,
            RefundStatus::Skipped,
        ] {
            assert_eq!(RefundStatus::parse(s.as_str()).unwrap(), s);
        }
        assert!(RefundStatus::parse("paid").is_err());
        assert_eq!(SessionStatus::parse("open"), SessionStatus::Open);
        assert_eq!(SessionStatus::parse("closed"), SessionStatus::Closed);
    }
}
