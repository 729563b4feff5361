//! Stand-ins for the services recording-archiver talks to, speaking their real protocols, for
//! tests, the local demo and the benchmarks. Nothing here is shipped in the `handler` binary.
//!
//! # Layout
//!
//! | module | stands in for |
//! |---|---|
//! | [`acs`] | ACS recording storage: serves chunks and metadata, checks HMAC signatures like the service, injects faults |
//! | [`host`] | the Azure Functions host: starts the `handler` like the host, forwards requests like the host |
//! | [`lambda`] | the AWS Lambda Runtime API: hands events to a function process and collects its answers, like Lambda |
//! | [`archive`] | nothing: reads archived blobs back from a container, for the demo's and the tests' checks |
//! | [`azurite`] | Azure Storage: starts the repo's pinned Azurite on free ports, in memory, and stops it |
//! | [`queue`] | nothing: a small Queue REST client with its own SharedKey signer, used by the host emulator and tests |
//! | [`proxy`] | a flaky network or a busy Storage service: forwards to a target, counts requests by operation, injects 503s |
//! | [`shaper`] | a network link: a TCP proxy giving each connection its own bandwidth and round trip, modelled on an Azure region (benchmarks) |
//! | [`sink`] | a Blob service with unlimited bandwidth, for benchmarks: accepts blocks and throws the bytes away |
//! | [`procstat`] | nothing: reads a process's CPU time and peak RSS, and the machine's busy cores, from `/proc` (demo, benchmarks) |
//! | [`workspace`] | nothing: builds the workspace's binaries from inside a test, as the test build did, so it is a no-op |
//! | [`demo`] | Event Grid and a user, for `scripts/demo`: runs all of the above around the real handler and checks the archive |

pub mod acs;
pub mod archive;
pub mod azurite;
pub mod demo;
pub mod host;
pub mod lambda;
pub mod procstat;
pub mod proxy;
pub mod queue;
pub mod shaper;
pub mod sink;
pub mod workspace;
