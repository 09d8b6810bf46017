use super::*;
use ErrorCode::*;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_header(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

fn one(buf: &[u8]) -> Result<Frame<'_>, H2Error> {
    let (f, n) = parse(buf, MIN_MAX_FRAME_SIZE)?.expect("whole frame");
    assert_eq!(n, buf.len());
    Ok(f)
}

fn conn_code(buf: &[u8]) -> ErrorCode {
    match one(buf) {
        Err(H2Error::Connection(c, _)) => c,
        other => panic!("want a connection error, got {other:?}"),
    }
}

fn stream_code(buf: &[u8]) -> (u32, ErrorCode) {
    match one(buf) {
        Err(H2Error::Stream(s, c, _)) => (s, c),
        other => panic!("want a stream error, got {other:?}"),
    }
}

#[test]
fn partial_input_asks_for_more_and_the_reserved_bit_is_ignored() {
    let f = frame(kind::DATA, 0, 0x8000_0001, b"hello");
    for cut in 0..f.len() {
        assert_eq!(parse(&f[..cut], MIN_MAX_FRAME_SIZE), Ok(None), "{cut}");
    }
    assert_eq!(Header::parse(&f).unwrap().stream, 1);
    let mut two = f.clone();
    two.extend_from_slice(&f);
    let (_, n) = parse(&two, MIN_MAX_FRAME_SIZE).unwrap().unwrap();
    assert_eq!(n, f.len());
}

#[test]
fn oversized_frames_fail_before_their_payload_arrives() {
    let mut out = Vec::new();
    write_header(&mut out, MIN_MAX_FRAME_SIZE as usize + 1, kind::DATA, 0, 1);
    assert_eq!(
        parse(&out, MIN_MAX_FRAME_SIZE).unwrap_err().code(),
        FrameSizeError
    );
    // With a larger setting the same header just waits for its payload.
    assert_eq!(parse(&out, 1 << 20), Ok(None));
}

#[test]
fn data_padding_and_flow_length() {
    let f = frame(kind::DATA, flag::PADDED | flag::END_STREAM, 3, b"\x02abcXX");
    assert_eq!(
        one(&f).unwrap(),
        Frame::Data {
            stream: 3,
            data: b"abc",
            end_stream: true,
            flow_len: 6
        }
    );
    // Padding equal to the payload length, and a missing pad length.
    assert_eq!(
        conn_code(&frame(kind::DATA, flag::PADDED, 3, b"\x03ab")),
        ProtocolError
    );
    assert_eq!(
        conn_code(&frame(kind::DATA, flag::PADDED, 3, b"")),
        FrameSizeError
    );
    assert_eq!(conn_code(&frame(kind::DATA, 0, 0, b"x")), ProtocolError);
}

#[test]
fn headers_with_padding_and_priority() {
    let mut p = vec![1u8]; // pad length
    p.extend_from_slice(&(0x8000_0001u32).to_be_bytes());
    p.push(15);
    p.extend_from_slice(b"BLOCK");
    p.push(0);
    let flags = flag::PADDED | flag::PRIORITY | flag::END_HEADERS;
    assert_eq!(
        one(&frame(kind::HEADERS, flags, 5, &p)).unwrap(),
        Frame::Headers {
            stream: 5,
            block: b"BLOCK",
            end_stream: false,
            end_headers: true,
            priority: Some(Priority {
                exclusive: true,
                depends_on: 1,
                weight: 15
            }),
        }
    );
    let self_dep = [0, 0, 0, 5, 0];
    assert_eq!(
        stream_code(&frame(kind::HEADERS, flag::PRIORITY, 5, &self_dep)),
        (5, ProtocolError)
    );
    assert_eq!(
        conn_code(&frame(kind::HEADERS, flag::PRIORITY, 5, &[0, 0])),
        FrameSizeError
    );
    assert_eq!(conn_code(&frame(kind::HEADERS, 0, 0, b"x")), ProtocolError);
}

