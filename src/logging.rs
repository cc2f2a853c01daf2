//! Human output on stderr: `tracing` events from this crate, at debug level
//! when `source.debug` is set. Only method, path, status and timing are ever
//! logged for requests, never headers, so credentials cannot appear.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the stderr logger; later calls are ignored.
pub fn init(debug: bool) {
    let level = if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
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
