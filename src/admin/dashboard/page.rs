//! The dashboard's HTML: one layout (`assets/layout.html`) around one view's markup, filled on
//! the server with the per-process CSRF token, the active navigation entry, the header's
//! network and LND badges and, for the node view, every value (the other views' data is
//! fetched by `dashboard.js`). Templates hold `{{name}}` slots; every value put in one is
//! HTML-escaped here, and a filled value is never scanned again.

use super::format::html;
use crate::admin::backend::{Info, NodeState};

const LAYOUT: &str = include_str!("assets/layout.html");
const HOME: &str = include_str!("assets/home.html");
const TRANSACTIONS: &str = include_str!("assets/transactions.html");
const SERVICES: &str = include_str!("assets/services.html");
const NODE: &str = include_str!("assets/node.html");

/// The pages the dashboard serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Home,
    Transactions,
    Services,
    Node,
}

impl View {
    pub const ALL: [View; 4] = [View::Home, View::Transactions, View::Services, View::Node];

    /// The view at `path`, if any (`/` is the home view).
    pub fn at(path: &str) -> Option<View> {
        View::ALL
            .into_iter()
            .find(|v| v.path() == path)
            .or_else(|| matches!(path, "/dashboard" | "/dashboard/").then_some(View::Home))
    }

    /// Where the view lives (the admin server hands the dashboard `/` and `/dashboard/…`).
    pub fn path(self) -> &'static str {
        match self {
            View::Home => "/",
            View::Transactions => "/dashboard/transactions",
            View::Services => "/dashboard/services",
            View::Node => "/dashboard/node",
        }
    }

    /// `data-view` on the body: which part of `dashboard.js` runs.
    fn key(self) -> &'static str {
        match self {
            View::Home => "home",
            View::Transactions => "transactions",
            View::Services => "services",
            View::Node => "node",
        }
    }

    fn title(self) -> &'static str {
        match self {
            View::Home => "Overview",
            View::Transactions => "Transactions",
            View::Services => "Services",
            View::Node => "Node",
        }
    }
}

/// The node view's values as display text, by the key the page uses (`n-<key>` element ids);
/// the same list answers `/dashboard/api/node`, so the script refreshes exactly what the server
/// rendered.
pub fn node_fields(info: &Info, node: &NodeState) -> Vec<(&'static str, String)> {
    let on_off = |b: bool| if b { "on" } else { "off" }.to_owned();
    let or_dash = |s: &str| {
        if s.is_empty() {
            "–".to_owned()
        } else {
            s.to_owned()
        }
    };
    vec![
        ("backend", or_dash(&node.backend)),
        ("lnd_connected", connected(node).to_owned()),
        (
            "bridge_queue",
            format!(
                "{} / {}",
                node.bridge_queue_depth, node.bridge_queue_capacity
            ),
        ),
        ("network", or_dash(&info.network)),
        ("listen_addr", or_dash(&info.listen_addr)),
        (
            "tls",
            if info.insecure {
                "off (insecure: true)".to_owned()
            } else {
                "on".to_owned()
            },
        ),
        ("cores", node.cores.to_string()),
        ("mpp", on_off(info.mpp_enabled)),
        ("sessions", on_off(info.sessions_enabled)),
        ("mpp_realm", or_dash(&info.mpp_realm)),
        ("version", or_dash(&node.version)),
    ]
}

fn connected(node: &NodeState) -> &'static str {
    if node.lnd_connected {
        "connected"
    } else {
        "disconnected"
    }
}

fn lnd_class(node: &NodeState) -> &'static str {
    if node.lnd_connected {
        "good"
    } else {
        "bad"
    }
}

/// The full page of `view`.
pub fn render(
    view: View,
    csrf: &str,
    asset_version: &str,
    info: &Info,
    node: &NodeState,
) -> String {
    let main = match view {
        View::Home => HOME.to_owned(),
        View::Transactions => TRANSACTIONS.to_owned(),
        View::Services => SERVICES.to_owned(),
        View::Node => {
            let mut vars: Vec<(&str, String)> = node_fields(info, node)
                .into_iter()
                .map(|(k, v)| (k, html(&v)))
                .collect();
            vars.push(("lnd_class", lnd_class(node).to_owned()));
            fill(NODE, &vars)
        }
    };
    let nav: String = View::ALL
        .into_iter()
        .map(|v| {
            let active = if v == view {
                " class=\"active\" aria-current=\"page\""
            } else {
                ""
            };
            format!("<a href=\"{}\"{active}>{}</a>", v.path(), v.title())
        })
        .collect();
    let lnd_text = format!("LND {}", connected(node));
    fill(
        LAYOUT,
        &[
            ("csrf", html(csrf)),
            ("title", view.title().to_owned()),
            ("asset_version", html(asset_version)),
            ("view", view.key().to_owned()),
            ("nav", nav),
            (
                "network",
                html(if info.network.is_empty() {
                    "network?"
                } else {
                    &info.network
                }),
            ),
            ("lnd_class", lnd_class(node).to_owned()),
            ("lnd_text", lnd_text),
            ("main", main),
        ],
    )
}

/// `template` with each `{{name}}` replaced by its value in `vars` (already escaped); an
/// unknown name becomes empty. One pass: a value is never scanned for slots.
fn fill<S: AsRef<str>>(template: &str, vars: &[(&str, S)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        if let Some((_, v)) = vars.iter().find(|(k, _)| *k == name) {
            out.push_str(v.as_ref());
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Info {
        Info {
            network: "regtest".into(),
            listen_addr: "127.0.0.1:8081".into(),
            insecure: true,
            ..Info::default()
        }
    }

    #[test]
    fn fill_replaces_once_and_drops_unknown_slots() {
        assert_eq!(
            fill("a {{x}} b {{y}} {{z", &[("x", "{{y}}"), ("y", "2")]),
            "a {{y}} b 2 {{z"
        );
        assert_eq!(fill::<&str>("{{nope}}!", &[]), "!");
    }

    #[test]
    fn every_view_renders_with_its_token_and_no_slot_left() {
        let node = NodeState {
            backend: "dev".into(),
            lnd_connected: true,
            bridge_queue_depth: 3,
            bridge_queue_capacity: 4096,
            cores: 2,
            version: "0.1.0 <b>".into(),
        };
        for view in View::ALL {
            let page = render(view, "tok123", "v1", &info(), &node);
            assert!(!page.contains("{{"), "{view:?}: {page}");
            assert!(page.contains("<meta name=\"csrf-token\" content=\"tok123\">"));
            assert!(page.contains(&format!("data-view=\"{}\"", view.key())));
            assert!(page.contains(&format!(
                "<a href=\"{}\" class=\"active\" aria-current=\"page\">",
                view.path()
            )));
            assert!(!page.contains("style="), "inline styles break the CSP");
            assert!(!page.contains("<script>"), "inline scripts break the CSP");
            assert_eq!(View::at(view.path()), Some(view));
        }
        let page = render(View::Node, "t", "v", &info(), &node);
        assert!(page.contains("<span id=\"n-bridge_queue\">3 / 4096</span>"));
        assert!(page.contains("0.1.0 &lt;b&gt;"), "values are escaped");
        assert!(page.contains("off (insecure: true)"));
        assert_eq!(View::at("/dashboard/"), Some(View::Home));
        assert_eq!(View::at("/dashboard/nope"), None);
    }
}
