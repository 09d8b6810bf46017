//! PostgreSQL implementation of [`Store`] (`dbbackend: postgres`), for a fleet of proxies that
//! must act as one: they share revocations and the ledger through it. Uses the synchronous
//! `postgres` client (it drives a private tokio runtime inside the calling thread), so it must
//! only run on the store thread or in a CLI command. A dropped connection is reopened on the
//! next call, so an outage heals once the server is back. Connections use TLS with
//! `requiressl: true` ([`tls`]). Revocations and service changes are announced with `NOTIFY`
//! in their own transaction, and [`listen`] hears them on a connection of its own, so the
//! instances sharing the database learn a change at once instead of at the next poll.

use postgres::{Client, Transaction};

use super::admin::{page_of, DayRevenue, DbService, Stats, TxKind, TxQuery, TxRow};
use super::db::{
    key32, to_i64, to_u64, unix_now, ChangeFeed, ChargeClaim, DbError, Key32, LedgerRaw, LedgerRow,
    Op, Store, TokenQuery, LEDGER_SELECT,
};
use super::session::{
    CloseOutcome, LeaseOutcome, OpenOutcome, RefundRaw, RefundRow, RefundStatus, SessionOpen,
    SessionRaw, SessionRow, TopUpOutcome,
};

mod admin;
mod bundles;
mod listen;
mod sessions;
mod tls;
mod usage;

pub use listen::{CHANNEL_REVOCATIONS, CHANNEL_SERVICES};
pub use tls::PgTarget;

/// Schema migrations, in order; the same tables as SQLite in PostgreSQL's dialect.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE ledger (
        payment_hash BYTEA PRIMARY KEY,
        token_id BYTEA NOT NULL,
        service TEXT NOT NULL,
        price_sat BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        settled_at BIGINT
    );
    CREATE INDEX ledger_token_id ON ledger (token_id);
    CREATE INDEX ledger_created_at ON ledger (created_at);
    CREATE TABLE revoked_tokens (
        seq BIGSERIAL PRIMARY KEY,
        token_id BYTEA NOT NULL UNIQUE,
        revoked_at BIGINT NOT NULL
    );
    CREATE TABLE legacy_keys (
        hash BYTEA PRIMARY KEY,
        root_key BYTEA NOT NULL,
        imported_at BIGINT NOT NULL
    );
",
    "
    CREATE TABLE mpp_consumed_charges (
        payment_hash BYTEA PRIMARY KEY,
        challenge_id TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        consumed_at BIGINT NOT NULL
    );
    CREATE INDEX mpp_consumed_charges_expires_at ON mpp_consumed_charges (expires_at);
",
    sessions::MIGRATION,
    admin::MIGRATION,
    usage::MIGRATION,
    bundles::MIGRATION,
];

/// Arbitrary constant for `pg_advisory_xact_lock`: instances starting together migrate in turn.
const MIGRATION_LOCK: i64 = 0x6170_6572_7475_7265; // "aperture"

/// The store in a PostgreSQL database.
pub struct PgStore {
    target: PgTarget,
    client: Option<Client>,
}

fn pg_err(context: &str) -> impl FnOnce(postgres::Error) -> DbError + '_ {
    move |source| DbError::Postgres {
        context: context.to_owned(),
        source,
    }
}

/// Connects with `dsn` (`postgres://user:pass@host:port/db?sslmode=disable`; see
/// [`PgTarget::from_dsn`]).
pub(crate) fn connect(dsn: &str) -> Result<Client, DbError> {
    PgTarget::from_dsn(dsn)?.connect()
}

impl PgStore {
    /// Connects with `dsn` ([`PgTarget::from_dsn`]) and (when `migrate`) brings the schema up
    /// to date.
    pub fn connect(dsn: &str, migrate: bool) -> Result<PgStore, DbError> {
        PgStore::open(PgTarget::from_dsn(dsn)?, migrate)
    }

    /// Connects to `target` and (when `migrate`) brings the schema up to date.
    pub fn open(target: PgTarget, migrate: bool) -> Result<PgStore, DbError> {
        let mut store = PgStore {
            client: Some(target.connect()?),
            target,
        };
        if migrate {
            store.migrate()?;
        }
        Ok(store)
    }

