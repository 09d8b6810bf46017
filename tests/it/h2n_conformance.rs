//! The native HTTP/2 codec (src/proxy/h2n: frames and HPACK, not wired into the data path yet)
//! against an independent implementation, Python's `h2` 4.2.0 stack (hyperframe, hpack, h2),
//! through tests/py/h2_oracle.py: frames and header blocks each side writes are read by the
//! other, and invalid frames must get the error code a Python h2 server answers them with.
//! Skips when h2 is missing, except in CI (env CI), where that fails the run.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use aperture::proxy::h2n::frame::{self, kind, setting, ErrorCode, Frame, H2Error};
use aperture::proxy::h2n::hpack::{Decoder, Encoder, HeaderList};
use serde_json::{json, Value};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/h2_oracle.py")
}

/// Whether the script runs here (python3 with h2 4.2.0); panics in CI when it does not.
fn available() -> bool {
    crate::support::python_h2_script_runs(&script(), "the h2n conformance tests")
}

fn oracle(cmd: &str, input: Option<Value>) -> Value {
    let mut child = Command::new("python3")
        .arg(script())
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(v) = input {
        stdin.write_all(v.to_string().as_bytes()).expect("write");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("oracle finishes");
    assert!(
        out.status.success(),
        "oracle {cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("oracle json")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Our view of a frame in the oracle's shape.
fn describe(f: &Frame<'_>, kind_of: u8, stream_of: u32) -> Value {
    let mut d = json!({"type": kind_of, "stream": stream_of});
    let m = d.as_object_mut().expect("object");
    let pri = |p: &frame::Priority| json!([p.exclusive, p.depends_on, p.weight]);
    let extra = match f {
        Frame::Data {
            data,
            end_stream,
            flow_len,
            ..
        } => {
            json!({"data": hex(data), "end_stream": end_stream, "flow_len": flow_len})
        }
        Frame::Headers {
            block,
            end_stream,
            end_headers,
            priority,
            ..
        } => json!({
            "block": hex(block), "end_stream": end_stream, "end_headers": end_headers,
            "priority": priority.as_ref().map(pri),
        }),
        Frame::Priority { priority, .. } => json!({"priority": pri(priority)}),
        Frame::RstStream { code, .. } => json!({"code": code}),
        Frame::Settings { ack, params } => json!({
            "ack": ack,
            "params": params.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        }),
        Frame::PushPromise {
            promised,
            block,
            end_headers,
            ..
        } => json!({
            "promised": promised, "block": hex(block), "end_headers": end_headers,
        }),
        Frame::Ping { ack, data } => json!({"ack": ack, "data": hex(data)}),
        Frame::GoAway {
            last_stream,
            code,
            debug,
        } => {
            json!({"last_stream": last_stream, "code": code, "debug": hex(debug)})
        }
        Frame::WindowUpdate { increment, .. } => json!({"increment": increment}),
        Frame::Continuation {
            block, end_headers, ..
        } => {
            json!({"block": hex(block), "end_headers": end_headers})
        }
        Frame::Unknown { .. } => json!({}),
    };
    m.extend(extra.as_object().expect("object").clone());
    d
}

fn parse_one(bytes: &[u8]) -> Value {
    let (f, n) = frame::parse(bytes, frame::MAX_MAX_FRAME_SIZE)
        .expect("valid frame")
        .expect("whole frame");
    assert_eq!(n, bytes.len());
    let h = frame::Header::parse(bytes).expect("header");
    describe(&f, h.kind, h.stream)
}

#[test]
fn frames_python_writes_parse_to_the_same_meaning() {
    if !available() {
        return;
    }
    let cases = oracle("frames", None);
    let cases = cases.as_array().expect("list");
    assert_eq!(cases.len(), 16);
    for c in cases {
        let bytes = unhex(c["hex"].as_str().expect("hex"));
        assert_eq!(parse_one(&bytes), c["expect"], "{}", c["hex"]);
    }
}

#[test]
fn frames_we_write_parse_in_python_to_the_same_meaning() {
    if !available() {
        return;
    }
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut push = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut out = Vec::new();
        f(&mut out);
        frames.push(out);
    };
    push(&|o| frame::write_data(o, 1, b"body bytes", true, 16_384));
    push(&|o| frame::write_data(o, 3, b"", false, 16_384));
    push(&|o| frame::write_headers(o, 5, b"\x88\x5f\x10application/grpc", false, 16_384));
    push(&|o| frame::write_headers(o, 7, &[0x40; 100], true, 1 << 20));
    push(&|o| {
        frame::write_settings(
            o,
            &[
                (setting::MAX_CONCURRENT_STREAMS, 256),
                (setting::INITIAL_WINDOW_SIZE, 1 << 20),
                (setting::MAX_HEADER_LIST_SIZE, 65_536),
                (setting::ENABLE_PUSH, 0),
            ],
        )
    });
    push(&frame::write_settings_ack);
    push(&|o| frame::write_ping(o, true, *b"pingpong"));
    push(&|o| frame::write_goaway(o, 41, ErrorCode::EnhanceYourCalm, b"rapid reset"));
    push(&|o| frame::write_rst_stream(o, 9, ErrorCode::RefusedStream));
    push(&|o| frame::write_window_update(o, 0, frame::MAX_WINDOW));
    push(&|o| frame::write_window_update(o, 11, 65_535));
    // A header block split over HEADERS + CONTINUATION at a small frame size.
    let mut split = Vec::new();
    frame::write_headers(&mut split, 13, &[0x41; 40], false, 16);
    let mut at = 0;
    while at < split.len() {
        let h = frame::Header::parse(&split[at..]).expect("header");
        let end = at + frame::HEADER_LEN + h.len as usize;
        frames.push(split[at..end].to_vec());
        at = end;
    }
    assert_eq!(frames.len(), 14);
    let hexes: Vec<String> = frames.iter().map(|f| hex(f)).collect();
    let theirs = oracle("parse-frames", Some(json!(hexes)));
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(theirs[i], parse_one(f), "frame {i}: {}", hexes[i]);
    }
}

#[test]
fn header_blocks_python_encodes_decode_to_the_same_lists() {
    if !available() {
        return;
    }
    let blocks = oracle("hpack-encode", None);
    let mut d = Decoder::new(4096, 64 << 10);
    let mut out = HeaderList::default();
    for (i, b) in blocks.as_array().expect("list").iter().enumerate() {
        d.decode(&unhex(b["hex"].as_str().expect("hex")), &mut out)
            .unwrap_or_else(|e| panic!("block {i}: {e}"));
        let got: Vec<Value> = out
            .iter()
            .map(|(n, v)| json!([String::from_utf8_lossy(n), String::from_utf8_lossy(v)]))
            .collect();
        assert_eq!(Value::Array(got), b["expect"], "block {i}");
    }
    // The never-indexed cookie of block 3 stays marked.
    assert!(d.table_size() <= 256);
}

/// A response field: name, value, sensitive.
type Field = (&'static [u8], Vec<u8>, bool);

#[test]
fn header_blocks_we_encode_decode_in_python() {
    if !available() {
        return;
    }
    let mut e = Encoder::default();
    let responses: Vec<Vec<Field>> = vec![
        vec![
            (b"content-type", b"application/grpc".to_vec(), false),
            (
                b"www-authenticate",
                format!(
                    "L402 macaroon=\"{}\", invoice=\"lnbc1{}\"",
                    "m".repeat(300),
                    "q".repeat(200)
                )
                .into_bytes(),
                false,
            ),
            (b"set-cookie", b"session=secret".to_vec(), true),
            (b"x-binary", (0..=255u8).collect(), false),
        ],
        vec![
            (b"content-type", b"application/grpc".to_vec(), false),
            (b"grpc-status", b"0".to_vec(), false),
        ],
    ];
    let mut blocks = Vec::new();
    let mut expect = Vec::new();
    for (status, fields) in [
        (402u16, &responses[0]),
        (200, &responses[1]),
        (599, &responses[0]),
    ] {
        let mut block = Vec::new();
        e.begin_block(&mut block);
        e.status(status, &mut block);
        let mut list = vec![json!([":status", status.to_string()])];
        for (n, v, sensitive) in fields {
            e.field(n, v, *sensitive, &mut block);
            let latin1: String = v.iter().map(|&b| b as char).collect();
            list.push(json!([String::from_utf8_lossy(n), latin1]));
        }
        blocks.push(hex(&block));
        expect.push(Value::Array(list));
        if status == 200 {
            e.set_peer_table_size(100);
        }
    }
    let theirs = oracle("hpack-decode", Some(json!(blocks)));
    assert_eq!(theirs, Value::Array(expect));
}

/// RFC 9113 §6.5: "a SETTINGS frame with the ACK flag set and a length field value other than 0
/// MUST be treated as a connection error of type FRAME_SIZE_ERROR"; Python h2 4.2.0 answers
/// PROTOCOL_ERROR (hyperframe's InvalidFrameError).
const RFC_OVER_PYTHON: &[(&str, ErrorCode)] =
    &[("SETTINGS ACK with payload", ErrorCode::FrameSizeError)];

fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::write_header(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

fn settings(id: u16, v: u32) -> Vec<u8> {
    let mut out = Vec::new();
    frame::write_settings(&mut out, &[(id, v)]);
    out
}

#[test]
fn invalid_frames_get_the_error_codes_a_python_h2_server_answers() {
    if !available() {
        return;
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("DATA on stream 0", raw(kind::DATA, 0, 0, b"x")),
        ("HEADERS on stream 0", raw(kind::HEADERS, 4, 0, b"\x82")),
        (
            "RST_STREAM of 3 bytes",
            raw(kind::RST_STREAM, 0, 1, &[0; 3]),
        ),
        (
            "RST_STREAM on stream 0",
            raw(kind::RST_STREAM, 0, 0, &[0; 4]),
        ),
        ("SETTINGS of 5 bytes", raw(kind::SETTINGS, 0, 0, &[0; 5])),
        (
            "SETTINGS ACK with payload",
            raw(kind::SETTINGS, 1, 0, &[0; 6]),
        ),
        ("SETTINGS on a stream", raw(kind::SETTINGS, 0, 1, &[])),
        ("ENABLE_PUSH 2", settings(setting::ENABLE_PUSH, 2)),
        (
            "INITIAL_WINDOW_SIZE 2^31",
            settings(setting::INITIAL_WINDOW_SIZE, 1 << 31),
        ),
        (
            "MAX_FRAME_SIZE 16383",
            settings(setting::MAX_FRAME_SIZE, 16_383),
        ),
        (
            "MAX_FRAME_SIZE 2^24",
            settings(setting::MAX_FRAME_SIZE, 1 << 24),
        ),
        ("PING of 7 bytes", raw(kind::PING, 0, 0, &[0; 7])),
        ("PING on a stream", raw(kind::PING, 0, 1, &[0; 8])),
        ("GOAWAY of 7 bytes", raw(kind::GOAWAY, 0, 0, &[0; 7])),
        ("GOAWAY on a stream", raw(kind::GOAWAY, 0, 1, &[0; 8])),
        (
            "WINDOW_UPDATE 0 on the connection",
            raw(kind::WINDOW_UPDATE, 0, 0, &[0; 4]),
        ),
        (
            "WINDOW_UPDATE of 3 bytes",
            raw(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1]),
        ),
        ("DATA padding too long", raw(kind::DATA, 8, 1, &[5, 1, 2])),
        (
            "CONTINUATION on stream 0",
            raw(kind::CONTINUATION, 4, 0, b"\x82"),
        ),
        (
            "PRIORITY on stream 0",
            raw(kind::PRIORITY, 0, 0, &[0, 0, 0, 1, 1]),
        ),
        (
            "DATA over SETTINGS_MAX_FRAME_SIZE",
            raw(kind::DATA, 0, 1, &[0; 16_385]),
        ),
    ];
    let hexes: Vec<String> = cases.iter().map(|(_, b)| hex(b)).collect();
    let theirs = oracle("peer-errors", Some(json!(hexes)));
    let mut mismatches = Vec::new();
    for (i, (name, bytes)) in cases.iter().enumerate() {
        let ours = match frame::parse(bytes, frame::MIN_MAX_FRAME_SIZE) {
            Err(H2Error::Connection(c, _)) => json!({"scope": "connection", "code": c as u32}),
            Err(H2Error::Stream(_, c, _)) => json!({"scope": "stream", "code": c as u32}),
            Ok(f) => panic!("{name}: parsed as {f:?}"),
        };
        let t = &theirs[i];
        if let Some((_, rfc)) = RFC_OVER_PYTHON.iter().find(|(n, _)| n == name) {
            // Where Python h2 answers another code than RFC 9113 requires, ours follows the RFC
            // and both end the connection.
            assert_eq!(
                ours,
                json!({"scope": "connection", "code": *rfc as u32}),
                "{name}"
            );
            assert_eq!(t["scope"], "connection", "{name}: python h2 {t}");
            continue;
        }
        if t["scope"] != ours["scope"] || t["code"] != ours["code"] {
            mismatches.push(format!("{name}: ours {ours}, python h2 {t}"));
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

// ---------- frame sequences ----------

use aperture::proxy::h2n::guard::{Assembly, BlockLimits};
use aperture::proxy::h2n::hpack::HpackError;
use aperture::proxy::h2n::request;
use aperture::proxy::h2n::streams::{Headers, Limits, Streams};

/// The first error our layers, chained as the connection will chain them, find in `bytes`
/// (frames after the preface and SETTINGS), as {scope, code}; scope "none" when there is none.
fn our_verdict(mut bytes: &[u8]) -> Value {
    let err = |e: H2Error| match e {
        H2Error::Connection(c, _) => json!({"scope": "connection", "code": c as u32}),
        H2Error::Stream(_, c, _) => json!({"scope": "stream", "code": c as u32}),
    };
    let stream_err = |c: ErrorCode| json!({"scope": "stream", "code": c as u32});
    let mut asm = Assembly::default();
    let mut streams = Streams::new(Limits::default());
    let mut decoder = Decoder::new(4096, 64 << 10);
    let mut list = HeaderList::default();
    while !bytes.is_empty() {
        let (f, n) = match frame::parse(bytes, frame::MIN_MAX_FRAME_SIZE) {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(e) => return err(e),
        };
        bytes = &bytes[n..];
        let done = match f {
            Frame::Headers {
                stream,
                block,
                end_stream,
                end_headers,
                ..
            } => asm.headers(
                stream,
                block,
                end_stream,
                end_headers,
                BlockLimits::default(),
            ),
            Frame::Continuation {
                stream,
                block,
                end_headers,
            } => asm.continuation(stream, block, end_headers, BlockLimits::default()),
            other => {
                if let Err(e) = asm.check_other_frame() {
                    return err(e);
                }
                let r = match other {
                    Frame::Data {
                        stream, end_stream, ..
                    } => streams.recv_data(stream, end_stream).map(|_| ()),
                    Frame::RstStream { stream, .. } => streams.recv_rst(stream).map(|_| ()),
                    Frame::WindowUpdate { stream, increment } if stream != 0 => {
                        streams.recv_window_update(stream, increment).map(|_| ())
                    }
                    Frame::Settings { params, .. } => {
                        params.iter().try_for_each(|(id, v)| match id {
                            setting::INITIAL_WINDOW_SIZE => streams.set_peer_initial_window(v),
                            _ => Ok(()),
                        })
                    }
                    _ => Ok(()),
                };
                if let Err(e) = r {
                    return err(e);
                }
                Ok(None)
            }
        };
        let d = match done {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => return err(e),
        };
        let opened = match streams.recv_headers(d.stream, d.end_stream) {
            Ok(Headers::Opened(_)) => true,
            Ok(Headers::Trailers(_)) => false,
            Ok(Headers::Refused(_)) => return stream_err(ErrorCode::RefusedStream),
            Ok(Headers::Ignored) => continue,
            Err(e) => return err(e),
        };
        match decoder.decode(&asm.block, &mut list) {
            Ok(()) => {}
            Err(HpackError::Compression(_)) => {
                return json!({"scope": "connection", "code": ErrorCode::CompressionError as u32})
            }
            Err(_) => return stream_err(ErrorCode::ProtocolError),
        }
        if opened && request::check_request(&list).is_err() {
            return stream_err(ErrorCode::ProtocolError);
        }
    }
    json!({"scope": "none", "code": null})
}

fn request_block(extra: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut e = Encoder::default();
    let mut block = Vec::new();
    for (n, v) in [
        (&b":method"[..], &b"GET"[..]),
        (b":scheme", b"http"),
        (b":path", b"/paid"),
        (b":authority", b"a.example"),
    ]
    .iter()
    .chain(extra)
    {
        e.field(n, v, false, &mut block);
    }
    block
}

fn headers(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
    raw(kind::HEADERS, flags, stream, block)
}

/// Where Python h2 4.2.0 answers a sequence differently from RFC 9113, what the RFC requires
/// (ours must give exactly that; theirs must at least end the connection). Python h2 has no
/// stream-level answer for malformed requests, and answers an undecodable block with
/// PROTOCOL_ERROR.
const RFC_OVER_PYTHON_SEQ: &[(&str, &str, ErrorCode)] = &[
    (
        "undecodable header block (§4.3)",
        "connection",
        ErrorCode::CompressionError,
    ),
    (
        "uppercase field name (§8.2.1)",
        "stream",
        ErrorCode::ProtocolError,
    ),
    (
        "connection-specific field (§8.2.2)",
        "stream",
        ErrorCode::ProtocolError,
    ),
    (
        "request without :path (§8.3.1)",
        "stream",
        ErrorCode::ProtocolError,
    ),
    (
        "trailers without END_STREAM (§8.1)",
        "stream",
        ErrorCode::ProtocolError,
    ),
];

#[test]
fn invalid_frame_sequences_get_the_errors_a_python_h2_server_answers() {
    if !available() {
        return;
    }
    const EH: u8 = frame::flag::END_HEADERS;
    const ES: u8 = frame::flag::END_STREAM;
    let ok = request_block(&[]);
    let cat = |parts: &[Vec<u8>]| parts.concat();
    let mut wu = Vec::new();
    frame::write_window_update(&mut wu, 1, frame::MAX_WINDOW);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a valid request", headers(1, EH | ES, &ok)),
        (
            "a valid request in HEADERS + CONTINUATION",
            cat(&[
                headers(1, ES, &ok[..3]),
                raw(kind::CONTINUATION, EH, 1, &ok[3..]),
            ]),
        ),
        ("even client stream id", headers(2, EH | ES, &ok)),
        (
            "stream id going down",
            cat(&[headers(3, EH | ES, &ok), headers(1, EH | ES, &ok)]),
        ),
        (
            "DATA inside a header block",
            cat(&[headers(1, 0, &ok[..3]), raw(kind::DATA, 0, 1, b"x")]),
        ),
        (
            "CONTINUATION on another stream",
            cat(&[
                headers(1, 0, &ok[..3]),
                raw(kind::CONTINUATION, EH, 3, &ok[3..]),
            ]),
        ),
        (
            "CONTINUATION without HEADERS",
            raw(kind::CONTINUATION, EH, 1, &ok),
        ),
        ("DATA on an idle stream", raw(kind::DATA, 0, 1, b"x")),
        (
            "RST_STREAM on an idle stream",
            raw(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8]),
        ),
        (
            "WINDOW_UPDATE on an idle stream",
            raw(kind::WINDOW_UPDATE, 0, 1, &[0, 0, 0, 1]),
        ),
        (
            "undecodable header block (§4.3)",
            headers(1, EH | ES, &[0x80]),
        ),
        (
            "stream window over 2^31-1",
            cat(&[headers(1, EH, &ok), wu.clone()]),
        ),
        (
            "INITIAL_WINDOW_SIZE overflowing a stream window",
            cat(&[
                headers(1, EH, &ok),
                wu,
                settings(setting::INITIAL_WINDOW_SIZE, 65_536),
            ]),
        ),
        (
            "uppercase field name (§8.2.1)",
            headers(1, EH | ES, &request_block(&[(b"X-Upper", b"1")])),
        ),
        (
            "connection-specific field (§8.2.2)",
            headers(1, EH | ES, &request_block(&[(b"connection", b"close")])),
        ),
        (
            "request without :path (§8.3.1)",
            headers(1, EH | ES, &{
                let mut e = Encoder::default();
                let mut b = Vec::new();
                e.field(b":method", b"GET", false, &mut b);
                e.field(b":scheme", b"http", false, &mut b);
                e.field(b":authority", b"a", false, &mut b);
                b
            }),
        ),
        (
            "trailers without END_STREAM (§8.1)",
            cat(&[
                headers(1, EH, &ok),
                headers(1, EH, &[0x40, 1, b'x', 1, b'y']),
            ]),
        ),
        (
            "DATA after END_STREAM (§5.1)",
            cat(&[headers(1, EH | ES, &ok), raw(kind::DATA, 0, 1, b"x")]),
        ),
    ];
    let hexes: Vec<String> = cases.iter().map(|(_, b)| hex(b)).collect();
    let theirs = oracle("peer-errors", Some(json!(hexes)));
    let mut mismatches = Vec::new();
    for (i, (name, bytes)) in cases.iter().enumerate() {
        let ours = our_verdict(bytes);
        let t = &theirs[i];
        if let Some((_, scope, code)) = RFC_OVER_PYTHON_SEQ.iter().find(|(n, ..)| n == name) {
            assert_eq!(
                ours,
                json!({"scope": scope, "code": *code as u32}),
                "{name}"
            );
            assert_eq!(t["scope"], "connection", "{name}: python h2 {t}");
            continue;
        }
        if t["scope"] != ours["scope"] || t["code"] != ours["code"] {
            mismatches.push(format!("{name}: ours {ours}, python h2 {t}"));
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}
