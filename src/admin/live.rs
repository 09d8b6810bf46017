//! The real [`AdminBackend`]: the admin API over this process's token database (a connection of
//! its own on the admin thread), the bridge's state and the reload path. A service created,
//! changed or deleted here is validated together with every other service (the same
//! [`config::parse_with_db`] the reload uses, then [`Routes::resolve`]) before it is stored, so
//! a bad one is a 400 naming the field and the running routes stay; once stored, [`LiveBackend`]
//! asks for a reload (the SIGHUP path), and every other instance on the database reloads when its
//! store thread sees the services' version move.
//!
//! Owns no thread; every call comes from the `aperture-admin` thread and may block on the
//! database (never a worker core's).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::backend::{
    AdminBackend, AdminError, AuthScheme, DayRevenue, Info, NodeState, ServicePatch,
    ServiceRevenue, ServiceSource, ServiceSpec, ServiceView, Stats, Tx, TxPage, TxQuery, TxState,
};
use crate::config::{self, Config, DbService};
use crate::proxy::Routes;
use crate::store::{self, DbError, Store};

/// Where the running config comes from, to re-read it with a new set of database services.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// The YAML file.
    File(PathBuf),
    /// `--dev`'s embedded config: its basedir and the demo origin's address.
    Dev {
        basedir: PathBuf,
        origin: std::net::SocketAddr,
    },
}

impl ConfigSource {
    /// The config with `db` applied, validated.
    pub fn load(&self, db: &[DbService]) -> Result<Config, config::ConfigError> {
        match self {
            ConfigSource::File(path) => config::load_with_db(path, db),
            ConfigSource::Dev { basedir, origin } => config::dev_with_db(basedir, *origin, db),
        }
    }
}

/// The admin API over the live process.
pub struct LiveBackend {
    source: ConfigSource,
    running: Arc<Config>,
    store: Mutex<Box<dyn Store>>,
    bridge: lnd_bridge::BridgeHandle,
    cores: usize,
    /// Asks the main thread to reload (raises SIGHUP in the real process).
    apply: Box<dyn Fn() + Send + Sync>,
}

impl LiveBackend {
    /// `store`: a database connection for this thread alone.
    pub fn new(
        source: ConfigSource,
        running: Arc<Config>,
        store: Box<dyn Store>,
        bridge: lnd_bridge::BridgeHandle,
        cores: usize,
        apply: Box<dyn Fn() + Send + Sync>,
    ) -> LiveBackend {
        LiveBackend {
            source,
            running,
            store: Mutex::new(store),
            bridge,
            cores,
            apply,
        }
    }

