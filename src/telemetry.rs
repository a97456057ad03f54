//! Logging: `tracing` with an `EnvFilter` from `RUST_LOG`, falling back to the configured level; text
//! or JSON lines (`[log] format`, `--log-format`) on stderr (stdout belongs to reports). Text is
//! coloured only when stderr is a terminal, so files and collectors get no escape codes. Spans skip their
//! arguments by default, so tokens and secrets never reach a log line, in either format.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls are ignored (tests call it repeatedly).
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("miaudit={level},tower_http=warn,sqlx=warn")))
        .unwrap_or_else(|_| EnvFilter::new("miaudit=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!json && std::io::stderr().is_terminal())
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}
