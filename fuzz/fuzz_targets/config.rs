//! Fuzzes `config::parse`, the YAML text → validated `Config` path (serde-saphyr, the raw
//! mirror with unknown-key suggestions, every validator, regex compilation): any UTF-8 text
//! must give a `Config` or a `ConfigError` whose message renders, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `!file+hex:<path>` header values read a file; a generated path such as /dev/zero or
    // /dev/stdin would make the harness itself hang or run out of memory. Skip any text that
    // could spell that prefix: literally, or through a double-quoted scalar's hex escapes or
    // escaped line breaks (YAML's only ways to build those characters).
    let lower = text.to_ascii_lowercase();
    if lower.contains("file+")
        || ["\\x", "\\u", "\\\n", "\\\r"]
            .iter()
            .any(|e| lower.contains(e))
    {
        return;
    }
    match aperture::config::parse(text, "fuzz.yaml") {
        Ok(config) => assert!(config.warnings.iter().all(|w| !w.is_empty())),
        Err(e) => {
            assert_eq!(e.exit_code(), aperture::config::EXIT_CONFIG);
            assert!(!e.to_string().is_empty());
        }
    }
});
