//! Human output on stderr: `tracing` events from this crate, at debug level
//! when `source.debug` is set. Only method, path, status and timing are ever
//! logged for requests, never headers, so credentials cannot appear.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the steps' stderr logger (info, or debug); later calls are
/// ignored.
pub fn init(debug: bool) {
    install(if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    });
}

/// Installs the command-line verbs' logger: silent unless `--debug`, so a
/// failing command's stderr is its one `error:` line and a working one's
/// is empty (its answer is on stdout).
pub fn init_verb(debug: bool) {
    install(if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::OFF
    });
}

fn install(level: LevelFilter) {
    // Our own events only: dependencies (hyper, rustls, the AWS SDK) log at
    // debug level in volumes that bury what a pipeline user needs.
    let filter = Targets::new().with_target(env!("CARGO_CRATE_NAME"), level);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time();
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
}
