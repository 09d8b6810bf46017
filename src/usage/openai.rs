//! What an OpenAI-compatible exchange says about its own cost: the `model` and `max_tokens` a
//! request names, and the `usage` object its response ends with (a JSON body, or the last SSE
//! `data:` chunk that carries one). Works on bounded, possibly truncated byte windows (the
//! request's first bytes, the response's rolling tail) and never on a whole body. Pure: no
//! I/O, no allocation beyond the parsed values.

use serde::Deserialize;

/// Token counts from a response's `usage` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Whether the prompt/completion split is known (else only `total_tokens` is).
    pub split: bool,
}

#[derive(Deserialize)]
struct UsageJson {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
}

impl UsageJson {
    fn counts(&self) -> Option<Usage> {
        match (
            self.prompt_tokens,
            self.completion_tokens,
            self.total_tokens,
        ) {
            (Some(p), Some(c), total) => Some(Usage {
                prompt_tokens: p,
                completion_tokens: c,
                total_tokens: total.unwrap_or(p.saturating_add(c)),
                split: true,
            }),
            (_, _, Some(t)) => Some(Usage {
                total_tokens: t,
                ..Usage::default()
            }),
            _ => None,
        }
    }
}

/// The usage a response tail reports. For `text/event-stream` the last parseable `data:` chunk
/// with a usage object wins; otherwise, and for a tail cut mid-line, the last `"usage"` key in
/// object position is brace-matched (the tail may have lost its front).
pub fn usage_from_tail(content_type: &str, tail: &[u8]) -> Option<Usage> {
    if content_type
        .to_ascii_lowercase()
        .contains("text/event-stream")
    {
        if let Some(u) = usage_from_sse(tail) {
            return Some(u);
        }
    }
    usage_from_brace_match(tail)
}

fn usage_from_sse(tail: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Chunk {
        usage: Option<UsageJson>,
    }
    tail.split(|&b| b == b'\n').rev().find_map(|line| {
        let line = line.trim_ascii();
        let payload = line.strip_prefix(b"data:")?.trim_ascii();
        if payload.is_empty() || payload == b"[DONE]" {
            return None;
        }
        // A front-truncated first line or an interleaved non-JSON event is skipped.
        let chunk: Chunk = serde_json::from_slice(payload).ok()?;
        chunk.usage?.counts()
    })
}

fn usage_from_brace_match(data: &[u8]) -> Option<Usage> {
    const KEY: &[u8] = b"\"usage\"";
    let mut end = data.len();
    while let Some(at) = rfind(&data[..end], KEY) {
        end = at;
        // Only a key in object position counts: a "usage" inside a string value must not
        // latch a crafted object.
        if !key_in_object_position(data, at) {
            continue;
        }
        let Some(object) = object_after_key(data, at + KEY.len()) else {
            continue;
        };
        if let Some(u) = serde_json::from_slice::<UsageJson>(object)
            .ok()
            .and_then(|u| u.counts())
        {
            return Some(u);
        }
    }
    None
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Preceded (ignoring whitespace) by `{` or `,`, or by the front of a truncated tail.
fn key_in_object_position(data: &[u8], key_start: usize) -> bool {
    match data[..key_start]
        .iter()
        .rev()
        .find(|b| !b.is_ascii_whitespace())
    {
        None => true,
        Some(b) => matches!(b, b'{' | b','),
    }
}

/// `: {…}` after `offset`: the balanced object, strings and escapes honoured.
fn object_after_key(data: &[u8], offset: usize) -> Option<&[u8]> {
    let i = skip_space(data, offset);
    if data.get(i) != Some(&b':') {
        return None;
    }
    let i = skip_space(data, i + 1);
    if data.get(i) != Some(&b'{') {
        return None;
    }
    let len = balanced_len(&data[i..])?;
    Some(&data[i..i + len])
}

fn skip_space(data: &[u8], mut i: usize) -> usize {
    while data.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// The length of the balanced `{…}` or `[…]` that `data` starts with.
fn balanced_len(data: &[u8]) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &c) in data.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if in_string {
            match c {
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match c {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
        }
    }
    None
}

/// The model a request body names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelNamed {
    /// No body, or a whole body without a `model` key: the default model applies.
    None,
    Named(String),
    /// The body was cut before the `model` key could be read, or is not a JSON object: fail
    /// closed (a truncated long prompt must not be priced as the default model).
    Unknown,
}

/// The request's `model`, from the first bytes of its body (`truncated`: more bytes followed).
pub fn model_of(body: &[u8], truncated: bool) -> ModelNamed {
    if body.trim_ascii().is_empty() && !truncated {
        return ModelNamed::None;
    }
    #[derive(Deserialize)]
    struct Body {
        model: Option<String>,
    }
    if !truncated {
        return match serde_json::from_slice::<Body>(body) {
            Ok(Body { model: Some(m) }) => ModelNamed::Named(m),
            Ok(Body { model: None }) => ModelNamed::None,
            Err(_) => ModelNamed::Unknown,
        };
    }
    // Clients put `model` ahead of the messages, so it is nearly always inside the prefix.
    match top_level_string(body, "model") {
        Some(m) => ModelNamed::Named(m),
        None => ModelNamed::Unknown,
    }
}

/// The larger of `max_tokens` and `max_completion_tokens` of a whole body; 0 when neither is
/// there (or the body was cut: the default estimate applies).
pub fn max_tokens_of(body: &[u8], truncated: bool) -> u64 {
    #[derive(Deserialize)]
    struct Body {
        max_tokens: Option<u64>,
        max_completion_tokens: Option<u64>,
    }
    if truncated {
        return 0;
    }
    serde_json::from_slice::<Body>(body)
        .map(|b| {
            b.max_tokens
                .unwrap_or(0)
                .max(b.max_completion_tokens.unwrap_or(0))
        })
        .unwrap_or(0)
}

