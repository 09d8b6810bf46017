//! SQLite implementation of [`Store`], the embedded default (`dbbackend: sqlite`). Opened like Go
//! aperture opens its file: WAL, `synchronous=FULL` (a commit survives power loss, so no minted
//! or revoked row is torn or lost), `busy_timeout=5000` and immediate write transactions, so a
//! CLI command and a running proxy can share the file. Blocking: store thread or CLI only.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::admin::{page_of, DayRevenue, DbService, Stats, TxKind, TxQuery, TxRow};
use super::db::{
    key32, to_i64, to_u64, unix_now, ChargeClaim, DbError, Key32, LedgerRaw, LedgerRow, Op, Store,
    TokenQuery, LEDGER_SELECT,
};
use super::session::{
    CloseOutcome, LeaseOutcome, OpenOutcome, RefundRaw, RefundRow, RefundStatus, SessionOpen,
    SessionRaw, SessionRow, TopUpOutcome,
};

mod admin;
mod bundles;
mod sessions;
mod usage;

/// Schema migrations, in order; version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE ledger (
        payment_hash BLOB PRIMARY KEY NOT NULL,
        token_id BLOB NOT NULL,
        service TEXT NOT NULL,
        price_sat INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        settled_at INTEGER
    );
    CREATE INDEX ledger_token_id ON ledger (token_id);
    CREATE INDEX ledger_created_at ON ledger (created_at);
    CREATE TABLE revoked_tokens (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        token_id BLOB NOT NULL UNIQUE,
        revoked_at INTEGER NOT NULL
    );
    CREATE TABLE legacy_keys (
        hash BLOB PRIMARY KEY NOT NULL,
        root_key BLOB NOT NULL,
        imported_at INTEGER NOT NULL
    );
",
    "
    CREATE TABLE mpp_consumed_charges (
        payment_hash BLOB PRIMARY KEY NOT NULL,
        challenge_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        consumed_at INTEGER NOT NULL
    );
    CREATE INDEX mpp_consumed_charges_expires_at ON mpp_consumed_charges (expires_at);
",
    sessions::MIGRATION,
    admin::MIGRATION,
    usage::MIGRATION,
    bundles::MIGRATION,
];

/// The store in one SQLite file.
pub struct SqliteStore {
    conn: Connection,
    path: String,
}

impl SqliteStore {
    /// Opens (creating the file and its directory, mode 0700, when missing) and migrates.
    pub fn open(path: &Path, migrate: bool) -> Result<SqliteStore, DbError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            super::create_basedir(dir).map_err(|e| DbError::Dir {
                path: shown.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
        let conn = Connection::open(path).map_err(|source| DbError::Sqlite {
            context: format!("open {shown}"),
            source,
        })?;
        let mut store = SqliteStore { conn, path: shown };
        store.pragmas()?;
        if migrate {
            store.migrate()?;
        }
        Ok(store)
    }

    fn err(&self, what: &str) -> impl FnOnce(rusqlite::Error) -> DbError + '_ {
        let context = format!("{what} ({})", self.path);
        move |source| DbError::Sqlite { context, source }
    }

