//! Payment sessions on PostgreSQL: migration 3 and each session method's statements, run inside
//! a transaction [`super::PgStore`] opened (READ COMMITTED). Every change to a session's balance
//! or leases first locks the session's row (`FOR UPDATE`), so instances sharing the database
//! take turns per session: a balance read and the lease granted from it cannot interleave with
//! another instance's. A write batch locks all its sessions up front, in id order, so two
//! instances' batches never deadlock.

use postgres::Transaction;

use crate::store::db::{to_i64, to_u64, Key32};
use crate::store::session::{
    lease_after_settle, new_refund, CloseOutcome, LeaseRaw, OpenOutcome, RefundRaw, RefundRow,
    RefundStatus, SessionOpen, SessionRaw, TopUpOutcome, REFUND_MAX_ATTEMPTS, REFUND_RETRY_SECS,
    REFUND_SELECT, SESSION_SELECT,
};

type PgResult<T> = Result<T, postgres::Error>;

/// Migration 3, as SQLite's in PostgreSQL's dialect.
pub(super) const MIGRATION: &str = "
    CREATE TABLE mpp_sessions (
        id BIGSERIAL PRIMARY KEY,
        session_id TEXT UNIQUE NOT NULL,
        payment_hash BYTEA NOT NULL,
        deposit_sats BIGINT NOT NULL DEFAULT 0,
        spent_sats BIGINT NOT NULL DEFAULT 0,
        return_invoice TEXT,
        status TEXT NOT NULL DEFAULT 'open',
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        idle_timeout_secs BIGINT NOT NULL DEFAULT 300
    );
    CREATE INDEX mpp_sessions_status_updated_at ON mpp_sessions (status, updated_at);
    CREATE TABLE mpp_session_credits (
        id BIGSERIAL PRIMARY KEY,
        payment_hash BYTEA UNIQUE NOT NULL,
        session_id TEXT NOT NULL,
        amount_sats BIGINT NOT NULL,
        created_at BIGINT NOT NULL
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
        session_id TEXT PRIMARY KEY,
        return_invoice TEXT NOT NULL,
        amount_sats BIGINT NOT NULL,
        fee_limit_sats BIGINT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'succeeded', 'failed', 'skipped')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX mpp_refunds_status_updated_at ON mpp_refunds (status, updated_at);
";

/// A session's balance columns, read (and locked) before it changes.
struct Balance {
    deposit: u64,
    spent: u64,
    open: bool,
    payment_hash: Vec<u8>,
    return_invoice: String,
}

/// Reads the session's row and locks it for the rest of the transaction.
fn lock(tx: &mut Transaction<'_>, session_id: &str) -> PgResult<Option<Balance>> {
    let row = tx.query_opt(
        "SELECT deposit_sats, spent_sats, status, payment_hash, return_invoice \
         FROM mpp_sessions WHERE session_id = $1 FOR UPDATE",
        &[&session_id],
    )?;
    Ok(row.map(|r| Balance {
        deposit: to_u64(r.get(0)),
        spent: to_u64(r.get(1)),
        open: r.get::<_, &str>(2) == "open",
        payment_hash: r.get(3),
        return_invoice: r.get::<_, Option<String>>(4).unwrap_or_default(),
    }))
}

/// Locks every session in `ids`, in id order (a batch's settles, before any of them runs).
pub(super) fn lock_all(tx: &mut Transaction<'_>, ids: &mut Vec<String>) -> PgResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    ids.sort_unstable();
    ids.dedup();
    tx.execute(
        "SELECT 1 FROM mpp_sessions WHERE session_id = ANY($1) ORDER BY session_id FOR UPDATE",
        &[&*ids],
    )?;
    Ok(())
}

