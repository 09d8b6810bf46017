//! Misbehaving HTTP/2 clients, on hand-written frames over plain TCP (h2c prior knowledge),
//! one test per protection of the downstream HTTP/2 server: rapid reset and MadeYouReset, header
//! lists over `http2.maxheaderlistsize`, CONTINUATION floods, SETTINGS / PING / WINDOW_UPDATE /
//! PRIORITY / empty-DATA floods, flow-control window overflow, stream-id misuse, oversized
//! frames, bad prefaces, the preface and idle timeouts, frames inside a header block, the
//! concurrent-stream limit and GOAWAY's last-stream-id. Each checks what the attacker gets (the
//! RFC 9113 error code and scope) and that a well-behaved client on another connection to the
//! same core keeps getting 200s meanwhile.
//!
//! They are written against the wire, not an implementation, so that they decide the switch of
//! the downstream from the `h2` crate (src/proxy/h2) to the native server (src/proxy/h2n, issue
//! #20). Where the RFC leaves the answer open they assert what the native design answers. The
//! `h2` crate failed seven of them: it took SETTINGS, PING (read or not), WINDOW_UPDATE and
//! PRIORITY floods without end, answered DATA after END_STREAM with a connection error, and
//! took a PING as the client's first frame. Floods are bounded: the proxy must react within a fixed number
//! of frames, and a PING sent after the whole flood tells "took it all and answered" from
//! "still working through it" without any timed wait.
//! The raw frames, the reading peer and the test bed are in tests/it/h2_raw.rs.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::h2_raw::*;
use crate::support::{wait_until, Origin, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_client_is_disconnected_and_others_are_unaffected() {
    let origin = Origin::start();
    let proxy = Proxy::start(&open_service(&origin), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let good = tokio::spawn(good_client(proxy.addr, stop.clone()));
    let mut tcp = raw_h2c(proxy.addr);
    let mut reader = tcp.try_clone().unwrap();
    let (tx, rx) = mpsc::channel();
    // Reads until the proxy says GOAWAY or closes; reports which.
    std::thread::spawn(move || loop {
        match read_frame(&mut reader) {
            Some((GOAWAY, ..)) => return tx.send("goaway").unwrap(),
            Some(_) => {}
            None => return tx.send("eof").unwrap(),
        }
    });
    let block = get_block(&[]);
    let cancel = 0x8u32.to_be_bytes();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut id = 1u32;
    let mut verdict = None;
    // A batch of HEADERS+RST_STREAM pairs at a time, until the proxy reacts.
    while verdict.is_none() && Instant::now() < deadline && id < 400_000 {
        let mut batch = Vec::with_capacity(64 * 40);
        for _ in 0..64 {
            batch.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
            batch.extend(frame(RST_STREAM, 0, id, &cancel));
            id += 2;
        }
        if tcp.write_all(&batch).is_err() {
            break; // closed under us: the reader reports it
        }
        verdict = rx.try_recv().ok();
    }
    let verdict = verdict.or_else(|| {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left.max(Duration::from_secs(1))).ok()
    });
    assert!(
        verdict.is_some(),
        "the rapid-reset client was not disconnected after {} streams",
        id / 2
    );
    eprintln!("rapid reset: {verdict:?} after {} streams", id / 2);
    stop.store(true, Ordering::SeqCst);
    let served = tokio::time::timeout(Duration::from_secs(30), good)
        .await
        .expect("the good client finishes in time")
        .expect("the good client saw only 200s");
    assert!(served >= 5);
    let metrics = proxy.server().metrics().clone();
    assert_eq!(
        metrics.total(aperture::metrics::Counter::ConnectionPanics),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_list_is_refused_and_others_are_unaffected() {
    let origin = Origin::start();
    let top = "http2:\n  maxheaderlistsize: 4096\n";
    let proxy = Proxy::start_with(&open_service(&origin), 1, top, 4096);
    let stop = Arc::new(AtomicBool::new(false));
    let good = tokio::spawn(good_client(proxy.addr, stop.clone()));
    let mut tcp = raw_h2c(proxy.addr);
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The proxy's SETTINGS first (acknowledged, so its limits are in force on both sides).
    let (kind, ..) = read_frame(&mut tcp).expect("server SETTINGS");
    assert_eq!(kind, SETTINGS);
    tcp.write_all(&frame(SETTINGS, ACK, 0, &[])).unwrap();
    let big = vec![b'a'; 8000];
    let block = get_block(&[("x-big", &big)]);
    tcp.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
        .unwrap();
    // A response (431), a RST_STREAM for stream 1, or the connection closed: never a 200.
    let outcome = loop {
        match read_frame(&mut tcp) {
            Some((HEADERS, _, 1, block)) => {
                // :status 200 would be the static-table index 8 (0x88).
                assert_ne!(
                    block.first(),
                    Some(&0x88),
                    "an oversized request was served"
                );
                break "refused with a response";
            }
            Some((RST_STREAM, _, 1, _)) => break "stream reset",
            Some((GOAWAY, ..)) | None => break "connection closed",
            Some(_) => {}
        }
    };
    tracing_outcome(outcome);
    stop.store(true, Ordering::SeqCst);
    let served = tokio::time::timeout(Duration::from_secs(30), good)
        .await
        .expect("the good client finishes in time")
        .expect("the good client saw only 200s");
    assert!(served >= 5);
}

/// Names how the oversized request was refused (visible with `--nocapture`).
fn tracing_outcome(outcome: &str) {
    eprintln!("oversized header list: {outcome}");
}

// ---------- header blocks ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off_within_a_bounded_block() {
    let bed = bed("");
    let mut start = request_block(false, "/ok");
    // Empty CONTINUATIONs after a block that never ends.
    let mut peer = Peer::open(bed.proxy.addr);
    let head = frame(HEADERS, END_STREAM, 1, &start);
    assert!(peer.send(&head));
    let empty = frame(CONTINUATION, 0, 1, &[]).repeat(64);
    let end = peer.flood(20_000, 64, |_| empty.clone());
    assert_calmed(&peer, end, "empty CONTINUATION flood");
    // One-byte CONTINUATIONs feeding a header value announced as 1 MB.
    let mut peer = Peer::open(bed.proxy.addr);
    start.push(0x00);
    hpack_str(b"x-flood", &mut start);
    hpack_int(0, 7, 1_000_000, &mut start);
    assert!(peer.send(&frame(HEADERS, END_STREAM, 1, &start)));
    let tiny = frame(CONTINUATION, 0, 1, b"a").repeat(64);
    let end = peer.flood(20_000, 64, |_| tiny.clone());
    assert_calmed(&peer, end, "1-byte CONTINUATION flood");
    // Full 16 KiB CONTINUATIONs: what the proxy holds is bounded (1 MiB at most sent here).
    let mut peer = Peer::open(bed.proxy.addr);
    assert!(peer.send(&frame(HEADERS, END_STREAM, 1, &start)));
    let big = frame(CONTINUATION, 0, 1, &[b'a'; 16_384]);
    let end = peer.flood(64, 1, |_| big.clone());
    assert_calmed(&peer, end, "16 KiB CONTINUATION flood");
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_list_over_the_limit_is_refused_and_the_connection_lives() {
    let bed = bed("http2:\n  maxheaderlistsize: 4096\n");
    let mut peer = Peer::open(bed.proxy.addr);
    let mut block = request_block(false, "/ok");
    block.push(0x00);
    hpack_str(b"x-big", &mut block);
    hpack_str(&[b'a'; 8000], &mut block);
    assert!(peer.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block)));
    let refused = peer.outcome(1);
    eprintln!("header list over the limit: {refused:?}");
    assert!(
        matches!(refused, Outcome::Response(431, _) | Outcome::Reset(_)),
        "431 or RST_STREAM, got {refused:?}"
    );
    // The same connection serves the next request.
    peer.get(3, "/ok");
    assert!(matches!(peer.outcome(3), Outcome::Response(200, _)));
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_inside_a_header_block_is_a_protocol_error() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    let block = request_block(false, "/ok");
    let (first, rest) = block.split_at(3);
    assert!(peer.send(&frame(HEADERS, END_STREAM, 1, first)));
    assert!(peer.send(&frame(PING, 0, 0, &[0; 8])));
    assert!(peer.send(&frame(CONTINUATION, END_HEADERS, 1, rest)));
    assert_eq!(peer.end(), Outcome::GoAway(0, PROTOCOL_ERROR));
    peer.assert_closes();
    bed.finish().await;
}

// ---------- floods of frames that do no work ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_flood_gets_enhance_your_calm() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    let settings = frame(SETTINGS, 0, 0, &[]).repeat(256);
    let end = peer.flood(100_000, 256, |_| settings.clone());
    assert_calmed(&peer, end, "SETTINGS flood");
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_gets_enhance_your_calm() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    let pings = frame(PING, 0, 0, &[7; 8]).repeat(256);
    let end = peer.flood(100_000, 256, |_| pings.clone());
    assert_calmed(&peer, end, "PING flood");
    bed.finish().await;
}

