//! The storage probe run once at start-up by the `handler` (logged) and by `archiver check`
//! (printed): do the recordings container, the transfer queue and the poison queue exist, or can
//! they be created, with the configured credential? When one cannot be used, the finding names
//! the setting or the role to fix.
//!
//! Without it a setup error shows only as a 503 on every delivery, and Event Grid answers
//! repeated failures by delaying *all* deliveries to the endpoint, new ones included, for up to
//! hours (docs: event-grid/delivery-and-retry). Roles follow the Functions docs
//! (functions-bindings-storage-queue, "functions-queue-permissions"): the queue trigger reads
//! with *Storage Queue Data Reader* and *Storage Queue Data Message Processor*; the webhook
//! enqueues with *Storage Queue Data Message Sender*; archives need *Storage Blob Data
//! Contributor*. The host creates `<queue>-poison` the first time a job fails for the last time
//! (`QueueProcessor` calls `AddMessageAndCreateIfNotExistsAsync`), which none of those roles may
//! do: it must exist beforehand, or the identity needs *Storage Queue Data Contributor*.
//!
//! Queues are probed with Peek Messages, which changes nothing and needs only the trigger's read
//! role; a queue is created only when the service says it does not exist. (Whether the webhook
//! may enqueue cannot be tested without enqueueing; its role is named in the docs.)
//!
//! A request that got no answer is described by its [`Cause`], read off the error's source
//! chain: "error sending request", which is all the outermost error says, tells nobody what to
//! fix; "connection refused at 127.0.0.1:10000" does.

use std::error::Error;
use std::fmt;
use std::time::{Duration, Instant};

use crate::blob::{BlobClient, CreateOutcome};
use crate::config::storage::StorageCredential;
use crate::queue::{QueueClient, QueueError};
use crate::retry::RetryPolicy;
use crate::storage::StorageError;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked, e.g. "container `recordings`".
    pub subject: String,
    /// The outcome.
    pub status: Status,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Usable: "exists" or "created".
    Ready(&'static str),
    /// Not usable: what the service said, and what to change.
    Problem {
        /// The failure (status, error code, request id; never a secret).
        error: String,
        /// The setting or role to fix.
        fix: String,
    },
}

impl Finding {
    /// Whether the resource is usable.
    pub fn is_ready(&self) -> bool {
        matches!(self.status, Status::Ready(_))
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.status {
            Status::Ready(how) => write!(f, "{}: ok ({how})", self.subject),
            Status::Problem { error, fix } => {
                write!(f, "{}: FAILED: {error}. Fix: {fix}", self.subject)
            }
        }
    }
}

/// The storage the app uses, and how it authenticates, for the probe.
pub struct Probe<'a> {
    /// The recordings container.
    pub blob: &'a BlobClient,
    /// The transfer queue, when the settings reach a Queue service.
    pub queue: Option<&'a QueueClient>,
    /// The credential, to tell a wrong key from a missing role.
    pub credential: &'a StorageCredential,
    /// The setting the storage settings came from (`RECORDINGS_STORAGE`, or the `__` form).
    pub setting: &'a str,
    /// Retries for the probe's calls, when not the clients' own: someone waiting at a prompt
    /// wants an answer in seconds.
    pub retry: Option<RetryPolicy>,
    /// `ARCHIVED_NOTIFY_QUEUE`, when set.
    pub notify: Option<&'a QueueClient>,
    /// Archived blobs are written WORM: the container must support version-level immutability.
    pub worm: bool,
}

