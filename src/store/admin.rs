//! What the admin API reads and writes in the token database (Go aperture's `adminrpc.Admin`
//! shapes): services created through the API ([`DbService`], stored opaquely as JSON with a
//! change counter every instance polls), the ledger as transactions ([`TxRow`], filtered and
//! paged by [`TxQuery`]), and revenue ([`Stats`], [`DayRevenue`]). The values that cross the
//! [`Store`](super::Store) admin methods and the filter text both backends share live here; the
//! SQL is in `sqlite/admin.rs` and `postgres/admin.rs`.
//!
//! **What the ledger holds.** One row per invoice this proxy handed out, by payment hash:
//! - `l402`: an L402 challenge (its token id is random);
//! - `mpp_charge`: a Payment charge challenge (token id = payment hash, as Go's `mpp_charge`);
//! - `mpp_session_deposit`: a Payment session's deposit invoice (token id = payment hash, price =
//!   the deposit). Its kind is set when the challenge is recorded with it, and in any case when
//!   the session opens: the open credits the deposit, and the row is marked settled then (the
//!   client proved the payment), or inserted (service unknown: `""`) if its challenge record was
//!   lost;
//! - `mpp_session_top_up`: a top-up invoice of an open session, inserted (or updated) settled
//!   when the top-up is credited, under the deposit's service.
//!
//! A row is **pending** until the invoice settles (the bridge's settlement event, or the credit
//! above), then **settled** with `settled_at`. Go's rule holds: revenue and transaction counts
//! sum settled rows only, and date ranges apply to `settled_at` (both ends inclusive), so a list
//! filtered by dates shows settled rows only.
//!
//! **Sessions.** The requests a session pays for are debits of its balance, not ledger rows: the
//! ledger (and so revenue) counts what clients paid in, deposits and top-ups, when they paid it.
//! Unspent balances go back to clients at close; [`Stats::refunded_sats`] sums the refunds paid
//! in the range (their `updated_at`), so net session revenue is revenue − refunded. Go records no
//! deposits at all, so its revenue misses sessions entirely.

use super::db::{key32, to_u64, DbError, Key32};

/// Go's default page size, and its largest.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 1000;

/// One service created through the admin API. `spec` is the admin layer's JSON, stored as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbService {
    pub name: String,
    pub spec: String,
    /// Unix seconds.
    pub created_at: u64,
    pub updated_at: u64,
}

/// What a ledger row was sold as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxKind {
    L402,
    /// A Payment (MPP) charge.
    Charge,
    /// A Payment session's deposit.
    SessionDeposit,
    /// A Payment session's top-up.
    TopUp,
}

impl TxKind {
    pub const ALL: [TxKind; 4] = [
        TxKind::L402,
        TxKind::Charge,
        TxKind::SessionDeposit,
        TxKind::TopUp,
    ];

    /// The stored value (`kind` column).
    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::L402 => "l402",
            TxKind::Charge => "mpp_charge",
            TxKind::SessionDeposit => "mpp_session_deposit",
            TxKind::TopUp => "mpp_session_top_up",
        }
    }

    /// The kind of a stored value.
    pub fn parse(s: &str) -> Result<TxKind, DbError> {
        TxKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| DbError::Invalid {
                what: "transaction kind",
                value: s.to_owned(),
            })
    }

    /// The kind a challenge recorded without one has: a Payment charge when its token id is
    /// its payment hash, else L402.
    pub fn infer(token_id: &Key32, payment_hash: &Key32) -> TxKind {
        if token_id == payment_hash {
            TxKind::Charge
        } else {
            TxKind::L402
        }
    }
}

/// Go's transaction states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxState {
    Pending,
    Settled,
}

impl TxState {
    /// Go's wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            TxState::Pending => "pending",
            TxState::Settled => "settled",
        }
    }
}

