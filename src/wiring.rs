//! Builds the application from settings, once at start-up: the HTTP clients, credentials, the
//! ACS and Storage clients, the transfer pipeline, and what the webhook does with each chunk
//! (enqueue it, or transfer it inline). Both entry points call [`build_app`].

use std::sync::Arc;

use crate::acs::{self, AcsClient};
use crate::app::{App, ChunkArchiver, QueueIntake};
use crate::blob::BlobClient;
use crate::clock::SystemClock;
use crate::config::archive::ARCHIVED_NOTIFY_QUEUE;
use crate::config::storage::{StorageCredential, StorageSettings};
use crate::config::{
    acs::ACS_CONNECTION_STRING, ArchiveMode, ConfigError, Lookup, Settings, RECORDINGS_STORAGE,
};
use crate::identity::{ManagedIdentityTokens, TokenSource};
use crate::preflight::Probe;
use crate::queue::QueueClient;
use crate::retry::RetryPolicy;
use crate::storage::StorageAuth;
use crate::transfer::{AcsChunkReader, BlobBlockStore, QueueNotifier, Transfer};

/// Retries for the webhook's Put Message: Event Grid waits 30 s for the answer, so give up
/// well before and answer 503 (Event Grid then redelivers) rather than time out.
pub(crate) const ENQUEUE_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    deadline: std::time::Duration::from_secs(10),
    base_delay: std::time::Duration::from_millis(100),
    max_delay: std::time::Duration::from_secs(2),
};

/// The resource Storage tokens are asked for.
pub(crate) const STORAGE_RESOURCE: &str = "https://storage.azure.com/";

/// The remote clients, built from settings.
#[derive(Debug, Clone)]
pub struct Clients {
    /// ACS recording downloads.
    pub acs: AcsClient,
    /// The recordings container.
    pub blob: BlobClient,
    /// The transfer queue; `None` when the settings name no queue endpoint (a container SAS
    /// URL, or identity settings without `__queueServiceUri`).
    pub queue: Option<QueueClient>,
    /// `ARCHIVED_NOTIFY_QUEUE`, when set.
    pub notify: Option<QueueClient>,
}

/// Makes ring the process's TLS crypto provider, which every HTTP client needs before it is
/// built (reqwest is built without a provider of its own). Keeps one installed before.
pub fn install_tls_provider() {
    // An error only says that a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the clients. Fails, naming the setting, when ACS or storage settings are missing;
/// `lookup` supplies the platform's managed-identity variables.
pub fn build_clients(settings: &Settings, lookup: &impl Lookup) -> Result<Clients, ConfigError> {
    let acs_settings = settings.acs.clone().ok_or_else(|| {
        ConfigError::missing(ACS_CONNECTION_STRING, "the Communication Services connection string (endpoint=...;accesskey=...), or ACS_ENDPOINT with ACS_CREDENTIAL=managedidentity")
    })?;
    let (storage, http, auth) = storage_access(settings, lookup)?;
    let blob = BlobClient::new(
        http.clone(),
        storage.blob_endpoint.clone(),
        settings.container.clone(),
        auth.clone(),
    );
    let queue_named = |name: &str, endpoint: url::Url| {
        QueueClient::new(http.clone(), endpoint, name.to_string(), auth.clone())
            .with_retry_policy(ENQUEUE_RETRY)
            .with_encoding(settings.message_encoding)
    };
    let queue = storage
        .queue_endpoint
        .clone()
        .map(|endpoint| queue_named(&settings.transfer_queue, endpoint));
    let notify = match (&settings.archive.notify_queue, &storage.queue_endpoint) {
        (None, _) => None,
        (Some(name), Some(endpoint)) => Some(queue_named(name, endpoint.clone())),
        (Some(_), None) => {
            return Err(ConfigError::malformed(
                ARCHIVED_NOTIFY_QUEUE,
                format!(
                    "needs a Queue endpoint, which {} does not give",
                    storage.source
                ),
            ))
        }
    };
    let acs_http = acs::http_client().map_err(|e| {
        ConfigError::malformed(
            ACS_CONNECTION_STRING,
            format!("cannot build an HTTP client: {e}"),
        )
    })?;
    let acs = AcsClient::new(
        acs_http,
        acs_settings,
        settings.extra_allowed_hosts.clone(),
        lookup,
    );
    Ok(Clients {
        acs,
        blob,
        queue,
        notify,
    })
}

/// A client for the recordings container alone: what reading the archive needs (`archiver
/// verify`, `archiver find`), without the ACS settings the transfer needs.
pub fn archive_client(
    settings: &Settings,
    lookup: &impl Lookup,
) -> Result<BlobClient, ConfigError> {
    let (storage, http, auth) = storage_access(settings, lookup)?;
    Ok(BlobClient::new(
        http,
        storage.blob_endpoint.clone(),
        settings.container.clone(),
        auth,
    ))
}

/// The storage settings, an HTTP client, and how to authorize: what every Storage client
/// starts from. Fails, naming the setting, when the storage settings are missing or unusable.
fn storage_access<'a>(
    settings: &'a Settings,
    lookup: &impl Lookup,
) -> Result<(&'a StorageSettings, reqwest::Client, StorageAuth), ConfigError> {
    // First of every client-building path (build_clients, archive_client).
    install_tls_provider();
    let storage = settings.storage.as_ref().ok_or_else(|| {
        ConfigError::missing(RECORDINGS_STORAGE, "a storage connection string, a container SAS URL, or RECORDINGS_STORAGE__blobServiceUri with RECORDINGS_STORAGE__credential=managedidentity")
    })?;
    storage.check_container(&settings.container)?;

    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| {
            ConfigError::malformed(
                RECORDINGS_STORAGE,
                format!("cannot build an HTTP client: {e}"),
            )
        })?;
    let tokens: Option<Arc<dyn TokenSource>> = match &storage.credential {
        StorageCredential::ManagedIdentity { client_id } => {
            Some(Arc::new(ManagedIdentityTokens::from_lookup(
                lookup,
                http.clone(),
                STORAGE_RESOURCE,
                client_id.clone(),
            )?))
        }
        _ => None,
    };
    let auth = StorageAuth::from_credential(&storage.credential, tokens)
        .map_err(|e| ConfigError::malformed(RECORDINGS_STORAGE, e.to_string()))?;
    Ok((storage, http, auth))
}