/// PINGs from a client that never reads the ACKs: the proxy may stop reading it, but answers
/// a bounded number of them at most, never the PING sent after 200,000, and closes the
/// connection (which the client sees once it reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_that_never_reads_is_cut_off() {
    let bed = bed("");
    let mut tcp = raw_h2c(bed.proxy.addr);
    // Writing stops early when the proxy stops reading us (or closes).
    tcp.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let pings = frame(PING, 0, 0, &[7; 8]).repeat(256);
    let mut sent = 0usize;
    let mut whole = true;
    while whole && sent < 200_000 {
        whole = tcp.write_all(&pings).is_ok();
        sent += 256;
    }
    if whole {
        let _ = tcp.write_all(&frame(PING, 0, 0, &SENTINEL));
    }
    // Only now read: what the proxy answered before it stopped, up to its close.
    let said = read_to_close(&mut tcp);
    let (mut acks, mut answered, mut goaway) = (0usize, false, None);
    let mut rest = &said[..];
    while let Some((kind, flags, _, p)) = read_frame(&mut rest) {
        match kind {
            PING if flags & ACK != 0 && p == SENTINEL => answered = true,
            PING if flags & ACK != 0 => acks += 1,
            GOAWAY => goaway = Some(goaway_of(&p)),
            _ => {}
        }
    }
    eprintln!("unread PING flood: {sent} sent, {acks} answered, {goaway:?}");
    assert!(!answered, "the proxy answered all {sent} PINGs");
    assert!(acks <= 20_000, "the proxy answered {acks} of {sent} PINGs");
    // The GOAWAY may be lost to the reset of a socket closed with unread data; if it came, it
    // says ENHANCE_YOUR_CALM.
    if let Some(g) = goaway {
        assert!(matches!(g, Outcome::GoAway(_, ENHANCE_YOUR_CALM)), "{g:?}");
    }
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_update_flood_gets_enhance_your_calm() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    let updates = frame(WINDOW_UPDATE, 0, 0, &u32s(&[1])).repeat(256);
    let end = peer.flood(100_000, 256, |_| updates.clone());
    assert_calmed(&peer, end, "WINDOW_UPDATE flood");
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_flood_gets_enhance_your_calm() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    // PRIORITY on ever new idle streams (each depending on stream 0, weight 16).
    let end = peer.flood(100_000, 256, |i| {
        let mut out = Vec::with_capacity(256 * 14);
        for k in 0..256 {
            let id = 2 * (i * 256 + k) as u32 + 1;
            out.extend(frame(PRIORITY, 0, id, &[0, 0, 0, 0, 15]));
        }
        out
    });
    assert_calmed(&peer, end, "PRIORITY flood");
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_data_flood_gets_enhance_your_calm() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    let block = request_block(true, "/echo");
    assert!(peer.send(&frame(HEADERS, END_HEADERS, 1, &block)));
    let empty = frame(DATA, 0, 1, &[]).repeat(256);
    let end = peer.flood(100_000, 256, |_| empty.clone());
    assert_calmed(&peer, end, "empty DATA flood");
    bed.finish().await;
}

