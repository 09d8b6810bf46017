//! The JSON endpoints against the fake backend (its sample: `file-svc`, three ledger rows,
//! settled on 2023-11-14 and 2023-11-15, one pending).

use serde_json::Value;

use super::*;
use crate::admin::backend::{AuthScheme, ServiceSource, ServiceSpec, ServiceView, TxQuery};
use crate::admin::fake::FakeBackend;

/// 2023-11-20 12:00 UTC: the sample's rows are 5 and 6 days old.
const NOW: u64 = 1_700_481_600;

fn call(b: &FakeBackend, method: Method, path_query: &str, body: &str) -> (u16, Value) {
    let (rest, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let r = route(b, &method, rest, query, &Bytes::from(body.to_owned()), NOW);
    let v = serde_json::from_slice(r.body()).unwrap_or(Value::Null);
    (r.status().as_u16(), v)
}

fn get(b: &FakeBackend, path_query: &str) -> Value {
    let (status, v) = call(b, Method::GET, path_query, "");
    assert_eq!(status, 200, "{path_query}: {v}");
    v
}

#[test]
fn overview_fills_every_day_of_the_range() {
    let b = FakeBackend::sample();
    let o = get(&b, "overview?days=7");
    assert_eq!(o["revenue_sats"], 35);
    assert_eq!(o["transaction_count"], 2);
    assert_eq!(
        (o["settled_count"].as_u64(), o["pending_count"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(o["active_services"], 1);
    assert_eq!(o["db_services"], 0);
    let days = o["days"].as_array().unwrap();
    assert_eq!(days.len(), 7);
    assert_eq!(days[0]["day"], "2023-11-14");
    assert_eq!(days[6]["day"], "2023-11-20");
    let sats: Vec<u64> = days
        .iter()
        .map(|d| d["revenue_sats"].as_u64().unwrap())
        .collect();
    assert_eq!(sats, [10, 25, 0, 0, 0, 0, 0]);
    assert_eq!(o["per_service"][1]["service_name"], "other");
    assert_eq!(o["per_service"][1]["revenue_sats"], 25);

    let short = get(&b, "overview?days=5");
    assert_eq!(short["revenue_sats"], 0, "both rows are older than 5 days");
    assert_eq!(short["days"].as_array().unwrap().len(), 5);

    let all = get(&b, "overview?days=0");
    assert_eq!(all["from"], Value::Null);
    assert_eq!(
        all["days"][0]["day"], "2023-11-14",
        "all time starts at the first sale"
    );
    assert_eq!(all["days"].as_array().unwrap().len(), 7);

    assert_eq!(call(&b, Method::GET, "overview?days=x", "").0, 400);
    b.fail_next(AdminError::Unavailable("database down".into()));
    let (status, v) = call(&b, Method::GET, "overview", "");
    assert_eq!((status, v["error"].as_str()), (503, Some("database down")));
}

#[test]
fn transactions_filter_and_page() {
    let b = FakeBackend::sample();
    let all = get(&b, "transactions");
    assert_eq!(all["total_count"], 3);
    let first = &all["transactions"][0];
    assert_eq!(first["id"], 3, "newest first");
    assert_eq!(first["state"], "pending");
    assert_eq!(first["token_id"], hex::encode([3u8; 32]));
    assert_eq!(first["settled_at"], Value::Null);

    let v = get(&b, "transactions?service=file-svc&state=settled");
    assert_eq!(v["total_count"], 1);
    let v = get(&b, "transactions?from=2023-11-15&to=2023-11-15");
    assert_eq!(v["total_count"], 1, "to includes its whole day");
    assert_eq!(v["transactions"][0]["service_name"], "other");
    let v = get(&b, "transactions?limit=1&offset=1");
    assert_eq!(v["transactions"].as_array().unwrap().len(), 1);
    assert_eq!(v["transactions"][0]["id"], 2);

    for (q, field) in [
        ("transactions?state=paid", "state"),
        ("transactions?from=2023-11-31", "from"),
        ("transactions?from=2023-11-15&to=2023-11-14", "to"),
        ("transactions?limit=0", "limit"),
        ("transactions?limit=1001", "limit"),
        ("transactions?offset=-1", "offset"),
    ] {
        let (status, v) = call(&b, Method::GET, q, "");
        assert_eq!(status, 400, "{q}");
        assert!(v["error"].as_str().unwrap().starts_with(field), "{q}: {v}");
    }
}

#[test]
fn csv_exports_every_matching_row() {
    let b = FakeBackend::sample();
    {
        let mut s = b.state();
        let mut extra = s.txs[0].clone();
        for i in 0..2500 {
            extra.id = 100 + i;
            extra.service_name = "=cmd|' /C calc'!A0".into();
            s.txs.push(extra.clone());
        }
    }
    let r = route(&b, &Method::GET, "transactions.csv", "", &Bytes::new(), NOW);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    let text = String::from_utf8(r.body().to_vec()).unwrap();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1 + 2503, "every page, not just the first");
    assert!(lines[0].starts_with("id,token_id,payment_hash,service_name,price_sats,state"));
    assert!(
        lines[1].contains(",'=cmd|' /C calc'!A0,"),
        "formulas are defused: {}",
        lines[1]
    );
    let last = lines.last().unwrap();
    assert_eq!(
        *last,
        format!(
            "1,{},{},file-svc,10,settled,2023-11-14T22:15:00Z,2023-11-14T22:15:50Z,l402,",
            hex::encode([1u8; 32]),
            hex::encode([0x81u8; 32])
        )
    );
    let r = route(
        &b,
        &Method::GET,
        "transactions.csv",
        "state=pending",
        &Bytes::new(),
        NOW,
    );
    assert_eq!(String::from_utf8_lossy(r.body()).lines().count(), 2);
    let r = route(
        &b,
        &Method::GET,
        "transactions.csv",
        "state=x",
        &Bytes::new(),
        NOW,
    );
    assert_eq!(r.status(), 400);
}

#[test]
fn services_are_listed_created_changed_and_deleted() {
    let b = FakeBackend::sample();
    let list = get(&b, "services");
    assert_eq!(list[0]["name"], "file-svc");
    assert_eq!(list[0]["source"], "file");
    assert_eq!(list[0]["auth_scheme"], "l402");

    let body = r#"{"name":"new svc/1","address":"127.0.0.1:9","path_regexp":"^/new/","price":5,"auth_scheme":"mpp"}"#;
    let (status, v) = call(&b, Method::POST, "services", body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["source"].as_str(), v["auth_scheme"].as_str()),
        (Some("db"), Some("mpp"))
    );
    assert_eq!(call(&b, Method::POST, "services", body).0, 409);
    assert_eq!(b.state().services[1].auth_scheme, AuthScheme::Mpp);

    let (status, v) = call(&b, Method::PUT, "services/new%20svc%2F1", r#"{"price":25}"#);
    assert_eq!((status, v["price"].as_u64()), (200, Some(25)));
    assert_eq!(b.state().services[1].price, 25);
    assert_eq!(
        call(&b, Method::PUT, "services/nope", r#"{"price":1}"#).0,
        404
    );
    assert_eq!(
        call(&b, Method::PUT, "services/file-svc", r#"{"price":-1}"#).0,
        400
    );

    let (status, v) = call(&b, Method::DELETE, "services/new%20svc%2F1", "");
    assert_eq!((status, v["status"].as_str()), (200, Some("deleted")));
    assert_eq!(
        call(&b, Method::DELETE, "services/new%20svc%2F1", "").0,
        404
    );
    assert_eq!(b.state().services.len(), 1);
}

#[test]
fn tokens_are_revoked_by_hex_id() {
    let b = FakeBackend::sample();
    let id = hex::encode([2u8; 32]);
    let (status, v) = call(&b, Method::DELETE, &format!("tokens/{id}"), "");
    assert_eq!((status, v["status"].as_str()), (200, Some("revoked")));
    let v = get(&b, "transactions?service=other");
    assert!(v["transactions"][0]["revoked_at"].is_u64());
    assert_eq!(
        call(
            &b,
            Method::DELETE,
            &format!("tokens/{}", hex::encode([9u8; 32])),
            ""
        )
        .0,
        404
    );
    assert_eq!(call(&b, Method::DELETE, "tokens/abc", "").0, 400);
}

#[test]
fn node_state_and_wrong_methods() {
    let b = FakeBackend::sample();
    let n = get(&b, "node");
    assert_eq!(n["node"]["lnd_connected"], true);
    assert_eq!(n["node"]["bridge_queue_capacity"], 1024);
    assert_eq!(n["info"]["network"], "regtest");
    assert_eq!(n["fields"]["bridge_queue"], "0 / 1024");
    assert_eq!(n["fields"]["lnd_connected"], "connected");

    let r = route(&b, &Method::DELETE, "overview", "", &Bytes::new(), NOW);
    assert_eq!(
        (r.status().as_u16(), r.headers()["allow"].to_str().ok()),
        (405, Some("GET"))
    );
    let r = route(&b, &Method::GET, "services/x", "", &Bytes::new(), NOW);
    assert_eq!(r.headers()["allow"], "PUT, DELETE");
    let r = route(&b, &Method::GET, "nothing", "", &Bytes::new(), NOW);
    assert_eq!(r.status(), 404);
}

/// The fake, except that creating a service named like a config-file service overrides it
/// (the live backend's precedence rule; the fake refuses the name).
struct Overriding(FakeBackend);

impl AdminBackend for Overriding {
    fn info(&self) -> crate::admin::backend::Info {
        self.0.info()
    }
    fn list_services(&self) -> Result<Vec<ServiceView>, AdminError> {
        self.0.list_services()
    }
    fn create_service(&self, spec: ServiceSpec) -> Result<ServiceView, AdminError> {
        self.0
            .state()
            .services
            .retain(|s| s.name != spec.name || s.source != Some(ServiceSource::File));
        self.0.create_service(spec)
    }
    fn update_service(
        &self,
        _: &str,
        _: crate::admin::backend::ServicePatch,
    ) -> Result<ServiceView, AdminError> {
        Err(AdminError::NotFound(
            "no database service by that name".into(),
        ))
    }
    fn delete_service(&self, name: &str) -> Result<(), AdminError> {
        self.0.delete_service(name)
    }
    fn list_transactions(&self, q: TxQuery) -> Result<crate::admin::backend::TxPage, AdminError> {
        self.0.list_transactions(q)
    }
    fn list_tokens(&self, l: u32, o: u32) -> Result<crate::admin::backend::TxPage, AdminError> {
        self.0.list_tokens(l, o)
    }
    fn revoke_token(&self, id: [u8; 32]) -> Result<(), AdminError> {
        self.0.revoke_token(id)
    }
    fn stats(
        &self,
        f: Option<u64>,
        t: Option<u64>,
    ) -> Result<crate::admin::backend::Stats, AdminError> {
        self.0.stats(f, t)
    }
    fn revenue_by_day(
        &self,
        f: Option<u64>,
        t: Option<u64>,
    ) -> Result<Vec<crate::admin::backend::DayRevenue>, AdminError> {
        self.0.revenue_by_day(f, t)
    }
    fn node(&self) -> crate::admin::backend::NodeState {
        self.0.node()
    }
}

#[test]
fn changing_a_file_service_overrides_it_with_a_database_one() {
    let b = Overriding(FakeBackend::sample());
    b.0.state().services[0]
        .extra
        .insert("timeout".into(), Value::from(30));
    let r = route(
        &b,
        &Method::PUT,
        "services/file-svc",
        "",
        &Bytes::from_static(br#"{"price":25,"auth":"freebie 2"}"#),
        NOW,
    );
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    let v: Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["overrides_file"], true);
    assert_eq!(v["source"], "db");
    let s = b.0.state().services[0].clone();
    assert_eq!(
        (s.price, s.auth.as_str(), s.path_regexp.as_str()),
        (25, "freebie 2", "^/file/.*$")
    );
    assert_eq!(s.address, "127.0.0.1:9000", "the file's fields are kept");
    assert_eq!(s.extra["timeout"], 30, "and its other keys");
}