/// The string value of top-level `key` in a possibly truncated JSON object, when it lies
/// inside `data`.
fn top_level_string(data: &[u8], key: &str) -> Option<String> {
    let mut i = skip_space(data, 0);
    if data.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_space(data, i);
        if data.get(i) != Some(&b'"') {
            return None;
        }
        let klen = string_len(&data[i..])?;
        let name: String = serde_json::from_slice(&data[i..i + klen]).ok()?;
        i = skip_space(data, i + klen);
        if data.get(i) != Some(&b':') {
            return None;
        }
        i = skip_space(data, i + 1);
        let vlen = value_len(&data[i..])?;
        if name == key {
            return serde_json::from_slice(&data[i..i + vlen]).ok();
        }
        i = skip_space(data, i + vlen);
        match data.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

/// The length of the JSON string `data` starts with (quotes included).
fn string_len(data: &[u8]) -> Option<usize> {
    let mut escaped = false;
    for (i, &c) in data.iter().enumerate().skip(1) {
        if escaped {
            escaped = false;
        } else if c == b'\\' {
            escaped = true;
        } else if c == b'"' {
            return Some(i + 1);
        }
    }
    None
}

/// The length of the JSON value `data` starts with, when it ends inside `data`.
fn value_len(data: &[u8]) -> Option<usize> {
    match data.first()? {
        b'"' => string_len(data),
        b'{' | b'[' => balanced_len(data),
        _ => {
            let n = data
                .iter()
                .position(|&b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())?;
            (n > 0).then_some(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(p: u64, c: u64) -> Usage {
        Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: p + c,
            split: true,
        }
    }

    #[test]
    fn a_json_body_reports_its_usage() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#;
        assert_eq!(
            usage_from_tail("application/json", body),
            Some(split(12, 30))
        );
    }

    #[test]
    fn the_last_sse_chunk_with_usage_wins_and_done_is_skipped() {
        let tail = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\n\
data: [DONE]\n\n";
        assert_eq!(
            usage_from_tail("text/event-stream; charset=utf-8", tail),
            Some(split(5, 7))
        );
    }

    #[test]
    fn a_front_truncated_tail_is_brace_matched() {
        let tail =
            br#"nt":"tail"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":9}}"#;
        let u = usage_from_tail("application/json", tail).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (3, 4, 9)
        );
        // Cut mid-line in an SSE stream: the line does not parse, brace matching finds it.
        let sse = br#"a: {"x":1,"usage":{"total_tokens":11}}"#;
        let u = usage_from_tail("text/event-stream", sse).unwrap();
        assert_eq!((u.total_tokens, u.split), (11, false));
    }

    #[test]
    fn a_usage_word_inside_a_string_does_not_latch() {
        let tail = br#"{"content":"say \"usage\":{\"total_tokens\":1}","usage":null}"#;
        assert_eq!(usage_from_tail("application/json", tail), None);
        let tail = br#"{"content":"x \"usage\": {\"total_tokens\":1}"}"#;
        assert_eq!(usage_from_tail("application/json", tail), None);
        // A value position (after a colon) is not a key position.
        let tail = br#"{"label":"usage":{"total_tokens":1}}"#;
        assert_eq!(usage_from_tail("application/json", tail), None);
    }

    #[test]
    fn no_usage_or_garbage_is_none() {
        for tail in [
            &b""[..],
            b"{}",
            b"\"usage\":{",
            b"\xff\xfe",
            b"}}}}",
            b"\"usage\":{}",
        ] {
            assert_eq!(usage_from_tail("application/json", tail), None, "{tail:?}");
            assert_eq!(usage_from_tail("text/event-stream", tail), None, "{tail:?}");
        }
    }

    #[test]
    fn the_model_of_whole_and_truncated_bodies() {
        assert_eq!(model_of(b"", false), ModelNamed::None);
        assert_eq!(model_of(b"{\"messages\":[]}", false), ModelNamed::None);
        assert_eq!(
            model_of(br#"{"model":"gpt-4o","messages":[]}"#, false),
            ModelNamed::Named("gpt-4o".into())
        );
        assert_eq!(model_of(b"not json", false), ModelNamed::Unknown);
        // Cut inside the messages: the model, read before them, still counts.
        assert_eq!(
            model_of(
                br#"{"stream":true,"model":"m\"1","messages":[{"role":"user","content":"lo"#,
                true
            ),
            ModelNamed::Named("m\"1".into())
        );
        // Cut before the model key: unknown, never the default.
        assert_eq!(
            model_of(br#"{"messages":[{"role":"user","content":"long"#, true),
            ModelNamed::Unknown
        );
        assert_eq!(
            model_of(br#"{"max_tokens":5,"mod"#, true),
            ModelNamed::Unknown
        );
        assert_eq!(model_of(b"", true), ModelNamed::Unknown);
    }

    #[test]
    fn max_tokens_takes_the_larger_alias_of_a_whole_body() {
        assert_eq!(max_tokens_of(br#"{"max_tokens":100}"#, false), 100);
        assert_eq!(
            max_tokens_of(br#"{"max_tokens":100,"max_completion_tokens":300}"#, false),
            300
        );
        assert_eq!(max_tokens_of(br#"{"model":"m"}"#, false), 0);
        assert_eq!(max_tokens_of(br#"{"max_tokens":-1}"#, false), 0);
        assert_eq!(max_tokens_of(br#"{"max_tokens":100,"messa"#, true), 0);
    }
}
