//! Entra ID bearer tokens from the App Service / Functions managed-identity endpoint
//! (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`), cached and refreshed before expiry.
//! (Filled in by the ACS download work; Blob and Queue use the same [`TokenSource`].)

use std::future::Future;
use std::pin::Pin;

use crate::config::Secret;

/// A boxed future, so token sources can sit behind `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
#[error("managed identity token for {resource}: {reason}")]
pub struct IdentityError {
    /// The resource (audience) asked for.
    pub resource: String,
    /// What went wrong.
    pub reason: String,
    /// Whether asking again later may help.
    pub transient: bool,
}

/// Hands out bearer tokens for one resource.
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A token valid for at least a few minutes more.
    fn token(&self) -> BoxFuture<'_, Result<Secret<String>, IdentityError>>;
}