impl Probe<'_> {
    /// Checks the container, the transfer queue and its poison queue, in that order.
    pub async fn run(&self) -> Vec<Finding> {
        let mut findings = Vec::with_capacity(3);
        let blob = match self.retry {
            Some(retry) => self.blob.clone().with_retry_policy(retry),
            None => self.blob.clone(),
        };
        let container = blob.container();
        let started = Instant::now();
        findings.push(Finding {
            subject: format!("container `{container}`"),
            status: match blob.create_container().await {
                Ok(CreateOutcome::Created) => Status::Ready("created"),
                Ok(CreateOutcome::AlreadyExists) => Status::Ready("exists"),
                Err(e) => self.problem(Need::Container, container, Ok(&e), started.elapsed()),
            },
        });
        if self.worm {
            findings.push(self.check_worm(&blob).await);
        }
        let retried = |q: QueueClient| match self.retry {
            Some(retry) => q.with_retry_policy(retry),
            None => q,
        };
        if let Some(queue) = self.queue {
            let (queue, poison) = (retried(queue.clone()), retried(queue.poison_queue()));
            findings.push(self.check_queue(&queue, Need::Queue).await);
            findings.push(self.check_queue(&poison, Need::PoisonQueue).await);
        }
        if let Some(notify) = self.notify {
            findings.push(
                self.check_queue(&retried(notify.clone()), Need::Queue)
                    .await,
            );
        }
        findings
    }

    /// `TRANSFER_IMMUTABILITY_DAYS` and `TRANSFER_LEGAL_HOLD` need a container with
    /// version-level immutability support; without it every archive would be refused.
    async fn check_worm(&self, blob: &BlobClient) -> Finding {
        let container = blob.container();
        let started = Instant::now();
        let status = match blob.container_properties().await {
            Ok(p) if p.version_level_worm => Status::Ready("version-level immutability enabled"),
            Ok(_) => Status::Problem {
                error: "the container does not support version-level immutability, so no archived blob can carry an immutability policy or a legal hold; chunks wait (retried) until this is fixed".into(),
                fix: "enable version-level immutability on the container (az storage container-rm create --enable-vlw true, or migrate it) or on the account, or unset TRANSFER_IMMUTABILITY_DAYS and TRANSFER_LEGAL_HOLD".into(),
            },
            Err(e) => self.problem(Need::Container, container, Ok(&e), started.elapsed()),
        };
        Finding {
            subject: format!("WORM support of container `{container}`"),
            status,
        }
    }

    async fn check_queue(&self, queue: &QueueClient, need: Need) -> Finding {
        let name = queue.queue();
        let subject = match need {
            Need::PoisonQueue => format!("poison queue `{name}`"),
            _ => format!("queue `{name}`"),
        };
        let started = Instant::now();
        let status = match queue.exists().await {
            Ok(true) => Status::Ready("exists"),
            Ok(false) => match queue.create_queue().await {
                Ok(()) => Status::Ready("created"),
                Err(e) => self.problem(need.creating(), name, storage_error(&e), started.elapsed()),
            },
            Err(e) => self.problem(need, name, storage_error(&e), started.elapsed()),
        };
        Finding { subject, status }
    }

    fn problem(
        &self,
        need: Need,
        name: &str,
        error: Result<&StorageError, &QueueError>,
        elapsed: Duration,
    ) -> Status {
        problem(need, name, error, elapsed, self.credential, self.setting)
    }
}

/// What reading the archive's container met, and what to fix: for the tools that read the
/// archive (`archiver verify`), with the same causes and fixes as the probe.
pub fn read_problem(
    error: &StorageError,
    elapsed: Duration,
    credential: &StorageCredential,
    setting: &str,
    container: &str,
) -> Status {
    problem(
        Need::ReadContainer,
        container,
        Ok(error),
        elapsed,
        credential,
        setting,
    )
}

fn problem(
    need: Need,
    name: &str,
    error: Result<&StorageError, &QueueError>,
    elapsed: Duration,
    credential: &StorageCredential,
    setting: &str,
) -> Status {
    let failure = match error {
        Ok(e) => Failure::of(e),
        Err(_) => Failure::Other,
    };
    let shown = match (&failure, error) {
        // The outermost error says only "error sending request"; the cause says what to fix.
        (Failure::Unreachable { cause, host }, Ok(e)) => {
            let at = host
                .as_deref()
                .map(|h| format!(" at {h}"))
                .unwrap_or_default();
            format!("{cause}{at}{}", retried(attempts(e), elapsed))
        }
        // The subject already names the resource; the status, code and request id are
        // what support asks for.
        (
            _,
            Ok(StorageError::Service {
                status,
                error_code,
                request_id,
                message,
                attempts,
                ..
            }),
        ) => format!(
            "HTTP {status} {}{} (request id {}){}",
            error_code.as_deref().unwrap_or("-"),
            message
                .as_deref()
                .map(|m| format!(": {}", m.trim_end_matches('.')))
                .unwrap_or_default(),
            request_id.as_deref().unwrap_or("-"),
            retried(*attempts, elapsed)
        ),
        (_, Ok(e)) => e.to_string(),
        (_, Err(e)) => e.to_string(),
    };
    Status::Problem {
        error: shown,
        fix: fix(need, &failure, Credential::of(credential), setting, name),
    }
}

