//! Layer 1: the process's log output, as [`config::Logging`] describes it: one line per event on
//! stderr, human-readable text (the default) or one JSON object per line (`logging.format: json`,
//! for log shippers), the level from `debuglevel` / `logging.console.level` unless `RUST_LOG`
//! sets filters.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Callsite, LogFormat, Logging};

/// The formatting layer for `settings`, writing to `writer`. `terminal` says whether the writer
/// is a terminal (colours by default, text only).
pub fn layer<S, W>(settings: &Logging, writer: W, terminal: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // Every line names its module (the target); a callsite adds the source file and line (lnd's
    // `long` would add the full path, which a release binary does not know: the same here).
    let file_line = settings.callsite != Callsite::Off;
    let base = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_file(file_line)
        .with_line_number(file_line);
    match (settings.format, settings.timestamps) {
        (LogFormat::Json, timestamps) => {
            // One flat object per line: timestamp, level, message and the event's fields.
            let json = base
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false);
            if timestamps {
                json.boxed()
            } else {
                json.without_time().boxed()
            }
        }
        (LogFormat::Text, timestamps) => {
            let text = base.with_ansi(settings.style.unwrap_or(terminal));
            if timestamps {
                text.boxed()
            } else {
                text.without_time().boxed()
            }
        }
    }
}

/// The level filter: `RUST_LOG` when set and valid, else `settings.level`.
pub fn filter(settings: &Logging) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(settings.level.as_filter()))
}

/// Installs the process-wide subscriber (stderr). A second call changes nothing.
pub fn init(settings: &Logging) {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::registry()
        .with(filter(settings))
        .with(layer(settings, std::io::stderr, terminal))
        .try_init();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::Level;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn capture(settings: &Logging, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new(settings.level.as_filter()))
            .with(layer(settings, buffer.clone(), true));
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_lines_parse_and_carry_the_fields() {
        let settings = Logging {
            format: LogFormat::Json,
            ..Logging::default()
        };
        let out = capture(&settings, || {
            tracing::info!(cores = 2, addr = %"127.0.0.1:8081", "aperture listening on \"x\"\nnext");
            tracing::warn!("config: a warning");
            tracing::debug!("below the level");
        });
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["message"], "aperture listening on \"x\"\nnext");
        assert_eq!(lines[0]["cores"], 2);
        assert_eq!(lines[0]["addr"], "127.0.0.1:8081");
        assert!(lines[0]["timestamp"].is_string(), "{out}");
        assert_eq!(lines[1]["level"], "WARN");
        assert!(!out.contains('\x1b'), "JSON is never coloured: {out}");
    }

    #[test]
    fn console_settings_shape_the_text_lines() {
        let plain = Logging {
            timestamps: false,
            style: Some(false),
            callsite: Callsite::Short,
            ..Logging::default()
        };
        let out = capture(&plain, || tracing::info!("hello"));
        assert!(out.starts_with(" INFO") || out.starts_with("INFO"), "{out}");
        assert!(
            out.contains("src/logging.rs:") && !out.contains('\x1b'),
            "{out}"
        );
        let json_plain = Logging {
            format: LogFormat::Json,
            timestamps: false,
            ..Logging::default()
        };
        let out = capture(&json_plain, || tracing::info!("hello"));
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert!(v.get("timestamp").is_none(), "{out}");
        let off = Logging {
            level: Level::Off,
            ..Logging::default()
        };
        assert_eq!(capture(&off, || tracing::error!("nothing")), "");
    }
}