    fn db<T: Send>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> Result<T, DbError> + Send,
    ) -> Result<T, AdminError> {
        // Only the admin thread takes this lock; a poisoned one still holds a usable connection.
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        // On a thread of its own: the admin API runs inside a tokio runtime, and the blocking
        // PostgreSQL client drives a runtime of its own, which tokio refuses to nest.
        let conn: &mut dyn Store = store.as_mut();
        let result = std::thread::scope(|scope| {
            scope
                .spawn(|| f(conn))
                .join()
                .map_err(|_| AdminError::Internal("the database call panicked".into()))
        })?;
        result.map_err(|e| AdminError::Unavailable(format!("token database: {e}")))
    }

    /// The database's services, in the config layer's form.
    fn db_services(&self) -> Result<Vec<(DbService, String)>, AdminError> {
        let rows = self.db(|s| s.list_db_services())?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let spec = DbService {
                    name: r.name,
                    spec: r.spec.clone(),
                };
                (spec, r.spec)
            })
            .collect())
    }

    /// Validates the services as they would be with `change` applied (a name and its spec, or
    /// its removal), the way a reload would load them.
    fn check(&self, name: &str, spec: Option<&str>) -> Result<Config, AdminError> {
        let mut db: Vec<DbService> = self.db_services()?.into_iter().map(|(d, _)| d).collect();
        db.retain(|d| d.name != name);
        if let Some(spec) = spec {
            db.push(DbService {
                name: name.to_owned(),
                spec: spec.to_owned(),
            });
        }
        let config = self
            .source
            .load(&db)
            .map_err(|e| AdminError::BadRequest(e.to_string()))?;
        Routes::resolve(&config).map_err(|e| AdminError::BadRequest(e.to_string()))?;
        Ok(config)
    }

    /// The config file's service blocks as JSON objects, by name (none under `--dev`), so a file
    /// service shows its every key and an override made through the API starts from them.
    fn file_blocks(&self) -> Vec<(String, Map<String, Value>)> {
        let ConfigSource::File(path) = &self.source else {
            return Vec::new();
        };
        let path = crate::config::values::expand_tilde(&path.to_string_lossy());
        let Ok(text) = std::fs::read_to_string(path) else {
            return Vec::new();
        };
        let Ok(Value::Object(mut root)) = serde_saphyr::from_str::<Value>(&text) else {
            return Vec::new();
        };
        let Some(Value::Array(services)) = root.remove("services") else {
            return Vec::new();
        };
        services
            .into_iter()
            .filter_map(|s| match s {
                Value::Object(m) => {
                    let name = m.get("name")?.as_str()?.to_owned();
                    Some((name, m))
                }
                _ => None,
            })
            .collect()
    }

    fn view_of(&self, config: &Config, name: &str) -> Result<ServiceView, AdminError> {
        let db = self.db_services()?;
        let files = self.file_blocks();
        config
            .services
            .iter()
            .find(|s| s.name == name)
            .map(|s| view(s, stored_block(s, &db, &files).as_ref()))
            .ok_or_else(|| AdminError::NotFound(format!("no service named {name:?}")))
    }
}

/// A service's block: its database JSON, or for a file service its block in the file.
fn stored_block(
    s: &config::Service,
    db: &[(DbService, String)],
    files: &[(String, Map<String, Value>)],
) -> Option<String> {
    match s.source {
        config::ServiceSource::Db => db
            .iter()
            .find(|(d, _)| d.name == s.name)
            .map(|(_, j)| j.clone()),
        config::ServiceSource::File => files
            .iter()
            .find(|(n, _)| *n == s.name)
            .map(|(_, m)| Value::Object(m.clone()).to_string()),
    }
}

/// The JSON block stored for a service (the config file's keys, so every key is allowed).
fn spec_json(spec: &ServiceSpec) -> String {
    let mut map = Map::new();
    let mut put = |k: &str, v: Value| {
        map.insert(k.to_owned(), v);
    };
    put("address", Value::from(spec.address.clone()));
    if !spec.protocol.is_empty() {
        put("protocol", Value::from(spec.protocol.clone()));
    }
    put(
        "hostregexp",
        Value::from(if spec.host_regexp.is_empty() {
            ".*".to_owned()
        } else {
            spec.host_regexp.clone()
        }),
    );
    if !spec.path_regexp.is_empty() {
        put("pathregexp", Value::from(spec.path_regexp.clone()));
    }
    put("price", Value::from(spec.price));
    if !spec.auth.is_empty() {
        put("auth", Value::from(spec.auth.clone()));
    }
    put("authscheme", Value::from(spec.auth_scheme.as_str()));
    for (k, v) in &spec.extra {
        map.insert(k.clone(), v.clone());
    }
    Value::Object(map).to_string()
}

/// A service as the API shows it; `stored` is its database JSON, for the keys beyond Go's.
fn view(s: &config::Service, stored: Option<&String>) -> ServiceView {
    let extra = stored
        .and_then(|j| serde_json::from_str::<Map<String, Value>>(j).ok())
        .map(|mut m| {
            for k in [
                "address",
                "protocol",
                "hostregexp",
                "pathregexp",
                "price",
                "auth",
                "authscheme",
                "name",
            ] {
                m.remove(k);
            }
            m
        })
        .unwrap_or_default();
    ServiceView {
        name: s.name.clone(),
        address: s.address.clone(),
        protocol: format!("{:?}", s.protocol).to_ascii_lowercase(),
        host_regexp: s.host_regexp.as_str().to_owned(),
        path_regexp: s
            .path_regexp
            .as_ref()
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
        price: s.price,
        auth: match s.auth {
            config::Auth::On => "on".to_owned(),
            config::Auth::Off => "off".to_owned(),
            config::Auth::Freebie(n) => format!("freebie {n}"),
        },
        auth_scheme: match (s.schemes.l402, s.schemes.payment) {
            (false, true) => AuthScheme::Mpp,
            (true, true) => AuthScheme::L402Mpp,
            _ => AuthScheme::L402,
        },
        source: Some(match s.source {
            config::ServiceSource::File => ServiceSource::File,
            config::ServiceSource::Db => ServiceSource::Db,
        }),
        extra,
    }
}