// ---------- resets ----------

/// MadeYouReset (CVE-2025-8671): streams the client makes the server reset by its own errors
/// (here a WINDOW_UPDATE that overflows the stream's send window), stream after stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_made_you_reset_client_gets_enhance_your_calm() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    let block = request_block(false, "/ok");
    let overflow = u32s(&[0x7fff_ffff]);
    // 2 frames a stream, up to 5,000 streams; the native server allows 1,024 such resets.
    let end = peer.flood(2 * 5_000, 2 * 32, |i| {
        let mut out = Vec::new();
        for k in 0..32 {
            let id = 2 * (i * 32 + k) as u32 + 1;
            out.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
            out.extend(frame(WINDOW_UPDATE, 0, id, &overflow));
        }
        out
    });
    assert_calmed(&peer, end, "MadeYouReset");
    bed.finish().await;
}

/// DATA on a stream the client already ended (half-closed remote) is a stream error
/// STREAM_CLOSED (RFC 9113 §5.1): that stream is reset, the connection goes on. (Repeated, it is
/// one of the MadeYouReset triggers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_after_end_stream_resets_that_stream_only() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    peer.get(1, "/hold");
    assert!(peer.send(&frame(DATA, END_STREAM, 1, b"x")));
    assert_eq!(peer.outcome(1), Outcome::Reset(STREAM_CLOSED));
    peer.get(3, "/ok");
    assert!(matches!(peer.outcome(3), Outcome::Response(200, _)));
    bed.finish().await;
}

