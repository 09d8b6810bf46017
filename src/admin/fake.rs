//! An in-memory [`AdminBackend`] for tests (unit tests here and the integration tests'
//! `admin_api` module): services in a list, a ledger of [`Tx`] rows, scripted failures. It
//! follows the real backend's rules closely enough for the API tests (conflicts, not-found,
//! settled-only stats and tokens, newest first) and nothing more; it must never be wired into
//! the binary.

use std::sync::{Mutex, MutexGuard, PoisonError};

use super::backend::{
    AdminBackend, AdminError, DayRevenue, Info, NodeState, ServicePatch, ServiceRevenue,
    ServiceSource, ServiceSpec, ServiceView, Stats, Tx, TxPage, TxQuery, TxState,
};

/// What the fake holds; tests may reach in through [`FakeBackend::state`].
#[derive(Debug, Default)]
pub struct FakeState {
    pub info: Info,
    pub node: NodeState,
    pub services: Vec<ServiceView>,
    /// Oldest first; lists return newest first.
    pub txs: Vec<Tx>,
    /// Answered (once) by the next fallible call instead of doing it.
    pub fail_next: Option<AdminError>,
    /// The name of the thread each call ran on, in order: the tests check that admin work
    /// never runs on a worker core (`aperture-core-N`).
    pub threads: Vec<String>,
}

/// An in-memory backend.
#[derive(Debug, Default)]
pub struct FakeBackend {
    state: Mutex<FakeState>,
}

impl FakeBackend {
    /// Empty, with a regtest `Info`.
    pub fn new() -> FakeBackend {
        let fake = FakeBackend::default();
        {
            let mut s = fake.state();
            s.info = Info {
                network: "regtest".into(),
                listen_addr: "127.0.0.1:8081".into(),
                insecure: true,
                mpp_enabled: true,
                sessions_enabled: false,
                mpp_realm: "aperture".into(),
            };
            s.node = NodeState {
                backend: "dev".into(),
                lnd_connected: true,
                bridge_queue_depth: 0,
                bridge_queue_capacity: 1024,
                cores: 2,
                version: "test".into(),
            };
        }
        fake
    }

    /// A fake with one config-file service `file-svc` and three ledger rows (two settled).
    pub fn sample() -> FakeBackend {
        let fake = FakeBackend::new();
        {
            let mut s = fake.state();
            s.services.push(ServiceView {
                name: "file-svc".into(),
                address: "127.0.0.1:9000".into(),
                protocol: "http".into(),
                host_regexp: ".*".into(),
                path_regexp: "^/file/.*$".into(),
                price: 10,
                auth: "on".into(),
                source: Some(ServiceSource::File),
                ..ServiceView::default()
            });
            let tx = |id: i64, service: &str, price: u64, settled: Option<u64>| Tx {
                id,
                token_id: [id as u8; 32],
                payment_hash: [0x80 | id as u8; 32],
                service_name: service.into(),
                price_sats: price,
                state: if settled.is_some() {
                    TxState::Settled
                } else {
                    TxState::Pending
                },
                created_at: 1_700_000_000 + id as u64 * 100,
                settled_at: settled,
                kind: "l402".into(),
                revoked_at: None,
            };
            s.txs.push(tx(1, "file-svc", 10, Some(1_700_000_150)));
            s.txs.push(tx(2, "other", 25, Some(1_700_086_400)));
            s.txs.push(tx(3, "file-svc", 10, None));
        }
        fake
    }

    /// The state, for a test to inspect or change.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, with the calling thread's name recorded.
    fn called(&self) -> MutexGuard<'_, FakeState> {
        let mut s = self.state();
        let name = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        s.threads.push(name);
        s
    }

    /// The next fallible call answers `e` instead.
    pub fn fail_next(&self, e: AdminError) {
        self.state().fail_next = Some(e);
    }

    fn begin(&self) -> Result<MutexGuard<'_, FakeState>, AdminError> {
        let mut s = self.called();
        match s.fail_next.take() {
            Some(e) => Err(e),
            None => Ok(s),
        }
    }
}

/// Whether `t` lies in `[from, to]`; no bound at all admits everything (unsettled rows too).
fn in_range(t: Option<u64>, from: Option<u64>, to: Option<u64>) -> bool {
    if from.is_none() && to.is_none() {
        return true;
    }
    match t {
        None => false,
        Some(t) => from.is_none_or(|f| t >= f) && to.is_none_or(|e| t <= e),
    }
}

fn page(rows: Vec<Tx>, limit: u32, offset: u32) -> TxPage {
    let limit = match limit {
        0 => 50,
        n => n.min(1000),
    } as usize;
    TxPage {
        total_count: rows.len() as u64,
        transactions: rows
            .into_iter()
            .rev()
            .skip(offset as usize)
            .take(limit)
            .collect(),
    }
}

impl AdminBackend for FakeBackend {
    fn info(&self) -> Info {
        self.called().info.clone()
    }

    fn list_services(&self) -> Result<Vec<ServiceView>, AdminError> {
        Ok(self.begin()?.services.clone())
    }

    fn create_service(&self, spec: ServiceSpec) -> Result<ServiceView, AdminError> {
        let mut s = self.begin()?;
        if s.services.iter().any(|v| v.name == spec.name) {
            return Err(AdminError::Conflict("service already exists".into()));
        }
        let view = ServiceView {
            name: spec.name,
            address: spec.address,
            protocol: spec.protocol,
            host_regexp: spec.host_regexp,
            path_regexp: spec.path_regexp,
            price: spec.price,
            auth: spec.auth,
            auth_scheme: spec.auth_scheme,
            source: Some(ServiceSource::Db),
            extra: spec.extra,
        };
        s.services.push(view.clone());
        Ok(view)
    }