fn leased(tx: &mut Transaction<'_>, session_id: &str) -> PgResult<u64> {
    let row = tx.query_one(
        "SELECT CAST(COALESCE(SUM(leased_sats), 0) AS BIGINT) FROM mpp_session_leases \
         WHERE session_id = $1",
        &[&session_id],
    )?;
    Ok(to_u64(row.get(0)))
}

fn add_lease(tx: &mut Transaction<'_>, session_id: &str, holder: &str, sats: u64) -> PgResult<()> {
    if sats == 0 {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO mpp_session_leases (session_id, holder, leased_sats) VALUES ($1, $2, $3) \
         ON CONFLICT (session_id, holder) DO UPDATE \
         SET leased_sats = mpp_session_leases.leased_sats + EXCLUDED.leased_sats",
        &[&session_id, &holder, &to_i64(sats)],
    )?;
    Ok(())
}

/// Marks the session closed at `spent` and inserts its refund.
fn close_at(
    tx: &mut Transaction<'_>,
    session_id: &str,
    b: &Balance,
    spent: u64,
    now: u64,
) -> PgResult<RefundRow> {
    tx.execute(
        "UPDATE mpp_sessions SET status = 'closed', spent_sats = $2, updated_at = $3 \
         WHERE session_id = $1",
        &[&session_id, &to_i64(spent), &to_i64(now)],
    )?;
    let r = new_refund(
        session_id,
        &b.return_invoice,
        b.deposit.saturating_sub(spent),
        now,
    );
    tx.execute(
        "INSERT INTO mpp_refunds (session_id, return_invoice, amount_sats, fee_limit_sats, \
         status, attempts, last_error, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 0, NULL, $6, $6)",
        &[
            &r.session_id,
            &r.return_invoice,
            &to_i64(r.amount_sats),
            &to_i64(r.fee_limit_sats),
            &r.status.as_str(),
            &to_i64(r.created_at),
        ],
    )?;
    Ok(r)
}

/// Inserts without looking first: a concurrent open of the same hash waits on the unique index
/// and then inserts nothing, and the caller rolls back.
pub(super) fn open_session(tx: &mut Transaction<'_>, o: &SessionOpen) -> PgResult<OpenOutcome> {
    let now = to_i64(o.now);
    let credited = tx.execute(
        "INSERT INTO mpp_session_credits (payment_hash, session_id, amount_sats, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (payment_hash) DO NOTHING",
        &[
            &&o.payment_hash[..],
            &o.session_id,
            &to_i64(o.deposit_sats),
            &now,
        ],
    )?;
    if credited == 0 {
        return Ok(OpenOutcome::Duplicate);
    }
    let created = tx.execute(
        "INSERT INTO mpp_sessions (session_id, payment_hash, deposit_sats, spent_sats, \
         return_invoice, status, created_at, updated_at, idle_timeout_secs) \
         VALUES ($1, $2, $3, 0, $4, 'open', $5, $5, $6) ON CONFLICT (session_id) DO NOTHING",
        &[
            &o.session_id,
            &&o.payment_hash[..],
            &to_i64(o.deposit_sats),
            &o.return_invoice,
            &now,
            &to_i64(o.idle_timeout_secs),
        ],
    )?;
    if created == 0 {
        return Ok(OpenOutcome::Duplicate);
    }
    add_lease(tx, &o.session_id, &o.holder, o.deposit_sats)?;
    Ok(OpenOutcome::Opened)
}

