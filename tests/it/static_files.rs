//! The static file server (`servestatic`/`staticroot`): requests no service matches are served
//! from a temporary site on HTTP/1.1 and HTTP/2: index pages and Go's redirects, content types,
//! ETag/Last-Modified and 304, single ranges (206/416), HEAD, 405, 404; traversal attempts (raw,
//! encoded, backslashes, NUL, symlinks out of the root) never reach a file outside the root; a
//! 5 MiB file arrives intact whole and in ranges; a service route still wins over a file; the
//! config checks `staticroot`; a reload switches the site.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::support::{self, get, service, wait_until, Conn, Origin, Proxy, Response};

const SECRET: &str = "top secret outside the root";
const BIG: usize = 5 * 1024 * 1024 + 12_345;

/// Deterministic bytes that differ at every offset mod 251 (a misplaced chunk shows).
fn big_content() -> Vec<u8> {
    (0..BIG)
        .map(|i| (i % 251) as u8 ^ (i / 65_536) as u8)
        .collect()
}

/// A temporary site: `<tmp>/root` is the staticroot, `<tmp>/secret.txt` lies beside it.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let w = |rel: &str, body: &[u8]| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        };
        w("index.html", b"<h1>home</h1>");
        w("a.txt", b"hello, static world");
        w("style.css", b"body{}");
        w("app.js", b"1;");
        w("data.json", b"{}");
        w("img.svg", b"<svg/>");
        w("img.png", b"png");
        w("img.jpg", b"jpg");
        w("img.gif", b"gif");
        w("favicon.ico", b"ico");
        w("mod.wasm", b"wasm");
        w("font.woff2", b"woff2");
        w("doc.pdf", b"pdf");
        w("blob.bin", b"bin");
        w("README", b"no extension");
        w("empty.txt", b"");
        w("sub/index.html", b"sub index");
        w("sub/page.html", b"sub page");
        w("noindex/file.txt", b"x");
        w("api/x.txt", b"the file, not the service");
        w("big.bin", &big_content());
        std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
        std::os::unix::fs::symlink("../secret.txt", root.join("out.txt")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("abs-out.txt"))
            .unwrap();
        std::os::unix::fs::symlink("..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("in.txt")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("sublink")).unwrap();
        Site { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn top(&self) -> String {
        top_for(&self.root())
    }
}

fn top_for(root: &Path) -> String {
    format!("servestatic: true\nstaticroot: \"{}\"\n", root.display())
}

/// A proxy with one service on `^/api/` (auth off) and the site behind everything else.
fn start(site: &Site) -> (Proxy, Origin) {
    let origin = Origin::start();
    let svc = service(
        "api",
        origin.addr,
        "    pathregexp: \"^/api/\"\n    auth: \"off\"\n",
    );
    let proxy = Proxy::start_with(&svc, 1, &site.top(), 4096);
    (proxy, origin)
}

fn raw_get(addr: SocketAddr, target: &str, extra: &str) -> Response {
    get(addr, target, extra)
}

fn request(addr: SocketAddr, method: &str, target: &str, extra: &str) -> Response {
    let raw = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n{extra}\r\n");
    let mut conn = Conn::open(addr);
    conn.send(raw.as_bytes());
    conn.read_response(method == "HEAD")
}

#[test]
fn serves_index_pages_content_types_and_go_redirects() {
    let site = Site::new();
    let (proxy, _origin) = start(&site);
    let r = raw_get(proxy.addr, "/", "");
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>home</h1>"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("13"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    for (path, ctype) in [
        ("/a.txt", "text/plain; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/data.json", "application/json"),
        ("/img.svg", "image/svg+xml"),
        ("/img.png", "image/png"),
        ("/img.jpg", "image/jpeg"),
        ("/img.gif", "image/gif"),
        ("/favicon.ico", "image/x-icon"),
        ("/mod.wasm", "application/wasm"),
        ("/font.woff2", "font/woff2"),
        ("/doc.pdf", "application/pdf"),
        ("/blob.bin", "application/octet-stream"),
        ("/README", "application/octet-stream"),
        ("/sub/page.html", "text/html; charset=utf-8"),
    ] {
        let r = raw_get(proxy.addr, path, "");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ctype), "{path}");
        let on_disk = std::fs::read(site.root().join(&path[1..])).unwrap();
        assert_eq!(r.body, on_disk, "{path}");
    }
    let empty = raw_get(proxy.addr, "/empty.txt", "");
    assert_eq!((empty.status, empty.body.len()), (200, 0));
    assert_eq!(empty.header("content-length"), Some("0"));
    // Directories: the index with a slash, a redirect to add it (query kept), no listings.
    let r = raw_get(proxy.addr, "/sub/", "");
    assert_eq!((r.status, r.text().as_str()), (200, "sub index"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let r = raw_get(proxy.addr, "/sub", "");
    assert_eq!((r.status, r.header("location")), (301, Some("sub/")));
    let r = raw_get(proxy.addr, "/sub?x=1", "");
    assert_eq!((r.status, r.header("location")), (301, Some("sub/?x=1")));
    let r = raw_get(proxy.addr, "/index.html", "");
    assert_eq!((r.status, r.header("location")), (301, Some("./")));
    let r = raw_get(proxy.addr, "/sub/index.html", "");
    assert_eq!((r.status, r.header("location")), (301, Some("./")));
    assert_eq!(raw_get(proxy.addr, "/noindex/", "").status, 404);
    assert_eq!(raw_get(proxy.addr, "/a.txt/", "").status, 404);
    // Missing: Go's 404 text.
    let r = raw_get(proxy.addr, "/missing.txt", "");
    assert_eq!((r.status, r.text().as_str()), (404, "404 page not found\n"));
    let r = raw_get(proxy.addr, "/no/such/dir/", "");
    assert_eq!(r.status, 404);
    // HEAD: the same head, no body.
    let head = request(proxy.addr, "HEAD", "/a.txt", "");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("19"));
    assert_eq!(
        head.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(head.body.is_empty());
    // Only GET and HEAD.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = request(proxy.addr, method, "/a.txt", "Content-Length: 3\r\n\r\nabc");
        assert_eq!(
            (r.status, r.header("allow")),
            (405, Some("GET, HEAD")),
            "{method}"
        );
    }
}