/// Which transactions [`Store::list_transactions`](super::Store::list_transactions) returns,
/// newest first (`created_at`, then `id`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxQuery {
    /// Only this service's rows.
    pub service: Option<String>,
    pub state: Option<TxState>,
    /// Only rows of this kind (not in Go's API).
    pub kind: Option<TxKind>,
    /// Settled at or after (unix seconds; Go's `start_date`, applied to `settled_at`).
    pub start: Option<u64>,
    /// Settled at or before (Go's `end_date`).
    pub end: Option<u64>,
    /// Page size: 0 means [`DEFAULT_LIMIT`], more than [`MAX_LIMIT`] means that (Go's rule).
    pub limit: u32,
    pub offset: u32,
}

impl TxQuery {
    /// The page size actually used.
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        }
    }

    /// The WHERE clause over `ledger l`, with `mark` as the placeholder sigil.
    pub(crate) fn filter(&self, mark: char) -> Filter {
        let mut f = Filter::new(mark);
        if let Some(service) = &self.service {
            f.clause("l.service = ", Arg::Text(service.clone()));
        }
        match self.state {
            Some(TxState::Pending) => f.raw("l.settled_at IS NULL"),
            Some(TxState::Settled) => f.raw("l.settled_at IS NOT NULL"),
            None => {}
        }
        if let Some(kind) = self.kind {
            f.clause("l.kind = ", Arg::Text(kind.as_str().to_owned()));
        }
        f.settled_range(self.start, self.end);
        f
    }
}

/// One ledger row as the admin API shows it (Go's `Transaction`, plus its kind and revocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRow {
    /// Ascending in insertion order; stable.
    pub id: i64,
    pub token_id: Key32,
    pub payment_hash: Key32,
    pub service_name: String,
    pub price_sats: u64,
    pub state: TxState,
    /// Unix seconds.
    pub created_at: u64,
    pub settled_at: Option<u64>,
    pub kind: TxKind,
    /// When the token was revoked, if it was.
    pub revoked_at: Option<u64>,
}

/// Revenue of one service (settled rows only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRevenue {
    pub service_name: String,
    pub revenue_sats: u64,
    pub count: u64,
}

/// Go's `GetStats`, plus the counts per service and the refunds paid back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Σ price of the settled rows in the range.
    pub total_revenue_sats: u64,
    /// How many settled rows.
    pub transaction_count: u64,
    /// By service name, ascending.
    pub per_service: Vec<ServiceRevenue>,
    /// Σ session refunds paid (status `succeeded`) in the range, by their `updated_at`; not
    /// subtracted from the revenue.
    pub refunded_sats: u64,
}

/// Settled revenue of one service on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRevenue {
    /// Unix seconds of 00:00 UTC.
    pub day_start: u64,
    pub service_name: String,
    pub revenue_sats: u64,
    pub count: u64,
}

/// Ledger columns as both backends select them, in [`TxRaw`]'s order.
pub(crate) const TX_SELECT: &str = "SELECT l.id, l.token_id, l.payment_hash, l.service, \
    l.price_sat, l.created_at, l.settled_at, l.kind, r.revoked_at FROM ledger l \
    LEFT JOIN revoked_tokens r ON r.token_id = l.token_id";

/// Per-service sums of the settled rows; both backends append [`Filter::sql`] and
/// [`STATS_GROUP`].
pub(crate) const STATS_SELECT: &str = "SELECT l.service, \
    CAST(COALESCE(SUM(l.price_sat), 0) AS BIGINT), count(*) FROM ledger l";
pub(crate) const STATS_GROUP: &str = " GROUP BY l.service";

/// Per-day and per-service sums (UTC days), then [`Filter::sql`] and [`DAYS_GROUP`].
pub(crate) const DAYS_SELECT: &str = "SELECT (l.settled_at / 86400) * 86400, l.service, \
    CAST(COALESCE(SUM(l.price_sat), 0) AS BIGINT), count(*) FROM ledger l";
pub(crate) const DAYS_GROUP: &str = " GROUP BY (l.settled_at / 86400) * 86400, l.service";

/// Σ refunds paid back, then [`refunds_filter`]'s clause.
pub(crate) const REFUNDED_SELECT: &str =
    "SELECT CAST(COALESCE(SUM(amount_sats), 0) AS BIGINT) FROM mpp_refunds";

