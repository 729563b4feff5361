//! Front ends that turn platform requests into calls on [`crate::app::App`].
//!
//! * [`functions`]: the Azure Functions custom handler (warp), the process the Functions host
//!   starts and forwards requests to; [`invocation`] is its envelope for queue-triggered functions;
//!   [`logging`] writes log lines the host records at the right severity;
//!   [`server`] serves its routes with timeouts and a connection limit.
//! * `lambda` (feature `lambda`): the AWS Lambda HTTP front end.

pub mod functions;
pub mod invocation;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod logging;
pub mod server;