    /// The live connection, reconnecting after an outage closed the previous one.
    fn client(&mut self) -> Result<&mut Client, DbError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            self.client = Some(self.target.connect()?);
        }
        // Just set above when it was missing.
        self.client
            .as_mut()
            .ok_or_else(|| DbError::Unavailable("postgres: no connection".into()))
    }

    fn migrate(&mut self) -> Result<(), DbError> {
        let mut tx = self
            .client()?
            .transaction()
            .map_err(pg_err("migrate: begin"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(pg_err("migrate: lock"))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS aperture_schema (version BIGINT NOT NULL)")
            .map_err(pg_err("migrate: schema table"))?;
        let found: Option<i64> = tx
            .query_one("SELECT max(version) FROM aperture_schema", &[])
            .map_err(pg_err("migrate: read version"))?
            .get(0);
        let found = found.unwrap_or(0);
        let supported = MIGRATIONS.len() as i64;
        if found > supported {
            return Err(DbError::TooNew { found, supported });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch_execute(sql).map_err(pg_err("migrate: apply"))?;
            tx.execute(
                "INSERT INTO aperture_schema (version) VALUES ($1)",
                &[&(i as i64 + 1)],
            )
            .map_err(pg_err("migrate: record version"))?;
        }
        tx.commit().map_err(pg_err("migrate: commit"))
    }

    /// One transaction; `ON CONFLICT DO NOTHING` makes a concurrent claim of the same hash by
    /// another instance wait for this one and then affect no row: exactly one use wins.
    fn claim_inner(&mut self, claims: &[ChargeClaim]) -> Result<Vec<bool>, DbError> {
        let mut tx = self
            .client()?
            .transaction()
            .map_err(pg_err("claim charges"))?;
        let insert = tx
            .prepare(
                "INSERT INTO mpp_consumed_charges \
                 (payment_hash, challenge_id, expires_at, consumed_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (payment_hash) DO NOTHING",
            )
            .map_err(pg_err("claim charges"))?;
        let mut first = Vec::with_capacity(claims.len());
        for c in claims {
            let n = tx
                .execute(
                    &insert,
                    &[
                        &&c.payment_hash[..],
                        &c.challenge_id,
                        &to_i64(c.expires_at),
                        &to_i64(c.consumed_at),
                    ],
                )
                .map_err(pg_err("claim charges"))?;
            first.push(n == 1);
        }
        tx.commit().map_err(pg_err("claim charges"))?;
        Ok(first)
    }

    /// Runs `f` in a transaction and commits when `commit(&result)` says so (an outcome that
    /// changed nothing rolls back). A broken connection is replaced on the next call.
    fn write<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, postgres::Error>,
        commit: impl FnOnce(&T) -> bool,
    ) -> Result<T, DbError> {
        let result = (|| {
            let mut tx = self.client()?.transaction().map_err(pg_err(what))?;
            let out = f(&mut tx).map_err(pg_err(what))?;
            if commit(&out) {
                tx.commit().map_err(pg_err(what))?;
            }
            Ok(out)
        })();
        if result.is_err() {
            self.client = self.client.take().filter(|c| !c.is_closed());
        }
        result
    }

    /// A read or single statement outside a transaction.
    fn read<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, DbError> {
        f(self.client()?).map_err(pg_err(what))
    }

    fn apply_inner(&mut self, ops: &[Op]) -> Result<(), DbError> {
        let mut tx = self
            .client()?
            .transaction()
            .map_err(pg_err("write batch"))?;
        let mut sessions: Vec<String> = ops
            .iter()
            .filter_map(|op| match op {
                Op::SessionSettle { session_id, .. } => Some(session_id.clone()),
                _ => None,
            })
            .collect();
        sessions::lock_all(&mut tx, &mut sessions).map_err(pg_err("write batch: lock sessions"))?;
        let insert = tx
            .prepare(admin::INSERT_LEDGER)
            .map_err(pg_err("write batch"))?;
        let settle = tx
            .prepare(
                "UPDATE ledger SET settled_at = $2 WHERE payment_hash = $1 AND settled_at IS NULL",
            )
            .map_err(pg_err("write batch"))?;
        for op in ops {
            let mut record = |c: &super::db::Challenge, kind: TxKind| {
                tx.execute(
                    &insert,
                    &[
                        &&c.payment_hash[..],
                        &&c.token_id[..],
                        &c.service,
                        &to_i64(c.price_sat),
                        &to_i64(c.created_at),
                        &kind.as_str(),
                    ],
                )
            };
            match op {
                Op::Challenge(c) => record(c, TxKind::infer(&c.token_id, &c.payment_hash)),
                Op::Transaction { challenge, kind } => record(challenge, *kind),
                Op::Settle {
                    payment_hash,
                    settled_at,
                } => tx.execute(&settle, &[&&payment_hash[..], &to_i64(*settled_at)]),
                Op::SessionSettle {
                    session_id,
                    holder,
                    used_sats,
                    returned_sats,
                    refunded_sats,
                    now,
                } => sessions::settle(
                    &mut tx,
                    session_id,
                    holder,
                    (*used_sats, *returned_sats, *refunded_sats),
                    *now,
                )
                .map(|()| 1),
                Op::PendingUsage(report) => usage::insert(&mut tx, report),
                Op::UsageDelivered(id) => usage::delete(&mut tx, *id),
                Op::BundleCreated(row) => bundles::insert(&mut tx, row),
                Op::BundleDebited { token_id, tokens } => {
                    bundles::debit(&mut tx, token_id, *tokens)
                }
            }
            .map_err(pg_err("write batch"))?;
        }
        tx.commit().map_err(pg_err("write batch: commit"))
    }
}

