//! Fuzzes the native HTTP/2 receive layers (src/proxy/h2n, not wired into the data path yet)
//! the way a connection will chain them: frames parsed from the buffer, header blocks assembled
//! across CONTINUATIONs, HPACK-decoded with one decoder per connection, request-checked and
//! handed to an `h1::Head`, stream events fed to the stream table. Nothing may panic, every
//! view must lie inside the input, and a decoded list must respect its size limit.
#![no_main]

use aperture::proxy::h1::Head;
use aperture::proxy::h2n::frame::{self, Frame, H2Error};
use aperture::proxy::h2n::guard::{Assembly, BlockLimits};
use aperture::proxy::h2n::hpack::{Decoder, HeaderList};
use aperture::proxy::h2n::request;
use aperture::proxy::h2n::streams::{Headers, Limits, Streams};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&knob, mut buf)) = data.split_first() else {
        return;
    };
    let max_frame = frame::MIN_MAX_FRAME_SIZE << (knob & 3);
    let max_list = 256usize << (knob >> 4);
    let mut decoder = Decoder::new(4096 >> (knob >> 6), max_list);
    let mut list = HeaderList::default();
    let mut head = Head::default();
    let mut asm = Assembly::default();
    let mut streams = Streams::new(Limits::default());
    let range = data.as_ptr_range();
    let inside = |s: &[u8]| s.is_empty() || range.contains(&s.as_ptr());
    loop {
        let (f, n) = match frame::parse(buf, max_frame) {
            Ok(Some(x)) => x,
            Ok(None) | Err(_) => return,
        };
        assert!(n >= frame::HEADER_LEN && n <= buf.len());
        let done = match f {
            Frame::Headers {
                stream,
                block,
                end_stream,
                end_headers,
                ..
            } => {
                assert!(inside(block));
                asm.headers(
                    stream,
                    block,
                    end_stream,
                    end_headers,
                    BlockLimits::default(),
                )
            }
            Frame::Continuation {
                stream,
                block,
                end_headers,
            } => asm.continuation(stream, block, end_headers, BlockLimits::default()),
            other => {
                if asm.check_other_frame().is_err() {
                    return;
                }
                let r = match other {
                    Frame::Data {
                        stream,
                        data,
                        end_stream,
                        ..
                    } => {
                        assert!(inside(data));
                        streams.recv_data(stream, end_stream).map(|_| ())
                    }
                    Frame::RstStream { stream, .. } => streams.recv_rst(stream).map(|_| ()),
                    Frame::WindowUpdate { stream, increment } if stream != 0 => {
                        streams.recv_window_update(stream, increment).map(|_| ())
                    }
                    Frame::Settings { params, .. } => {
                        params.iter().try_for_each(|(id, v)| match id {
                            frame::setting::INITIAL_WINDOW_SIZE => {
                                streams.set_peer_initial_window(v)
                            }
                            _ => Ok(()),
                        })
                    }
                    _ => Ok(()),
                };
                if let Err(H2Error::Connection(..)) = r {
                    return;
                }
                Ok(None)
            }
        };
        match done {
            Ok(Some(d)) => block(
                &mut decoder,
                &asm,
                &mut list,
                &mut head,
                max_list,
                &mut streams,
                d,
            ),
            Ok(None) => {}
            Err(_) => return,
        }
        buf = &buf[n..];
    }
});

fn block(
    decoder: &mut Decoder,
    asm: &Assembly,
    list: &mut HeaderList,
    head: &mut Head,
    max_list: usize,
    streams: &mut Streams,
    d: aperture::proxy::h2n::guard::Done,
) {
    match streams.recv_headers(d.stream, d.end_stream) {
        Ok(Headers::Opened(_)) | Ok(Headers::Trailers(_)) => {}
        _ => return,
    }
    if decoder.decode(&asm.block, list).is_err() {
        return;
    }
    assert!(list.size <= max_list);
    for (name, _) in list.iter() {
        assert!(name.is_ascii() && !name.iter().any(u8::is_ascii_uppercase));
    }
    if let Ok(p) = request::check_request(list) {
        request::into_head(list, &p, head);
        for (name, value) in head.fields() {
            assert!(name.is_ascii());
            assert!(head.get(name).is_some());
            let _ = value;
        }
        let _ = (head.method(), head.target(), head.path(), head.host());
    }
}
