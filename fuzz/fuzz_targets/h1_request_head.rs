//! Fuzzes `h1::Head::parse_request` and every accessor the data path calls on a request head:
//! none may panic, every slice must lie inside the copied head, an absolute-form target always
//! becomes an authority plus an origin-form target, and a head must parse the same way when it
//! arrives in pieces (the connection loop re-parses as bytes come in).
#![no_main]

use aperture::proxy::h1::{Framing, Head, Parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut head = Head::default();
    let n = match head.parse_request(data) {
        Ok(Parse::Complete(n)) => n,
        Ok(Parse::Partial) | Err(_) => return,
    };
    assert!(n <= data.len());
    // An absolute-form target without a path gets its origin form ("/" + query) appended
    // behind the head's bytes.
    assert!(head.raw().starts_with(&data[..n]));
    exercise(&head);

    // The same bytes without what follows them parse to the same head; every proper prefix
    // (sampled on long heads) is Partial, never an error the whole head would not have had.
    let mut again = Head::default();
    assert!(matches!(again.parse_request(&data[..n]), Ok(Parse::Complete(m)) if m == n));
    assert_eq!(again.method(), head.method());
    assert_eq!(again.target(), head.target());
    let step = (n / 64).max(1);
    for k in (0..n).step_by(step) {
        let mut part = Head::default();
        assert!(
            matches!(part.parse_request(&data[..k]), Ok(Parse::Partial)),
            "prefix of {k} bytes of a complete {n}-byte head is not Partial"
        );
    }
});

fn exercise(head: &Head) {
    let raw = head.raw().as_ptr_range();
    let inside =
        |s: &[u8]| s.is_empty() || (raw.contains(&s.as_ptr()) && s.len() <= head.raw().len());
    assert!(inside(head.method()));
    assert!(inside(head.target()));
    assert!(inside(head.path()));
    assert!(head.target().starts_with(head.path()));
    let t = head.target();
    let absolute =
        |scheme: &[u8]| t.len() >= scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme);
    assert!(
        !absolute(b"http://") && !absolute(b"https://"),
        "absolute-form target left in place: {t:?}"
    );
    if let Some(host) = head.host() {
        assert!(inside(host));
    }
    let _ = head.host_field_ok();
    let _ = head.reason();
    for (name, value) in head.fields() {
        // `fields` builds each name with `from_utf8_unchecked`: check the claim it relies on.
        assert!(name.is_ascii(), "field name {name:?} is not ASCII");
        assert!(inside(name.as_bytes()) && inside(value));
        assert!(head.get(name).is_some());
    }
    for name in [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "authorization",
    ] {
        let _ = head.get(name);
    }
    let _ = head.connection_has("close");
    let _ = head.connection_names_fields();
    let _ = head.keep_alive();
    if let Ok(Framing::Close) = head.request_framing() {
        panic!("request framing is never Close");
    }
    let _ = head.response_framing(b"GET");
}