/// Refunds paid (`succeeded`) within `[from, to]` by `updated_at`.
pub(crate) fn refunds_filter(from: Option<u64>, to: Option<u64>, mark: char) -> Filter {
    let mut f = Filter::new(mark);
    f.raw("status = 'succeeded'");
    if let Some(from) = from {
        f.clause("updated_at >= ", Arg::Int(super::db::to_i64(from)));
    }
    if let Some(to) = to {
        f.clause("updated_at <= ", Arg::Int(super::db::to_i64(to)));
    }
    f
}

/// Day rows `(day_start, service, sats, count)` into [`DayRevenue`]s, by day then service.
pub(crate) fn days_of(rows: Vec<(i64, String, i64, i64)>) -> Vec<DayRevenue> {
    let mut days: Vec<DayRevenue> = rows
        .into_iter()
        .map(|(day, service_name, sats, count)| DayRevenue {
            day_start: to_u64(day),
            service_name,
            revenue_sats: to_u64(sats),
            count: to_u64(count),
        })
        .collect();
    days.sort_by(|a, b| (a.day_start, &a.service_name).cmp(&(b.day_start, &b.service_name)));
    days
}

/// A ledger row before its values are checked.
pub(crate) struct TxRaw {
    pub id: i64,
    pub token_id: Vec<u8>,
    pub payment_hash: Vec<u8>,
    pub service: String,
    pub price_sat: i64,
    pub created_at: i64,
    pub settled_at: Option<i64>,
    pub kind: String,
    pub revoked_at: Option<i64>,
}

impl TxRaw {
    pub(crate) fn into_row(self) -> Result<TxRow, DbError> {
        Ok(TxRow {
            id: self.id,
            token_id: key32(&self.token_id, "token id")?,
            payment_hash: key32(&self.payment_hash, "payment hash")?,
            service_name: self.service,
            price_sats: to_u64(self.price_sat),
            state: if self.settled_at.is_some() {
                TxState::Settled
            } else {
                TxState::Pending
            },
            created_at: to_u64(self.created_at),
            settled_at: self.settled_at.map(to_u64),
            kind: TxKind::parse(&self.kind)?,
            revoked_at: self.revoked_at.map(to_u64),
        })
    }
}

/// A page of raw rows and its total, checked.
pub(crate) fn page_of(raw: Vec<TxRaw>, total: i64) -> Result<(Vec<TxRow>, u64), DbError> {
    let rows = raw
        .into_iter()
        .map(TxRaw::into_row)
        .collect::<Result<_, _>>()?;
    Ok((rows, to_u64(total)))
}

/// Per-service sums into [`Stats`] (the totals are their sums), by service name.
pub(crate) fn stats_of(rows: Vec<(String, i64, i64)>, refunded: i64) -> Stats {
    let mut per_service: Vec<ServiceRevenue> = rows
        .into_iter()
        .map(|(service_name, sats, count)| ServiceRevenue {
            service_name,
            revenue_sats: to_u64(sats),
            count: to_u64(count),
        })
        .collect();
    per_service.sort_by(|a, b| a.service_name.cmp(&b.service_name));
    Stats {
        total_revenue_sats: per_service
            .iter()
            .fold(0, |a, s| a.saturating_add(s.revenue_sats)),
        transaction_count: per_service.iter().fold(0, |a, s| a.saturating_add(s.count)),
        per_service,
        refunded_sats: to_u64(refunded),
    }
}

/// One bound value of a [`Filter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
}

/// A WHERE clause built from optional conditions, with numbered placeholders (`?1` for SQLite,
/// `$1` for PostgreSQL) and their values in order.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    mark: char,
    clauses: Vec<String>,
    pub args: Vec<Arg>,
}