pub(super) fn top_up(
    tx: &mut Transaction<'_>,
    session_id: &str,
    credit_hash: Key32,
    amount_sats: u64,
    holder: &str,
    now: u64,
) -> PgResult<TopUpOutcome> {
    let Some(b) = lock(tx, session_id)?.filter(|b| b.open) else {
        return Ok(TopUpOutcome::NotOpen);
    };
    let credited = tx.execute(
        "INSERT INTO mpp_session_credits (payment_hash, session_id, amount_sats, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (payment_hash) DO NOTHING",
        &[
            &&credit_hash[..],
            &session_id,
            &to_i64(amount_sats),
            &to_i64(now),
        ],
    )?;
    if credited == 0 {
        let owner: String = tx
            .query_one(
                "SELECT session_id FROM mpp_session_credits WHERE payment_hash = $1",
                &[&&credit_hash[..]],
            )?
            .get(0);
        return Ok(if owner == session_id {
            TopUpOutcome::Replayed
        } else {
            TopUpOutcome::Foreign
        });
    }
    tx.execute(
        "UPDATE mpp_sessions SET deposit_sats = $2, updated_at = $3 WHERE session_id = $1",
        &[
            &session_id,
            &to_i64(b.deposit.saturating_add(amount_sats)),
            &to_i64(now),
        ],
    )?;
    add_lease(tx, session_id, holder, amount_sats)?;
    Ok(TopUpOutcome::Applied)
}