fn tx(row: store::TxRow) -> Tx {
    Tx {
        id: row.id,
        token_id: row.token_id,
        payment_hash: row.payment_hash,
        service_name: row.service_name,
        price_sats: row.price_sats,
        state: match row.state {
            store::TxState::Pending => TxState::Pending,
            store::TxState::Settled => TxState::Settled,
        },
        created_at: row.created_at,
        settled_at: row.settled_at,
        kind: row.kind.as_str().to_owned(),
        revoked_at: row.revoked_at,
    }
}

impl AdminBackend for LiveBackend {
    fn info(&self) -> Info {
        let c = &self.running;
        Info {
            network: format!("{:?}", c.authenticator.network).to_ascii_lowercase(),
            listen_addr: c.listen_addr.to_string(),
            insecure: c.insecure,
            mpp_enabled: c.authenticator.mpp.is_some(),
            sessions_enabled: c
                .authenticator
                .mpp
                .as_ref()
                .is_some_and(|m| m.sessions.is_some()),
            mpp_realm: c
                .authenticator
                .mpp
                .as_ref()
                .map(|m| m.realm.clone())
                .unwrap_or_default(),
        }
    }

    fn list_services(&self) -> Result<Vec<ServiceView>, AdminError> {
        let db = self.db_services()?;
        let config = self
            .source
            .load(&db.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>())
            .map_err(|e| AdminError::Internal(format!("the stored services do not load: {e}")))?;
        let files = self.file_blocks();
        Ok(config
            .services
            .iter()
            .map(|s| view(s, stored_block(s, &db, &files).as_ref()))
            .collect())
    }

    fn create_service(&self, spec: ServiceSpec) -> Result<ServiceView, AdminError> {
        let json = spec_json(&spec);
        let config = self.check(&spec.name, Some(&json))?;
        let now = crate::proxy::auth::now_unix();
        if !self.db(|s| s.create_service(&spec.name, &json, now))? {
            return Err(AdminError::Conflict(format!(
                "a service named {:?} exists in the database; update it instead",
                spec.name
            )));
        }
        (self.apply)();
        self.view_of(&config, &spec.name)
    }

