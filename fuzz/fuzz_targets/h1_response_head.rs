//! Fuzzes `h1::Head::parse_response` and every accessor used on an upstream's response head
//! (reason, fields, framing for GET and HEAD, keep-alive): none may panic, and a head must
//! parse the same way when it arrives in pieces.
#![no_main]

use aperture::proxy::h1::{Framing, Head, Parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut head = Head::default();
    let n = match head.parse_response(data) {
        Ok(Parse::Complete(n)) => n,
        Ok(Parse::Partial) | Err(_) => return,
    };
    assert!(n <= data.len());
    assert_eq!(head.raw(), &data[..n]);

    let raw = head.raw().as_ptr_range();
    let inside = |s: &[u8]| s.is_empty() || raw.contains(&s.as_ptr());
    assert!(head.status <= 999, "status {}", head.status);
    assert!(inside(head.reason()));
    let _ = head.method();
    let _ = head.target();
    let _ = head.path();
    for (name, value) in head.fields() {
        assert!(name.is_ascii(), "field name {name:?} is not ASCII");
        assert!(inside(name.as_bytes()) && inside(value));
        assert!(head.get(name).is_some());
    }
    let _ = head.get("content-length");
    let _ = head.connection_has("close");
    let _ = head.connection_names_fields();
    let _ = head.keep_alive();
    let _ = head.request_framing();
    let get = head.response_framing(b"GET");
    assert_eq!(head.response_framing(b"HEAD"), Ok(Framing::Length(0)));
    if matches!(head.status, 100..=199 | 204 | 304) {
        assert_eq!(get, Ok(Framing::Length(0)));
    }

    let mut again = Head::default();
    assert!(matches!(again.parse_response(&data[..n]), Ok(Parse::Complete(m)) if m == n));
    assert_eq!(again.status, head.status);
    assert_eq!(again.reason(), head.reason());
    let step = (n / 64).max(1);
    for k in (0..n).step_by(step) {
        let mut part = Head::default();
        assert!(
            matches!(part.parse_response(&data[..k]), Ok(Parse::Partial)),
            "prefix of {k} bytes of a complete {n}-byte head is not Partial"
        );
    }
});
