//! The dashboard in a real browser (headless chromium over the DevTools protocol, see
//! [`crate::browser`]): a payment made through the proxy shows in the revenue tiles, the chart
//! and the transaction list (filters, CSV); a price changed in the page changes the next 402's
//! invoice; a service added in the page answers 402 at its price and, deleted, is gone; a
//! token revoked in the page is refused on the data path; a cross-site page cannot change
//! anything. Screenshots of the views land in `target/dashboard-screenshots/`, and in `docs/`
//! (`docs/dashboard-*.png`) when `APERTURE_UPDATE_SCREENSHOTS` is set.
//!
//! It runs the real binary (`admin.enabled`, the dev Lightning backend, SQLite): the admin
//! listener serves the dashboard over the live backend, and a change made in the page reloads
//! the proxy through the binary's own path (SIGHUP).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::browser::{chromium, Browser, Page};
use crate::support::{self, challenge, get, pay, service, wait_until, Conn, Origin};

/// A running `aperture` with the dashboard, and the addresses it logged.
struct Harness {
    _child: support::KillOnDrop,
    /// The data listener.
    proxy: SocketAddr,
    /// The admin listener (API and dashboard).
    admin: SocketAddr,
    /// The dev backend's wallet.
    wallet: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Services `premium` (21 sats, `/premium/…`), `paid` (10 sats, `/paid/…`), `free`.
    fn start(origin: &Origin) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let services = [
            service(
                "premium",
                origin.addr,
                "    pathregexp: \"^/premium/.*$\"\n    authscheme: \"l402\"\n",
            )
            .replace("price: 10", "price: 21"),
            service(
                "paid",
                origin.addr,
                "    pathregexp: \"^/paid/.*$\"\n    authscheme: \"l402\"\n",
            ),
            service(
                "free",
                origin.addr,
                "    pathregexp: \"^/free/.*$\"\n    auth: \"off\"\n",
            ),
        ]
        .concat();
        let yaml = format!(
            "listenaddr: \"127.0.0.1:0\"\ninsecure: true\ndbbackend: sqlite\n\
             admin:\n  enabled: true\n  listenaddr: \"127.0.0.1:0\"\n\
             authenticator:\n  network: regtest\n  enablempp: true\n  mpprealm: \"dash.test\"\n  \
             dev:\n    listenaddr: \"127.0.0.1:0\"\nservices:\n{services}"
        );
        let markers = [
            "aperture listening on http://",
            "admin API and dashboard on http://",
            "wallet at http://",
        ];
        let (child, addrs) = support::spawn_logging_addresses(
            dir.path(),
            &yaml,
            2,
            &markers,
            Duration::from_secs(30),
        );
        Harness {
            _child: child,
            proxy: addrs[0],
            admin: addrs[1],
            wallet: addrs[2],
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// 402, pay at the dev wallet: the `Authorization` value of a paid token.
    fn buy(&self, path: &str) -> String {
        let resp = get(self.proxy, path, "");
        assert_eq!(resp.status, 402, "{}", resp.text());
        let (mac, invoice) = challenge(&resp);
        format!("L402 {mac}:{}", pay(self.wallet, &invoice))
    }

    /// A dashboard endpoint's JSON, fetched as a plain client on loopback.
    fn json(&self, path: &str) -> Value {
        let raw = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.admin
        );
        let resp = Conn::open(self.admin).request(raw.as_bytes());
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        serde_json::from_slice(&resp.body).unwrap()
    }
}

/// Writes a screenshot under `target/dashboard-screenshots/` (and `docs/` on request).
fn save(page: &mut Page, name: &str) {
    let png = page.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}: not a PNG");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("target/dashboard-screenshots")];
    if std::env::var_os("APERTURE_UPDATE_SCREENSHOTS").is_some() {
        dirs.push(root.join("docs"));
    }
    for dir in dirs {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("dashboard-{name}.png")), &png).unwrap();
    }
}