/// The Storage error inside a queue error, when there is one.
fn storage_error(e: &QueueError) -> Result<&StorageError, &QueueError> {
    match e {
        QueueError::Storage { source, .. } => Ok(source),
        other => Err(other),
    }
}

fn attempts(e: &StorageError) -> u32 {
    match e {
        StorageError::Service { attempts, .. }
        | StorageError::Transport { attempts, .. }
        | StorageError::Timeout { attempts, .. } => *attempts,
        _ => 1,
    }
}

/// ", retried 2 times over 1.4 s", or nothing for a single attempt.
pub fn retried(attempts: u32, over: Duration) -> String {
    match attempts.saturating_sub(1) {
        0 => String::new(),
        1 => format!(" (retried once over {:.1} s)", over.as_secs_f64()),
        n => format!(" (retried {n} times over {:.1} s)", over.as_secs_f64()),
    }
}

/// Why a request got no answer, read off its error's source chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Nothing listens at the address: the emulator is not running, or the port is wrong.
    ConnectionRefused,
    /// The host name does not resolve: a typo in the account name, or a private endpoint
    /// whose DNS zone this machine does not see.
    NameNotResolved,
    /// No answer in time.
    TimedOut,
    /// The TLS handshake failed (https to a plain-http emulator, an intercepting proxy, a
    /// certificate not trusted); the innermost message.
    Tls(String),
    /// The connection was reset or closed before the answer was complete.
    ConnectionReset,
    /// Something else; the innermost message.
    Other(String),
}

impl Cause {
    /// Classifies `error` by walking its source chain, outermost first: typed I/O errors by
    /// kind, then the messages of resolver and TLS errors (which reach us only as text).
    pub fn of(error: &(dyn Error + 'static)) -> Cause {
        let mut innermost = error.to_string();
        let mut level: Option<&(dyn Error + 'static)> = Some(error);
        while let Some(e) = level {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind as K;
                match io.kind() {
                    K::ConnectionRefused => return Cause::ConnectionRefused,
                    K::TimedOut => return Cause::TimedOut,
                    K::ConnectionReset
                    | K::ConnectionAborted
                    | K::BrokenPipe
                    | K::UnexpectedEof => return Cause::ConnectionReset,
                    _ => {}
                }
            }
            if e.downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_timeout)
            {
                return Cause::TimedOut;
            }
            let text = e.to_string();
            if let Some(cause) = Cause::from_message(&text) {
                return cause;
            }
            innermost = text;
            level = e.source();
        }
        Cause::Other(innermost)
    }

    /// Classifies a message that carries its chain as text (a log line's `error` field).
    pub fn from_message(text: &str) -> Option<Cause> {
        let lower = text.to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
        if has(&[
            "connection refused",
            "os error 111",
            "os error 61",
            "os error 10061",
        ]) {
            Some(Cause::ConnectionRefused)
        } else if has(&[
            "dns error",
            "failed to lookup address",
            "name or service not known",
            "nodename nor servname",
            "no such host",
            "temporary failure in name resolution",
        ]) {
            Some(Cause::NameNotResolved)
        } else if has(&["timed out", "deadline has elapsed"]) {
            Some(Cause::TimedOut)
        } else if has(&["certificate", "tls", "ssl", "handshake", "corrupt message"]) {
            Some(Cause::Tls(text.to_string()))
        } else if has(&[
            "connection reset",
            "broken pipe",
            "connection closed before",
        ]) {
            Some(Cause::ConnectionReset)
        } else {
            None
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::ConnectionRefused => f.write_str("connection refused"),
            Cause::NameNotResolved => f.write_str("host name not resolved"),
            Cause::TimedOut => f.write_str("no answer in time"),
            Cause::Tls(detail) => write!(f, "TLS failed ({detail})"),
            Cause::ConnectionReset => f.write_str("connection reset"),
            Cause::Other(detail) => f.write_str(detail),
        }
    }
}

/// What the app needs of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Create (or find) the recordings container.
    Container,
    /// Read the transfer queue, as the trigger does.
    Queue,
    /// Read the poison queue.
    PoisonQueue,
    /// Create the missing transfer queue.
    CreateQueue,
    /// Create the missing poison queue.
    CreatePoisonQueue,
    /// List and read the recordings container.
    ReadContainer,
}

