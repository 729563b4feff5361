//! Blob REST: the operations an idempotent, resumable upload needs (stage blocks with
//! `Content-MD5`, read the block list back, commit create-only with properties and metadata),
//! as a thin operation set over the Storage transport ([`crate::storage`]).
//!
//! | file | job |
//! |---|---|
//! | `client.rs` | [`BlobClient`]: each operation as method, path, query, headers and the statuses it reads |
//! | `model.rs` | block ids, commit options, outcomes, block lists, properties; names and metadata checked before sending (pure) |
//! | `xml.rs` | the block list body and answer (pure) |
//!
//! Failures are [`StorageError`](crate::storage::StorageError)s. Nothing here knows about
//! queues, Event Grid, ACS or the Functions host.

mod client;
mod model;
mod xml;

pub use client::BlobClient;
pub use model::{
    BlobCommitOptions, BlobProperties, BlockId, BlockList, CommitOutcome, ContainerProperties,
    CreateOutcome,
};