    /// Runs `f` in an immediate transaction and commits when `commit(&result)` says so
    /// (an outcome that changed nothing rolls back).
    fn write<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
        commit: impl FnOnce(&T) -> bool,
    ) -> Result<T, DbError> {
        let context = format!("{what} ({})", self.path);
        let err = |source| DbError::Sqlite {
            context: context.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let out = f(&tx).map_err(err)?;
        if commit(&out) {
            tx.commit().map_err(err)?;
        }
        Ok(out)
    }

    fn pragmas(&mut self) -> Result<(), DbError> {
        self.conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(self.err("busy_timeout"))?;
        // `journal_mode` answers with a row, so it is read rather than executed.
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(self.err("journal_mode=WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %self.path, mode, "sqlite did not switch to WAL");
        }
        self.conn
            // 512 KiB of page cache (SQLite's default is 2 MiB per connection): the store
            // appends and looks rows up by key, the kernel's page cache holds the file anyway,
            // and a proxy's resident memory should not creep up as its ledger grows.
            .execute_batch(
                "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA cache_size=-512;",
            )
            .map_err(self.err("pragmas"))
    }

    fn migrate(&mut self) -> Result<(), DbError> {
        let path = self.path.clone();
        let err = |what: &str| {
            let context = format!("migrate: {what} ({path})");
            move |source| DbError::Sqlite { context, source }
        };
        // Immediate: two processes opening a fresh file at once migrate one after the other.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin"))?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS aperture_schema (version INTEGER NOT NULL)")
            .map_err(err("schema table"))?;
        let found: Option<i64> = tx
            .query_row("SELECT max(version) FROM aperture_schema", [], |r| r.get(0))
            .map_err(err("read version"))?;
        let found = found.unwrap_or(0);
        let supported = MIGRATIONS.len() as i64;
        if found > supported {
            return Err(DbError::TooNew { found, supported });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(sql).map_err(err("apply"))?;
            tx.execute(
                "INSERT INTO aperture_schema (version) VALUES (?1)",
                [i as i64 + 1],
            )
            .map_err(err("record version"))?;
        }
        tx.commit().map_err(err("commit"))
    }
}

fn ledger_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Vec<u8>, Vec<u8>, LedgerRaw)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        LedgerRaw {
            service: r.get(2)?,
            price_sat: r.get(3)?,
            created_at: r.get(4)?,
            settled_at: r.get(5)?,
            revoked_at: r.get(6)?,
        },
    ))
}