// ---------- flow control ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_window_over_the_maximum_is_a_flow_control_error() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    // 65,535 + 2^31-1 > 2^31-1.
    assert!(peer.send(&frame(WINDOW_UPDATE, 0, 0, &u32s(&[0x7fff_ffff]))));
    assert_eq!(peer.end(), Outcome::GoAway(0, FLOW_CONTROL_ERROR));
    peer.assert_closes();
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_window_over_the_maximum_resets_that_stream_only() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    // A stream whose response waits on the origin, so it is live when the update comes.
    peer.get(1, "/hold");
    assert!(peer.send(&frame(WINDOW_UPDATE, 0, 1, &u32s(&[0x7fff_ffff]))));
    assert_eq!(peer.outcome(1), Outcome::Reset(FLOW_CONTROL_ERROR));
    peer.get(3, "/ok");
    assert!(matches!(peer.outcome(3), Outcome::Response(200, _)));
    bed.finish().await;
}

/// Stream errors the frame parser itself finds: a WINDOW_UPDATE of 0 on a stream (§6.9), a
/// PRIORITY frame that is not 5 bytes (§6.3), a stream that depends on itself (§5.3.1). Each
/// resets that stream only; the frame is consumed and the connection goes on. (The driver once
/// re-read the same frame after such an error, resetting the stream again and again until the
/// MadeYouReset limit closed the connection.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_error_found_by_the_frame_parser_resets_that_stream_only() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    peer.get(1, "/hold");
    assert!(peer.send(&frame(WINDOW_UPDATE, 0, 1, &u32s(&[0]))));
    assert_eq!(peer.outcome(1), Outcome::Reset(PROTOCOL_ERROR));
    peer.get(3, "/hold");
    assert!(peer.send(&frame(PRIORITY, 0, 3, &[0; 4])));
    assert_eq!(peer.outcome(3), Outcome::Reset(FRAME_SIZE_ERROR));
    peer.get(5, "/hold");
    // Depends on stream 5 itself, weight 16.
    assert!(peer.send(&frame(PRIORITY, 0, 5, &[0, 0, 0, 5, 16])));
    assert_eq!(peer.outcome(5), Outcome::Reset(PROTOCOL_ERROR));
    // The same errors many times over, each frame one reset: far under the 1,024 resets that
    // would mean a MadeYouReset client, so no GOAWAY.
    for i in 0..20u32 {
        let id = 7 + 2 * i;
        peer.get(id, "/hold");
        assert!(peer.send(&frame(WINDOW_UPDATE, 0, id, &u32s(&[0]))));
        assert_eq!(peer.outcome(id), Outcome::Reset(PROTOCOL_ERROR));
    }
    peer.get(101, "/ok");
    assert!(matches!(peer.outcome(101), Outcome::Response(200, _)));
    bed.finish().await;
}

