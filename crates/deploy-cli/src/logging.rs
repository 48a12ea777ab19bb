//! Where the libraries' `tracing` logs go: nowhere by default, stderr with
//! `-vv` (debug) or more (trace).

use tracing_subscriber::fmt;

/// Installs the stderr logger for a verbosity count (`-v` = 1).
pub fn init(verbose: u8) {
    let level = match verbose {
        0 | 1 => return,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let _ = fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .try_init();
}
