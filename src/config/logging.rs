//! Validation of what the process logs: `debuglevel` (lnd's syntax, `info,PRXY=debug`) and the
//! `logging:` section (lnd's `build.LogConfig` keys as Go aperture has them, plus our `format`).
//! Every key is honoured or reported: the console keys are honoured, the file logger (which we
//! do not have: we log to stderr, the journal under systemd) is reported with a warning.

use super::raw::{RawLogTarget, RawLogging};
use super::validate::{nonempty, Ctx};
use super::ConfigError;

/// A log level, from the most to the least verbose (Go's `critical` is `Error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Off,
}

impl Level {
    /// The level as a `tracing` filter directive.
    pub fn as_filter(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Off => "off",
        }
    }

    /// One of lnd's level names (trace, debug, info, warn, error, critical, off).
    fn parse(s: &str) -> Option<Level> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warn" => Level::Warn,
            "error" | "critical" => Level::Error,
            "off" => Level::Off,
            _ => return None,
        })
    }
}

/// The shape of a log line (`logging.format`, ours).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Where a line says it was logged from (`logging.console.callsite`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Callsite {
    #[default]
    Off,
    /// The source file and line.
    Short,
    /// The same as `Short` (lnd adds the full path, which a release binary does not know).
    Long,
}

/// How and what the process logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logging {
    /// The global level: `debuglevel`'s, made stricter by `logging.console.level` when that is
    /// set (lnd filters by both), `Off` with `logging.console.disable`. `RUST_LOG` overrides it.
    pub level: Level,
    pub format: LogFormat,
    /// `false` with `logging.console.notimestamps`.
    pub timestamps: bool,
    pub callsite: Callsite,
    /// `logging.console.style` as set: colours on or off. `None`: colours when stderr is a
    /// terminal. JSON lines are never coloured.
    pub style: Option<bool>,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            level: Level::Info,
            format: LogFormat::Text,
            timestamps: true,
            callsite: Callsite::Off,
            style: None,
        }
    }
}

/// `debuglevel` and `logging:` → [`Logging`].
pub(crate) fn logging(
    debuglevel: Option<&str>,
    raw: Option<&RawLogging>,
    cx: &mut Ctx<'_>,
) -> Result<Logging, ConfigError> {
    let mut out = Logging {
        level: debug_level(debuglevel, cx)?,
        ..Logging::default()
    };
    let Some(raw) = raw else { return Ok(out) };
    out.format = match nonempty(raw.format.as_deref()).map(str::to_ascii_lowercase) {
        None => LogFormat::Text,
        Some(f) if f == "text" => LogFormat::Text,
        Some(f) if f == "json" => LogFormat::Json,
        Some(other) => {
            return Err(cx.invalid(
                "logging.format",
                format!("{other:?} is not a log format; use text (the default) or json (one JSON object per line)"),
            ))
        }
    };
    if let Some(c) = &raw.console {
        if let Some(level) = nonempty(c.level.as_deref()) {
            out.level = out.level.max(level_of(cx, "logging.console.level", level)?);
        }
        if c.disable.unwrap_or(false) {
            out.level = Level::Off;
        }
        out.timestamps = !c.notimestamps.unwrap_or(false);
        out.callsite = callsite(cx, "logging.console.callsite", c.callsite.as_deref())?;
        out.style = c.style;
        if nonempty(c.compressor.as_deref()).is_some() {
            cx.warn("logging.console.compressor: only the file logger compresses; ignored");
        }
    }
    if let Some(f) = &raw.file {
        file_logger(f, cx)?;
    }
    Ok(out)
}

/// lnd's `ParseAndSetDebugLevels`: a global level first (optional), then `SUBSYSTEM=level`
/// pairs. Malformed text is an error as in Go; the pairs are checked and reported, since our
/// modules are not Go aperture's subsystems.
fn debug_level(v: Option<&str>, cx: &mut Ctx<'_>) -> Result<Level, ConfigError> {
    let Some(text) = nonempty(v) else {
        return Ok(Level::Info);
    };
    let mut parts = text.split(',').map(str::trim).peekable();
    let global = match parts.peek() {
        Some(first) if !first.contains('=') => {
            let level = level_of(cx, "debuglevel", first)?;
            parts.next();
            level
        }
        _ => Level::Info,
    };
    let mut subsystems = Vec::new();
    for pair in parts {
        let (subsystem, level) = pair
            .split_once('=')
            .filter(|(s, l)| !s.trim().is_empty() && !l.contains('='))
            .ok_or_else(|| {
                cx.invalid(
                    "debuglevel",
                    format!("{pair:?} is not SUBSYSTEM=level; write e.g. \"info,PRXY=debug\""),
                )
            })?;
        level_of(cx, "debuglevel", level)?;
        subsystems.push(subsystem.trim().to_owned());
    }
    if !subsystems.is_empty() {
        cx.warn(format!(
            "debuglevel: per-subsystem levels ({}) are not supported; the global level {} applies \
             everywhere (set RUST_LOG for per-module filters, e.g. RUST_LOG=info,aperture::proxy=debug)",
            subsystems.join(", "),
            global.as_filter()
        ));
    }
    Ok(global)
}