/// A HEADERS frame whose priority names its own stream: the parser's stream error, answered as
/// a connection error (its header block was never decoded, so the HPACK table could be out of
/// step).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headers_frame_depending_on_itself_is_a_connection_error() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    peer.get(1, "/ok");
    assert!(matches!(peer.outcome(1), Outcome::Response(200, _)));
    // PRIORITY flag (0x20): stream 3 depends on stream 3, weight 16; then the block.
    let mut payload = vec![0, 0, 0, 3, 16];
    payload.extend(request_block(false, "/ok"));
    assert!(peer.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM | 0x20,
        3,
        &payload
    )));
    assert_eq!(peer.end(), Outcome::GoAway(1, PROTOCOL_ERROR));
    peer.assert_closes();
    bed.finish().await;
}

// ---------- stream identifiers ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_with_an_even_id_is_a_protocol_error() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    peer.get(2, "/ok");
    assert_eq!(peer.end(), Outcome::GoAway(0, PROTOCOL_ERROR));
    peer.assert_closes();
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_id_lower_than_a_previous_one_is_a_protocol_error() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    peer.get(5, "/ok");
    assert!(matches!(peer.outcome(5), Outcome::Response(200, _)));
    peer.get(3, "/ok");
    assert_eq!(peer.end(), Outcome::GoAway(5, PROTOCOL_ERROR));
    peer.assert_closes();
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_on_an_idle_stream_is_a_protocol_error() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    assert!(peer.send(&frame(DATA, END_STREAM, 1, b"x")));
    assert_eq!(peer.end(), Outcome::GoAway(0, PROTOCOL_ERROR));
    peer.assert_closes();
    bed.finish().await;
}

/// After streams 1, 3 and 5 were answered, a connection error's GOAWAY names 5: the client
/// knows exactly which requests were processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_names_the_last_stream_the_proxy_processed() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    for id in [1, 3, 5] {
        peer.get(id, "/ok");
        assert!(matches!(peer.outcome(id), Outcome::Response(200, _)));
    }
    // A PING on a stream: a connection PROTOCOL_ERROR.
    assert!(peer.send(&frame(PING, 0, 7, &[0; 8])));
    assert_eq!(peer.end(), Outcome::GoAway(5, PROTOCOL_ERROR));
    peer.assert_closes();
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_concurrent_limit_are_refused_while_the_others_complete() {
    let bed = bed("http2:\n  maxconcurrentstreams: 2\n");
    let mut peer = Peer::open(bed.proxy.addr);
    peer.get(1, "/hold");
    peer.get(3, "/hold");
    let origin = &bed.origin;
    wait_until("both streams at the origin", WAIT, || origin.holding() >= 2);
    peer.get(5, "/ok");
    peer.get(7, "/ok");
    assert_eq!(peer.outcome(5), Outcome::Reset(REFUSED_STREAM));
    assert_eq!(peer.outcome(7), Outcome::Reset(REFUSED_STREAM));
    bed.origin.release();
    for id in [1, 3] {
        assert_eq!(
            peer.outcome(id),
            Outcome::Response(200, b"released".to_vec())
        );
    }
    // The connection goes on with the slots free again.
    peer.get(9, "/ok");
    assert!(matches!(peer.outcome(9), Outcome::Response(200, _)));
    bed.finish().await;
}

