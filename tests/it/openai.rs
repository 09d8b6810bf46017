//! A fake OpenAI-compatible origin for the metering tests: `POST /v1/chat/completions` answers
//! a JSON completion with `usage`, or (`"stream": true`) a chunked `text/event-stream` whose
//! last data event before `[DONE]` carries `usage`, as OpenAI's `stream_options.include_usage`
//! does. Query parameters shape the stream: `bytes=N` streams about N bytes of content events,
//! `stall=1` stops after the first event until [`OpenAi::release`], `hangup=1` closes the
//! connection without an answer. The prompt is counted as
//! one token per 4 body bytes, the completion as one per 4 content bytes. Records every request
//! head it saw.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};

/// The final usage event of a stream with these counts.
pub fn usage_event(prompt: usize, completion: usize) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{}}}}}\n\n",
        prompt + completion
    )
}

#[derive(Default)]
struct Shared {
    heads: Mutex<Vec<String>>,
    gate: (Mutex<bool>, Condvar),
}

pub struct OpenAi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl OpenAi {
    pub fn start() -> OpenAi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        OpenAi { addr, shared }
    }

    /// Every request head seen, in order.
    pub fn heads(&self) -> Vec<String> {
        self.shared.heads.lock().unwrap().clone()
    }

    /// Lets every stalled stream go on.
    pub fn release(&self) {
        let (m, c) = &self.shared.gate;
        *m.lock().unwrap() = true;
        c.notify_all();
    }
}

impl Drop for OpenAi {
    fn drop(&mut self) {
        self.release();
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        shared.heads.lock().unwrap().push(head.clone());
        let lower = head.to_ascii_lowercase();
        let len = lower
            .split("\r\n")
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let target = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let param = |name: &str| {
            target
                .split_once('?')
                .map(|(_, q)| q)
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse::<usize>().ok())
        };
        if param("hangup") == Some(1) {
            return; // closes the connection without an answer
        }
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let prompt = body.len().div_ceil(4);
        let out = reader.get_mut();
        let ok = if json["stream"].as_bool() == Some(true) {
            let bytes = param("bytes").unwrap_or(1000);
            stream_events(out, prompt, bytes, param("stall") == Some(1), shared)
        } else {
            let model = json["model"].as_str().unwrap_or("unknown");
            let text = "hello";
            let completion = text.len().div_ceil(4);
            let payload = format!(
                "{{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"{text}\"}},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{}}}}}",
                prompt + completion
            );
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                payload.len()
            );
            out.write_all(head.as_bytes()).is_ok() && out.write_all(payload.as_bytes()).is_ok()
        };
        if !ok {
            return;
        }
    }
}

/// One SSE event as one chunk.
fn chunk(out: &mut TcpStream, event: &str) -> bool {
    write!(out, "{:x}\r\n{event}\r\n", event.len()).is_ok()
}

fn stream_events(
    out: &mut TcpStream,
    prompt: usize,
    bytes: usize,
    stall: bool,
    shared: &Shared,
) -> bool {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
    if out.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let content = "x".repeat(4000);
    let event = format!(
        "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}}}}]}}\n\n"
    );
    let mut sent = 0;
    let mut completion = 0;
    while sent < bytes {
        if !chunk(out, &event) {
            return false;
        }
        sent += event.len();
        completion += content.len() / 4;
        if stall {
            let _ = out.flush();
            let (m, c) = &shared.gate;
            let mut open = m.lock().unwrap();
            while !*open {
                open = c.wait(open).unwrap();
            }
        }
    }
    chunk(out, &usage_event(prompt, completion))
        && chunk(out, "data: [DONE]\n\n")
        && out.write_all(b"0\r\n\r\n").is_ok()
}
