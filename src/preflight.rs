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

use std::fmt;

use crate::blob::{BlobClient, CreateOutcome};
use crate::config::storage::StorageCredential;
use crate::queue::{QueueClient, QueueError};
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
}

impl Probe<'_> {
    /// Checks the container, the transfer queue and its poison queue, in that order.
    pub async fn run(&self) -> Vec<Finding> {
        let mut findings = Vec::with_capacity(3);
        let container = self.blob.container();
        findings.push(Finding {
            subject: format!("container `{container}`"),
            status: match self.blob.create_container().await {
                Ok(CreateOutcome::Created) => Status::Ready("created"),
                Ok(CreateOutcome::AlreadyExists) => Status::Ready("exists"),
                Err(e) => self.problem(Need::Container, container, &e, Failure::of(&e)),
            },
        });
        if let Some(queue) = self.queue {
            let poison = queue.poison_queue();
            findings.push(self.check_queue(queue, Need::Queue).await);
            findings.push(self.check_queue(&poison, Need::PoisonQueue).await);
        }
        findings
    }

    async fn check_queue(&self, queue: &QueueClient, need: Need) -> Finding {
        let name = queue.queue();
        let subject = match need {
            Need::PoisonQueue => format!("poison queue `{name}`"),
            _ => format!("queue `{name}`"),
        };
        let status = match queue.exists().await {
            Ok(true) => Status::Ready("exists"),
            Ok(false) => match queue.create_queue().await {
                Ok(()) => Status::Ready("created"),
                Err(e) => self.problem(need.creating(), name, &e, Failure::of_queue(&e)),
            },
            Err(e) => self.problem(need, name, &e, Failure::of_queue(&e)),
        };
        Finding { subject, status }
    }

    fn problem(
        &self,
        need: Need,
        name: &str,
        error: &dyn fmt::Display,
        failure: Failure,
    ) -> Status {
        Status::Problem {
            error: error.to_string(),
            fix: fix(
                need,
                &failure,
                Credential::of(self.credential),
                self.setting,
                name,
            ),
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
    /// No answer (DNS, connection, TLS, timeout).
    Unreachable,
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
            StorageError::Transport { .. } | StorageError::Timeout { .. } => Failure::Unreachable,
            StorageError::Invalid { .. } | StorageError::UnexpectedResponse { .. } => {
                Failure::Other
            }
        }
    }

    fn of_queue(e: &QueueError) -> Failure {
        match e {
            QueueError::Storage { source, .. } => Failure::of(source),
            QueueError::TooLarge { .. } => Failure::Other,
        }
    }
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
        Failure::Unreachable => {
            return format!(
                "the storage service did not answer: check the endpoint in {setting}, and that \
                 the app may reach the account (virtual network, private endpoint, DNS)"
            )
        }
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

/// The role a managed identity lacks for `need`.
fn role_fix(need: Need, name: &str) -> String {
    match need {
        Need::Container => format!(
            "grant the app's managed identity {BLOB_ROLE} on the storage account (or on \
             container `{name}`)"
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
        let text = fix(
            Need::Container,
            &Failure::Unreachable,
            Credential::SharedKey,
            S,
            "r",
        );
        assert!(text.contains("endpoint in RECORDINGS_STORAGE"), "{text}");
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