impl Need {
    fn creating(self) -> Need {
        match self {
            Need::PoisonQueue | Need::CreatePoisonQueue => Need::CreatePoisonQueue,
            _ => Need::CreateQueue,
        }
    }
}

/// The kind of credential, which decides what a 401/403 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    SharedKey,
    Sas,
    ManagedIdentity,
}

impl Credential {
    fn of(credential: &StorageCredential) -> Credential {
        match credential {
            StorageCredential::SharedKey { .. } => Credential::SharedKey,
            StorageCredential::Sas(_) => Credential::Sas,
            StorageCredential::ManagedIdentity { .. } => Credential::ManagedIdentity,
        }
    }
}

/// How a request failed, as far as the fix depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// The service answered with this status and error code.
    Refused { status: u16, code: String },
    /// No token could be had from the managed-identity endpoint.
    NoToken,
    /// No answer (DNS, connection, TLS, timeout), from `host` (`name:port`) when known.
    Unreachable { cause: Cause, host: Option<String> },
    /// Anything else.
    Other,
}

impl Failure {
    fn of(e: &StorageError) -> Failure {
        match e {
            StorageError::Service {
                status, error_code, ..
            } => Failure::Refused {
                status: *status,
                code: error_code.clone().unwrap_or_default(),
            },
            StorageError::Auth { .. } => Failure::NoToken,
            StorageError::Transport { source, url, .. } => Failure::Unreachable {
                cause: Cause::of(source),
                host: host_of(url),
            },
            StorageError::Timeout { .. } => Failure::Unreachable {
                cause: Cause::TimedOut,
                host: None,
            },
            StorageError::Invalid { .. } | StorageError::UnexpectedResponse { .. } => {
                Failure::Other
            }
        }
    }
}

/// `host:port` of a (redacted) request URL.
fn host_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    Some(format!(
        "{}:{}",
        url.host_str()?,
        url.port_or_known_default()?
    ))
}

/// Whether `host` (`name:port`) is this machine, where a storage emulator would run.
fn is_local(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    matches!(name, "127.0.0.1" | "localhost" | "[::1]" | "::1")
}

const BLOB_ROLE: &str = "Storage Blob Data Contributor";
const TRIGGER_ROLES: &str = "Storage Queue Data Reader and Storage Queue Data Message Processor";
const QUEUE_CREATE_ROLE: &str = "Storage Queue Data Contributor";

/// What to change, from what was needed, how it failed and the credential used.
fn fix(need: Need, failure: &Failure, credential: Credential, setting: &str, name: &str) -> String {
    let code = match failure {
        Failure::Refused { code, .. } => code.as_str(),
        Failure::NoToken => {
            return "no token came from the managed-identity endpoint: turn on the app's \
                    system-assigned identity, or assign a user-assigned identity to the app and \
                    set RECORDINGS_STORAGE__clientId to its client id"
                .to_string()
        }
        Failure::Unreachable { cause, host } => return unreachable_fix(cause, host, setting),
        Failure::Other => return format!("see the error; the settings come from {setting}"),
    };
    let status = match failure {
        Failure::Refused { status, .. } => *status,
        _ => 0,
    };
    match (credential, status, code) {
        (Credential::ManagedIdentity, 403, "AuthorizationPermissionMismatch") => {
            role_fix(need, name)
        }
        (Credential::ManagedIdentity | Credential::Sas, 403, "AuthorizationFailure") => format!(
            "the account refused the request (AuthorizationFailure): its firewall or network \
             rules (or the SAS's allowed IP range) exclude this app; settings from {setting}"
        ),
        (Credential::ManagedIdentity, 401 | 403, _) => format!(
            "the account refused the managed identity's token ({code}): check that the \
             identity belongs to the account's tenant and, for a user-assigned identity, that \
             RECORDINGS_STORAGE__clientId is its client id"
        ),
        (_, 404, "ContainerNotFound") => format!(
            "container `{name}` does not exist in this account: check RECORDINGS_CONTAINER, and \
             the account in {setting}"
        ),
        (Credential::SharedKey, 403, "AuthenticationFailed" | "AuthorizationFailure") => format!(
            "the account refused the key in {setting} ({code}): the key was rotated or \
             mistyped (copy the current connection string), or the account's firewall or \
             network rules exclude this app"
        ),
        (Credential::Sas, 403, "AuthenticationFailed") => format!(
            "the account refused the SAS in {setting}: it expired, was revoked, or was signed \
             with a key since rotated"
        ),
        (Credential::Sas, 403, _) => format!(
            "the SAS in {setting} does not allow this ({code}): use an account SAS for the Blob \
             and Queue services (ss=bq), resource types sco, permissions racwlup, and an expiry \
             you will renew"
        ),
        _ => format!("see the error; the settings come from {setting}"),
    }
}

