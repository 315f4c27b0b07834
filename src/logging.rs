//! Logging setup: JSON lines on stderr for `serve`/`demo` (for the cluster's
//! log collector), filtered by `RUST_LOG` (default `info`). Never tokens,
//! secrets or content: call sites log request ids and reason codes only.

use tracing_subscriber::EnvFilter;

/// JSON logs on stderr; safe to call more than once.
pub fn init_json() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Human-readable logs on stderr, warnings and above unless `RUST_LOG` says otherwise.
pub fn init_plain() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
