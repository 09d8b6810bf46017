//! Payment sessions on SQLite: migration 3 (sessions, credits, leases, refunds) and each session
//! method's statements, run inside a transaction [`super::SqliteStore`] opened. SQLite's write
//! transactions are immediate, so they run one at a time: reading a balance and then leasing
//! part of it cannot interleave with another writer.

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::db::{to_i64, to_u64, Key32};
use crate::store::session::{
    lease_after_settle, new_refund, CloseOutcome, LeaseRaw, OpenOutcome, RefundRaw, RefundRow,
    RefundStatus, SessionOpen, SessionRaw, TopUpOutcome, REFUND_MAX_ATTEMPTS, REFUND_RETRY_SECS,
    REFUND_SELECT, SESSION_SELECT,
};

/// Migration 3: the tables of Payment sessions (Go aperture's column names where it has them;
/// timestamps are unix seconds like the other tables).
pub(super) const MIGRATION: &str = "
    CREATE TABLE mpp_sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT UNIQUE NOT NULL,
        payment_hash BLOB NOT NULL,
        deposit_sats BIGINT NOT NULL DEFAULT 0,
        spent_sats BIGINT NOT NULL DEFAULT 0,
        return_invoice TEXT,
        status TEXT NOT NULL DEFAULT 'open',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        idle_timeout_secs BIGINT NOT NULL DEFAULT 300
    );
    CREATE INDEX mpp_sessions_status_updated_at ON mpp_sessions (status, updated_at);
    CREATE TABLE mpp_session_credits (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        payment_hash BLOB UNIQUE NOT NULL,
        session_id TEXT NOT NULL,
        amount_sats BIGINT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX mpp_session_credits_session_id ON mpp_session_credits (session_id);
    CREATE TABLE mpp_session_leases (
        session_id TEXT NOT NULL,
        holder TEXT NOT NULL,
        leased_sats BIGINT NOT NULL,
        PRIMARY KEY (session_id, holder)
    );
    CREATE INDEX mpp_session_leases_holder ON mpp_session_leases (holder);
    CREATE TABLE mpp_refunds (
        session_id TEXT PRIMARY KEY NOT NULL,
        return_invoice TEXT NOT NULL,
        amount_sats BIGINT NOT NULL,
        fee_limit_sats BIGINT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'succeeded', 'failed', 'skipped')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX mpp_refunds_status_updated_at ON mpp_refunds (status, updated_at);
";

/// A session's balance columns, read before it changes.
struct Balance {
    deposit: u64,
    spent: u64,
    open: bool,
    payment_hash: Vec<u8>,
    return_invoice: String,
}

fn balance(tx: &Connection, session_id: &str) -> rusqlite::Result<Option<Balance>> {
    tx.prepare_cached(
        "SELECT deposit_sats, spent_sats, status, payment_hash, return_invoice \
         FROM mpp_sessions WHERE session_id = ?1",
    )?
    .query_row([session_id], |r| {
        Ok(Balance {
            deposit: to_u64(r.get(0)?),
            spent: to_u64(r.get(1)?),
            open: r.get::<_, String>(2)? == "open",
            payment_hash: r.get(3)?,
            return_invoice: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
        })
    })
    .optional()
}

fn leased(tx: &Connection, session_id: &str) -> rusqlite::Result<u64> {
    let sum: i64 = tx
        .prepare_cached(
            "SELECT COALESCE(SUM(leased_sats), 0) FROM mpp_session_leases WHERE session_id = ?1",
        )?
        .query_row([session_id], |r| r.get(0))?;
    Ok(to_u64(sum))
}

fn add_lease(tx: &Connection, session_id: &str, holder: &str, sats: u64) -> rusqlite::Result<()> {
    if sats == 0 {
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO mpp_session_leases (session_id, holder, leased_sats) VALUES (?1, ?2, ?3) \
         ON CONFLICT (session_id, holder) DO UPDATE \
         SET leased_sats = mpp_session_leases.leased_sats + excluded.leased_sats",
    )?
    .execute(params![session_id, holder, to_i64(sats)])?;
    Ok(())
}

fn insert_refund(tx: &Connection, r: &RefundRow) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO mpp_refunds (session_id, return_invoice, amount_sats, fee_limit_sats, \
         status, attempts, last_error, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 0, NULL, ?6, ?6)",
    )?
    .execute(params![
        r.session_id,
        r.return_invoice,
        to_i64(r.amount_sats),
        to_i64(r.fee_limit_sats),
        r.status.as_str(),
        to_i64(r.created_at)
    ])?;
    Ok(())
}