impl Store for SqliteStore {
    fn apply(&mut self, ops: &[Op]) -> Result<(), DbError> {
        let path = self.path.clone();
        let err = move |source| DbError::Sqlite {
            context: format!("write batch ({path})"),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        {
            let mut insert = tx.prepare_cached(admin::INSERT_LEDGER).map_err(&err)?;
            let mut settle = tx
                .prepare_cached(
                    "UPDATE ledger SET settled_at = ?2 \
                     WHERE payment_hash = ?1 AND settled_at IS NULL",
                )
                .map_err(&err)?;
            for op in ops {
                let mut record = |c: &super::db::Challenge, kind: TxKind| {
                    insert.execute(params![
                        &c.payment_hash[..],
                        &c.token_id[..],
                        c.service,
                        to_i64(c.price_sat),
                        to_i64(c.created_at),
                        kind.as_str()
                    ])
                };
                match op {
                    Op::Challenge(c) => record(c, TxKind::infer(&c.token_id, &c.payment_hash)),
                    Op::Transaction { challenge, kind } => record(challenge, *kind),
                    Op::Settle {
                        payment_hash,
                        settled_at,
                    } => settle.execute(params![&payment_hash[..], to_i64(*settled_at)]),
                    Op::SessionSettle {
                        session_id,
                        holder,
                        used_sats,
                        returned_sats,
                        refunded_sats,
                        now,
                    } => {
                        let sats = (*used_sats, *returned_sats, *refunded_sats);
                        sessions::settle(&tx, session_id, holder, sats, *now).map(|()| 1)
                    }
                    Op::PendingUsage(report) => usage::insert(&tx, report),
                    Op::UsageDelivered(id) => usage::delete(&tx, *id),
                    Op::BundleCreated(row) => bundles::insert(&tx, row),
                    Op::BundleDebited { token_id, tokens } => {
                        bundles::debit(&tx, token_id, *tokens)
                    }
                }
                .map_err(&err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn bundle(&mut self, token_id: Key32) -> Result<Option<crate::store::BundleRow>, DbError> {
        bundles::get(&self.conn, &token_id).map_err(|source| DbError::Sqlite {
            context: format!("read a meter bundle ({})", self.path),
            source,
        })
    }

    fn pending_usage(&mut self, limit: u32) -> Result<Vec<lnd_bridge::UsageReport>, DbError> {
        usage::load(&self.conn, limit).map_err(|source| DbError::Sqlite {
            context: format!("read pending usage ({})", self.path),
            source,
        })
    }

    fn revoke(&mut self, token_id: Key32) -> Result<bool, DbError> {
        let n = self
            .conn
            .execute(
                "INSERT INTO revoked_tokens (token_id, revoked_at) VALUES (?1, ?2) \
                 ON CONFLICT (token_id) DO NOTHING",
                params![&token_id[..], to_i64(unix_now())],
            )
            .map_err(self.err("revoke"))?;
        Ok(n == 1)
    }

    fn revoked_since(&mut self, cursor: i64) -> Result<(Vec<Key32>, i64), DbError> {
        let path = self.path.clone();
        let err = move |source| DbError::Sqlite {
            context: format!("read revocations ({path})"),
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, token_id FROM revoked_tokens WHERE seq > ?1 ORDER BY seq")
            .map_err(&err)?;
        let rows = stmt
            .query_map([cursor], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(&err)?;
        let (mut ids, mut next) = (Vec::new(), cursor);
        for row in rows {
            let (seq, id) = row.map_err(&err)?;
            ids.push(key32(&id, "revoked token id")?);
            next = next.max(seq);
        }
        Ok((ids, next))
    }

    fn revoked_at(&mut self, token_id: Key32) -> Result<Option<u64>, DbError> {
        let at: Option<i64> = self
            .conn
            .query_row(
                "SELECT revoked_at FROM revoked_tokens WHERE token_id = ?1",
                [&token_id[..]],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err("read revocation"))?;
        Ok(at.map(to_u64))
    }

    fn list_tokens(&mut self, query: &TokenQuery) -> Result<Vec<LedgerRow>, DbError> {
        let path = self.path.clone();
        let err = move |source| DbError::Sqlite {
            context: format!("list tokens ({path})"),
            source,
        };
        let limit = if query.limit == 0 {
            -1
        } else {
            i64::from(query.limit)
        };
        let raw: Vec<_> = match &query.token_id {
            Some(id) => {
                let sql = format!("{LEDGER_SELECT} WHERE l.token_id = ?1 ORDER BY l.created_at DESC, l.id DESC LIMIT ?2");
                let mut stmt = self.conn.prepare(&sql).map_err(&err)?;
                let rows = stmt
                    .query_map(params![&id[..], limit], ledger_row)
                    .map_err(&err)?;
                rows.collect::<Result<_, _>>().map_err(&err)?
            }
            None => {
                let sql = format!("{LEDGER_SELECT} ORDER BY l.created_at DESC, l.id DESC LIMIT ?1");
                let mut stmt = self.conn.prepare(&sql).map_err(&err)?;
                let rows = stmt.query_map([limit], ledger_row).map_err(&err)?;
                rows.collect::<Result<_, _>>().map_err(&err)?
            }
        };
        raw.into_iter()
            .map(|(token_id, hash, rest)| rest.into_row(&token_id, &hash))
            .collect()
    }

    fn claim_charges(&mut self, claims: &[ChargeClaim]) -> Result<Vec<bool>, DbError> {
        let path = self.path.clone();
        let err = move |source| DbError::Sqlite {
            context: format!("claim charges ({path})"),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let mut first = Vec::with_capacity(claims.len());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO mpp_consumed_charges \
                     (payment_hash, challenge_id, expires_at, consumed_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (payment_hash) DO NOTHING",
                )
                .map_err(&err)?;
            for c in claims {
                let n = insert
                    .execute(params![
                        &c.payment_hash[..],
                        c.challenge_id,
                        to_i64(c.expires_at),
                        to_i64(c.consumed_at)
                    ])
                    .map_err(&err)?;
                first.push(n == 1);
            }
        }
        tx.commit().map_err(err)?;
        Ok(first)
    }

    fn prune_charges(&mut self, before: u64) -> Result<usize, DbError> {
        let path = self.path.clone();
        self.conn
            .execute(
                "DELETE FROM mpp_consumed_charges WHERE expires_at < ?1",
                params![to_i64(before)],
            )
            .map_err(|source| DbError::Sqlite {
                context: format!("prune charges ({path})"),
                source,
            })
    }

    fn import_legacy_keys(&mut self, keys: &[(Key32, Key32)]) -> Result<usize, DbError> {
        let path = self.path.clone();
        let err = move |source| DbError::Sqlite {
            context: format!("import legacy keys ({path})"),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let mut added = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO legacy_keys (hash, root_key, imported_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (hash) DO NOTHING",
                )
                .map_err(&err)?;
            let now = to_i64(unix_now());
            for (hash, key) in keys {
                added += stmt
                    .execute(params![&hash[..], &key[..], now])
                    .map_err(&err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(added)
    }

    fn legacy_root_key(&mut self, identifier_hash: &Key32) -> Result<Option<Key32>, DbError> {
        let key: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT root_key FROM legacy_keys WHERE hash = ?1",
                [&identifier_hash[..]],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err("read legacy key"))?;
        key.map(|k| key32(&k, "legacy root key")).transpose()
    }

    fn legacy_keys(&mut self) -> Result<Vec<(Key32, Key32)>, DbError> {
        let path = self.path.clone();
        let err = move |source| DbError::Sqlite {
            context: format!("read legacy keys ({path})"),
            source,
        };
        let mut stmt = self
            .conn
            .prepare("SELECT hash, root_key FROM legacy_keys")
            .map_err(&err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(&err)?;
        let mut out = Vec::new();
        for row in rows {
            let (hash, key) = row.map_err(&err)?;
            out.push((
                key32(&hash, "legacy key hash")?,
                key32(&key, "legacy root key")?,
            ));
        }
        Ok(out)
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
        sessions::release_holder(&self.conn, holder).map_err(self.err("release leases"))
    }

    fn idle_sessions(&mut self, now: u64, limit: u32) -> Result<Vec<String>, DbError> {
        sessions::idle_sessions(&self.conn, now, limit).map_err(self.err("find idle sessions"))
    }

    fn refunds_due(&mut self, now: u64, limit: u32) -> Result<Vec<RefundRow>, DbError> {
        sessions::refunds_due(&self.conn, now, limit)
            .map_err(self.err("find refunds due"))?
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
        sessions::record_refund(&self.conn, session_id, status, last_error, now)
            .map_err(self.err("record refund"))
    }

    fn session(&mut self, session_id: &str) -> Result<Option<SessionRow>, DbError> {
        sessions::session(&self.conn, session_id)
            .map_err(self.err("read session"))?
            .map(SessionRaw::into_row)
            .transpose()
    }

    fn refund(&mut self, session_id: &str) -> Result<Option<RefundRow>, DbError> {
        sessions::refund(&self.conn, session_id)
            .map_err(self.err("read refund"))?
            .map(RefundRaw::into_row)
            .transpose()
    }

    fn list_db_services(&mut self) -> Result<Vec<DbService>, DbError> {
        admin::list_services(&self.conn).map_err(self.err("list services"))
    }

    fn create_service(&mut self, name: &str, spec: &str, now: u64) -> Result<bool, DbError> {
        let create = |tx: &Connection| admin::create_service(tx, name, spec, now);
        self.write("create service", create, |&done| done)
    }

    fn update_service(&mut self, name: &str, spec: &str, now: u64) -> Result<bool, DbError> {
        let update = |tx: &Connection| admin::update_service(tx, name, spec, now);
        self.write("update service", update, |&done| done)
    }

    fn delete_service(&mut self, name: &str) -> Result<bool, DbError> {
        let delete = |tx: &Connection| admin::delete_service(tx, name);
        self.write("delete service", delete, |&done| done)
    }

    fn services_version(&mut self) -> Result<i64, DbError> {
        admin::services_version(&self.conn).map_err(self.err("read the services version"))
    }

    fn list_transactions(&mut self, query: &TxQuery) -> Result<(Vec<TxRow>, u64), DbError> {
        let context = format!("list transactions ({})", self.path);
        let (raw, total) = admin::list_transactions(&mut self.conn, query)
            .map_err(|source| DbError::Sqlite { context, source })?;
        page_of(raw, total)
    }

    fn stats(&mut self, from: Option<u64>, to: Option<u64>) -> Result<Stats, DbError> {
        let context = format!("read revenue ({})", self.path);
        admin::stats(&mut self.conn, from, to).map_err(|source| DbError::Sqlite { context, source })
    }

    fn revenue_by_day(
        &mut self,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<Vec<DayRevenue>, DbError> {
        admin::revenue_by_day(&self.conn, from, to).map_err(self.err("read revenue by day"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::Challenge;

    fn challenge(n: u8, created_at: u64) -> Challenge {
        Challenge {
            token_id: [n; 32],
            payment_hash: [n + 100; 32],
            service: "svc".into(),
            price_sat: 10 + u64::from(n),
            created_at,
        }
    }

    #[test]
    fn ledger_settle_revoke_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/aperture.db");
        let mut s = SqliteStore::open(&path, true).unwrap();
        s.apply(&[
            Op::Challenge(challenge(1, 100)),
            Op::Challenge(challenge(2, 200)),
            Op::Challenge(challenge(1, 999)), // same payment hash: ignored
        ])
        .unwrap();
        s.mark_settled([101; 32], 150).unwrap();
        s.mark_settled([101; 32], 160).unwrap(); // first settlement wins
        assert!(s.revoke([2; 32]).unwrap());
        assert!(!s.revoke([2; 32]).unwrap());
        let rows = s.list_tokens(&TokenQuery::default()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].token_id, rows[0].settled_at), ([2; 32], None));
        assert!(rows[0].revoked_at.is_some());
        assert_eq!(
            (
                rows[1].token_id,
                rows[1].price_sat,
                rows[1].created_at,
                rows[1].settled_at
            ),
            ([1; 32], 11, 100, Some(150))
        );
        assert_eq!(rows[1].revoked_at, None);
        let (ids, cursor) = s.revoked_since(0).unwrap();
        assert_eq!(ids, vec![[2; 32]]);
        assert_eq!(s.revoked_since(cursor).unwrap(), (vec![], cursor));
        // Reopening migrates nothing twice and keeps everything.
        drop(s);
        let mut s = SqliteStore::open(&path, true).unwrap();
        let q = TokenQuery {
            token_id: Some([1; 32]),
            limit: 5,
        };
        assert_eq!(s.list_tokens(&q).unwrap().len(), 1);
        assert!(s.revoked_at([2; 32]).unwrap().is_some());
    }

    #[test]
    fn sessions() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("a.db"), true).unwrap();
        crate::store::session::suite::all(&mut s);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        drop(SqliteStore::open(&path, true).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute("INSERT INTO aperture_schema (version) VALUES (99)", [])
            .unwrap();
        drop(conn);
        let err = SqliteStore::open(&path, true).err().unwrap();
        assert!(matches!(err, DbError::TooNew { found: 99, .. }), "{err}");
    }

    #[test]
    fn legacy_keys_roundtrip_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("a.db"), true).unwrap();
        assert_eq!(
            s.import_legacy_keys(&[([1; 32], [2; 32]), ([3; 32], [4; 32])])
                .unwrap(),
            2
        );
        assert_eq!(s.import_legacy_keys(&[([1; 32], [9; 32])]).unwrap(), 0);
        assert_eq!(s.legacy_root_key(&[1; 32]).unwrap(), Some([2; 32]));
        assert_eq!(s.legacy_root_key(&[5; 32]).unwrap(), None);
        assert_eq!(s.legacy_keys().unwrap().len(), 2);
        s.conn
            .execute(
                "UPDATE legacy_keys SET root_key = x'00' WHERE hash = ?1",
                [&[3u8; 32][..]],
            )
            .unwrap();
        assert!(matches!(
            s.legacy_root_key(&[3; 32]),
            Err(DbError::Corrupt { len: 1, .. })
        ));
    }
}
