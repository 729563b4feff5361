//! Blob REST: the operations an idempotent, resumable upload needs (stage blocks with
//! `Content-MD5`, read the block list back, commit create-only with properties and metadata),
//! as a thin operation set over the Storage [`Transport`](crate::storage::Transport).
//!
//! | file | job |
//! |---|---|
//! | [`client`] | [`BlobClient`]: each operation as method, path, query, headers and the statuses it reads |
//! | [`model`] | block ids, commit options, outcomes, block lists, properties; names and metadata checked before sending (pure) |
//! | `xml` | the block list body and answer (pure) |
//!
//! Failures are [`StorageError`](crate::storage::StorageError)s. Nothing here knows about
//! queues, Event Grid, ACS or the Functions host.

pub mod client;
pub mod model;
mod xml;

pub use client::{BlobClient, MAX_PUT_BLOB_BYTES};
pub use model::{
    BlobCommitOptions, BlobProperties, BlockId, BlockList, CommitOutcome, ContainerProperties,
    CreateOutcome,
};
