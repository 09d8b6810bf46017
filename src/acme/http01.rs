//! The HTTP-01 listener (`autocerthttplisten`, e.g. `:80`), on the ACME thread's tokio runtime:
//! `GET /.well-known/acme-challenge/<token>` answers the key authorization while that token's
//! validation is pending (404 otherwise); any other GET or HEAD is redirected to
//! `https://<servername>` (as Go's `autocert.Manager.HTTPHandler(nil)` does); other methods get
//! 400. One request per connection, a 10 s deadline, 8 KiB of head at most, 256 connections at
//! once; nothing here panics on network input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The challenge path prefix (RFC 8555 §8.3).
const PREFIX: &str = "/.well-known/acme-challenge/";
/// Longest a connection may take, request and answer.
const DEADLINE: Duration = Duration::from_secs(10);
/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Connections served at once; more are closed at once.
const MAX_CONNS: usize = 256;

/// A pending HTTP-01 validation: its token and key authorization.
#[derive(Debug)]
struct Pending {
    token: String,
    key_authorization: String,
}

/// What the listener answers (set by the ACME client while a validation is pending).
#[derive(Debug, Default)]
pub struct Answers(ArcSwapOption<Pending>);

impl Answers {
    /// Answers `token` with `key_authorization` until [`Self::clear`].
    pub fn set(&self, token: &str, key_authorization: &str) {
        self.0.store(Some(Arc::new(Pending {
            token: token.to_owned(),
            key_authorization: key_authorization.to_owned(),
        })));
    }

    /// No validation pending.
    pub fn clear(&self) {
        self.0.store(None);
    }

    fn answer(&self, token: &str) -> Option<String> {
        let pending = self.0.load();
        let pending = pending.as_ref()?;
        (pending.token == token && !token.is_empty()).then(|| pending.key_authorization.clone())
    }
}

/// Where non-challenge requests are redirected: `https://<servername>[:<port>]`.
#[derive(Clone, Debug)]
pub struct Redirect {
    pub origin: String,
}

/// Serves the listener until the task is dropped.
pub async fn serve(listener: TcpListener, answers: Arc<Answers>, redirect: Redirect) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("autocert: HTTP-01 listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_CONNS {
            continue; // dropped: closed at once
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (answers, redirect, active) = (answers.clone(), redirect.clone(), active.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(DEADLINE, handle(stream, &answers, &redirect)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, "autocert: HTTP-01 connection: {e}"),
                Err(_) => tracing::debug!(%peer, "autocert: HTTP-01 connection timed out"),
            }
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    answers: &Answers,
    redirect: &Redirect,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let (method, path) = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut fields);
        match request.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or_default().to_owned();
                let path = request.path.unwrap_or_default().to_owned();
                break (method, path);
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => continue,
            _ => {
                let answer = response(400, "text/plain", None, "bad request\n");
                return stream.write_all(answer.as_bytes()).await;
            }
        }
    };
    let answer = answer(&method, &path, answers, redirect);
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

/// The whole response to one request.
fn answer(method: &str, path: &str, answers: &Answers, redirect: &Redirect) -> String {
    let head_only = method == "HEAD";
    if let Some(token) = path.strip_prefix(PREFIX) {
        if method != "GET" && !head_only {
            return response(405, "text/plain", None, "use GET\n");
        }
        return match answers.answer(token) {
            Some(key_authorization) => {
                tracing::info!("autocert: answered an HTTP-01 validation");
                let body = if head_only { "" } else { &key_authorization };
                response(200, "text/plain", None, body)
            }
            None => response(404, "text/plain", None, "no such challenge\n"),
        };
    }
    if method == "GET" || head_only {
        // Only a path goes after our own origin: never a client-chosen host.
        let path = if path.starts_with('/') { path } else { "/" };
        let location = format!("{}{path}", redirect.origin);
        return response(302, "text/plain", Some(&location), "");
    }
    response(400, "text/plain", None, "use HTTPS\n")
}

fn response(status: u16, content_type: &str, location: Option<&str>, body: &str) -> String {
    let reason = match status {
        200 => "OK",
        302 => "Found",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Bad Request",
    };
    let location = location
        .filter(|l| !l.contains(['\r', '\n']))
        .map(|l| format!("Location: {l}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{location}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_pending_token_only_and_redirects_the_rest() {
        let answers = Answers::default();
        let redirect = Redirect {
            origin: "https://api.example.com".into(),
        };
        let get = |path: &str| answer("GET", path, &answers, &redirect);
        assert!(get("/.well-known/acme-challenge/tok").starts_with("HTTP/1.1 404"));
        answers.set("tok", "tok.thumb");
        let ok = get("/.well-known/acme-challenge/tok");
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("\r\n\r\ntok.thumb"),
            "{ok}"
        );
        assert!(get("/.well-known/acme-challenge/other").starts_with("HTTP/1.1 404"));
        assert!(get("/.well-known/acme-challenge/").starts_with("HTTP/1.1 404"));
        let head = answer(
            "HEAD",
            "/.well-known/acme-challenge/tok",
            &answers,
            &redirect,
        );
        assert!(
            head.ends_with("Content-Length: 0\r\nConnection: close\r\n\r\n"),
            "{head}"
        );
        answers.clear();
        assert!(get("/.well-known/acme-challenge/tok").starts_with("HTTP/1.1 404"));
        let moved = get("/paid?x=1");
        assert!(moved.starts_with("HTTP/1.1 302"), "{moved}");
        assert!(
            moved.contains("Location: https://api.example.com/paid?x=1\r\n"),
            "{moved}"
        );
        let moved = get("http://evil.example/x");
        assert!(
            moved.contains("Location: https://api.example.com/\r\n"),
            "{moved}"
        );
        let post = answer("POST", "/paid", &answers, &redirect);
        assert!(post.starts_with("HTTP/1.1 400"), "{post}");
    }
}
