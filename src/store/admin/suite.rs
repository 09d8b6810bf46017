//! The admin methods' behaviour, written once against `&mut dyn Store` and run by each
//! backend's tests (SQLite always, PostgreSQL when `APERTURE_TEST_PG` is set). Every function
//! expects a database of its own (a fresh file, a fresh PostgreSQL database): totals, counts and
//! revenue are asserted exactly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::admin::{DayRevenue, ServiceRevenue, TxKind, TxQuery, TxRow, TxState};
use crate::store::db::{Challenge, Key32, Op, Store};
use crate::store::service::{no_payer, start_with};
use crate::store::session::{CloseOutcome, OpenOutcome, RefundStatus, SessionOpen, TopUpOutcome};

const T0: u64 = 1_800_000_000;
/// 00:00 UTC of T0's day.
const D0: u64 = T0 - T0 % 86_400;
const DAY: u64 = 86_400;

fn challenge(token_id: Key32, hash: Key32, service: &str, price: u64, at: u64) -> Challenge {
    Challenge {
        token_id,
        payment_hash: hash,
        service: service.into(),
        price_sat: price,
        created_at: at,
    }
}

/// A ledger row of `kind` (L402 and charges recorded the inferring way, as the proxy does).
fn record(s: &mut dyn Store, kind: TxKind, n: u32, service: &str, price: u64, at: u64) -> Key32 {
    let hash = key(n, 1);
    let token = if kind == TxKind::L402 {
        key(n, 2)
    } else {
        hash
    };
    let c = challenge(token, hash, service, price, at);
    let op = match kind {
        TxKind::L402 | TxKind::Charge => Op::Challenge(c),
        kind => Op::Transaction { challenge: c, kind },
    };
    s.apply(&[op]).unwrap();
    hash
}

fn key(n: u32, tag: u8) -> Key32 {
    let mut k = [tag; 32];
    k[..4].copy_from_slice(&n.to_be_bytes());
    k
}

fn list(s: &mut dyn Store, q: TxQuery) -> (Vec<TxRow>, u64) {
    s.list_transactions(&q).unwrap()
}

fn prices(rows: &[TxRow]) -> Vec<u64> {
    rows.iter().map(|r| r.price_sats).collect()
}