    fn update_service(&self, name: &str, patch: ServicePatch) -> Result<ServiceView, AdminError> {
        let stored = self.db_services()?;
        // A file service is overridden by a database service that starts from its file block
        // (every key kept), as Go's update of a config service does with its few fields.
        let (mut map, in_db) = match stored.iter().find(|(d, _)| d.name == name) {
            Some((_, json)) => (
                serde_json::from_str::<Map<String, Value>>(json)
                    .map_err(|e| AdminError::Internal(format!("stored service {name:?}: {e}")))?,
                true,
            ),
            None => match self.file_blocks().into_iter().find(|(n, _)| n == name) {
                Some((_, mut block)) => {
                    block.remove("name");
                    (block, false)
                }
                None => return Err(AdminError::NotFound(format!("no service named {name:?}"))),
            },
        };
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                map.insert(k.to_owned(), v);
            }
        };
        set("address", patch.address.map(Value::from));
        set("protocol", patch.protocol.map(Value::from));
        set("hostregexp", patch.host_regexp.map(Value::from));
        set("pathregexp", patch.path_regexp.map(Value::from));
        set("price", patch.price.map(Value::from));
        set("auth", patch.auth.map(Value::from));
        set(
            "authscheme",
            patch.auth_scheme.map(|a| Value::from(a.as_str())),
        );
        for (k, v) in patch.extra {
            map.insert(k, v);
        }
        let json = Value::Object(map).to_string();
        let config = self.check(name, Some(&json))?;
        let now = crate::proxy::auth::now_unix();
        let stored = if in_db {
            self.db(|s| s.update_service(name, &json, now))?
        } else {
            self.db(|s| s.create_service(name, &json, now))?
        };
        if !stored {
            return Err(AdminError::Conflict(format!(
                "service {name:?} changed meanwhile; retry"
            )));
        }
        (self.apply)();
        self.view_of(&config, name)
    }

    fn delete_service(&self, name: &str) -> Result<(), AdminError> {
        self.check(name, None)?;
        if !self.db(|s| s.delete_service(name))? {
            return Err(AdminError::NotFound(format!(
                "no database service named {name:?} (services from the config file are removed from the file)"
            )));
        }
        (self.apply)();
        Ok(())
    }

    fn list_transactions(&self, q: TxQuery) -> Result<TxPage, AdminError> {
        let kind = match q.kind.as_deref() {
            None | Some("") => None,
            Some(k) => Some(store::TxKind::parse(k).map_err(|_| {
                AdminError::BadRequest(format!(
                    "kind: {k:?} is not l402, mpp_charge, mpp_session_deposit or mpp_session_top_up"
                ))
            })?),
        };
        let query = store::TxQuery {
            service: q.service,
            state: q.state.map(|s| match s {
                TxState::Pending => store::TxState::Pending,
                TxState::Settled => store::TxState::Settled,
            }),
            kind,
            start: q.start,
            end: q.end,
            limit: q.limit,
            offset: q.offset,
        };
        let (rows, total) = self.db(|s| s.list_transactions(&query))?;
        Ok(TxPage {
            transactions: rows.into_iter().map(tx).collect(),
            total_count: total,
        })
    }

    fn list_tokens(&self, limit: u32, offset: u32) -> Result<TxPage, AdminError> {
        let (rows, total) = self.db(|s| s.list_settled_tokens(limit, offset))?;
        Ok(TxPage {
            transactions: rows.into_iter().map(tx).collect(),
            total_count: total,
        })
    }

    fn revoke_token(&self, token_id: [u8; 32]) -> Result<(), AdminError> {
        // Through the revocations table: every instance's store thread publishes it to its
        // cores within a second.
        self.db(|s| s.revoke(token_id)).map(|_| ())
    }

    fn stats(&self, from: Option<u64>, to: Option<u64>) -> Result<Stats, AdminError> {
        let s = self.db(|s| s.stats(from, to))?;
        Ok(Stats {
            total_revenue_sats: s.total_revenue_sats,
            transaction_count: s.transaction_count,
            service_breakdown: s
                .per_service
                .into_iter()
                .map(|r| ServiceRevenue {
                    service_name: r.service_name,
                    total_revenue_sats: r.revenue_sats,
                    count: r.count,
                })
                .collect(),
            refunded_sats: s.refunded_sats,
        })
    }

    fn revenue_by_day(
        &self,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<Vec<DayRevenue>, AdminError> {
        let rows = self.db(|s| s.revenue_by_day(from, to))?;
        Ok(rows
            .into_iter()
            .map(|r| DayRevenue {
                day_start: r.day_start,
                service_name: r.service_name,
                revenue_sats: r.revenue_sats,
                count: r.count,
            })
            .collect())
    }

    fn node(&self) -> NodeState {
        let stats = self.bridge.stats();
        NodeState {
            backend: match &self.running.authenticator.backend {
                config::Backend::Lnd { .. } => "lnd".to_owned(),
                config::Backend::Dev { .. } => "dev".to_owned(),
                config::Backend::None => "none".to_owned(),
            },
            lnd_connected: self.bridge.backend_connected(),
            bridge_queue_depth: stats.in_flight as u64,
            bridge_queue_capacity: stats.capacity as u64,
            cores: self.cores as u32,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}