/// Marks the session closed at `spent` and inserts its refund.
fn close_at(
    tx: &Connection,
    session_id: &str,
    b: &Balance,
    spent: u64,
    now: u64,
) -> rusqlite::Result<RefundRow> {
    tx.prepare_cached(
        "UPDATE mpp_sessions SET status = 'closed', spent_sats = ?2, updated_at = ?3 \
         WHERE session_id = ?1",
    )?
    .execute(params![session_id, to_i64(spent), to_i64(now)])?;
    let refund = new_refund(
        session_id,
        &b.return_invoice,
        b.deposit.saturating_sub(spent),
        now,
    );
    insert_refund(tx, &refund)?;
    Ok(refund)
}

pub(super) fn open_session(tx: &Connection, o: &SessionOpen) -> rusqlite::Result<OpenOutcome> {
    let credited: Option<i64> = tx
        .prepare_cached("SELECT 1 FROM mpp_session_credits WHERE payment_hash = ?1")?
        .query_row([&o.payment_hash[..]], |r| r.get(0))
        .optional()?;
    if credited.is_some() || balance(tx, &o.session_id)?.is_some() {
        return Ok(OpenOutcome::Duplicate);
    }
    let now = to_i64(o.now);
    tx.prepare_cached(
        "INSERT INTO mpp_session_credits (payment_hash, session_id, amount_sats, created_at) \
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        &o.payment_hash[..],
        o.session_id,
        to_i64(o.deposit_sats),
        now
    ])?;
    tx.prepare_cached(
        "INSERT INTO mpp_sessions (session_id, payment_hash, deposit_sats, spent_sats, \
         return_invoice, status, created_at, updated_at, idle_timeout_secs) \
         VALUES (?1, ?2, ?3, 0, ?4, 'open', ?5, ?5, ?6)",
    )?
    .execute(params![
        o.session_id,
        &o.payment_hash[..],
        to_i64(o.deposit_sats),
        o.return_invoice,
        now,
        to_i64(o.idle_timeout_secs)
    ])?;
    add_lease(tx, &o.session_id, &o.holder, o.deposit_sats)?;
    Ok(OpenOutcome::Opened)
}

pub(super) fn top_up(
    tx: &Connection,
    session_id: &str,
    credit_hash: Key32,
    amount_sats: u64,
    holder: &str,
    now: u64,
) -> rusqlite::Result<TopUpOutcome> {
    let Some(b) = balance(tx, session_id)?.filter(|b| b.open) else {
        return Ok(TopUpOutcome::NotOpen);
    };
    let owner: Option<String> = tx
        .prepare_cached("SELECT session_id FROM mpp_session_credits WHERE payment_hash = ?1")?
        .query_row([&credit_hash[..]], |r| r.get(0))
        .optional()?;
    match owner {
        Some(owner) if owner == session_id => return Ok(TopUpOutcome::Replayed),
        Some(_) => return Ok(TopUpOutcome::Foreign),
        None => {}
    }
    tx.prepare_cached(
        "INSERT INTO mpp_session_credits (payment_hash, session_id, amount_sats, created_at) \
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        &credit_hash[..],
        session_id,
        to_i64(amount_sats),
        to_i64(now)
    ])?;
    tx.prepare_cached(
        "UPDATE mpp_sessions SET deposit_sats = ?2, updated_at = ?3 WHERE session_id = ?1",
    )?
    .execute(params![
        session_id,
        to_i64(b.deposit.saturating_add(amount_sats)),
        to_i64(now)
    ])?;
    add_lease(tx, session_id, holder, amount_sats)?;
    Ok(TopUpOutcome::Applied)
}

