//! The Storage REST transport the Blob and Queue clients share: authorization, sending,
//! retries, and the one error a Storage call fails with. The two services speak the same
//! protocol (SharedKey/SAS/bearer, `x-ms-version`, `x-ms-request-id`, XML `<Error>` bodies), so
//! an operation on either is only a `transport::Request`: method, path and query, headers,
//! body, and the error statuses it reads itself.
//!
//! | file | job |
//! |---|---|
//! | `auth.rs` | [`StorageAuth`]: the pure SharedKey string-to-sign, SAS, bearer |
//! | `payload.rs` | [`Payload`]: a request body of several `Bytes`, sent without joining them |
//! | `transport.rs` | `Transport`: one request sent with its version, re-authorized and retried per attempt |
//! | `error.rs` | [`StorageError`] (status, error code, request id, source) and the parsing of error answers (pure) |
//! | `xml.rs` | the tag scanner, the `<Error>` body, escaping (pure) |
//!
//! Nothing here knows a Blob or Queue operation, Event Grid or the Functions host. URLs that
//! reach a message go through `redact_url` first.

mod auth;
mod error;
mod payload;
pub(crate) mod transport;
pub(crate) mod xml;

pub use auth::{AuthError, StorageAuth};
pub use error::StorageError;
pub use payload::Payload;
pub(crate) use transport::Transport;