/// The invoice of a fresh 402 on `path`.
fn invoice(addr: SocketAddr, path: &str) -> String {
    let resp = get(addr, path, "");
    assert_eq!(resp.status, 402, "{}", resp.text());
    challenge(&resp).1
}

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn a_payment_shows_and_a_price_changed_in_the_page_goes_live() {
    let Some(chromium) = chromium() else { return };
    let origin = Origin::start();
    let h = Harness::start(&origin);

    // A payment through the proxy: 402, pay at the dev wallet, 200.
    let auth = h.buy("/paid/thing");
    let resp = get(
        h.proxy,
        "/paid/thing",
        &format!("Authorization: {auth}\r\n"),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(invoice(h.proxy, "/paid/other").starts_with("lnbcrt100n1"));
    // And one on another service, for a second row in the revenue table.
    let premium = h.buy("/premium/report");
    let resp = get(
        h.proxy,
        "/premium/report",
        &format!("Authorization: {premium}\r\n"),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    wait_until("both payments settled in the ledger", WAIT, || {
        h.json("/dashboard/api/overview")["revenue_sats"] == 31
    });

    let browser = Browser::launch(&chromium);
    let mut page = browser.page();
    page.set_diagnostic("[location.href, document.getElementById('flash')?.textContent]");

    // Overview: the tiles, the chart's bar for today, the per-service table.
    page.goto(&h.url("/"));
    page.wait_for(
        "the revenue tile",
        "document.body.dataset.loaded && document.getElementById('t-revenue').textContent === '31'",
        WAIT,
    );
    let tiles = page.eval(
        "['t-transactions', 't-settled', 't-pending', 't-services'].map(id => document.getElementById(id).textContent)",
    );
    assert_eq!(
        tiles,
        serde_json::json!(["2", "2", "1", "3"]),
        "2 settled, 1 pending (the second 402), 3 services"
    );
    let bars = page
        .eval("[...document.querySelectorAll('#chart rect.bar')].map(r => Number(r.dataset.sats))");
    let bars: Vec<u64> = serde_json::from_value(bars).unwrap();
    assert_eq!(bars.len(), 30, "one bar per day of the default range");
    assert_eq!(*bars.last().unwrap(), 31, "today's revenue");
    let row = page.eval(
        "[...document.querySelectorAll('#per-service tr[data-service=\"paid\"] td')].map(td => td.textContent)",
    );
    assert_eq!(row[1], "1");
    assert_eq!(row[2], "10");
    // The stylesheet applied (CSP allows this origin's styles) and the script ran (its chart).
    let header_bg = page.eval("getComputedStyle(document.querySelector('.top')).backgroundColor");
    assert_eq!(header_bg, "rgb(29, 35, 48)");
    assert_eq!(
        page.eval("document.getElementById('h-lnd').textContent"),
        "LND connected"
    );
    save(&mut page, "overview");

    // Transactions: the settled payment and the pending 402, filters, CSV.
    page.goto(&h.url("/dashboard/transactions"));
    page.wait_for(
        "three transaction rows",
        "document.querySelectorAll('#tx-body tr[data-tx-id]').length === 3",
        WAIT,
    );
    let settled = page.eval(
        "[...document.querySelectorAll('#tx-body tr[data-state=\"settled\"][data-service=\"paid\"] td')]\
         .map(td => td.textContent)",
    );
    assert_eq!(settled[1], "paid");
    assert_eq!(settled[2], "l402");
    assert_eq!(settled[3], "10");
    assert_eq!(settled[4], "settled");
    page.eval("document.getElementById('f-state').value = 'pending'");
    page.click("#tx-filters button[type=submit]");
    page.wait_for(
        "the pending filter",
        "document.querySelectorAll('#tx-body tr[data-tx-id]').length === 1 && \
         document.querySelector('#tx-body tr').dataset.state === 'pending'",
        WAIT,
    );
    let csv = page.eval("fetch(document.getElementById('csv').href).then(r => r.text())");
    let csv = csv.as_str().unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.contains(",paid,10,pending,"), "{csv}");
    page.click("#tx-reset");
    page.wait_for(
        "the reset filter",
        "document.querySelectorAll('#tx-body tr[data-tx-id]').length === 3",
        WAIT,
    );
    save(&mut page, "transactions");

    // Services: a new price typed into the page and saved goes live on the next 402.
    page.goto(&h.url("/dashboard/services"));
    page.wait_for(
        "the services table",
        "document.querySelector('#svc-body tr[data-service=\"paid\"]')",
        WAIT,
    );
    assert_eq!(
        page.eval(
            "document.querySelector('#svc-body tr[data-service=\"paid\"] .badge').textContent"
        ),
        "file"
    );
    page.click("#svc-body tr[data-service=\"paid\"] .price-input");
    page.eval("document.activeElement.select()");
    page.type_text("25");
    page.click("#svc-body tr[data-service=\"paid\"] .price-save");
    page.wait_for(
        "the saved price",
        "document.getElementById('flash').textContent.startsWith('paid now costs 25 sats')",
        WAIT,
    );
    wait_until("the new price on the data path", WAIT, || {
        invoice(h.proxy, "/paid/thing").starts_with("lnbcrt250n1")
    });
    page.wait_for(
        "the row refreshed",
        "document.querySelector('#svc-body tr[data-service=\"paid\"] .badge').textContent === 'db'",
        WAIT,
    );
    // A service added through the form answers 402 at its price; deleted, its path is gone.
    let form = [
        ("#s-name", "reports".to_owned()),
        ("#s-address", origin.addr.to_string()),
        ("#s-path", "^/reports/.*$".to_owned()),
        ("#s-price", "7".to_owned()),
    ];
    for (field, value) in &form {
        page.click(field);
        page.eval("document.activeElement.select()");
        page.type_text(value);
    }
    page.click("#svc-submit");
    page.wait_for(
        "the added service",
        "document.querySelector('#svc-body tr[data-service=\"reports\"]')",
        WAIT,
    );
    wait_until("the new service on the data path", WAIT, || {
        let resp = get(h.proxy, "/reports/q1", "");
        resp.status == 402 && challenge(&resp).1.starts_with("lnbcrt70n1")
    });
    save(&mut page, "services");
    let delete = "#svc-body tr[data-service=\"reports\"] button.danger";
    page.click(delete);
    page.wait_for(
        "the armed delete",
        &format!("document.querySelector({delete:?}).classList.contains('armed')"),
        WAIT,
    );
    page.click(delete);
    page.wait_for(
        "the deleted service",
        "!document.querySelector('#svc-body tr[data-service=\"reports\"]')",
        WAIT,
    );
    wait_until("the deleted service gone from the data path", WAIT, || {
        get(h.proxy, "/reports/q1", "").status == 404
    });

    // Node.
    page.goto(&h.url("/dashboard/node"));
    page.wait_for("the node view", "document.body.dataset.loaded", WAIT);
    assert_eq!(
        page.eval("document.getElementById('n-lnd_connected').textContent"),
        "connected"
    );
    assert_eq!(
        page.eval("document.getElementById('n-backend').textContent"),
        "dev"
    );
    assert_eq!(
        page.eval("document.getElementById('n-cores').textContent"),
        "2"
    );
    save(&mut page, "node");

    // Revoke the paid token in the page (two clicks): the data path refuses it on every core.
    page.goto(&h.url("/dashboard/transactions"));
    let revoke = "#tx-body tr[data-service=\"paid\"][data-state=\"settled\"] .revoke";
    page.wait_for(
        "a revoke button",
        &format!("document.querySelector({revoke:?})"),
        WAIT,
    );
    page.click(revoke);
    page.wait_for(
        "the armed button",
        &format!("document.querySelector({revoke:?}).classList.contains('armed')"),
        WAIT,
    );
    page.click(revoke);
    page.wait_for(
        "the revoked badge",
        "[...document.querySelectorAll('#tx-body .badge')].some(b => b.textContent === 'revoked')",
        WAIT,
    );
    wait_until("the revoked token refused", WAIT, || {
        (0..4).all(|_| {
            get(
                h.proxy,
                "/paid/thing",
                &format!("Authorization: {auth}\r\n"),
            )
            .status
                == 402
        })
    });
    let resp = get(
        h.proxy,
        "/premium/report",
        &format!("Authorization: {premium}\r\n"),
    );
    assert_eq!(resp.status, 200, "the other token still works");
}

#[test]
fn a_cross_site_page_cannot_change_a_price() {
    let Some(chromium) = chromium() else { return };
    let origin = Origin::start();
    let h = Harness::start(&origin);
    let browser = Browser::launch(&chromium);
    let mut page = browser.page();
    // Another origin (the proxy's data listener, a different port) posts to the dashboard the
    // ways a hostile page could: a no-cors "simple" request, and a fetch with the header.
    page.goto(&format!("http://{}/free/x", h.proxy));
    let tries = format!(
        "Promise.all([\
           fetch('{0}/dashboard/api/services', {{method: 'POST', mode: 'no-cors', \
             headers: {{'Content-Type': 'text/plain'}}, \
             body: JSON.stringify({{name: 'evil', address: '127.0.0.1:9', path_regexp: '^/evil/'}})}})\
             .then(() => 'sent', e => 'blocked: ' + e),\
           fetch('{0}/dashboard/api/services/paid', {{method: 'PUT', \
             headers: {{'Content-Type': 'application/json', 'X-CSRF-Token': 'guess'}}, \
             body: JSON.stringify({{price: 1}})}})\
             .then(r => 'answered ' + r.status, e => 'blocked: ' + e),\
         ])",
        h.url("")
    );
    let outcomes = page.eval(&tries);
    let services = h.json("/dashboard/api/services");
    let services = services.as_array().unwrap();
    assert_eq!(services.len(), 3, "{outcomes}: {services:?}");
    let paid = services.iter().find(|s| s["name"] == "paid").unwrap();
    assert_eq!(paid["price"], 10, "{outcomes}");
    assert!(
        outcomes[1].as_str().unwrap().starts_with("blocked"),
        "the preflight fails: {outcomes}"
    );
    // The same request without a browser's help: refused without the page's token.
    let body = r#"{"price":1}"#;
    let raw = format!(
        "PUT /dashboard/api/services/paid HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        h.admin,
        body.len()
    );
    let resp = Conn::open(h.admin).request(raw.as_bytes());
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert!(resp.text().contains("X-CSRF-Token"));
    let page_resp = get(h.admin, "/", "");
    assert_eq!(
        page_resp.status, 403,
        "Host: test is not a name the dashboard answers"
    );
    let raw = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        h.admin
    );
    let page_resp = Conn::open(h.admin).request(raw.as_bytes());
    assert_eq!(page_resp.status, 200);
    assert_eq!(page_resp.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        page_resp.header("content-security-policy"),
        Some(aperture::admin::dashboard::CSP)
    );
}