pub(super) fn lease(
    tx: &Connection,
    session_id: &str,
    want_sats: u64,
    holder: &str,
) -> rusqlite::Result<LeaseRaw> {
    let Some(b) = balance(tx, session_id)?.filter(|b| b.open) else {
        return Ok(LeaseRaw::NotOpen);
    };
    let available = b
        .deposit
        .saturating_sub(b.spent)
        .saturating_sub(leased(tx, session_id)?);
    let granted = want_sats.min(available);
    add_lease(tx, session_id, holder, granted)?;
    Ok(LeaseRaw::Granted {
        granted,
        payment_hash: b.payment_hash,
    })
}

/// [`crate::store::Op::SessionSettle`].
pub(super) fn settle(
    tx: &Connection,
    session_id: &str,
    holder: &str,
    (used, returned, refunded): (u64, u64, u64),
    now: u64,
) -> rusqlite::Result<()> {
    let held: Option<i64> = tx
        .prepare_cached(
            "SELECT leased_sats FROM mpp_session_leases WHERE session_id = ?1 AND holder = ?2",
        )?
        .query_row([session_id, holder], |r| r.get(0))
        .optional()?;
    let left = lease_after_settle(session_id, holder, held.map_or(0, to_u64), used, returned);
    if held.is_some() {
        if left == 0 {
            tx.prepare_cached(
                "DELETE FROM mpp_session_leases WHERE session_id = ?1 AND holder = ?2",
            )?
            .execute([session_id, holder])?;
        } else {
            tx.prepare_cached(
                "UPDATE mpp_session_leases SET leased_sats = ?3 \
                 WHERE session_id = ?1 AND holder = ?2",
            )?
            .execute(params![session_id, holder, to_i64(left)])?;
        }
    }
    let Some(b) = balance(tx, session_id)?.filter(|b| b.open) else {
        return Ok(());
    };
    // A settlement's refund comes off what was spent (never below 0), after the debits.
    let spent = b.spent.saturating_add(used).saturating_sub(refunded);
    if spent > b.deposit {
        tracing::warn!(
            session_id,
            holder,
            deposit = b.deposit,
            spent,
            "session spent more than its deposit; capped at the deposit"
        );
    }
    tx.prepare_cached(
        "UPDATE mpp_sessions SET spent_sats = ?2, updated_at = ?3 WHERE session_id = ?1",
    )?
    .execute(params![
        session_id,
        to_i64(spent.min(b.deposit)),
        to_i64(now)
    ])?;
    Ok(())
}

pub(super) fn close_session(
    tx: &Connection,
    session_id: &str,
    holder: &str,
    used: u64,
    returned: u64,
    now: u64,
) -> rusqlite::Result<CloseOutcome> {
    if balance(tx, session_id)?.is_none() {
        return Ok(CloseOutcome::NotOpen);
    }
    settle(tx, session_id, holder, (used, returned, 0), now)?;
    tx.prepare_cached("DELETE FROM mpp_session_leases WHERE session_id = ?1 AND holder = ?2")?
        .execute([session_id, holder])?;
    let Some(b) = balance(tx, session_id)?.filter(|b| b.open) else {
        return Ok(CloseOutcome::NotOpen);
    };
    let others = leased(tx, session_id)?;
    if others > 0 {
        return Ok(CloseOutcome::Outstanding { leased: others });
    }
    let refund = close_at(tx, session_id, &b, b.spent, now)?;
    Ok(CloseOutcome::Closed { refund })
}

