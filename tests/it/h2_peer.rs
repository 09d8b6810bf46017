//! The running proxy's native HTTP/2 server (src/proxy/h2n) against an independent client
//! stack: Python `h2` 4.2.0 over a real socket to the plaintext listener (h2c prior knowledge),
//! through tests/py/h2_peer.py. h2's client state machine raises on any frame, flag, header
//! block, HPACK state, window or stream-state violation in what the server writes, so every
//! scenario also checks everything we wrote on its connection; a scenario where h2 raised comes
//! back as `{"error": ...}` and fails here. Valid exchanges must be answered (concurrency, a
//! request body over several windows, responses under tiny client windows, a lowered header
//! table size, PING, a client GOAWAY, request trailers); invalid requests must get the RFC 9113
//! error with its scope (malformed requests: RST_STREAM PROTOCOL_ERROR and the connection goes
//! on; an undecodable header block: GOAWAY COMPRESSION_ERROR; DATA after END_STREAM: RST_STREAM
//! STREAM_CLOSED). Skips when h2 is missing, except in CI (env CI), where that fails the run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;

use serde_json::Value;

use crate::h2_raw::open_service;
use crate::support::{Origin, Proxy};

const PROTOCOL_ERROR: u64 = 0x1;
const STREAM_CLOSED: u64 = 0x5;
const COMPRESSION_ERROR: u64 = 0x9;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/h2_peer.py")
}

/// Whether the script runs here (python3 with h2 4.2.0); panics in CI when it does not.
fn available() -> bool {
    crate::support::python_h2_script_runs(&script(), "the h2 peer tests")
}

/// Runs `scenarios` (each on its own connection) against `addr`; their results by name. A
/// scenario in which h2 raised fails the test with what it raised.
fn peer(addr: SocketAddr, scenarios: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(script())
        .arg(addr.to_string())
        .args(scenarios)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "h2_peer.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Value = serde_json::from_slice(&out.stdout).expect("peer json");
    for name in scenarios {
        let r = &results[*name];
        assert!(
            r.get("error").is_none(),
            "{name}: Python h2 refused what the server wrote: {}",
            r["error"]
        );
    }
    results
}

/// A stream answered in full: `:status` and the body, not reset.
fn assert_answered(outcome: &Value, status: u64, body: &str, what: &str) {
    assert_eq!(outcome["status"], status, "{what}: {outcome}");
    assert_eq!(outcome["body"], body, "{what}: {outcome}");
    assert_eq!(outcome["ended"], true, "{what}: {outcome}");
    assert!(outcome["reset"].is_null(), "{what}: {outcome}");
}

fn assert_no_panics(proxy: &Proxy) {
    let metrics = proxy.server().metrics().clone();
    assert_eq!(
        metrics.total(aperture::metrics::Counter::ConnectionPanics),
        0
    );
}

#[test]
fn requests_bodies_trailers_and_ping_as_an_independent_client_sees_them() {
    if !available() {
        return;
    }
    let origin = Origin::start();
    // The smallest windows we may announce, so the 300 KiB request body crosses several.
    let top = "http2:\n  initialstreamwindow: 65535\n  initialconnectionwindow: 65535\n";
    let proxy = Proxy::start_with(&open_service(&origin), 1, top, 4096);
    let r = peer(
        proxy.addr,
        &[
            "get",
            "continuation",
            "concurrent",
            "post_big",
            "post_padded",
            "trailers",
            "ping",
            "frames_after_close",
        ],
    );

    assert_answered(&r["get"], 200, "origin saw /peer/get", "get");

    // A 40,000-byte field in HEADERS + CONTINUATIONs (after a PRIORITY frame) reaches the
    // origin whole.
    let k = &r["continuation"];
    assert_eq!(k["status"], 200, "{k}");
    assert_eq!(k["ended"], true, "{k}");
    assert_eq!(k["forwarded_big"], true, "{k}");

    let c = &r["concurrent"];
    assert_eq!(c["streams"], 50);
    let outcomes = c["outcomes"].as_array().expect("outcomes");
    assert_eq!(outcomes.len(), 50);
    for (i, o) in outcomes.iter().enumerate() {
        assert_answered(o, 200, &format!("origin saw /peer/c{i}"), "concurrent");
    }

    // The second with each 1 KiB piece padded by 255 bytes (padding counts against the
    // windows and must be granted back, RFC 9113 §6.9.1).
    for case in ["post_big", "post_padded"] {
        let p = &r[case];
        assert_eq!(p["status"], 200, "{case}: {p}");
        assert_eq!(p["ended"], true, "{case}: {p}");
        assert!(p["reset"].is_null(), "{case}: {p}");
        assert_eq!(p["echoed_body"], true, "the origin got the whole body: {p}");
        let head = p["origin_head"].as_str().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("post /echo http/1.1\r\n"), "{head}");
        assert!(head.contains("content-length: 307200\r\n"), "{head}");
        // 300 KiB through 64 KiB windows: at least four grants on the stream.
        assert!(p["window_updates_for_stream"].as_u64().unwrap() >= 4, "{p}");
    }

    let t = &r["trailers"];
    assert_eq!(t["status"], 200, "trailers: {t}");
    assert_eq!(t["ended"], true, "trailers: {t}");
    assert!(t["reset"].is_null(), "trailers: {t}");
    assert_eq!(t["echoed_body"], true, "trailers: {t}");
    assert_answered(
        &t["then"],
        200,
        "origin saw /peer/after-trailers",
        "after trailers",
    );

    let ping = &r["ping"];
    assert_eq!(ping["pings"], serde_json::json!([hex(b"h2-peer!")]));
    assert_answered(
        &ping["then"],
        200,
        "origin saw /peer/after-ping",
        "after ping",
    );

    // WINDOW_UPDATE and RST_STREAM on a closed stream are tolerated (RFC 9113 §5.1).
    let f = &r["frames_after_close"];
    assert_answered(&f["first"], 200, "origin saw /peer/closed", "closed");
    assert!(f["terminated"].is_null(), "{f}");
    assert_answered(
        &f["then"],
        200,
        "origin saw /peer/after-close",
        "after close",
    );
    assert_no_panics(&proxy);
}