fn level_of(cx: &Ctx<'_>, key: &str, v: &str) -> Result<Level, ConfigError> {
    Level::parse(v).ok_or_else(|| {
        cx.invalid(
            key,
            format!(
                "{v:?} is not a log level; use trace, debug, info, warn, error, critical or off"
            ),
        )
    })
}

fn callsite(cx: &Ctx<'_>, key: &str, v: Option<&str>) -> Result<Callsite, ConfigError> {
    match nonempty(v).map(str::to_ascii_lowercase).as_deref() {
        None | Some("off") => Ok(Callsite::Off),
        Some("short") => Ok(Callsite::Short),
        Some("long") => Ok(Callsite::Long),
        Some(other) => Err(cx.invalid(
            key,
            format!("{other:?} is not a callsite option; use off, short or long"),
        )),
    }
}

/// Go aperture also writes `<basedir>/aperture.log` (rotated); we log to stderr only. The values
/// are checked as Go would, then the section is reported unless it turns the file logger off.
fn file_logger(f: &RawLogTarget, cx: &mut Ctx<'_>) -> Result<(), ConfigError> {
    if let Some(level) = nonempty(f.level.as_deref()) {
        level_of(cx, "logging.file.level", level)?;
    }
    callsite(cx, "logging.file.callsite", f.callsite.as_deref())?;
    if !f.disable.unwrap_or(false) {
        cx.warn(
            "logging.file: no log file is written; aperture logs to stderr (under systemd, the \
             journal: journalctl -u aperture), so logging.file.level/callsite/compressor/\
             notimestamps/style do nothing; set logging.file.disable: true to silence this",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const MIN: &str =
        "listenaddr: \"127.0.0.1:8081\"\ndbbackend: sqlite\nauthenticator:\n  dev: {}\n";

    fn load(extra: &str) -> Result<super::super::Config, ConfigError> {
        parse(&format!("{MIN}{extra}"), "t")
    }

    fn err(extra: &str) -> String {
        load(extra).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let c = load("").unwrap();
        assert_eq!(c.logging, Logging::default());
        assert_eq!(c.logging.level.as_filter(), "info");
    }

    #[test]
    fn debuglevel_as_lnd_parses_it() {
        let level = |v: &str| load(&format!("debuglevel: \"{v}\"\n")).unwrap();
        assert_eq!(level("debug").logging.level, Level::Debug);
        assert_eq!(level("CRITICAL").logging.level, Level::Error);
        let c = level("trace,PRXY=debug,AUTH=info");
        assert_eq!(c.logging.level, Level::Trace);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("PRXY, AUTH") && w.contains("RUST_LOG")),
            "{:?}",
            c.warnings
        );
        assert_eq!(level("PRXY=debug").logging.level, Level::Info);
        for bad in [
            "verbose",
            "info,PRXY",
            "info,PRXY=loud",
            "info,=debug",
            "info,",
        ] {
            let e = err(&format!("debuglevel: \"{bad}\"\n"));
            assert!(e.contains("`debuglevel`"), "{bad}: {e}");
        }
    }

    #[test]
    fn console_keys_are_honoured() {
        let c = load(
            "debuglevel: debug\nlogging:\n  format: json\n  console:\n    notimestamps: true\n    \
             callsite: long\n    style: false\n    level: warn\n",
        )
        .unwrap();
        assert_eq!(
            c.logging,
            Logging {
                level: Level::Warn,
                format: LogFormat::Json,
                timestamps: false,
                callsite: Callsite::Long,
                style: Some(false),
            }
        );
        // The stricter of debuglevel and console.level wins, as lnd filters by both.
        let c = load("debuglevel: error\nlogging:\n  console:\n    level: trace\n").unwrap();
        assert_eq!(c.logging.level, Level::Error);
        let c = load("logging:\n  console:\n    disable: true\n").unwrap();
        assert_eq!(c.logging.level, Level::Off);
        assert!(c.warnings.iter().all(|w| !w.contains("logging")));
        assert!(err("logging:\n  format: xml\n").contains("`logging.format`"));
        assert!(err("logging:\n  console:\n    callsite: full\n").contains("callsite"));
        assert!(err("logging:\n  console:\n    level: loud\n").contains("console.level"));
    }

    #[test]
    fn the_file_logger_is_reported_unless_disabled() {
        let c = load("logging:\n  file:\n    level: debug\n").unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("logging.file") && w.contains("disable: true")),
            "{:?}",
            c.warnings
        );
        let c = load("logging:\n  file:\n    disable: true\n    callsite: long\n").unwrap();
        assert!(c.warnings.iter().all(|w| !w.contains("logging.file")));
        assert!(err("logging:\n  file:\n    level: loud\n").contains("file.level"));
    }
}