/// What to change when the storage service did not answer.
fn unreachable_fix(cause: &Cause, host: &Option<String>, setting: &str) -> String {
    let at = host.as_deref().unwrap_or("the storage endpoint");
    match cause {
        Cause::ConnectionRefused if host.as_deref().is_some_and(is_local) => format!(
            "nothing listens at {at}: start the storage emulator (Azurite: `npx azurite`), or \
             correct the endpoint in {setting} (UseDevelopmentStorage=true means \
             127.0.0.1:10000 for blobs, 10001 for queues)"
        ),
        Cause::ConnectionRefused => {
            format!("nothing listens at {at}: correct the endpoint (host and port) in {setting}")
        }
        Cause::NameNotResolved => format!(
            "the host name of {at} does not resolve: check the account name or endpoint in \
             {setting}; for a private endpoint, this machine must see its private DNS zone"
        ),
        Cause::TimedOut => format!(
            "{at} did not answer in time: check the endpoint in {setting}, and that this \
             machine may reach the account (firewall, virtual network, private endpoint)"
        ),
        Cause::Tls(_) => format!(
            "the TLS handshake with {at} failed: check the scheme in {setting} (https to an \
             emulator that speaks http, or DefaultEndpointsProtocol), or a proxy that \
             intercepts TLS"
        ),
        Cause::ConnectionReset | Cause::Other(_) => format!(
            "the storage service did not answer: check the endpoint in {setting}, and that \
             this machine may reach the account (virtual network, private endpoint, DNS)"
        ),
    }
}