impl Filter {
    pub(crate) fn new(mark: char) -> Filter {
        Filter {
            mark,
            clauses: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Binds `arg` and returns its placeholder.
    pub(crate) fn bind(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("{}{}", self.mark, self.args.len())
    }

    /// `sql` followed by the placeholder of `arg`.
    pub(crate) fn clause(&mut self, sql: &str, arg: Arg) {
        let mark = self.bind(arg);
        self.clauses.push(format!("{sql}{mark}"));
    }

    pub(crate) fn raw(&mut self, sql: &str) {
        self.clauses.push(sql.to_owned());
    }

    /// Settled rows only, within `[from, to]` when given (Go's date range).
    pub(crate) fn settled(mut self, from: Option<u64>, to: Option<u64>) -> Filter {
        self.raw("l.settled_at IS NOT NULL");
        self.settled_range(from, to);
        self
    }

    fn settled_range(&mut self, from: Option<u64>, to: Option<u64>) {
        if let Some(from) = from {
            self.clause("l.settled_at >= ", Arg::Int(super::db::to_i64(from)));
        }
        if let Some(to) = to {
            self.clause("l.settled_at <= ", Arg::Int(super::db::to_i64(to)));
        }
    }

    /// ` WHERE a AND b`, or nothing.
    pub(crate) fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

#[cfg(test)]
pub(crate) mod suite;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_roundtrip_and_unknown_is_an_error() {
        for kind in TxKind::ALL {
            assert_eq!(TxKind::parse(kind.as_str()).unwrap(), kind);
        }
        assert!(matches!(
            TxKind::parse("lsat"),
            Err(DbError::Invalid { .. })
        ));
        assert_eq!(TxKind::infer(&[1; 32], &[1; 32]), TxKind::Charge);
        assert_eq!(TxKind::infer(&[1; 32], &[2; 32]), TxKind::L402);
    }

    #[test]
    fn limits_follow_go() {
        let q = |limit| TxQuery {
            limit,
            ..TxQuery::default()
        };
        assert_eq!(q(0).effective_limit(), 50);
        assert_eq!(q(1).effective_limit(), 1);
        assert_eq!(q(1000).effective_limit(), 1000);
        assert_eq!(q(5000).effective_limit(), 1000);
    }

    #[test]
    fn filters_number_their_placeholders() {
        assert_eq!(TxQuery::default().filter('?').sql(), "");
        let q = TxQuery {
            service: Some("a".into()),
            state: Some(TxState::Settled),
            kind: Some(TxKind::TopUp),
            start: Some(5),
            end: Some(9),
            ..TxQuery::default()
        };
        let mut f = q.filter('$');
        assert_eq!(
            f.sql(),
            " WHERE l.service = $1 AND l.settled_at IS NOT NULL AND l.kind = $2 \
             AND l.settled_at >= $3 AND l.settled_at <= $4"
        );
        assert_eq!(f.bind(Arg::Int(50)), "$5");
        assert_eq!(
            f.args,
            [
                Arg::Text("a".into()),
                Arg::Text("mpp_session_top_up".into()),
                Arg::Int(5),
                Arg::Int(9),
                Arg::Int(50)
            ]
        );
        let f = Filter::new('?').settled(None, Some(3));
        assert_eq!(
            f.sql(),
            " WHERE l.settled_at IS NOT NULL AND l.settled_at <= ?1"
        );
    }

    #[test]
    fn stats_total_their_services() {
        let s = stats_of(vec![("b".into(), 5, 1), ("a".into(), 30, 2)], 4);
        assert_eq!((s.total_revenue_sats, s.transaction_count), (35, 3));
        assert_eq!(s.per_service[1].service_name, "b");
        assert_eq!(s.refunded_sats, 4);
        let days = days_of(vec![
            (86_400, "b".into(), 1, 1),
            (0, "z".into(), 2, 1),
            (86_400, "a".into(), 3, 2),
        ]);
        let order: Vec<_> = days
            .iter()
            .map(|d| (d.day_start, d.service_name.as_str()))
            .collect();
        assert_eq!(order, [(0, "z"), (86_400, "a"), (86_400, "b")]);
        assert_eq!(
            refunds_filter(Some(1), Some(2), '?').sql(),
            " WHERE status = 'succeeded' AND updated_at >= ?1 AND updated_at <= ?2"
        );
    }
}