#[test]
fn responses_keep_to_tiny_client_windows_and_the_default_frame_size() {
    if !available() {
        return;
    }
    let origin = Origin::start();
    let proxy = Proxy::start(&open_service(&origin), 1);
    let r = peer(
        proxy.addr,
        &["big_small_stream_window", "big_small_conn_window"],
    );

    let s = &r["big_small_stream_window"];
    let o = &s["outcomes"][0];
    assert_eq!(o["status"], 200, "{s}");
    assert_eq!(o["len"], 1024 * 1024 + 7, "{s}");
    assert_eq!(o["all_x"], true, "{s}");
    assert_eq!(o["ended"], true, "{s}");
    assert!(o["reset"].is_null(), "{s}");
    // A 1,024-byte stream window: no DATA frame may be larger.
    assert!(s["max_data_frame"].as_u64().unwrap() <= 1024, "{s}");
    assert!(s["data_frames"].as_u64().unwrap() >= 1024, "{s}");

    let c = &r["big_small_conn_window"];
    for o in c["outcomes"].as_array().expect("outcomes") {
        assert_eq!(o["status"], 200, "{c}");
        assert_eq!(o["len"], 1024 * 1024, "{c}");
        assert_eq!(o["all_x"], true, "{c}");
        assert_eq!(o["ended"], true, "{c}");
    }
    assert!(c["max_data_frame"].as_u64().unwrap() <= 16_384, "{c}");
    assert_no_panics(&proxy);
}

#[test]
fn larger_client_frames_and_a_window_shrunk_mid_response_are_honoured() {
    if !available() {
        return;
    }
    let origin = Origin::start();
    let proxy = Proxy::start(&open_service(&origin), 1);
    let r = peer(
        proxy.addr,
        &["big_large_frames", "window_shrink_mid_response"],
    );

    let l = &r["big_large_frames"];
    assert_eq!(l["outcomes"][0]["status"], 200, "{l}");
    assert_eq!(l["outcomes"][0]["len"], 1024 * 1024, "{l}");
    assert_eq!(l["outcomes"][0]["ended"], true, "{l}");
    assert!(l["max_data_frame"].as_u64().unwrap() <= 65_536, "{l}");

    // RFC 9113 §6.9.2: after SETTINGS_INITIAL_WINDOW_SIZE 0 nothing more may come (h2 raises on
    // DATA past its own window), and the stream completes once the window is raised.
    let w = &r["window_shrink_mid_response"];
    assert_eq!(w["status"], 200, "{w}");
    assert_eq!(w["len"], 600_000, "{w}");
    assert_eq!(w["ended"], true, "{w}");
    assert!(w["reset"].is_null(), "{w}");
    assert_eq!(w["held"], 0, "DATA after the window shrank to 0: {w}");
    assert!(w["window_after_shrink"].as_i64().unwrap() <= 0, "{w}");
    assert!(w["max_data_frame"].as_u64().unwrap() <= 16_384, "{w}");
    assert_no_panics(&proxy);
}

