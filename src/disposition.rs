//! What the caller must do once a unit of work has failed.
//!
//! Every module keeps its own error enum; each of them maps to one [`Disposition`] so that the
//! entry points (the Event Grid webhook, the queue trigger) translate outcomes in one place.

use std::fmt;

/// The answer a failed unit of work earns. (Success needs no disposition: each entry point
/// acknowledges what was done.)
///
/// Event Grid drops a delivery answered with 400/413/401/403 for good (or dead-letters it, if the
/// subscription has a dead-letter destination) and retries everything else for up to 24 h, so a
/// wrong `Drop` loses a recording while a wrong `Retry` only costs a redelivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// Failed for a reason that may pass: ask to be delivered again (HTTP 503, failed invocation).
    Retry,
    /// Can never succeed as sent: report loudly and do not ask for it again.
    Drop,
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Disposition::Retry => "retry",
            Disposition::Drop => "drop",
        })
    }
}
