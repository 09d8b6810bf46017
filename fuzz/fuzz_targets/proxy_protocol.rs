//! Fuzzes `proxyproto::parse` (PROXY protocol v1 text and v2 binary), the pure parser behind
//! `read_header`. Beyond not panicking, the verdict must not depend on how the bytes arrive:
//! `read_header` consumes every byte of an incomplete header and re-parses, so a prefix of a
//! header must be "need more" (never an error, never a shorter header), and once complete the
//! header must be the same whatever follows it.
#![no_main]

use aperture::proxy::proxyproto::{parse, V1_MAX, V2_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    match whole {
        Ok(Some(h)) => {
            assert!(
                h.len > 0 && h.len <= data.len(),
                "header length {} of {}",
                h.len,
                data.len()
            );
            if data[0] == b'P' {
                assert!(h.len <= V1_MAX, "v1 header of {} bytes", h.len);
            } else {
                assert!(h.len <= V2_MAX, "v2 header of {} bytes", h.len);
            }
            for k in 0..h.len {
                assert_eq!(
                    parse(&data[..k]),
                    Ok(None),
                    "prefix of {k} bytes of a {}-byte header",
                    h.len
                );
            }
            assert_eq!(
                parse(&data[..h.len]),
                whole,
                "the header alone parses differently"
            );
        }
        Ok(None) => {
            assert!(data.len() < V2_MAX, "needs more after {} bytes", data.len());
            for k in 0..data.len() {
                assert_eq!(
                    parse(&data[..k]),
                    Ok(None),
                    "prefix of {k} bytes is not 'need more'"
                );
            }
        }
        Err(_) => {
            // Once a prefix is an error, every longer input is too (errors are final).
            let first_err = (0..=data.len())
                .find(|&k| parse(&data[..k]).is_err())
                .unwrap();
            for k in first_err..=data.len().min(first_err + 64) {
                assert!(
                    parse(&data[..k]).is_err(),
                    "error at {first_err} bytes, not at {k}"
                );
            }
            for k in 0..first_err {
                assert_eq!(
                    parse(&data[..k]),
                    Ok(None),
                    "prefix of {k} bytes before the error"
                );
            }
        }
    }
});