    fn update_service(&self, name: &str, patch: ServicePatch) -> Result<ServiceView, AdminError> {
        let mut s = self.begin()?;
        let Some(v) = s.services.iter_mut().find(|v| v.name == name) else {
            return Err(AdminError::NotFound("service not found".into()));
        };
        let set = |dst: &mut String, src: Option<String>| {
            if let Some(src) = src {
                *dst = src;
            }
        };
        set(&mut v.address, patch.address);
        set(&mut v.protocol, patch.protocol);
        set(&mut v.host_regexp, patch.host_regexp);
        set(&mut v.path_regexp, patch.path_regexp);
        set(&mut v.auth, patch.auth);
        if let Some(p) = patch.price {
            v.price = p;
        }
        if let Some(a) = patch.auth_scheme {
            v.auth_scheme = a;
        }
        for (k, val) in patch.extra {
            if val.is_null() {
                v.extra.remove(&k);
            } else {
                v.extra.insert(k, val);
            }
        }
        v.source = Some(ServiceSource::Db);
        Ok(v.clone())
    }

    fn delete_service(&self, name: &str) -> Result<(), AdminError> {
        let mut s = self.begin()?;
        let before = s.services.len();
        s.services.retain(|v| v.name != name);
        if s.services.len() == before {
            return Err(AdminError::NotFound("service not found".into()));
        }
        Ok(())
    }

    fn list_transactions(&self, q: TxQuery) -> Result<TxPage, AdminError> {
        let s = self.begin()?;
        let rows = s
            .txs
            .iter()
            .filter(|t| q.service.as_ref().is_none_or(|n| &t.service_name == n))
            .filter(|t| q.state.is_none_or(|st| t.state == st))
            .filter(|t| q.kind.as_ref().is_none_or(|k| &t.kind == k))
            .filter(|t| in_range(t.settled_at, q.start, q.end))
            .cloned()
            .collect();
        Ok(page(rows, q.limit, q.offset))
    }

    fn list_tokens(&self, limit: u32, offset: u32) -> Result<TxPage, AdminError> {
        let s = self.begin()?;
        let rows = s
            .txs
            .iter()
            .filter(|t| t.state == TxState::Settled && t.revoked_at.is_none())
            .cloned()
            .collect();
        Ok(page(rows, limit, offset))
    }

    fn revoke_token(&self, token_id: [u8; 32]) -> Result<(), AdminError> {
        let mut s = self.begin()?;
        let Some(t) = s
            .txs
            .iter_mut()
            .find(|t| t.token_id == token_id && t.state == TxState::Settled)
        else {
            return Err(AdminError::NotFound("token not found".into()));
        };
        t.revoked_at = Some(t.settled_at.unwrap_or(0) + 1);
        Ok(())
    }

    fn stats(&self, from: Option<u64>, to: Option<u64>) -> Result<Stats, AdminError> {
        let s = self.begin()?;
        let mut out = Stats::default();
        for t in s.txs.iter().filter(|t| t.state == TxState::Settled) {
            if !in_range(t.settled_at, from, to) {
                continue;
            }
            out.total_revenue_sats += t.price_sats;
            out.transaction_count += 1;
            match out
                .service_breakdown
                .iter_mut()
                .find(|r| r.service_name == t.service_name)
            {
                Some(r) => {
                    r.total_revenue_sats += t.price_sats;
                    r.count += 1;
                }
                None => out.service_breakdown.push(ServiceRevenue {
                    service_name: t.service_name.clone(),
                    total_revenue_sats: t.price_sats,
                    count: 1,
                }),
            }
        }
        out.service_breakdown
            .sort_by(|a, b| a.service_name.cmp(&b.service_name));
        Ok(out)
    }

    fn revenue_by_day(
        &self,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<Vec<DayRevenue>, AdminError> {
        let s = self.begin()?;
        let mut days: Vec<DayRevenue> = Vec::new();
        for t in s.txs.iter().filter(|t| t.state == TxState::Settled) {
            let Some(at) = t.settled_at else { continue };
            if !in_range(Some(at), from, to) {
                continue;
            }
            let day_start = at / 86_400 * 86_400;
            match days
                .iter_mut()
                .find(|d| d.day_start == day_start && d.service_name == t.service_name)
            {
                Some(d) => {
                    d.revenue_sats += t.price_sats;
                    d.count += 1;
                }
                None => days.push(DayRevenue {
                    day_start,
                    service_name: t.service_name.clone(),
                    revenue_sats: t.price_sats,
                    count: 1,
                }),
            }
        }
        days.sort_by(|a, b| (a.day_start, &a.service_name).cmp(&(b.day_start, &b.service_name)));
        Ok(days)
    }

    fn node(&self) -> NodeState {
        self.called().node.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_follows_go_rules() {
        let f = FakeBackend::sample();
        let all = f.list_transactions(TxQuery::default()).unwrap();
        assert_eq!(all.total_count, 3);
        assert_eq!(all.transactions[0].id, 3, "newest first");
        let stats = f.stats(None, None).unwrap();
        assert_eq!((stats.total_revenue_sats, stats.transaction_count), (35, 2));
        assert_eq!(f.list_tokens(0, 0).unwrap().total_count, 2);
        f.revoke_token([1; 32]).unwrap();
        assert_eq!(f.list_tokens(0, 0).unwrap().total_count, 1);
        assert!(matches!(
            f.revoke_token([9; 32]),
            Err(AdminError::NotFound(_))
        ));
        f.fail_next(AdminError::Unavailable("db down".into()));
        assert!(matches!(f.list_services(), Err(AdminError::Unavailable(_))));
        assert_eq!(f.list_services().unwrap().len(), 1);
        assert_eq!(f.revenue_by_day(None, None).unwrap().len(), 2);
    }
}