#[test]
fn priority_frame_rules() {
    let ok = frame(kind::PRIORITY, 0, 3, &[0, 0, 0, 1, 7]);
    assert!(matches!(one(&ok), Ok(Frame::Priority { stream: 3, .. })));
    assert_eq!(
        stream_code(&frame(kind::PRIORITY, 0, 3, &[0, 0, 0, 1])),
        (3, FrameSizeError)
    );
    assert_eq!(
        stream_code(&frame(kind::PRIORITY, 0, 3, &[0, 0, 0, 3, 7])),
        (3, ProtocolError)
    );
    assert_eq!(
        conn_code(&frame(kind::PRIORITY, 0, 0, &[0, 0, 0, 1, 7])),
        ProtocolError
    );
}

#[test]
fn rst_stream_rules() {
    let f = frame(kind::RST_STREAM, 0, 7, &8u32.to_be_bytes());
    assert_eq!(one(&f).unwrap(), Frame::RstStream { stream: 7, code: 8 });
    assert_eq!(
        conn_code(&frame(kind::RST_STREAM, 0, 7, &[0; 5])),
        FrameSizeError
    );
    assert_eq!(
        conn_code(&frame(kind::RST_STREAM, 0, 0, &[0; 4])),
        ProtocolError
    );
}

#[test]
fn settings_rules_and_ranges() {
    let mut out = Vec::new();
    write_settings(
        &mut out,
        &[
            (setting::MAX_CONCURRENT_STREAMS, 100),
            (setting::INITIAL_WINDOW_SIZE, MAX_WINDOW),
            (0x99, 12345),
        ],
    );
    let Frame::Settings { ack: false, params } = one(&out).unwrap() else {
        panic!()
    };
    assert_eq!(
        params.iter().collect::<Vec<_>>(),
        [(3, 100), (4, MAX_WINDOW), (0x99, 12345)]
    );
    let bad = |id: u16, v: u32| {
        let mut out = Vec::new();
        write_settings(&mut out, &[(id, v)]);
        conn_code(&out)
    };
    assert_eq!(bad(setting::ENABLE_PUSH, 2), ProtocolError);
    assert_eq!(bad(setting::ENABLE_CONNECT_PROTOCOL, 2), ProtocolError);
    assert_eq!(
        bad(setting::INITIAL_WINDOW_SIZE, MAX_WINDOW + 1),
        FlowControlError
    );
    assert_eq!(
        bad(setting::MAX_FRAME_SIZE, MIN_MAX_FRAME_SIZE - 1),
        ProtocolError
    );
    assert_eq!(
        bad(setting::MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE + 1),
        ProtocolError
    );
    assert_eq!(
        conn_code(&frame(kind::SETTINGS, 0, 0, &[0; 5])),
        FrameSizeError
    );
    assert_eq!(
        conn_code(&frame(kind::SETTINGS, flag::ACK, 0, &[0; 6])),
        FrameSizeError
    );
    assert_eq!(conn_code(&frame(kind::SETTINGS, 0, 1, &[])), ProtocolError);
    let mut ack = Vec::new();
    write_settings_ack(&mut ack);
    assert!(matches!(one(&ack), Ok(Frame::Settings { ack: true, .. })));
}

#[test]
fn push_promise_ping_goaway_rules() {
    let mut p = 0x8000_0002u32.to_be_bytes().to_vec();
    p.extend_from_slice(b"blk");
    assert_eq!(
        one(&frame(kind::PUSH_PROMISE, flag::END_HEADERS, 1, &p)).unwrap(),
        Frame::PushPromise {
            stream: 1,
            promised: 2,
            block: b"blk",
            end_headers: true
        }
    );
    assert_eq!(
        conn_code(&frame(kind::PUSH_PROMISE, 0, 1, &[0; 3])),
        FrameSizeError
    );
    let mut ping = Vec::new();
    write_ping(&mut ping, true, *b"12345678");
    assert_eq!(
        one(&ping).unwrap(),
        Frame::Ping {
            ack: true,
            data: *b"12345678"
        }
    );
    assert_eq!(conn_code(&frame(kind::PING, 0, 0, &[0; 7])), FrameSizeError);
    assert_eq!(conn_code(&frame(kind::PING, 0, 1, &[0; 8])), ProtocolError);
    let mut ga = Vec::new();
    write_goaway(&mut ga, 9, EnhanceYourCalm, b"calm");
    assert_eq!(
        one(&ga).unwrap(),
        Frame::GoAway {
            last_stream: 9,
            code: 0xb,
            debug: b"calm"
        }
    );
    assert_eq!(
        conn_code(&frame(kind::GOAWAY, 0, 0, &[0; 7])),
        FrameSizeError
    );
    assert_eq!(
        conn_code(&frame(kind::GOAWAY, 0, 3, &[0; 8])),
        ProtocolError
    );
}

