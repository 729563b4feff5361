//! archiver-bench: one command that measures what recording-archiver costs and how close it
//! gets to what the storage can take, and prints one table with the targets.
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | [`plan`] | the command line and the rows it turns into (pure) |
//! | [`report`] | the table: MB/s, ratio to the ceiling, CPU s/GiB, peak RSS, targets (pure) |
//! | [`children`] | the ACS emulator and handler processes, killed with the benchmark |
//! | [`ceiling`] | the raw Azurite ingest ceiling: parallel Put Block from memory |
//! | [`archive`] | one archive row: a fresh handler, one `RecordingTransfer`, measured and checked |
//! | [`run`] | the whole run, row by row |
//! | [`wan`] | the network-shaped run (`--wan`): shaping proxies, ranges 1-8, the Python SDKs, shaped limits |
//!
//! Every process that is measured runs alone: the handler (ours), the ACS emulator and
//! Azurite are separate processes; the ceiling client and the discarding sink live in this one.

#![warn(missing_docs)]

pub mod archive;
pub mod ceiling;
pub mod children;
pub mod plan;
pub mod report;
pub mod run;
pub mod wan;
