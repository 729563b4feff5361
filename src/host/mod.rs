//! Front ends that turn platform requests into calls on [`crate::app::App`].
//!
//! * [`functions`]: the Azure Functions custom handler (warp), the process the Functions host
//!   starts and forwards requests to.

pub mod functions;
pub mod invocation;