#[test]
fn keep_alive_connections_serve_many_files_and_a_request_body_is_drained() {
    let site = Site::new();
    let (proxy, _origin) = start(&site);
    let mut conn = Conn::open(proxy.addr);
    for _ in 0..3 {
        let r = conn.request(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.text(), "hello, static world");
        conn.send(b"HEAD /sub/ HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = conn.read_response(true);
        assert_eq!((r.status, r.header("content-length")), (200, Some("9")));
        let r =
            conn.request(b"GET /style.css HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody");
        assert_eq!(r.text(), "body{}");
        let r = conn.request(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 404);
    }
    let r = conn.request(b"GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(conn.closed());
}

#[test]
fn etag_last_modified_and_conditional_requests() {
    let site = Site::new();
    let (proxy, _origin) = start(&site);
    let r = raw_get(proxy.addr, "/a.txt", "");
    let etag = r.header("etag").expect("etag").to_string();
    let modified = r
        .header("last-modified")
        .expect("last-modified")
        .to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert!(modified.ends_with(" GMT"), "{modified}");
    // Stable across requests.
    assert_eq!(
        raw_get(proxy.addr, "/a.txt", "").header("etag"),
        Some(etag.as_str())
    );

    let r = raw_get(proxy.addr, "/a.txt", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("content-length"), None);
    let r = raw_get(
        proxy.addr,
        "/a.txt",
        &format!("If-None-Match: \"other\", W/{etag}\r\n"),
    );
    assert_eq!(r.status, 304);
    assert_eq!(
        raw_get(proxy.addr, "/a.txt", "If-None-Match: *\r\n").status,
        304
    );
    let r = raw_get(proxy.addr, "/a.txt", "If-None-Match: \"other\"\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "hello, static world"));
    // If-Modified-Since: not modified since its own date; ignored beside If-None-Match.
    let since = format!("If-Modified-Since: {modified}\r\n");
    assert_eq!(raw_get(proxy.addr, "/a.txt", &since).status, 304);
    let old = "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n";
    assert_eq!(raw_get(proxy.addr, "/a.txt", old).status, 200);
    let both = format!("{since}If-None-Match: \"other\"\r\n");
    assert_eq!(raw_get(proxy.addr, "/a.txt", &both).status, 200);
    // HEAD is conditional too.
    let r = request(
        proxy.addr,
        "HEAD",
        "/a.txt",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!(r.status, 304);

    // A changed file gets a new tag: the old one no longer matches.
    std::fs::write(site.root().join("a.txt"), "changed, and longer than before").unwrap();
    let r = raw_get(proxy.addr, "/a.txt", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "changed, and longer than before")
    );
    assert_ne!(r.header("etag"), Some(etag.as_str()));
}

#[test]
fn single_ranges_get_206_and_unsatisfiable_ones_416() {
    let site = Site::new();
    let (proxy, _origin) = start(&site);
    let text = "hello, static world";
    let len = text.len();
    for (range, first, last) in [
        ("bytes=0-4", 0, 4),
        ("bytes=7-12", 7, 12),
        ("bytes=7-", 7, len - 1),
        ("bytes=-5", len - 5, len - 1),
        ("bytes=10-1000", 10, len - 1),
        ("bytes=-1000", 0, len - 1),
    ] {
        let r = raw_get(proxy.addr, "/a.txt", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.text(), &text[first..=last], "{range}");
        let want = format!("bytes {first}-{last}/{len}");
        assert_eq!(r.header("content-range"), Some(want.as_str()), "{range}");
        let count = (last - first + 1).to_string();
        assert_eq!(r.header("content-length"), Some(count.as_str()), "{range}");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    }
    for range in ["bytes=19-", "bytes=100-200", "bytes=-0"] {
        let r = raw_get(proxy.addr, "/a.txt", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 416, "{range}");
        let want = format!("bytes */{len}");
        assert_eq!(r.header("content-range"), Some(want.as_str()), "{range}");
    }
    assert_eq!(
        raw_get(proxy.addr, "/empty.txt", "Range: bytes=0-0\r\n").status,
        416
    );
    // Several ranges, malformed ranges and other units: the whole file.
    for range in ["bytes=0-1,4-5", "bytes=5-1", "bytes=x-y", "lines=1-2"] {
        let r = raw_get(proxy.addr, "/a.txt", &format!("Range: {range}\r\n"));
        assert_eq!((r.status, r.text().as_str()), (200, text), "{range}");
    }
    // If-Range: the current tag keeps the range, a stale one gets the whole file.
    let etag = raw_get(proxy.addr, "/a.txt", "")
        .header("etag")
        .unwrap()
        .to_string();
    let r = raw_get(
        proxy.addr,
        "/a.txt",
        &format!("Range: bytes=0-4\r\nIf-Range: {etag}\r\n"),
    );
    assert_eq!((r.status, r.text().as_str()), (206, "hello"));
    let r = raw_get(
        proxy.addr,
        "/a.txt",
        "Range: bytes=0-4\r\nIf-Range: \"stale\"\r\n",
    );
    assert_eq!((r.status, r.text().as_str()), (200, text));
    // HEAD ignores Range (it is defined for GET).
    let r = request(proxy.addr, "HEAD", "/a.txt", "Range: bytes=0-4\r\n");
    assert_eq!((r.status, r.header("content-length")), (200, Some("19")));
}

#[test]
fn traversal_attempts_never_leave_the_root() {
    let site = Site::new();
    let (proxy, _origin) = start(&site);
    for target in [
        "/../etc/passwd",
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/",
        "/%2e%2e/secret.txt",
        "/%2E%2E/%2e%2e/etc/passwd",
        "/a/%2e%2e/%2e%2e/etc/passwd",
        "/a/%2e%2e/%2e%2e/secret.txt",
        "/.%2e/secret.txt",
        "/..%2f",
        "/..%2fsecret.txt",
        "/%2f..%2f..%2fetc%2fpasswd",
        "/..\\secret.txt",
        "/..%5csecret.txt",
        "/sub\\..\\..\\secret.txt",
        "/a.txt%00.html",
        "/%",
    ] {
        let r = raw_get(proxy.addr, target, "");
        assert_eq!(r.status, 400, "{target}: {}", r.text());
        assert!(!r.text().contains(SECRET), "{target}");
    }
    // Names that are not traversal are looked up literally and are missing.
    for target in [
        "//etc/passwd",
        "/%252e%252e/secret.txt",
        "/etc/passwd",
        "/....",
    ] {
        let r = raw_get(proxy.addr, target, "");
        assert_eq!(r.status, 404, "{target}");
    }
    // Symlinks: out of the root (relative, absolute, through a directory link) are not
    // found; inside the root they are served.
    for target in ["/out.txt", "/abs-out.txt", "/up/secret.txt", "/up/", "/up"] {
        let r = raw_get(proxy.addr, target, "");
        assert_eq!(r.status, 404, "{target}");
        assert!(!r.text().contains(SECRET), "{target}");
    }
    let r = raw_get(proxy.addr, "/in.txt", "");
    assert_eq!((r.status, r.text().as_str()), (200, "hello, static world"));
    let r = raw_get(proxy.addr, "/sublink/page.html", "");
    assert_eq!((r.status, r.text().as_str()), (200, "sub page"));
}

#[test]
fn a_five_mebibyte_file_arrives_intact_whole_and_in_ranges() {
    let site = Site::new();
    let (proxy, _origin) = start(&site);
    let want = big_content();
    let r = raw_get(proxy.addr, "/big.bin", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(BIG.to_string().as_str()));
    assert!(r.body == want, "the 5 MiB body differs");
    // A range across chunk boundaries, and the tail.
    let (first, last) = (65_530usize, 3 * 65_536 + 17);
    let r = raw_get(
        proxy.addr,
        "/big.bin",
        &format!("Range: bytes={first}-{last}\r\n"),
    );
    assert_eq!(r.status, 206);
    assert!(r.body == want[first..=last]);
    let r = raw_get(proxy.addr, "/big.bin", "Range: bytes=-70000\r\n");
    assert!(r.status == 206 && r.body == want[BIG - 70_000..]);
}

#[test]
fn a_service_route_wins_over_a_static_file() {
    let site = Site::new();
    let (proxy, origin) = start(&site);
    let r = raw_get(proxy.addr, "/api/x.txt", "");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "origin saw /api/x.txt")
    );
    assert_eq!(origin.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The discovery document is still the proxy's.
    let r = raw_get(proxy.addr, "/.well-known/l402.json", "");
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Without servestatic, unmatched requests get 404 as before.
    let plain = Proxy::start(
        &service(
            "api",
            origin.addr,
            "    pathregexp: \"^/api/\"\n    auth: \"off\"\n",
        ),
        1,
    );
    assert_eq!(raw_get(plain.addr, "/a.txt", "").status, 404);
}

#[test]
fn staticroot_is_checked_at_load() {
    let site = Site::new();
    let parse = |top: &str| {
        let yaml = format!(
            "listenaddr: \"127.0.0.1:0\"\ninsecure: true\ndbbackend: sqlite\n{top}authenticator:\n  dev: {{}}\n"
        );
        aperture::config::parse(&yaml, "static.yaml")
    };
    let ok = parse(&site.top()).expect("a directory validates");
    assert_eq!(
        ok.static_root.as_deref(),
        Some(std::fs::canonicalize(site.root()).unwrap().as_path())
    );
    let missing = site.dir.path().join("nope");
    let err = parse(&top_for(&missing)).unwrap_err().to_string();
    assert!(err.contains("staticroot") && err.contains("nope"), "{err}");
    let file = site.root().join("a.txt");
    let err = parse(&top_for(&file)).unwrap_err().to_string();
    assert!(
        err.contains("staticroot") && err.contains("not a directory"),
        "{err}"
    );
    let err = parse("servestatic: true\n").unwrap_err().to_string();
    assert!(err.contains("staticroot"), "{err}");
    // Off, the root is not looked at (as in Go).
    let off = format!(
        "servestatic: false\nstaticroot: \"{}\"\n",
        missing.display()
    );
    assert!(parse(&off).expect("off").static_root.is_none());
    assert!(parse(&off)
        .unwrap()
        .warnings
        .iter()
        .all(|w| !w.contains("servestatic")));
}

#[test]
fn a_reload_switches_the_site_on_and_over() {
    let site = Site::new();
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("a.txt"), "the other site").unwrap();
    let origin = Origin::start();
    let svc = service(
        "api",
        origin.addr,
        "    pathregexp: \"^/api/\"\n    auth: \"off\"\n",
    );
    let proxy = Proxy::start(&svc, 2);
    assert_eq!(raw_get(proxy.addr, "/a.txt", "").status, 404);
    let routes = |top: &str| {
        let yaml = format!(
            "listenaddr: \"127.0.0.1:0\"\ninsecure: true\ndbbackend: sqlite\n{top}authenticator:\n  dev: {{}}\nservices:\n{svc}"
        );
        let config = aperture::config::parse(&yaml, "reload.yaml").expect("config");
        aperture::proxy::Routes::resolve(&config).expect("routes")
    };
    proxy.server().reload(&routes(&site.top()));
    // Every core (fresh connections land on either) serves the site once the reload applied.
    wait_until("the site to be served", Duration::from_secs(10), || {
        (0..4).all(|_| raw_get(proxy.addr, "/a.txt", "").status == 200)
    });
    proxy.server().reload(&routes(&top_for(other.path())));
    wait_until("the other site", Duration::from_secs(10), || {
        (0..4).all(|_| raw_get(proxy.addr, "/a.txt", "").text() == "the other site")
    });
    proxy.server().reload(&routes(""));
    wait_until("static serving to stop", Duration::from_secs(10), || {
        (0..4).all(|_| raw_get(proxy.addr, "/a.txt", "").status == 404)
    });
}

/// A field as text ("" when absent).
fn hv<'a>(h: &'a http::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn h2c(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::Builder::new()
        .handshake(tcp)
        .await
        .expect("h2c handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// One h2 request: status, headers and body.
async fn h2_request(
    send: &mut h2::client::SendRequest<Bytes>,
    method: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, http::HeaderMap, Vec<u8>) {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://proxy{path}"));
    for (n, v) in fields {
        req = req.header(*n, *v);
    }
    let (resp, _) = send
        .send_request(req.body(()).unwrap(), true)
        .expect("send");
    let resp = resp.await.expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (status, headers, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_get_the_same_answers() {
    let site = Site::new();
    let (proxy, _origin) = start(&site);
    let mut send = h2c(proxy.addr).await;
    let (status, h, body) = h2_request(&mut send, "GET", "/", &[]).await;
    assert_eq!((status, body.as_slice()), (200, &b"<h1>home</h1>"[..]));
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["content-length"], "13");
    let etag = h["etag"].to_str().unwrap().to_string();
    assert!(h.contains_key("last-modified"));

    // The 5 MiB file through the default 64 KiB stream window.
    let (status, h, body) = h2_request(&mut send, "GET", "/big.bin", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(h["content-length"], BIG.to_string().as_str());
    assert!(body == big_content(), "the 5 MiB body differs over h2");

    let (status, h, body) =
        h2_request(&mut send, "GET", "/a.txt", &[("range", "bytes=7-12")]).await;
    assert_eq!((status, body.as_slice()), (206, &b"static"[..]));
    assert_eq!(h["content-range"], "bytes 7-12/19");
    let (status, h, _) = h2_request(&mut send, "GET", "/a.txt", &[("range", "bytes=50-")]).await;
    assert_eq!((status, hv(&h, "content-range")), (416, "bytes */19"));
    let (status, _, body) = h2_request(&mut send, "GET", "/", &[("if-none-match", &etag)]).await;
    assert_eq!((status, body.len()), (304, 0));
    let (status, h, body) = h2_request(&mut send, "HEAD", "/a.txt", &[]).await;
    assert_eq!(
        (status, hv(&h, "content-length"), body.len()),
        (200, "19", 0)
    );
    let (status, h, _) = h2_request(&mut send, "POST", "/a.txt", &[]).await;
    assert_eq!((status, hv(&h, "allow")), (405, "GET, HEAD"));
    let (status, _, body) = h2_request(&mut send, "GET", "/missing", &[]).await;
    assert_eq!(
        (status, body.as_slice()),
        (404, &b"404 page not found\n"[..])
    );
    let (status, h, _) = h2_request(&mut send, "GET", "/sub", &[]).await;
    assert_eq!((status, hv(&h, "location")), (301, "sub/"));
    for path in [
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/a/%2e%2e/%2e%2e/secret.txt",
    ] {
        let (status, _, body) = h2_request(&mut send, "GET", path, &[]).await;
        assert_eq!(status, 400, "{path}");
        assert!(!String::from_utf8_lossy(&body).contains(SECRET));
    }
    let (status, _, _) = h2_request(&mut send, "GET", "/out.txt", &[]).await;
    assert_eq!(status, 404);
    // The service still wins.
    let (status, _, body) = h2_request(&mut send, "GET", "/api/x.txt", &[]).await;
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"origin saw /api/x.txt"[..])
    );
    drop(proxy);
}

/// The site survives many concurrent clients on few cores (the pool and the rings are shared).
#[test]
fn concurrent_clients_all_get_whole_files() {
    let site = Site::new();
    let (proxy, _origin) = start(&site);
    let want = Arc::new(big_content());
    let addr = proxy.addr;
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let want = want.clone();
            std::thread::spawn(move || {
                for j in 0..3 {
                    let path = if (i + j) % 2 == 0 {
                        "/big.bin"
                    } else {
                        "/a.txt"
                    };
                    let r = support::get(addr, path, "");
                    assert_eq!(r.status, 200);
                    if path == "/big.bin" {
                        assert!(r.body == *want);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}