/// Create, update, delete, the change counter, and a second connection (another instance)
/// seeing each change.
pub(crate) fn services(s: &mut dyn Store, other: &mut dyn Store) {
    let v0 = s.services_version().unwrap();
    assert!(s.list_db_services().unwrap().is_empty());
    assert!(s.create_service("b-svc", r#"{"price":2}"#, 100).unwrap());
    assert_eq!(s.services_version().unwrap(), v0 + 1);
    // Exists: nothing changes, the counter stays.
    assert!(!other.create_service("b-svc", "{}", 101).unwrap());
    assert_eq!(other.services_version().unwrap(), v0 + 1);
    assert!(other.create_service("a-svc", "{}", 102).unwrap());
    assert_eq!(s.services_version().unwrap(), v0 + 2);
    let listed = s.list_db_services().unwrap();
    let names: Vec<_> = listed.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["a-svc", "b-svc"]);
    assert_eq!(
        (
            listed[1].spec.as_str(),
            listed[1].created_at,
            listed[1].updated_at
        ),
        (r#"{"price":2}"#, 100, 100)
    );
    assert!(s.update_service("b-svc", r#"{"price":3}"#, 110).unwrap());
    assert_eq!(other.services_version().unwrap(), v0 + 3);
    let b = other.list_db_services().unwrap().remove(1);
    assert_eq!(
        (b.spec.as_str(), b.created_at, b.updated_at),
        (r#"{"price":3}"#, 100, 110)
    );
    assert!(!s.update_service("missing", "{}", 111).unwrap());
    assert!(other.delete_service("a-svc").unwrap());
    assert!(!other.delete_service("a-svc").unwrap());
    assert!(!s.delete_service("missing").unwrap());
    assert_eq!(s.services_version().unwrap(), v0 + 4);
    let names: Vec<_> = s
        .list_db_services()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["b-svc"]);
    // The spec is stored as given: quotes, non-ASCII, size.
    let spec = format!(r#"{{"note":"ünï ' \" {}"}}"#, "x".repeat(20_000));
    assert!(s.create_service("Été/ß", &spec, 120).unwrap());
    let got = other.list_db_services().unwrap();
    assert_eq!(got[0].name, "b-svc", "byte order: ASCII before non-ASCII");
    assert_eq!(
        (got[1].name.as_str(), got[1].spec.as_str()),
        ("Été/ß", spec.as_str())
    );
    assert_eq!(s.services_version().unwrap(), v0 + 5);
}

/// Twelve rows over two services and every kind, half settled; then the filters, the pages,
/// the totals, the limits and Go's ListTokens over them.
pub(crate) fn transactions(s: &mut dyn Store) {
    let kinds = [
        TxKind::L402,
        TxKind::Charge,
        TxKind::SessionDeposit,
        TxKind::TopUp,
    ];
    let mut hashes = Vec::new();
    for i in 0..12u32 {
        let service = if i % 3 == 0 { "beta" } else { "alpha" };
        // Rows 10 and 11 share a second: the later insert is the newer.
        let at = T0 + u64::from(i.min(10)) * 10;
        let kind = kinds[i as usize % 4];
        hashes.push(record(s, kind, i, service, 100 + u64::from(i), at));
    }
    for i in (0..12).step_by(2) {
        s.mark_settled(hashes[i], T0 + 1000 + i as u64).unwrap();
    }
    assert!(s.revoke(key(0, 2)).unwrap()); // row 0's L402 token
                                           // A second record of a hash changes nothing.
    let again = challenge(hashes[1], hashes[1], "other", 1, T0 + 5000);
    s.apply(&[Op::Transaction {
        challenge: again,
        kind: TxKind::TopUp,
    }])
    .unwrap();

    let (all, total) = list(s, TxQuery::default());
    assert_eq!((all.len(), total), (12, 12));
    assert_eq!(prices(&all), (100..112).rev().collect::<Vec<_>>());
    let mut ids: Vec<i64> = all.iter().map(|r| r.id).collect();
    ids.reverse();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    let row0 = &all[11];
    assert_eq!(
        (row0.kind, row0.state, row0.service_name.as_str()),
        (TxKind::L402, TxState::Settled, "beta")
    );
    assert_eq!((row0.token_id, row0.payment_hash), (key(0, 2), key(0, 1)));
    assert_eq!((row0.created_at, row0.settled_at), (T0, Some(T0 + 1000)));
    assert!(row0.revoked_at.is_some());
    assert!(all[..11].iter().all(|r| r.revoked_at.is_none()));
    let row1 = &all[10];
    assert_eq!(
        (row1.kind, row1.state, row1.settled_at, row1.price_sats),
        (TxKind::Charge, TxState::Pending, None, 101)
    );
    assert_eq!(row1.token_id, row1.payment_hash);
    for (i, row) in all.iter().rev().enumerate() {
        assert_eq!(row.kind, kinds[i % 4], "row {i}");
    }

    // Pages of 5: the same rows in the same order, the total each time.
    let mut paged = Vec::new();
    for offset in [0, 5, 10, 15] {
        let q = TxQuery {
            limit: 5,
            offset,
            ..TxQuery::default()
        };
        let (rows, total) = list(s, q);
        assert_eq!(total, 12);
        assert_eq!(rows.len(), [5, 5, 2, 0][offset as usize / 5]);
        paged.extend(rows);
    }
    assert_eq!(paged, all);

    let q = |f: fn(&mut TxQuery)| {
        let mut q = TxQuery::default();
        f(&mut q);
        q
    };
    let cases: [(TxQuery, &[u64]); 10] = [
        (
            q(|q| q.service = Some("beta".into())),
            &[109, 106, 103, 100],
        ),
        (q(|q| q.service = Some("nope".into())), &[]),
        (
            q(|q| q.state = Some(TxState::Pending)),
            &[111, 109, 107, 105, 103, 101],
        ),
        (
            q(|q| q.state = Some(TxState::Settled)),
            &[110, 108, 106, 104, 102, 100],
        ),
        (q(|q| q.kind = Some(TxKind::TopUp)), &[111, 107, 103]),
        // Go's date range: settled_at, both ends inclusive.
        (
            q(|q| (q.start, q.end) = (Some(T0 + 1004), Some(T0 + 1008))),
            &[108, 106, 104],
        ),
        (q(|q| q.start = Some(T0 + 1006)), &[110, 108, 106]),
        (q(|q| q.end = Some(T0 + 1002)), &[102, 100]),
        (
            q(|q| {
                q.service = Some("beta".into());
                q.state = Some(TxState::Settled);
                q.start = Some(T0 + 1001);
            }),
            &[106],
        ),
        (
            q(|q| {
                q.state = Some(TxState::Pending);
                q.start = Some(T0);
            }),
            &[],
        ),
    ];
    for (query, want) in cases {
        let (rows, total) = list(s, query.clone());
        assert_eq!(prices(&rows), want, "{query:?}");
        assert_eq!(total, want.len() as u64, "{query:?}");
    }
    let (rows, total) = list(
        s,
        TxQuery {
            state: Some(TxState::Pending),
            limit: 2,
            offset: 1,
            ..TxQuery::default()
        },
    );
    assert_eq!((prices(&rows), total), (vec![109, 107], 6));

    // Go's ListTokens: settled rows, newest first, and how many there are.
    let (tokens, total) = s.list_settled_tokens(2, 0).unwrap();
    assert_eq!((prices(&tokens), total), (vec![110, 108], 6));
    let (tokens, total) = s.list_settled_tokens(0, 5).unwrap();
    assert_eq!((prices(&tokens), total), (vec![100], 6));

    // Limits: 0 is Go's 50, above 1000 is 1000.
    let bulk: Vec<Op> = (0..60u32)
        .map(|i| Op::Challenge(challenge(key(i, 8), key(i, 9), "bulk", 1, T0 + 50_000)))
        .collect();
    s.apply(&bulk).unwrap();
    for (limit, want) in [(0, 50), (1, 1), (5000, 60)] {
        let (rows, total) = list(
            s,
            TxQuery {
                service: Some("bulk".into()),
                limit,
                ..TxQuery::default()
            },
        );
        assert_eq!((rows.len(), total), (want, 60), "limit {limit}");
    }
}

/// Revenue: settled rows only, `settled_at` ranges inclusive, per service, per UTC day, and
/// the refunds paid back.
pub(crate) fn stats(s: &mut dyn Store) {
    assert_eq!(s.stats(None, None).unwrap(), Default::default());
    assert!(s.revenue_by_day(None, None).unwrap().is_empty());
    let settle = |s: &mut dyn Store, hash, at| s.mark_settled(hash, at).unwrap();
    let a1 = record(s, TxKind::L402, 1, "a", 10, D0);
    settle(s, a1, D0 + 10);
    let a2 = record(s, TxKind::Charge, 2, "a", 20, D0);
    settle(s, a2, D0 + DAY + 5);
    let b1 = record(s, TxKind::TopUp, 3, "b", 7, D0);
    settle(s, b1, D0 + 100);
    record(s, TxKind::L402, 4, "b", 1000, D0); // pending: never revenue
    let c1 = record(s, TxKind::SessionDeposit, 5, "c", 3, D0);
    settle(s, c1, D0 + 2 * DAY);

    let svc = |name: &str, revenue_sats, count| ServiceRevenue {
        service_name: name.into(),
        revenue_sats,
        count,
    };
    let all = s.stats(None, None).unwrap();
    assert_eq!((all.total_revenue_sats, all.transaction_count), (40, 4));
    assert_eq!(
        all.per_service,
        [svc("a", 30, 2), svc("b", 7, 1), svc("c", 3, 1)]
    );
    assert_eq!(all.refunded_sats, 0);
    let ranged = |s: &mut dyn Store, from, to| {
        let st = s.stats(from, to).unwrap();
        (st.total_revenue_sats, st.transaction_count, st.per_service)
    };
    assert_eq!(
        ranged(s, Some(D0 + 10), Some(D0 + 100)),
        (17, 2, vec![svc("a", 10, 1), svc("b", 7, 1)])
    );
    assert_eq!(ranged(s, Some(D0 + 11), Some(D0 + 99)), (0, 0, vec![]));
    assert_eq!(
        ranged(s, Some(D0 + DAY), None),
        (23, 2, vec![svc("a", 20, 1), svc("c", 3, 1)])
    );
    assert_eq!(
        ranged(s, None, Some(D0 + 10)),
        (10, 1, vec![svc("a", 10, 1)])
    );

    let day = |day_start, name: &str, revenue_sats, count| DayRevenue {
        day_start,
        service_name: name.into(),
        revenue_sats,
        count,
    };
    assert_eq!(
        s.revenue_by_day(None, None).unwrap(),
        [
            day(D0, "a", 10, 1),
            day(D0, "b", 7, 1),
            day(D0 + DAY, "a", 20, 1),
            day(D0 + 2 * DAY, "c", 3, 1)
        ]
    );
    assert_eq!(
        s.revenue_by_day(Some(D0 + DAY), Some(D0 + 2 * DAY))
            .unwrap(),
        [day(D0 + DAY, "a", 20, 1), day(D0 + 2 * DAY, "c", 3, 1)]
    );
    assert_eq!(s.revenue_by_day(Some(D0 + 11), Some(D0 + 99)).unwrap(), []);

    // A session: its deposit is revenue once credited; its refund is counted apart.
    let (hash, holder) = (key(6, 1), "holder");
    let c = challenge(hash, hash, "sess", 100, D0 + 400);
    s.apply(&[Op::Transaction {
        challenge: c,
        kind: TxKind::SessionDeposit,
    }])
    .unwrap();
    assert_eq!(
        s.open_session(&open(hash, 100, D0 + 500)).unwrap(),
        OpenOutcome::Opened
    );
    let CloseOutcome::Closed { refund } = s
        .close_session(&hex::encode(hash), holder, 30, 70, D0 + 600)
        .unwrap()
    else {
        panic!("not closed");
    };
    assert!(
        refund.amount_sats > 0 && refund.amount_sats < 70,
        "{refund:?}"
    );
    let sid = hex::encode(hash);
    assert!(s
        .record_refund(&sid, RefundStatus::Succeeded, None, D0 + 700)
        .unwrap());
    let all = s.stats(None, None).unwrap();
    assert_eq!((all.total_revenue_sats, all.transaction_count), (140, 5));
    assert_eq!(all.per_service[3], svc("sess", 100, 1));
    assert_eq!(all.refunded_sats, refund.amount_sats);
    assert_eq!(
        s.stats(Some(D0 + 700), Some(D0 + 700))
            .unwrap()
            .refunded_sats,
        refund.amount_sats
    );
    assert_eq!(s.stats(Some(D0 + 701), None).unwrap().refunded_sats, 0);
    assert_eq!(s.stats(None, Some(D0 + 699)).unwrap().refunded_sats, 0);
}

fn open(hash: Key32, deposit: u64, now: u64) -> SessionOpen {
    SessionOpen {
        session_id: hex::encode(hash),
        payment_hash: hash,
        deposit_sats: deposit,
        return_invoice: "lnbcrt1return".into(),
        idle_timeout_secs: 300,
        holder: "holder".into(),
        now,
    }
}

fn row(s: &mut dyn Store, hash: Key32) -> TxRow {
    let (rows, _) = list(
        s,
        TxQuery {
            limit: 1000,
            ..TxQuery::default()
        },
    );
    rows.into_iter()
        .find(|r| r.payment_hash == hash)
        .unwrap_or_else(|| panic!("no ledger row for {}", hex::encode(hash)))
}

/// Session credits in the ledger: the open marks (or writes) the deposit's row, each applied
/// top-up writes (or marks) its own, settled when credited, once.
pub(crate) fn session_credits(s: &mut dyn Store) {
    // The proxy recorded the deposit the inferring way (a "charge"): the open says what it is.
    let d1 = record(s, TxKind::Charge, 1, "svc", 100, T0);
    assert_eq!(
        s.open_session(&open(d1, 100, T0 + 5)).unwrap(),
        OpenOutcome::Opened
    );
    let r = row(s, d1);
    assert_eq!(
        (
            r.kind,
            r.state,
            r.settled_at,
            r.service_name.as_str(),
            r.price_sats,
            r.created_at
        ),
        (
            TxKind::SessionDeposit,
            TxState::Settled,
            Some(T0 + 5),
            "svc",
            100,
            T0
        )
    );
    // Settled by the bridge first: that settlement stands.
    let d2 = record(s, TxKind::SessionDeposit, 2, "svc2", 80, T0);
    s.mark_settled(d2, T0 + 3).unwrap();
    assert_eq!(
        s.open_session(&open(d2, 80, T0 + 6)).unwrap(),
        OpenOutcome::Opened
    );
    assert_eq!(row(s, d2).settled_at, Some(T0 + 3));
    // Its challenge record was lost: the open writes the row, service unknown.
    let d3 = key(3, 1);
    assert_eq!(
        s.open_session(&open(d3, 60, T0 + 7)).unwrap(),
        OpenOutcome::Opened
    );
    let r = row(s, d3);
    assert_eq!(
        (
            r.kind,
            r.settled_at,
            r.service_name.as_str(),
            r.price_sats,
            r.token_id
        ),
        (TxKind::SessionDeposit, Some(T0 + 7), "", 60, d3)
    );
    assert_eq!(
        s.open_session(&open(d3, 60, T0 + 8)).unwrap(),
        OpenOutcome::Duplicate
    );

    // A top-up nobody recorded: written under the deposit's service.
    let (sid, t1) = (hex::encode(d1), key(4, 1));
    let applied = s.top_up(&sid, t1, 50, "holder", T0 + 9).unwrap();
    assert_eq!(applied, TopUpOutcome::Applied);
    let r = row(s, t1);
    assert_eq!(
        (
            r.kind,
            r.settled_at,
            r.service_name.as_str(),
            r.price_sats,
            r.created_at,
            r.token_id
        ),
        (TxKind::TopUp, Some(T0 + 9), "svc", 50, T0 + 9, t1)
    );
    let replay = s.top_up(&sid, t1, 50, "holder", T0 + 20).unwrap();
    assert_eq!(replay, TopUpOutcome::Replayed);
    assert_eq!(row(s, t1).settled_at, Some(T0 + 9));
    // A top-up recorded pending when its invoice was handed out: settled by the credit.
    let t2 = record(s, TxKind::TopUp, 5, "svc", 50, T0 + 7);
    assert_eq!(row(s, t2).state, TxState::Pending);
    assert_eq!(
        s.top_up(&sid, t2, 50, "holder", T0 + 10).unwrap(),
        TopUpOutcome::Applied
    );
    let r = row(s, t2);
    assert_eq!((r.created_at, r.settled_at), (T0 + 7, Some(T0 + 10)));
    // A refused top-up (another session's hash) writes nothing.
    let foreign = s
        .top_up(&hex::encode(d2), t1, 50, "holder", T0 + 11)
        .unwrap();
    assert_eq!(foreign, TopUpOutcome::Foreign);

    let count = |s: &mut dyn Store, kind| {
        let q = TxQuery {
            kind: Some(kind),
            ..TxQuery::default()
        };
        s.list_transactions(&q).unwrap().1
    };
    assert_eq!(count(s, TxKind::SessionDeposit), 3);
    assert_eq!(count(s, TxKind::TopUp), 2);
    assert_eq!(count(s, TxKind::Charge), 0);
    let st = s.stats(None, None).unwrap();
    assert_eq!((st.total_revenue_sats, st.transaction_count), (340, 5));
}

/// A database at schema 3 (before the admin tables): four ledger rows, a session whose deposit
/// row is pending with one top-up, and a session whose deposit row is missing. `blob(n)` is
/// the backend's literal of 32 bytes of `n`.
pub(crate) fn schema3_rows(blob: impl Fn(u8) -> String) -> String {
    let (b1, b2, b3, b4, b5, b6, b8, b9) = (
        blob(1),
        blob(2),
        blob(3),
        blob(4),
        blob(5),
        blob(6),
        blob(8),
        blob(9),
    );
    let (s2, s6) = (hex::encode([2u8; 32]), hex::encode([6u8; 32]));
    format!(
        "INSERT INTO ledger (payment_hash, token_id, service, price_sat, created_at, settled_at)
         VALUES ({b1}, {b1}, 'charged', 5, 100, 150), ({b2}, {b2}, 'sess', 100, 300, NULL),
                ({b3}, {b9}, 'paid', 21, 500, NULL), ({b4}, {b8}, 'paid', 22, 200, 250);
         INSERT INTO mpp_sessions (session_id, payment_hash, deposit_sats, spent_sats,
             return_invoice, status, created_at, updated_at, idle_timeout_secs)
         VALUES ('{s2}', {b2}, 150, 0, 'lnbc', 'open', 310, 400, 300),
                ('{s6}', {b6}, 70, 0, 'lnbc', 'open', 600, 600, 300);
         INSERT INTO mpp_session_credits (payment_hash, session_id, amount_sats, created_at)
         VALUES ({b2}, '{s2}', 100, 310), ({b5}, '{s2}', 50, 400), ({b6}, '{s6}', 70, 600);"
    )
}

/// What [`schema3_rows`] becomes after migration 4.
pub(crate) fn schema3_migrated(s: &mut dyn Store) {
    let (rows, total) = list(s, TxQuery::default());
    assert_eq!(total, 6);
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.payment_hash[0],
                r.kind,
                r.service_name.as_str(),
                r.price_sats,
                r.settled_at,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (6, TxKind::SessionDeposit, "", 70, Some(600)),
            (3, TxKind::L402, "paid", 21, None),
            (5, TxKind::TopUp, "sess", 50, Some(400)),
            (2, TxKind::SessionDeposit, "sess", 100, Some(310)),
            (4, TxKind::L402, "paid", 22, Some(250)),
            (1, TxKind::Charge, "charged", 5, Some(150)),
        ]
    );
    // The rows that were there keep their order in ids (credits' new rows may come after).
    let id = |n: u8| rows.iter().find(|r| r.payment_hash[0] == n).unwrap().id;
    assert!(id(1) < id(4) && id(4) < id(2) && id(2) < id(3), "{rows:?}");
    let mut ids: Vec<_> = rows.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6);
    // New rows get new ids, after every migrated one.
    let next = record(s, TxKind::L402, 7, "paid", 1, 50);
    assert!(row(s, next).id > ids[5]);
    assert_eq!(s.services_version().unwrap(), 0);
    assert!(s.list_db_services().unwrap().is_empty());
}

/// A store thread on `mine` calls back within a second of each change `other` (another
/// connection to the same database: another instance) makes.
pub(crate) fn feed(mine: Box<dyn Store>, other: &mut dyn Store) {
    let service = start_with(mine, None, Box::new(|_| {}), "holder", no_payer("tests"))
        .expect("store thread");
    // A change before anyone listens is reported once a callback is registered.
    assert!(other.create_service("early", "{}", 1).unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    service
        .on_services_changed(Box::new(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap();
    let count = || calls.load(Ordering::SeqCst);
    wait_until("the change made before", || count() == 1);
    for (i, change) in ["create", "update", "delete"].into_iter().enumerate() {
        let started = Instant::now();
        let changed = match change {
            "create" => other.create_service("svc", r#"{"price":1}"#, 2),
            "update" => other.update_service("svc", r#"{"price":2}"#, 3),
            _ => other.delete_service("svc"),
        };
        assert!(changed.unwrap(), "{change}");
        wait_until(change, || count() == i + 2);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "{change} seen after {took:?}"
        );
    }
    // Writes that change nothing bump nothing: no call.
    assert!(!other.update_service("missing", "{}", 4).unwrap());
    assert!(!other.create_service("early", "{}", 4).unwrap());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(count(), 4);
    service.shutdown();
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kept usage reports: written by `apply`, read back oldest first with their row ids (every
/// field intact, the tail's bytes too), deleted by id.
pub(crate) fn pending_usage(s: &mut dyn Store) {
    let report = |n: u8| lnd_bridge::UsageReport {
        target: lnd_bridge::PricerTarget {
            address: "127.0.0.1:10010".into(),
            insecure: n == 2,
            tls_cert_path: (n == 1).then(|| "/etc/pricer/tls.cert".into()),
        },
        token_id: hex::encode([n; 32]),
        path: "/v1/chat/completions".into(),
        service_name: "llm".into(),
        http_status: 200 + i32::from(n),
        content_type: "text/event-stream".into(),
        content_encoding: if n == 1 { "" } else { "gzip" }.into(),
        complete: n == 1,
        response_tail: vec![n, 0, 0xff, b'\n'],
        reserved_estimate: 4096 * i64::from(n),
        persisted_id: None,
    };
    assert!(s.pending_usage(10).unwrap().is_empty());
    let keep = |n| Op::PendingUsage(Box::new(report(n)));
    s.apply(&[keep(1), keep(2)]).unwrap();
    let kept = s.pending_usage(10).unwrap();
    assert_eq!(kept.len(), 2);
    for (row, n) in kept.iter().zip([1, 2]) {
        let unnumbered = lnd_bridge::UsageReport {
            persisted_id: None,
            ..row.clone()
        };
        assert_eq!(unnumbered, report(n));
    }
    assert!(kept[0].persisted_id < kept[1].persisted_id);
    assert_eq!(s.pending_usage(1).unwrap(), kept[..1]);
    s.apply(&[Op::UsageDelivered(kept[0].persisted_id.unwrap())])
        .unwrap();
    assert_eq!(s.pending_usage(10).unwrap(), kept[1..]);
}
