//! Structured logging for the operator: text or JSON lines on stderr, filtered by `--log-level`
//! (a level or tracing directives). Not for metrics (`metrics`).

use tracing_subscriber::{EnvFilter, fmt};

use crate::cli::LogFormat;

/// Installs the global subscriber. A bad filter falls back to `info` and says so.
pub(crate) fn init(format: LogFormat, level: &str) {
    let (filter, bad) = match EnvFilter::try_new(level) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    // Colours only on a terminal: a pod's log is a file.
    let builder = fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    if let (Ok(()), Some(e)) = (installed, bad) {
        tracing::warn!(filter = %level, error = %e, "invalid --log-level; using info");
    }
}
