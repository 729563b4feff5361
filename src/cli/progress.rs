//! Progress for long commands: a bar on a terminal (bytes, rate and ETA when the total is
//! known, a running count otherwise), and one plain line per item when the output goes to a
//! file or a pipe, where a redrawn bar would be noise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Where progress goes.
pub(crate) struct Progress {
    /// The bar, on a terminal; `None` writes plain lines only.
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Progress over `total` bytes: bytes done, rate and ETA.
    pub(crate) fn bytes(total: u64) -> Progress {
        Progress::on_terminal(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar
        })
    }

    /// Progress over items whose number is not known in advance.
    pub(crate) fn count(unit: &'static str) -> Progress {
        Progress::on_terminal(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{spinner}} [{{elapsed_precise}}] {{pos}} {unit} {{msg}}"
                ))
                .expect("the template is valid"),
            );
            bar
        })
    }

    fn on_terminal(make: impl FnOnce() -> ProgressBar) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = make();
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar }
    }

    /// Counts `n` more units (bytes or items) done.
    pub(crate) fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Sets the note beside the bar (a running tally, the item in progress).
    pub(crate) fn note(&self, text: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(text);
        }
    }

    /// Prints one result line on standard output, above the bar when there is one.
    pub(crate) fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{text}")),
            None => println!("{text}"),
        }
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
