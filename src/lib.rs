//! recording-archiver: archives Azure Communication Services call recordings into Azure Blob
//! Storage, as an Azure Functions custom handler.
//!
//! # Layout
//!
//! Each module uses only the ones listed before it; nothing below `app` knows about Event Grid
//! or the Functions host.
//!
//! | module | job |
//! |---|---|
//! | [`disposition`] | what a caller must do with a failed unit of work: retry or drop |
//! | [`redact`] | what of a request may reach a log line: clipped to a bound, URL query values as `***` (pure) |
//! | [`json`] | reading untrusted JSON at a cost proportional to its size (pure) |
//! | [`config`] | every setting, read once from the environment and validated; [`config::Secret`] |
//! | [`recording`] | recording events' data as typed per-chunk jobs (pure) |
//! | [`clock`] | injected wall-clock time |
//! | [`retry`] | bounded backoff with jitter, `Retry-After`, deadlines |
//! | [`identity`] | managed-identity bearer tokens, cached |
//! | [`acs`] | ACS recording downloads: HMAC signing, SSRF allowlist, resumable streams |
//! | [`storage`] | the Storage REST transport: SharedKey/SAS/bearer auth, retries, [`storage::StorageError`] with status, code and request id |
//! | [`blob`] | Blob operations over the transport: blocks, block lists, properties |
//! | [`queue`] | Queue operations over the transport: Put Message for queue mode, the start-up probe |
//! | [`catalog`] | blob index tags, Find Blobs by Tags selections, recording manifests, the headers archived blobs are written with |
//! | [`preflight`] | the start-up storage probe: container and queues usable, else the setting or role to fix |
//! | [`transfer`] | one chunk from ACS into blocks and a create-only commit: exactly once, resumable, bounded memory |
//! | [`eventgrid`] | Event Grid and CloudEvents delivery schemas, handshakes, classification (pure) |
//! | [`app`] | what one webhook delivery or one queued transfer message does and answers; the [`app::ChunkArchiver`] seam |
//! | [`wiring`] | builds the app from settings once at start-up: clients, credentials, archivers |
//! | [`cli`] | the operator's tool `archiver`: check, replay, find, verify, written for people at a terminal |
//! | [`host`] | the front ends: Azure Functions custom handler (warp routes, invocation envelope, log lines at the host's severities), AWS Lambda |
//!
//! The binaries in `src/bin/` only read settings, build the app and serve it: `handler` (Azure
//! Functions), `lambda` (AWS Lambda); `archiver` calls [`cli::main`].

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod acs;
pub mod app;
pub mod blob;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod disposition;
pub mod eventgrid;
pub mod host;
pub mod identity;
pub mod json;
pub mod preflight;
pub mod queue;
pub mod recording;
pub mod redact;
pub mod retry;
pub mod storage;
pub mod transfer;
pub mod wiring;
