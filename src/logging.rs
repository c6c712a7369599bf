//! Structured logs: `--log-format json|text`, level from `--log-level` or `RUST_LOG`.

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// HTTP libraries log request targets at debug and trace; webhook URLs carry
/// secrets, so these stay at info whatever level is asked for.
const QUIET_DEPENDENCIES: &str =
    "hyper=info,hyper_util=info,h2=info,reqwest=info,rustls=info,tower=info";

/// Logs go to stderr so command output on stdout stays machine-readable.
pub fn init(format: LogFormat, level: &str) {
    let requested = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| level.to_string());
    let filter = EnvFilter::try_new(format!("{requested},{QUIET_DEPENDENCIES}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET_DEPENDENCIES}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