// ---------- framing and the preface ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_max_frame_size_is_a_frame_size_error() {
    let bed = bed("");
    let mut peer = Peer::open(bed.proxy.addr);
    // HEADERS one byte over the proxy's SETTINGS_MAX_FRAME_SIZE (16,384 by default): a frame
    // that can change the connection's state, so a connection error (§4.2).
    let mut block = request_block(false, "/ok");
    block.resize(peer.max_frame as usize + 1, 0);
    assert!(peer.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block)));
    let end = peer.end();
    assert!(
        matches!(end, Outcome::GoAway(_, FRAME_SIZE_ERROR)),
        "GOAWAY FRAME_SIZE_ERROR, got {end:?}"
    );
    peer.assert_closes();
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_preface_is_closed() {
    let bed = bed("");
    // Diverges from the preface after its request line: not h2c, and no HTTP/1.1 either.
    let mut tcp = TcpStream::connect(bed.proxy.addr).unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").unwrap();
    let said = read_to_close(&mut tcp);
    let text = String::from_utf8_lossy(&said);
    eprintln!("bad preface answered: {:?}", text.lines().next());
    assert!(
        said.is_empty() || text.starts_with("HTTP/1.1 4") || text.starts_with("HTTP/1.1 5"),
        "nothing or an HTTP/1.1 error, got {text:?}"
    );
    bed.finish().await;
}

/// The client's preface must go on with SETTINGS (RFC 9113 §3.4); any other frame first is a
/// connection PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_frame_other_than_settings_is_a_protocol_error() {
    let bed = bed("");
    let mut tcp = TcpStream::connect(bed.proxy.addr).unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(PING, 0, 0, &[0; 8]));
    tcp.write_all(&hello).unwrap();
    let said = read_to_close(&mut tcp);
    let mut rest = &said[..];
    let mut goaway = None;
    while let Some((kind, _, _, p)) = read_frame(&mut rest) {
        if kind == GOAWAY {
            goaway = Some(goaway_of(&p));
        }
    }
    assert_eq!(goaway, Some(Outcome::GoAway(0, PROTOCOL_ERROR)));
    bed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_partial_preface_is_closed_at_the_timeouts() {
    // The well-behaved client's connection is kept out of the idle timeout (`0s`: never).
    let bed = bed("readtimeout: 1s\nidletimeout: 1s\nhttp2:\n  idletimeout: 0s\n");
    // Nothing at all: closed at the idle timeout.
    let mut silent = TcpStream::connect(bed.proxy.addr).unwrap();
    // Half the preface: closed at the read timeout.
    let mut half = TcpStream::connect(bed.proxy.addr).unwrap();
    half.write_all(&PREFACE[..12]).unwrap();
    let said = read_to_close(&mut silent);
    assert!(said.is_empty(), "{said:?}");
    let said = read_to_close(&mut half);
    // No frames: at most an HTTP/1.1 timeout answer.
    assert!(
        said.is_empty() || said.starts_with(b"HTTP/1.1 4"),
        "{:?}",
        String::from_utf8_lossy(&said)
    );
    bed.finish().await;
}

/// A connection that opened (preface, SETTINGS) and never opened a stream gets GOAWAY NO_ERROR
/// naming no stream at `http2.idletimeout`, then is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_gets_goaway_no_error_and_is_closed() {
    // Long enough that the well-behaved client, requesting back to back, is never idle that long.
    let bed = bed("http2:\n  idletimeout: 2s\n");
    let mut peer = Peer::open(bed.proxy.addr);
    let mut goaways = Vec::new();
    while let Some((kind, flags, _, p)) = peer.next() {
        match kind {
            GOAWAY => goaways.push(goaway_of(&p)),
            // A graceful shutdown may confirm with a PING; answer it, as a client does.
            PING if flags & ACK == 0 => {
                let _ = peer.send(&frame(PING, ACK, 0, &p));
            }
            _ => {}
        }
    }
    eprintln!("idle connection: {goaways:?}");
    assert!(!goaways.is_empty(), "GOAWAY before the close");
    assert!(goaways
        .iter()
        .all(|g| matches!(g, Outcome::GoAway(_, NO_ERROR))));
    assert_eq!(goaways.last(), Some(&Outcome::GoAway(0, NO_ERROR)));
    bed.finish().await;
}
