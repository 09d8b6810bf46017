//! A real browser for the tests: Debian's `chromium`, headless, driven over the DevTools
//! protocol (CDP) with a minimal blocking WebSocket client written here (RFC 6455 text frames
//! only: masked client frames, fragmented and extended-length server frames, ping/pong, close),
//! so no extra dependency. Every wait has a deadline; every socket read has a timeout, so a
//! hung browser fails the test instead of hanging it.
//!
//! `scripts/test.sh` installs the package. Without it the tests that need a browser print a
//! line and pass, unless `CI` is set (then a missing browser fails them), as PostgreSQL's do.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::wait_until;

/// How long one CDP answer may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The browser binary: `$APERTURE_CHROMIUM`, else `chromium` on the `PATH`; `None` (after
/// printing why) when there is none and `CI` is unset.
pub fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("APERTURE_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("chromium"))
                    .find(|p| p.is_file())
            })
        });
    match found {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("CI is set but chromium is missing: the dashboard's browser test needs it (scripts/test.sh installs it)")
        }
        None => {
            eprintln!(
                "skipping: chromium is not installed (scripts/test.sh installs Debian's chromium)"
            );
            None
        }
    }
}

/// A headless chromium with its own throwaway profile. Dropping it kills it.
pub struct Browser {
    child: Child,
    port: u16,
    ws_path: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `binary` headless with a DevTools port of the kernel's choosing.
    pub fn launch(binary: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(binary)
            .args([
                "--headless=new",
                // Containers run the tests as root, where the sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
                "--window-size=1280,900",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it bound into the profile once DevTools listens.
        let active = profile.path().join("DevToolsActivePort");
        // Two lines: the port, and the browser's WebSocket path.
        let mut found = None;
        wait_until(
            "chromium's DevToolsActivePort",
            Duration::from_secs(30),
            || {
                found = std::fs::read_to_string(&active).ok().and_then(|s| {
                    let mut lines = s.lines();
                    let port = lines.next()?.trim().parse().ok()?;
                    Some((port, lines.next()?.trim().to_owned()))
                });
                found.is_some()
            },
        );
        let (port, ws_path) = found.unwrap();
        Browser {
            child,
            port,
            ws_path,
            _profile: profile,
        }
    }

    /// A new tab.
    pub fn page(&self) -> Page {
        let mut browser = Cdp::connect(self.port, &self.ws_path);
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let id = target["targetId"].as_str().expect("targetId").to_owned();
        let mut page = Page {
            cdp: Cdp::connect(self.port, &format!("/devtools/page/{id}")),
            diagnostic: None,
        };
        page.cdp.call("Page.enable", json!({}));
        page.cdp.call("Runtime.enable", json!({}));
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CDP session over one WebSocket.
struct Cdp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_id: u64,
}

impl Cdp {
    fn connect(port: u16, path: &str) -> Cdp {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(CALL_TIMEOUT)).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        write!(
            writer,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(
            status.starts_with("HTTP/1.1 101"),
            "websocket upgrade: {status}"
        );
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        Cdp {
            reader,
            writer,
            next_id: 1,
        }
    }

    /// Sends one masked frame.
    fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask: [u8; 4] = rand::random();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.writer.write_all(&frame).unwrap();
    }

    /// The next whole text message (answering pings on the way).
    fn recv(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.reader.read_exact(&mut head).expect("CDP frame");
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            let len = match head[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.reader.read_exact(&mut b).unwrap();
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.reader.read_exact(&mut b).unwrap();
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let mut mask = None;
            if head[1] & 0x80 != 0 {
                let mut m = [0u8; 4];
                self.reader.read_exact(&mut m).unwrap();
                mask = Some(m);
            }
            let mut payload = vec![0u8; usize::try_from(len).unwrap()];
            self.reader.read_exact(&mut payload).unwrap();
            if let Some(m) = mask {
                payload
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b ^= m[i % 4]);
            }
            match opcode {
                0x0..=0x2 => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message).expect("CDP text");
                    }
                }
                0x8 => panic!("the browser closed the DevTools connection"),
                0x9 => self.send_frame(0xA, &payload),
                _ => {}
            }
        }
    }

    /// One command and its result (events in between are dropped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.send_frame(0x1, msg.as_bytes());
        loop {
            let v: Value = serde_json::from_str(&self.recv()).expect("CDP json");
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
        }
    }
}

/// One browser tab.
pub struct Page {
    cdp: Cdp,
    /// An expression whose value a timed-out wait reports (what the page says).
    diagnostic: Option<String>,
}

impl Page {
    /// Loads `url` and waits for the document to finish loading.
    pub fn goto(&mut self, url: &str) {
        let r = self.cdp.call("Page.navigate", json!({ "url": url }));
        assert!(r.get("errorText").is_none(), "navigate {url}: {r}");
        self.wait_for(
            &format!("{url} to load"),
            &format!(
                "document.readyState === 'complete' && location.href === {}",
                json!(url)
            ),
            Duration::from_secs(20),
        );
    }

    /// The value of a JavaScript expression (awaited when it is a promise).
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.cdp.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is truthy; its value.
    pub fn wait_for(&mut self, what: &str, expr: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(&format!(
                "(() => {{ try {{ return ({expr}); }} catch (_) {{ return null; }} }})()"
            ));
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let said = match self.diagnostic.clone() {
                    Some(d) => self.eval(&d).to_string(),
                    None => String::new(),
                };
                panic!("timed out waiting for {what}; the page says {said}");
            }
            // The browser runs the page meanwhile; a short pause keeps the polling cheap.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What a timed-out wait should report: the value of `expr`.
    pub fn set_diagnostic(&mut self, expr: &str) {
        self.diagnostic = Some(expr.to_owned());
    }

    /// A real click (mouse pressed and released) at the middle of the element `selector`.
    pub fn click(&mut self, selector: &str) {
        let rect = self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); e.scrollIntoView({{block: 'center'}}); \
             const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            json!(selector)
        ));
        let (x, y) = (rect[0].as_f64().unwrap(), rect[1].as_f64().unwrap());
        for kind in ["mousePressed", "mouseReleased"] {
            self.cdp.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// Types `text` into the focused element, as a keyboard would insert it.
    pub fn type_text(&mut self, text: &str) {
        self.cdp.call("Input.insertText", json!({ "text": text }));
    }

    /// A PNG of the whole page (not just the viewport), 1280 CSS pixels wide.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let height = self
            .eval("Math.ceil(document.documentElement.scrollHeight)")
            .as_u64()
            .unwrap_or(900)
            .clamp(600, 4000);
        self.cdp.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
        let shot = self
            .cdp
            .call("Page.captureScreenshot", json!({ "format": "png" }));
        self.cdp
            .call("Emulation.clearDeviceMetricsOverride", json!({}));
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("png data"))
            .expect("png base64")
    }
}