#[test]
fn window_update_zero_is_scoped_by_stream() {
    let mut w = Vec::new();
    write_window_update(&mut w, 5, 1000);
    assert_eq!(
        one(&w).unwrap(),
        Frame::WindowUpdate {
            stream: 5,
            increment: 1000
        }
    );
    assert_eq!(
        stream_code(&frame(kind::WINDOW_UPDATE, 0, 5, &[0; 4])),
        (5, ProtocolError)
    );
    assert_eq!(
        conn_code(&frame(kind::WINDOW_UPDATE, 0, 0, &[0; 4])),
        ProtocolError
    );
    assert_eq!(
        conn_code(&frame(kind::WINDOW_UPDATE, 0, 5, &[0; 3])),
        FrameSizeError
    );
}

#[test]
fn continuation_and_unknown_frames() {
    assert_eq!(
        one(&frame(kind::CONTINUATION, flag::END_HEADERS, 3, b"more")).unwrap(),
        Frame::Continuation {
            stream: 3,
            block: b"more",
            end_headers: true
        }
    );
    assert_eq!(
        conn_code(&frame(kind::CONTINUATION, 0, 0, b"x")),
        ProtocolError
    );
    assert_eq!(
        one(&frame(0xfa, 0xff, 0, b"whatever")).unwrap(),
        Frame::Unknown {
            kind: 0xfa,
            stream: 0
        }
    );
}

#[test]
fn writers_split_at_the_peer_frame_size() {
    let mut out = Vec::new();
    write_headers(&mut out, 1, &[7u8; 40], true, 16);
    let mut at = 0;
    let mut seen = Vec::new();
    while let Some((f, n)) = parse(&out[at..], 16).unwrap() {
        seen.push(f);
        at += n;
    }
    assert_eq!(at, out.len());
    assert_eq!(seen.len(), 3);
    assert!(matches!(
        seen[0],
        Frame::Headers {
            end_stream: true,
            end_headers: false,
            ..
        }
    ));
    assert!(
        matches!(seen[2], Frame::Continuation { end_headers: true, block, .. } if block.len() == 8)
    );
    out.clear();
    write_data(&mut out, 1, &[1u8; 33], true, 16);
    assert_eq!(out.len(), 3 * HEADER_LEN + 33);
    out.clear();
    write_data(&mut out, 1, &[], true, 16);
    assert!(matches!(
        one(&out),
        Ok(Frame::Data {
            end_stream: true,
            flow_len: 0,
            ..
        })
    ));
    out.clear();
    write_rst_stream(&mut out, 3, Cancel);
    assert_eq!(one(&out).unwrap(), Frame::RstStream { stream: 3, code: 8 });
}

/// A fixed-seed sweep of random buffers: `parse` never panics and never claims more bytes than
/// it was given.
#[test]
fn random_buffers_never_panic() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..50_000 {
        let mut buf: Vec<u8> = (0..next() % 40).map(|_| next() as u8).collect();
        if buf.len() >= 3 {
            // Mostly small lengths, so payloads are often complete.
            buf[0] = 0;
            buf[1] = 0;
            buf[2] %= 32;
        }
        if buf.len() >= 4 {
            buf[3] %= 12;
        }
        if let Ok(Some((_, n))) = parse(&buf, MIN_MAX_FRAME_SIZE) {
            assert!(n <= buf.len());
        }
    }
}