impl Store for PgStore {
    fn claim_charges(&mut self, claims: &[ChargeClaim]) -> Result<Vec<bool>, DbError> {
        let result = self.claim_inner(claims);
        if result.is_err() {
            self.client = self.client.take().filter(|c| !c.is_closed());
        }
        result
    }

    fn bundle(&mut self, token_id: Key32) -> Result<Option<crate::store::BundleRow>, DbError> {
        let result = bundles::get(self.client()?, &token_id).map_err(pg_err("read a meter bundle"));
        if result.is_err() {
            self.client = self.client.take().filter(|c| !c.is_closed());
        }
        result
    }

    fn pending_usage(&mut self, limit: u32) -> Result<Vec<lnd_bridge::UsageReport>, DbError> {
        usage::load(self.client()?, limit).map_err(pg_err("read pending usage"))
    }

    fn prune_charges(&mut self, before: u64) -> Result<usize, DbError> {
        let n = self
            .client()?
            .execute(
                "DELETE FROM mpp_consumed_charges WHERE expires_at < $1",
                &[&to_i64(before)],
            )
            .map_err(pg_err("prune charges"))?;
        Ok(n as usize)
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), DbError> {
        let result = self.apply_inner(ops);
        if result.is_err() {
            // A broken connection is replaced on the next call; a healthy one is kept.
            self.client = self.client.take().filter(|c| !c.is_closed());
        }
        result
    }

    /// One statement (its own transaction): the insert and, when it added a row, the
    /// `NOTIFY` that every instance's listener hears once it commits.
    fn revoke(&mut self, token_id: Key32) -> Result<bool, DbError> {
        let rows = self
            .client()?
            .query(
                &format!(
                    "WITH added AS (INSERT INTO revoked_tokens (token_id, revoked_at) \
                     VALUES ($1, $2) ON CONFLICT (token_id) DO NOTHING RETURNING seq) \
                     SELECT pg_notify('{CHANNEL_REVOCATIONS}', seq::text) FROM added"
                ),
                &[&&token_id[..], &to_i64(unix_now())],
            )
            .map_err(pg_err("revoke"))?;
        Ok(rows.len() == 1)
    }

    fn change_feed(&self) -> Option<Box<dyn ChangeFeed>> {
        Some(Box::new(listen::Listener::new(&self.target)))
    }

