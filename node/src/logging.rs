//! The node's log: tracing to stderr, as text or JSON lines, with a filter that can be
//! changed while the node runs (`PUT /v1/admin/log`, SIGHUP).
//!
//! The subscriber is installed once per process; the filter sits behind a reload handle.

use std::sync::{Mutex, OnceLock};

use edgerun_config::{LogConfig, LogFormat, DEFAULT_LOG_FILTER};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
    format: LogFormat,
}

static LOG: OnceLock<LogControl> = OnceLock::new();

/// The process's log control, once [`init`] ran.
pub fn get() -> Option<&'static LogControl> {
    LOG.get()
}

/// The filter the environment asks for (`EDGERUN_LOG`, then `RUST_LOG`), if any.
pub fn env_filter() -> Option<String> {
    std::env::var("EDGERUN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Check a filter; the error says what is wrong with it.
pub fn parse(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .with_regex(false)
        .parse(filter)
        .map_err(|e| {
            format!("{filter:?} is not a log filter: {e}; e.g. info or info,edgerun::trace=debug")
        })
}

/// Install the process's subscriber (once; later calls only change the filter). The
/// environment's filter wins over `cfg.filter`.
pub fn init(cfg: &LogConfig) -> Result<&'static LogControl, String> {
    let wanted = env_filter().unwrap_or_else(|| cfg.filter.clone());
    let what = if env_filter().is_some() {
        "EDGERUN_LOG"
    } else {
        "log.filter"
    };
    install(wanted, cfg.format).map_err(|e| format!("{what}: {e}"))
}

fn install(wanted: String, format: LogFormat) -> Result<&'static LogControl, String> {
    let filter = parse(&wanted)?;
    if let Some(c) = LOG.get() {
        c.set(&wanted)?;
        return Ok(c);
    }
    let (layer, handle) = reload::Layer::new(filter);
    let ansi = format == LogFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text = (format == LogFormat::Text)
        .then(|| fmt::layer().with_writer(std::io::stderr).with_ansi(ansi));
    let json = (format == LogFormat::Json).then(|| {
        fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(text)
        .with(json)
        .try_init();
    Ok(LOG.get_or_init(|| LogControl {
        handle,
        current: Mutex::new(wanted),
        format,
    }))
}

/// The default logging of commands that are not a node (`dev`'s parent, tools); a bad
/// `EDGERUN_LOG` is reported and the default used.
pub fn init_default() {
    let wanted = env_filter().unwrap_or_else(|| DEFAULT_LOG_FILTER.to_string());
    if let Err(e) = install(wanted, LogFormat::Text) {
        eprintln!("EDGERUN_LOG: {e}; logging with {DEFAULT_LOG_FILTER:?}");
        let _ = install(DEFAULT_LOG_FILTER.to_string(), LogFormat::Text);
    }
}

impl LogControl {
    /// The filter in force.
    pub fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// Replace the filter; a bad one changes nothing.
    pub fn set(&self, filter: &str) -> Result<(), String> {
        let f = parse(filter)?;
        self.handle
            .reload(f)
            .map_err(|e| format!("changing the log filter: {e}"))?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = filter.to_string();
        Ok(())
    }
}
