//! Progress on stderr: one indicatif bar per blob, drawn even into a pipe
//! (Concourse gives steps a pipe, where indicatif would otherwise draw
//! nothing), at a low refresh rate so logs stay readable; with
//! `debug: true`, plain log lines instead. Drawing never blocks the work.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use console::Term;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub enum Progress {
    /// The bars, and whether any was drawn.
    Bars(MultiProgress, Arc<AtomicBool>),
    Lines,
}

impl Progress {
    pub fn new(debug: bool) -> Self {
        if debug {
            return Progress::Lines;
        }
        let target = ProgressDrawTarget::term_like_with_hz(Box::new(Term::stderr()), 2);
        Progress::Bars(MultiProgress::with_draw_target(target), Arc::default())
    }

    /// A bar for one blob of `size` bytes, or none in line mode.
    pub fn blob(&self, digest: &str, size: u64) -> Option<ProgressBar> {
        let Progress::Bars(multi, used) = self else {
            return None;
        };
        used.store(true, Ordering::Relaxed);
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let short: String = digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect();
        Some(multi.add(ProgressBar::new(size).with_style(style).with_prefix(short)))
    }

    /// Ends the bars' last line, so what follows (an error line) starts on
    /// a line of its own: in a pipe the cursor stays after the last bar.
    ///
    /// Drawing stops here for good: a transfer still winding down (an
    /// upload task aborted by an error) must not redraw after that line.
    pub fn finish(&self) {
        if let Progress::Bars(multi, used) = self {
            multi.set_draw_target(ProgressDrawTarget::hidden());
            if used.swap(false, Ordering::Relaxed) {
                eprintln!();
            }
        }
    }

    pub fn is_lines(&self) -> bool {
        matches!(self, Progress::Lines)
    }
}