/// The role a managed identity lacks for `need`.
fn role_fix(need: Need, name: &str) -> String {
    match need {
        Need::Container => format!(
            "grant the app's managed identity {BLOB_ROLE} on the storage account (or on \
             container `{name}`)"
        ),
        Need::ReadContainer => format!(
            "grant the identity Storage Blob Data Reader (or {BLOB_ROLE}) on container \
             `{name}` or on the storage account"
        ),
        Need::Queue | Need::PoisonQueue => format!(
            "grant the app's managed identity {TRIGGER_ROLES} on queue `{name}` (or on the \
             account): RecordingTransfer's queue trigger reads it; the webhook also needs \
             Storage Queue Data Message Sender to enqueue"
        ),
        Need::CreateQueue => format!(
            "queue `{name}` does not exist and the identity may not create it: create it \
             (az storage queue create --name {name} --account-name <account> --auth-mode \
             login) or grant {QUEUE_CREATE_ROLE}"
        ),
        Need::CreatePoisonQueue => format!(
            "poison queue `{name}` does not exist and the identity may not create it, so the \
             host could not move a failed job there: create it (az storage queue create --name \
             {name} --account-name <account> --auth-mode login) or grant {QUEUE_CREATE_ROLE}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, code: &str) -> Failure {
        Failure::Refused {
            status,
            code: code.into(),
        }
    }

    const S: &str = "RECORDINGS_STORAGE";

    #[test]
    fn a_missing_role_is_named_for_what_was_needed() {
        let mismatch = refused(403, "AuthorizationPermissionMismatch");
        let mi = Credential::ManagedIdentity;
        let text = fix(Need::Container, &mismatch, mi, S, "recordings");
        assert!(text.contains("Storage Blob Data Contributor"), "{text}");
        let text = fix(Need::Queue, &mismatch, mi, S, "jobs");
        assert!(
            text.contains("Storage Queue Data Reader")
                && text.contains("Storage Queue Data Message Processor"),
            "{text}"
        );
        for need in [Need::CreateQueue, Need::CreatePoisonQueue] {
            let text = fix(need, &mismatch, mi, S, "jobs-poison");
            assert!(
                text.contains("Storage Queue Data Contributor")
                    && text.contains("az storage queue create --name jobs-poison"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_refused_credential_names_the_setting_not_a_role() {
        let text = fix(
            Need::Container,
            &refused(403, "AuthenticationFailed"),
            Credential::SharedKey,
            S,
            "recordings",
        );
        assert!(text.contains("key in RECORDINGS_STORAGE"), "{text}");
        let text = fix(
            Need::Queue,
            &refused(403, "AuthenticationFailed"),
            Credential::Sas,
            S,
            "jobs",
        );
        assert!(
            text.contains("SAS in RECORDINGS_STORAGE") && text.contains("expired"),
            "{text}"
        );
        let text = fix(
            Need::Queue,
            &refused(403, "AuthorizationResourceTypeMismatch"),
            Credential::Sas,
            S,
            "jobs",
        );
        assert!(text.contains("ss=bq"), "{text}");
        let text = fix(
            Need::Queue,
            &refused(401, "InvalidAuthenticationInfo"),
            Credential::ManagedIdentity,
            S,
            "jobs",
        );
        assert!(
            text.contains("tenant") && text.contains("clientId"),
            "{text}"
        );
        let text = fix(
            Need::Container,
            &Failure::NoToken,
            Credential::ManagedIdentity,
            S,
            "r",
        );
        assert!(text.contains("identity"), "{text}");
        let unreachable = |cause, host: &str| Failure::Unreachable {
            cause,
            host: Some(host.into()),
        };
        let text = fix(
            Need::Container,
            &unreachable(Cause::ConnectionRefused, "127.0.0.1:10000"),
            Credential::SharedKey,
            S,
            "r",
        );
        assert!(
            text.contains("nothing listens at 127.0.0.1:10000")
                && text.contains("start the storage emulator")
                && text.contains("endpoint in RECORDINGS_STORAGE"),
            "{text}"
        );
        let text = fix(
            Need::Container,
            &unreachable(Cause::NameNotResolved, "acct.blob.core.windows.net:443"),
            Credential::SharedKey,
            S,
            "r",
        );
        assert!(
            text.contains("does not resolve")
                && text.contains("account name or endpoint in RECORDINGS_STORAGE"),
            "{text}"
        );
    }

    /// The causes come from real client errors, as the probe meets them.
    #[tokio::test]
    async fn causes_are_read_off_real_client_errors() {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let cause = |result: Result<reqwest::Response, reqwest::Error>| {
            Cause::of(&result.expect_err("the request must fail"))
        };
        // A port nobody listens on: bound, then released, and never served.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(
            cause(http.get(format!("http://{closed}/")).send().await),
            Cause::ConnectionRefused
        );
        // `.invalid` never resolves (RFC 6761).
        assert_eq!(
            cause(http.get("http://storage.invalid/").send().await),
            Cause::NameNotResolved
        );
        // https to a server that answers in plain HTTP, as an emulator does.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = plain.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut socket, _)) = plain.accept().await {
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        assert!(
            matches!(
                cause(http.get(format!("https://{at}/")).send().await),
                Cause::Tls(_)
            ),
            "https to plain http"
        );
        assert_eq!(
            Cause::from_message("Put Block `b`: error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)"),
            Some(Cause::ConnectionRefused)
        );
        assert_eq!(Cause::from_message("HTTP 503 ServerBusy"), None);
    }

    #[test]
    fn retries_are_summarised_in_one_clause() {
        assert_eq!(retried(1, Duration::from_secs(3)), "");
        assert_eq!(
            retried(2, Duration::from_millis(1400)),
            " (retried once over 1.4 s)"
        );
        assert_eq!(
            retried(5, Duration::from_secs(6)),
            " (retried 4 times over 6.0 s)"
        );
    }

    #[test]
    fn findings_print_the_error_and_the_fix() {
        let f = Finding {
            subject: "queue `jobs`".into(),
            status: Status::Problem {
                error: "HTTP 403".into(),
                fix: "grant X".into(),
            },
        };
        assert_eq!(
            f.to_string(),
            "queue `jobs`: FAILED: HTTP 403. Fix: grant X"
        );
        assert!(!f.is_ready());
        let ok = Finding {
            subject: "queue `jobs`".into(),
            status: Status::Ready("exists"),
        };
        assert_eq!(ok.to_string(), "queue `jobs`: ok (exists)");
    }
}