/// What the Functions host needs of the settings beyond what the app needs: it binds
/// `RecordingTransfer`'s queue trigger to `RECORDINGS_STORAGE` in every `ARCHIVE_MODE`, so that
/// connection must reach a Queue service in a form the host reads (not a SAS URL).
pub fn check_functions_host(settings: &Settings) -> Result<(), ConfigError> {
    match &settings.storage {
        Some(storage) => storage.require_queue_endpoint().map(drop),
        // build_clients names the missing setting.
        None => Ok(()),
    }
}

/// The start-up storage probe over `clients` (see [`crate::preflight`]).
pub fn probe<'a>(settings: &'a Settings, clients: &'a Clients) -> Option<Probe<'a>> {
    let storage = settings.storage.as_ref()?;
    Some(Probe {
        blob: &clients.blob,
        queue: clients.queue.as_ref(),
        credential: &storage.credential,
        setting: storage.source,
        retry: None,
        notify: clients.notify.as_ref(),
        worm: settings.archive.needs_worm(),
    })
}

/// Builds the app. Fails, naming the setting, when something the configured mode needs is
/// missing; `lookup` supplies the platform's managed-identity variables.
pub fn build_app(settings: &Settings, lookup: &impl Lookup) -> Result<App, ConfigError> {
    app_from_clients(settings, build_clients(settings, lookup)?)
}

/// Builds the app over clients already built (the handler also probes storage with them).
pub fn app_from_clients(settings: &Settings, clients: Clients) -> Result<App, ConfigError> {
    let urls = clients.acs.urls().clone();
    let store = BlobBlockStore::new(clients.blob.clone())
        .with_archive_settings(settings.archive.clone(), Arc::new(SystemClock));
    let mut transfer = Transfer::new(
        Arc::new(AcsChunkReader::new(clients.acs)),
        Arc::new(store),
        settings.transfer,
        settings.blob_name_template.clone(),
        Arc::new(SystemClock),
    );
    if let Some(notify) = clients.notify {
        transfer = transfer.with_notifier(Arc::new(QueueNotifier::new(notify, clients.blob)));
    }
    let transfer = Arc::new(transfer);
    let poison = clients.queue.as_ref().map(QueueClient::poison_queue);
    let intake: Arc<dyn ChunkArchiver> = match (settings.archive_mode, clients.queue) {
        (ArchiveMode::Inline, _) => transfer.clone(),
        (ArchiveMode::Queue, Some(queue)) => Arc::new(QueueIntake::new(queue, urls)),
        (ArchiveMode::Queue, None) => {
            // Names the missing queue setting.
            settings
                .storage
                .as_ref()
                .map(|s| s.require_queue_endpoint())
                .transpose()?;
            return Err(ConfigError::missing(
                RECORDINGS_STORAGE,
                "a queue endpoint for ARCHIVE_MODE=queue",
            ));
        }
    };
    let app = App::new(intake, transfer, settings.max_body_bytes);
    Ok(match poison {
        Some(poison) => app.with_poison_queue(poison),
        None => app,
    })
}