pub(super) fn force_close(
    tx: &Connection,
    session_id: &str,
    now: u64,
) -> rusqlite::Result<CloseOutcome> {
    let Some(b) = balance(tx, session_id)?.filter(|b| b.open) else {
        return Ok(CloseOutcome::NotOpen);
    };
    let forfeited = leased(tx, session_id)?;
    tx.prepare_cached("DELETE FROM mpp_session_leases WHERE session_id = ?1")?
        .execute([session_id])?;
    let spent = b.spent.saturating_add(forfeited).min(b.deposit);
    if forfeited > 0 {
        tracing::warn!(
            session_id,
            forfeited,
            "session force-closed: other holders' leases forfeited"
        );
    }
    let refund = close_at(tx, session_id, &b, spent, now)?;
    Ok(CloseOutcome::Closed { refund })
}

pub(super) fn release_holder(conn: &Connection, holder: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM mpp_session_leases WHERE holder = ?1")?
        .execute([holder])
}

pub(super) fn idle_sessions(
    conn: &Connection,
    now: u64,
    limit: u32,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.session_id FROM mpp_sessions s WHERE s.status = 'open' \
         AND s.updated_at + s.idle_timeout_secs <= ?1 \
         AND NOT EXISTS (SELECT 1 FROM mpp_session_leases l WHERE l.session_id = s.session_id) \
         ORDER BY s.updated_at LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![to_i64(now), i64::from(limit)], |r| r.get(0))?;
    rows.collect()
}

fn refund_raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<RefundRaw> {
    Ok(RefundRaw {
        session_id: r.get(0)?,
        return_invoice: r.get(1)?,
        amount_sats: r.get(2)?,
        fee_limit_sats: r.get(3)?,
        status: r.get(4)?,
        attempts: r.get(5)?,
        last_error: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

pub(super) fn refunds_due(
    conn: &Connection,
    now: u64,
    limit: u32,
) -> rusqlite::Result<Vec<RefundRaw>> {
    let sql = format!(
        "{REFUND_SELECT} WHERE (status = 'pending' OR (status = 'failed' AND attempts < ?1)) \
         AND updated_at <= ?2 ORDER BY updated_at LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let cutoff = to_i64(now.saturating_sub(REFUND_RETRY_SECS));
    let rows = stmt.query_map(
        params![i64::from(REFUND_MAX_ATTEMPTS), cutoff, i64::from(limit)],
        refund_raw,
    )?;
    rows.collect()
}

/// A succeeded refund is final: a late failure from another attempt does not overwrite it.
pub(super) fn record_refund(
    conn: &Connection,
    session_id: &str,
    status: RefundStatus,
    last_error: Option<&str>,
    now: u64,
) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE mpp_refunds SET status = ?2, last_error = ?3, attempts = attempts + 1, \
             updated_at = ?4 WHERE session_id = ?1 AND status <> 'succeeded'",
        )?
        .execute(params![
            session_id,
            status.as_str(),
            last_error,
            to_i64(now)
        ])?;
    Ok(n == 1)
}

pub(super) fn session(conn: &Connection, session_id: &str) -> rusqlite::Result<Option<SessionRaw>> {
    let sql = format!("{SESSION_SELECT} WHERE s.session_id = ?1");
    conn.prepare_cached(&sql)?
        .query_row([session_id], |r| {
            Ok(SessionRaw {
                session_id: r.get(0)?,
                payment_hash: r.get(1)?,
                status: r.get(2)?,
                deposit_sats: r.get(3)?,
                spent_sats: r.get(4)?,
                idle_timeout_secs: r.get(5)?,
                return_invoice: r.get(6)?,
                created_at: r.get(7)?,
                updated_at: r.get(8)?,
                leased_sats: r.get(9)?,
            })
        })
        .optional()
}

pub(super) fn refund(conn: &Connection, session_id: &str) -> rusqlite::Result<Option<RefundRaw>> {
    let sql = format!("{REFUND_SELECT} WHERE session_id = ?1");
    conn.prepare_cached(&sql)?
        .query_row([session_id], refund_raw)
        .optional()
}
