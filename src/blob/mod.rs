//! Blob REST: SharedKey / SAS / bearer authorization and the block calls an idempotent,
//! resumable upload needs (stage blocks with `Content-MD5`, read the block list back, commit
//! create-only with properties and metadata).
//!
//! | file | job |
//! |---|---|
//! | [`auth`] | [`StorageAuth`]: the pure SharedKey string-to-sign, SAS, bearer; reused by the Queue client |
//! | [`client`] | [`BlobClient`]: the calls, retries, [`BlobError`] with request ids |
//! | `xml` | the three small XML shapes (block list body and answer, error body) |
//!
//! Nothing here knows about Event Grid, ACS or the Functions host. URLs that reach a message
//! go through [`redact_url`] first.

pub mod auth;
pub mod client;
mod xml;

pub use auth::{redact_url, AuthError, StorageAuth};
pub use client::{
    BlobClient, BlobCommitOptions, BlobError, BlobProperties, BlockId, BlockList, CommitOutcome,
    CreateOutcome, Operation, DEFAULT_API_VERSION,
};