    fn revoked_since(&mut self, cursor: i64) -> Result<(Vec<Key32>, i64), DbError> {
        let rows = self
            .client()?
            .query(
                "SELECT seq, token_id FROM revoked_tokens WHERE seq > $1 ORDER BY seq",
                &[&cursor],
            )
            .map_err(pg_err("read revocations"))?;
        let (mut ids, mut next) = (Vec::with_capacity(rows.len()), cursor);
        for row in rows {
            let seq: i64 = row.get(0);
            let id: &[u8] = row.get(1);
            ids.push(key32(id, "revoked token id")?);
            next = next.max(seq);
        }
        Ok((ids, next))
    }

    fn revoked_at(&mut self, token_id: Key32) -> Result<Option<u64>, DbError> {
        let row = self
            .client()?
            .query_opt(
                "SELECT revoked_at FROM revoked_tokens WHERE token_id = $1",
                &[&&token_id[..]],
            )
            .map_err(pg_err("read revocation"))?;
        Ok(row.map(|r| to_u64(r.get(0))))
    }

    fn list_tokens(&mut self, query: &TokenQuery) -> Result<Vec<LedgerRow>, DbError> {
        let limit: Option<i64> = (query.limit > 0).then_some(i64::from(query.limit));
        let client = self.client()?;
        let rows = match &query.token_id {
            Some(id) => client.query(
                &format!("{LEDGER_SELECT} WHERE l.token_id = $1 ORDER BY l.created_at DESC, l.id DESC LIMIT $2"),
                &[&&id[..], &limit],
            ),
            None => client.query(
                &format!("{LEDGER_SELECT} ORDER BY l.created_at DESC, l.id DESC LIMIT $1"),
                &[&limit],
            ),
        }
        .map_err(pg_err("list tokens"))?;
        rows.iter()
            .map(|r| {
                let raw = LedgerRaw {
                    service: r.get(2),
                    price_sat: r.get(3),
                    created_at: r.get(4),
                    settled_at: r.get(5),
                    revoked_at: r.get(6),
                };
                raw.into_row(r.get(0), r.get(1))
            })
            .collect()
    }

    fn import_legacy_keys(&mut self, keys: &[(Key32, Key32)]) -> Result<usize, DbError> {
        let mut tx = self
            .client()?
            .transaction()
            .map_err(pg_err("import legacy keys"))?;
        let stmt = tx
            .prepare(
                "INSERT INTO legacy_keys (hash, root_key, imported_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (hash) DO NOTHING",
            )
            .map_err(pg_err("import legacy keys"))?;
        let now = to_i64(unix_now());
        let mut added = 0;
        for (hash, key) in keys {
            added += tx
                .execute(&stmt, &[&&hash[..], &&key[..], &now])
                .map_err(pg_err("import legacy keys"))?;
        }
        tx.commit().map_err(pg_err("import legacy keys: commit"))?;
        Ok(usize::try_from(added).unwrap_or(usize::MAX))
    }

    fn legacy_root_key(&mut self, identifier_hash: &Key32) -> Result<Option<Key32>, DbError> {
        let row = self
            .client()?
            .query_opt(
                "SELECT root_key FROM legacy_keys WHERE hash = $1",
                &[&&identifier_hash[..]],
            )
            .map_err(pg_err("read legacy key"))?;
        row.map(|r| key32(r.get(0), "legacy root key")).transpose()
    }