pub(super) fn lease(
    tx: &mut Transaction<'_>,
    session_id: &str,
    want_sats: u64,
    holder: &str,
) -> PgResult<LeaseRaw> {
    let Some(b) = lock(tx, session_id)?.filter(|b| b.open) else {
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

/// [`crate::store::Op::SessionSettle`]; the session's row is locked already (or is locked here).
pub(super) fn settle(
    tx: &mut Transaction<'_>,
    session_id: &str,
    holder: &str,
    (used, returned, refunded): (u64, u64, u64),
    now: u64,
) -> PgResult<()> {
    let b = lock(tx, session_id)?;
    let held: Option<i64> = tx
        .query_opt(
            "SELECT leased_sats FROM mpp_session_leases WHERE session_id = $1 AND holder = $2",
            &[&session_id, &holder],
        )?
        .map(|r| r.get(0));
    let left = lease_after_settle(session_id, holder, held.map_or(0, to_u64), used, returned);
    if held.is_some() {
        if left == 0 {
            tx.execute(
                "DELETE FROM mpp_session_leases WHERE session_id = $1 AND holder = $2",
                &[&session_id, &holder],
            )?;
        } else {
            tx.execute(
                "UPDATE mpp_session_leases SET leased_sats = $3 \
                 WHERE session_id = $1 AND holder = $2",
                &[&session_id, &holder, &to_i64(left)],
            )?;
        }
    }
    let Some(b) = b.filter(|b| b.open) else {
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
    tx.execute(
        "UPDATE mpp_sessions SET spent_sats = $2, updated_at = $3 WHERE session_id = $1",
        &[&session_id, &to_i64(spent.min(b.deposit)), &to_i64(now)],
    )?;
    Ok(())
}

pub(super) fn close_session(
    tx: &mut Transaction<'_>,
    session_id: &str,
    holder: &str,
    used: u64,
    returned: u64,
    now: u64,
) -> PgResult<CloseOutcome> {
    if lock(tx, session_id)?.is_none() {
        return Ok(CloseOutcome::NotOpen);
    }
    settle(tx, session_id, holder, (used, returned, 0), now)?;
    tx.execute(
        "DELETE FROM mpp_session_leases WHERE session_id = $1 AND holder = $2",
        &[&session_id, &holder],
    )?;
    let Some(b) = lock(tx, session_id)?.filter(|b| b.open) else {
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
    tx: &mut Transaction<'_>,
    session_id: &str,
    now: u64,
) -> PgResult<CloseOutcome> {
    let Some(b) = lock(tx, session_id)?.filter(|b| b.open) else {
        return Ok(CloseOutcome::NotOpen);
    };
    let forfeited = leased(tx, session_id)?;
    tx.execute(
        "DELETE FROM mpp_session_leases WHERE session_id = $1",
        &[&session_id],
    )?;
    if forfeited > 0 {
        tracing::warn!(
            session_id,
            forfeited,
            "session force-closed: other holders' leases forfeited"
        );
    }
    let spent = b.spent.saturating_add(forfeited).min(b.deposit);
    let refund = close_at(tx, session_id, &b, spent, now)?;
    Ok(CloseOutcome::Closed { refund })
}

pub(super) fn release_holder(client: &mut postgres::Client, holder: &str) -> PgResult<u64> {
    client.execute(
        "DELETE FROM mpp_session_leases WHERE holder = $1",
        &[&holder],
    )
}

pub(super) fn idle_sessions(
    client: &mut postgres::Client,
    now: u64,
    limit: u32,
) -> PgResult<Vec<String>> {
    let rows = client.query(
        "SELECT s.session_id FROM mpp_sessions s WHERE s.status = 'open' \
         AND s.updated_at + s.idle_timeout_secs <= $1 \
         AND NOT EXISTS (SELECT 1 FROM mpp_session_leases l WHERE l.session_id = s.session_id) \
         ORDER BY s.updated_at LIMIT $2",
        &[&to_i64(now), &i64::from(limit)],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn refund_raw(r: &postgres::Row) -> RefundRaw {
    RefundRaw {
        session_id: r.get(0),
        return_invoice: r.get(1),
        amount_sats: r.get(2),
        fee_limit_sats: r.get(3),
        status: r.get(4),
        attempts: i64::from(r.get::<_, i32>(5)),
        last_error: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
    }
}

pub(super) fn refunds_due(
    client: &mut postgres::Client,
    now: u64,
    limit: u32,
) -> PgResult<Vec<RefundRaw>> {
    let sql = format!(
        "{REFUND_SELECT} WHERE (status = 'pending' OR (status = 'failed' AND attempts < $1)) \
         AND updated_at <= $2 ORDER BY updated_at LIMIT $3"
    );
    let max = i32::try_from(REFUND_MAX_ATTEMPTS).unwrap_or(i32::MAX);
    let cutoff = to_i64(now.saturating_sub(REFUND_RETRY_SECS));
    let rows = client.query(&sql, &[&max, &cutoff, &i64::from(limit)])?;
    Ok(rows.iter().map(refund_raw).collect())
}

/// A succeeded refund is final: a late failure from another attempt does not overwrite it.
pub(super) fn record_refund(
    client: &mut postgres::Client,
    session_id: &str,
    status: RefundStatus,
    last_error: Option<&str>,
    now: u64,
) -> PgResult<bool> {
    let n = client.execute(
        "UPDATE mpp_refunds SET status = $2, last_error = $3, attempts = attempts + 1, \
         updated_at = $4 WHERE session_id = $1 AND status <> 'succeeded'",
        &[&session_id, &status.as_str(), &last_error, &to_i64(now)],
    )?;
    Ok(n == 1)
}

pub(super) fn session(
    client: &mut postgres::Client,
    session_id: &str,
) -> PgResult<Option<SessionRaw>> {
    let sql = format!("{SESSION_SELECT} WHERE s.session_id = $1");
    let row = client.query_opt(&sql, &[&session_id])?;
    Ok(row.map(|r| SessionRaw {
        session_id: r.get(0),
        payment_hash: r.get(1),
        status: r.get(2),
        deposit_sats: r.get(3),
        spent_sats: r.get(4),
        idle_timeout_secs: r.get(5),
        return_invoice: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
        leased_sats: r.get(9),
    }))
}

pub(super) fn refund(
    client: &mut postgres::Client,
    session_id: &str,
) -> PgResult<Option<RefundRaw>> {
    let sql = format!("{REFUND_SELECT} WHERE session_id = $1");
    Ok(client
        .query_opt(&sql, &[&session_id])?
        .map(|r| refund_raw(&r)))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use crate::store::postgres::PgStore;
    use crate::store::session::suite::{self, Ids};
    use crate::store::session::{LeaseOutcome, OpenOutcome};
    use crate::store::Store;

    /// `APERTURE_TEST_PG`, or a printed skip outside CI; in CI its absence fails the test.
    fn pg_url() -> Option<String> {
        match std::env::var("APERTURE_TEST_PG") {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var_os("CI").is_some() => {
                panic!("CI is set but APERTURE_TEST_PG is not: PostgreSQL must run for the store tests (scripts/test.sh starts one)")
            }
            _ => {
                eprintln!("skipping: APERTURE_TEST_PG is unset (scripts/test.sh starts a PostgreSQL and sets it)");
                None
            }
        }
    }

    #[test]
    fn sessions() {
        let Some(url) = pg_url() else { return };
        let mut s = PgStore::connect(&url, true).unwrap();
        suite::all(&mut s);
    }

    /// Two instances (two connections, two threads) lease the same balances at the same moment,
    /// each asking for all of it, and spend what they got: per session, together they get
    /// exactly the deposit, never more.
    #[test]
    fn two_holders_never_spend_a_balance_twice() {
        let Some(url) = pg_url() else { return };
        const DEPOSIT: u64 = 50;
        const SESSIONS: usize = 100;
        let ids = Ids::new();
        let mut s = PgStore::connect(&url, true).unwrap();
        let opener = ids.holder("opener");
        let sessions: Arc<Vec<String>> = Arc::new(
            (0..SESSIONS)
                .map(|_| {
                    let id = suite::opened(&mut s, &ids, DEPOSIT, &opener);
                    s.settle_session(&id, &opener, 0, DEPOSIT, 1).unwrap();
                    id
                })
                .collect(),
        );
        let start = Arc::new(Barrier::new(2));
        let threads: Vec<_> = ["b", "c"]
            .into_iter()
            .map(|name| {
                let (url, sessions, start) = (url.clone(), sessions.clone(), start.clone());
                let holder = ids.holder(name);
                std::thread::spawn(move || {
                    let mut s = PgStore::connect(&url, true).unwrap();
                    let mut got = Vec::new();
                    for id in sessions.iter() {
                        start.wait();
                        let mut total = 0;
                        // The whole balance, then whatever is left, until nothing is.
                        for want in [DEPOSIT, DEPOSIT] {
                            let LeaseOutcome::Granted { granted, .. } =
                                s.lease(id, want, &holder, 1).unwrap()
                            else {
                                panic!("not open");
                            };
                            total += granted;
                        }
                        s.settle_session(id, &holder, total, 0, 2).unwrap();
                        got.push(total);
                    }
                    got
                })
            })
            .collect();
        let got: Vec<Vec<u64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        for (i, id) in sessions.iter().enumerate() {
            assert_eq!(
                got[0][i] + got[1][i],
                DEPOSIT,
                "session {i}: {} + {}",
                got[0][i],
                got[1][i]
            );
            let row = s.session(id).unwrap().unwrap();
            assert_eq!((row.spent_sats, row.leased_sats), (DEPOSIT, 0));
        }
        ids.tidy(&mut s);
    }

    /// Two instances opening the same deposit at once: exactly one session.
    #[test]
    fn a_deposit_opens_one_session_across_instances() {
        let Some(url) = pg_url() else { return };
        let ids = Ids::new();
        for _ in 0..20 {
            let open = ids.open(ids.hash(), 100, &ids.holder("a"), 1);
            let start = Arc::new(Barrier::new(2));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (url, open, start) = (url.clone(), open.clone(), start.clone());
                    std::thread::spawn(move || {
                        let mut s = PgStore::connect(&url, true).unwrap();
                        start.wait();
                        s.open_session(&open).unwrap()
                    })
                })
                .collect();
            let mut outcomes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            outcomes.sort_by_key(|o| *o == OpenOutcome::Duplicate);
            assert_eq!(outcomes, [OpenOutcome::Opened, OpenOutcome::Duplicate]);
        }
        ids.tidy(&mut PgStore::connect(&url, true).unwrap());
    }
}
