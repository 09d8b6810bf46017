//! The built-in demo origin for `--dev`: a tiny HTTP/1.1 upstream on loopback, on its own thread
//! and runtime (never a worker core), so a newcomer sees 402 → pay → 200 with nothing else
//! running. It answers every request with a short text naming the path (`/v1/chat/completions`:
//! an OpenAI-style completion with `usage`, for the metered demo), keeps connections alive and
//! drains request bodies. Not a general web server.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use monoio::net::{TcpListener, TcpStream};

use crate::proxy::h1::{ChunkScanner, Framing, Head, Parse};
use crate::proxy::io::BufStream;

/// Starts the origin on `addr` (port 0 for any); returns the bound address.
pub fn start(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    std::thread::Builder::new()
        .name("demo-origin".into())
        .spawn(move || {
            let built = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build();
            let Ok(mut rt) = built else {
                tracing::error!("demo origin: cannot build its runtime");
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = TcpListener::from_std(std_listener) else {
                    tracing::error!("demo origin: cannot register its listener");
                    return;
                };
                while let Ok((stream, _)) = listener.accept().await {
                    monoio::spawn(serve(stream));
                }
            });
        })?;
    Ok(bound)
}

async fn serve(stream: TcpStream) {
    let mut conn = BufStream::new(stream);
    let mut head = Head::default();
    let mut out = Vec::with_capacity(512);
    loop {
        let parsed = loop {
            match head.parse_request(conn.data()) {
                Ok(Parse::Complete(n)) => break n,
                Ok(Parse::Partial) if conn.data().len() < 64 * 1024 => {}
                _ => return,
            }
            if conn
                .fill_within(64 * 1024, Duration::from_secs(120))
                .await
                .is_err()
            {
                return;
            }
        };
        conn.consume(parsed);
        let Ok(framing) = head.request_framing() else {
            return;
        };
        let body_len = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        if !drain(&mut conn, framing).await {
            return;
        }
        let (content_type, body) = if head.path() == b"/v1/chat/completions" {
            ("application/json", completion(body_len))
        } else {
            let text = format!(
                "Hello from the aperture demo origin: you paid for {} {}\n",
                String::from_utf8_lossy(head.method()),
                String::from_utf8_lossy(head.target())
            );
            ("text/plain; charset=utf-8", text)
        };
        out.clear();
        let _ = write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            body
        );
        let (res, buf) = conn.write_all(std::mem::take(&mut out)).await;
        out = buf;
        if res.is_err() || !head.keep_alive() {
            return;
        }
    }
}

/// An OpenAI-style chat completion for the metered demo service: a prompt token per 4 request
/// body bytes, and the usage object the built-in meter debits.
fn completion(body_len: u64) -> String {
    let text = "Hello from the aperture demo origin: this answer was metered per token.";
    let (prompt, completion) = (body_len.div_ceil(4), (text.len() as u64).div_ceil(4));
    format!(
        "{{\"object\":\"chat.completion\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"{text}\"}},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{}}}}}\n",
        prompt + completion
    )
}

async fn drain(conn: &mut BufStream, framing: Framing) -> bool {
    let mut scanner = ChunkScanner::default();
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    while remaining > 0 && !scanner.done() {
        if conn.data().is_empty()
            && conn
                .fill_within(64 * 1024, Duration::from_secs(30))
                .await
                .is_err()
        {
            return false;
        }
        let n = match framing {
            Framing::Length(_) => remaining.min(conn.data().len() as u64) as usize,
            _ => match scanner.feed(conn.data()) {
                Ok(n) => n,
                Err(_) => return false,
            },
        };
        conn.consume(n);
        if let Framing::Length(_) = framing {
            remaining -= n as u64;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_completion_carries_the_usage_the_meter_reads() {
        let body = super::completion(41);
        let usage = crate::usage::usage_from_tail("application/json", body.as_bytes()).unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (11, 18));
        assert!(usage.split);
    }
}