    fn legacy_keys(&mut self) -> Result<Vec<(Key32, Key32)>, DbError> {
        let rows = self
            .client()?
            .query("SELECT hash, root_key FROM legacy_keys", &[])
            .map_err(pg_err("read legacy keys"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    key32(r.get(0), "legacy key hash")?,
                    key32(r.get(1), "legacy root key")?,
                ))
            })
            .collect()
    }

    fn open_session(&mut self, open: &SessionOpen) -> Result<OpenOutcome, DbError> {
        self.write(
            "open session",
            |tx| admin::open_session(tx, open),
            |o| *o == OpenOutcome::Opened,
        )
    }

    fn top_up(
        &mut self,
        session_id: &str,
        credit_hash: Key32,
        amount_sats: u64,
        holder: &str,
        now: u64,
    ) -> Result<TopUpOutcome, DbError> {
        self.write(
            "top up session",
            |tx| admin::top_up(tx, session_id, credit_hash, amount_sats, holder, now),
            |o| *o == TopUpOutcome::Applied,
        )
    }

    fn lease(
        &mut self,
        session_id: &str,
        want_sats: u64,
        holder: &str,
        _now: u64,
    ) -> Result<LeaseOutcome, DbError> {
        self.write(
            "lease session balance",
            |tx| sessions::lease(tx, session_id, want_sats, holder),
            |_| true,
        )?
        .into_outcome()
    }

    fn close_session(
        &mut self,
        session_id: &str,
        holder: &str,
        used_sats: u64,
        returned_sats: u64,
        now: u64,
    ) -> Result<CloseOutcome, DbError> {
        self.write(
            "close session",
            |tx| sessions::close_session(tx, session_id, holder, used_sats, returned_sats, now),
            |_| true,
        )
    }

    fn force_close(&mut self, session_id: &str, now: u64) -> Result<CloseOutcome, DbError> {
        self.write(
            "force-close session",
            |tx| sessions::force_close(tx, session_id, now),
            |_| true,
        )
    }

    fn release_holder(&mut self, holder: &str) -> Result<usize, DbError> {
        let n = self.read("release leases", |c| sessions::release_holder(c, holder))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn idle_sessions(&mut self, now: u64, limit: u32) -> Result<Vec<String>, DbError> {
        self.read("find idle sessions", |c| {
            sessions::idle_sessions(c, now, limit)
        })
    }

    fn refunds_due(&mut self, now: u64, limit: u32) -> Result<Vec<RefundRow>, DbError> {
        self.read("find refunds due", |c| sessions::refunds_due(c, now, limit))?
            .into_iter()
            .map(RefundRaw::into_row)
            .collect()
    }

    fn record_refund(
        &mut self,
        session_id: &str,
        status: RefundStatus,
        last_error: Option<&str>,
        now: u64,
    ) -> Result<bool, DbError> {
        self.read("record refund", |c| {
            sessions::record_refund(c, session_id, status, last_error, now)
        })
    }

    fn session(&mut self, session_id: &str) -> Result<Option<SessionRow>, DbError> {
        self.read("read session", |c| sessions::session(c, session_id))?
            .map(SessionRaw::into_row)
            .transpose()
    }

    fn refund(&mut self, session_id: &str) -> Result<Option<RefundRow>, DbError> {
        self.read("read refund", |c| sessions::refund(c, session_id))?
            .map(RefundRaw::into_row)
            .transpose()
    }

    fn list_db_services(&mut self) -> Result<Vec<DbService>, DbError> {
        self.read("list services", admin::list_services)
    }

    fn create_service(&mut self, name: &str, spec: &str, now: u64) -> Result<bool, DbError> {
        let create = |tx: &mut Transaction<'_>| admin::create_service(tx, name, spec, now);
        self.write("create service", create, |&done| done)
    }

    fn update_service(&mut self, name: &str, spec: &str, now: u64) -> Result<bool, DbError> {
        let update = |tx: &mut Transaction<'_>| admin::update_service(tx, name, spec, now);
        self.write("update service", update, |&done| done)
    }

    fn delete_service(&mut self, name: &str) -> Result<bool, DbError> {
        let delete = |tx: &mut Transaction<'_>| admin::delete_service(tx, name);
        self.write("delete service", delete, |&done| done)
    }

    fn services_version(&mut self) -> Result<i64, DbError> {
        self.read("read the services version", admin::services_version)
    }

    fn list_transactions(&mut self, query: &TxQuery) -> Result<(Vec<TxRow>, u64), DbError> {
        let (raw, total) =
            self.read("list transactions", |c| admin::list_transactions(c, query))?;
        page_of(raw, total)
    }

    fn stats(&mut self, from: Option<u64>, to: Option<u64>) -> Result<Stats, DbError> {
        self.read("read revenue", |c| admin::stats(c, from, to))
    }

    fn revenue_by_day(
        &mut self,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<Vec<DayRevenue>, DbError> {
        self.read("read revenue by day", |c| {
            admin::revenue_by_day(c, from, to)
        })
    }
}