#[test]
fn a_header_table_lowered_to_zero_gets_a_size_update_and_no_dynamic_entries() {
    if !available() {
        return;
    }
    let origin = Origin::start();
    let proxy = Proxy::start(&open_service(&origin), 1);
    let r = peer(
        proxy.addr,
        &["header_table_zero", "header_table_zero_then_back"],
    );
    let t = &r["header_table_zero"];
    assert_answered(&t["first"], 200, "origin saw /peer/t1", "first");
    // The first response indexed something, so the table had entries to drop.
    let first = t["first_reps"].as_array().unwrap();
    assert!(first.iter().any(|r| r[0] == "incremental"), "{t}");
    for (i, path) in ["/peer/t2", "/peer/t3", "/peer/t4"].iter().enumerate() {
        assert_answered(&t["after"][i], 200, &format!("origin saw {path}"), path);
        let reps = t["after_reps"][i].as_array().unwrap();
        // RFC 7541 §4.2: the first block after the change starts with the size update.
        if i == 0 {
            assert_eq!(reps[0], serde_json::json!(["size_update", 0]), "{t}");
        }
        for rep in reps {
            let index = rep[1].as_u64().unwrap();
            let dynamic = rep[0] != "size_update" && index > 61;
            assert!(!dynamic, "a dynamic-table reference after size 0: {t}");
            assert_ne!(rep[0], "incremental", "indexing into a 0-byte table: {t}");
        }
    }

    // 0 then 4096 before the next block: both sizes signalled (RFC 7541 §4.2), so the client's
    // table drops what ours dropped, and 200 responses of distinct lengths (a new
    // `content-length` entry each) evict in step on both sides past the table's 4 KiB.
    let b = &r["header_table_zero_then_back"];
    assert_answered(&b["first"], 200, "origin saw /peer/t1", "first");
    let reps = &b["after_first_reps"];
    assert_eq!(reps[0], serde_json::json!(["size_update", 0]), "{b}");
    assert_eq!(reps[1], serde_json::json!(["size_update", 4096]), "{b}");
    assert_eq!(b["responses"], 200, "{b}");
    assert_eq!(b["wrong"], serde_json::json!([]), "{b}");
    assert_no_panics(&proxy);
}

#[test]
fn a_client_goaway_ends_the_connection_after_its_streams_complete() {
    if !available() {
        return;
    }
    let origin = Origin::start();
    let proxy = Proxy::start(&open_service(&origin), 1);
    let r = peer(proxy.addr, &["goaway"]);
    let g = &r["goaway"];
    assert_eq!(g["status"], 200, "{g}");
    assert_eq!(g["len"], 300_000, "the stream in flight completed: {g}");
    assert_eq!(g["ended"], true, "{g}");
    assert!(g["reset"].is_null(), "{g}");
    assert_eq!(g["closed"], true, "then the server closed: {g}");
    // If the server says GOAWAY before closing, it is NO_ERROR.
    if !g["server_goaway"].is_null() {
        assert_eq!(g["server_goaway"]["code"], 0, "{g}");
    }
    assert_no_panics(&proxy);
}

#[test]
fn malformed_requests_get_a_stream_protocol_error_and_the_connection_goes_on() {
    if !available() {
        return;
    }
    let origin = Origin::start();
    let proxy = Proxy::start(&open_service(&origin), 1);
    let cases = ["uppercase_name", "connection_header", "no_path", "te_gzip"];
    let r = peer(proxy.addr, &cases);
    for case in cases {
        let c = &r[case];
        assert_eq!(c["bad"]["reset"], PROTOCOL_ERROR, "{case}: {c}");
        assert!(c["bad"]["status"].is_null(), "{case} was answered: {c}");
        assert!(
            c["terminated"].is_null(),
            "{case} ended the connection: {c}"
        );
        assert_answered(&c["then"], 200, "origin saw /peer/after", case);
    }
    // Only the valid requests reached the origin.
    assert_eq!(origin.hits.load(Ordering::SeqCst), cases.len());
    assert_no_panics(&proxy);
}

#[test]
fn an_undecodable_header_block_is_a_connection_compression_error() {
    if !available() {
        return;
    }
    let origin = Origin::start();
    let proxy = Proxy::start(&open_service(&origin), 1);
    let r = peer(proxy.addr, &["bad_hpack"]);
    let b = &r["bad_hpack"];
    assert_eq!(b["terminated"]["code"], COMPRESSION_ERROR, "{b}");
    assert_eq!(b["closed"], true, "{b}");
    assert_eq!(origin.hits.load(Ordering::SeqCst), 0);
    assert_no_panics(&proxy);
}

#[test]
fn data_after_the_clients_end_stream_is_a_stream_closed_error() {
    if !available() {
        return;
    }
    let origin = Origin::start();
    let proxy = Proxy::start(&open_service(&origin), 1);
    let r = peer(proxy.addr, &["data_after_end_stream"]);
    origin.release();
    let d = &r["data_after_end_stream"];
    // RFC 9113 §5.1, half-closed (remote): a stream error of type STREAM_CLOSED.
    assert_eq!(d["bad"]["reset"], STREAM_CLOSED, "{d}");
    assert_eq!(
        d["rst_frames"],
        serde_json::json!([[1, "RstStreamFrame"]]),
        "{d}"
    );
    assert!(d["terminated"].is_null(), "{d}");
    assert_answered(&d["then"], 200, "origin saw /peer/after", "after");
    assert_no_panics(&proxy);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
