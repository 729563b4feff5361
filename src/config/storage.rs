//! Storage settings: `RECORDINGS_STORAGE` and its `__` identity settings, in the three forms
//! Azure Functions users already write (docs: "identity-based connections"):
//!
//! 1. a connection string: `DefaultEndpointsProtocol`, `AccountName`, `AccountKey`,
//!    `BlobEndpoint`, `QueueEndpoint`, `EndpointSuffix`, `SharedAccessSignature`, or
//!    `UseDevelopmentStorage=true` (Azurite on its default ports);
//! 2. a container SAS URL: `https://acct.blob.core.windows.net/container?sv=...&sig=...`;
//! 3. identity-based settings under the prefix: `RECORDINGS_STORAGE__blobServiceUri` with
//!    `__queueServiceUri`, or `__accountName` alone; `__credential=managedidentity`,
//!    `__clientId` for a user-assigned identity. Tokens then come from the managed-identity
//!    endpoint ([`crate::identity`]).
//!
//! An exact `RECORDINGS_STORAGE` (or the Functions fallback `AzureWebJobsRECORDINGS_STORAGE`)
//! beats the prefix form, as in the Functions host. Errors name the setting and never repeat a
//! key, a SAS or the value of a setting that may hold one.
//!
//! The same connection binds `RecordingTransfer`'s queue trigger in the Functions host, so every
//! value must mean to us what it means to the host's Storage extension:
//! - `__serviceUri` is, to the host, an alias of `__queueServiceUri` that "can't be used when
//!   the overall connection configuration is to be used across blobs, queues" (docs:
//!   functions-bindings-storage-queue, identity-based connections). Ours is used for both, so
//!   it is refused, naming the two settings to write instead.
//! - The extension takes `__accountName` before any `__*ServiceUri`
//!   (`StorageClientProvider.TryGetServiceUri`), so giving both is refused rather than letting
//!   the handler and the trigger talk to different endpoints.
//! - A plain value is read by the host as a connection string
//!   (`StorageClientProvider.CreateClientFromConnectionString`): a container SAS URL, or a
//!   connection string without a Queue endpoint, cannot bind the trigger in any
//!   `ARCHIVE_MODE`. `StorageSettings::require_queue_endpoint` says so, and the Functions
//!   handler checks it at start-up.

use base64::Engine as _;
use url::Url;

use super::{
    is_dns_style_name, ConfigError, Lookup, Secret, RECORDINGS_CONTAINER, RECORDINGS_STORAGE,
};

/// The Functions host's fallback name for the `RECORDINGS_STORAGE` connection.
pub(crate) const AZURE_WEBJOBS_RECORDINGS_STORAGE: &str = "AzureWebJobsRECORDINGS_STORAGE";
/// Identity-based form: the Blob service URL, e.g. `https://acct.blob.core.windows.net`.
pub(crate) const BLOB_SERVICE_URI: &str = "RECORDINGS_STORAGE__blobServiceUri";
/// The single-service Functions spelling: the *Queue* service to the host. Refused.
pub(crate) const SERVICE_URI: &str = "RECORDINGS_STORAGE__serviceUri";
/// Identity-based form: the Queue service URL, for the queue trigger and `ARCHIVE_MODE=queue`.
pub(crate) const QUEUE_SERVICE_URI: &str = "RECORDINGS_STORAGE__queueServiceUri";
/// Identity-based form: the account name; Blob and Queue URLs are derived in the public cloud.
/// The host's Storage extension takes it before any service URL.
pub(crate) const ACCOUNT_NAME: &str = "RECORDINGS_STORAGE__accountName";
/// Identity-based form: `managedidentity` (the only credential supported; also the default).
pub(crate) const CREDENTIAL: &str = "RECORDINGS_STORAGE__credential";
/// Identity-based form: client id of a user-assigned managed identity.
pub(crate) const CLIENT_ID: &str = "RECORDINGS_STORAGE__clientId";
/// Identity-based form: a service principal secret. Refused: use a managed identity.
const CLIENT_SECRET: &str = "RECORDINGS_STORAGE__clientSecret";

/// Azurite's built-in account.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known key for [`DEV_ACCOUNT`] (public, published in the Azurite README).
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// What `UseDevelopmentStorage=true` means: Azurite on its default ports, path-style URLs.
/// The SDKs expand it this way; we must do it ourselves.
const DEV_STORAGE_EXPANDED: &str = concat!(
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;",
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;",
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;",
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
);
const DEFAULT_ENDPOINT_SUFFIX: &str = "core.windows.net";

/// Where archives go and how we authenticate there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSettings {
    /// Blob service endpoint, without a query: `https://acct.blob.core.windows.net/`, or a
    /// path-style emulator URL such as `http://127.0.0.1:10000/devstoreaccount1`.
    pub blob_endpoint: Url,
    /// Queue service endpoint, when the settings give or imply one (not for a container SAS).
    pub queue_endpoint: Option<Url>,
    /// The storage account name, when known.
    pub account: Option<String>,
    /// How requests are authorized; the same for Blob and Queue.
    pub(crate) credential: StorageCredential,
    /// The container a container SAS URL names: that SAS grants nothing else.
    pub(crate) sas_container: Option<String>,
    /// The setting these values came from, for later error messages.
    pub source: &'static str,
    /// Which of the three forms the settings took.
    pub form: StorageForm,
}

/// The form of the storage settings: it decides what the Functions host can bind to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageForm {
    /// A connection string (`UseDevelopmentStorage=true` included).
    ConnectionString,
    /// A SAS URL: Blob only, and not a connection string to the host.
    SasUrl,
    /// The `RECORDINGS_STORAGE__*` identity-based settings.
    Identity,
}

/// How storage requests are authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageCredential {
    /// HMAC-SHA256 with the account key (`Authorization: SharedKey account:signature`).
    SharedKey {
        /// Account name, part of every string-to-sign.
        account: String,
        /// The decoded account key.
        key: Secret<Vec<u8>>,
    },
    /// A shared access signature: query parameters appended to every request, without `?`.
    Sas(Secret<String>),
    /// Entra ID bearer tokens from the managed-identity endpoint.
    ManagedIdentity {
        /// Client id of a user-assigned identity; `None` for the system-assigned one.
        client_id: Option<String>,
    },
}

impl StorageSettings {
    /// The Queue endpoint, or an error naming what to set. Queue mode needs it, and so does the
    /// Functions host in every mode: it binds `RecordingTransfer`'s queue trigger to this same
    /// connection, reading a plain value as a connection string.
    pub(crate) fn require_queue_endpoint(&self) -> Result<&Url, ConfigError> {
        self.queue_endpoint.as_ref().ok_or_else(|| {
            if self.source == BLOB_SERVICE_URI {
                return ConfigError::missing(
                    QUEUE_SERVICE_URI,
                    format!(
                        "the Queue service URL (https://<account>.queue.core.windows.net) next to \
                         {BLOB_SERVICE_URI}, or {ACCOUNT_NAME} alone: the queue trigger binds to \
                         this connection"
                    ),
                );
            }
            let what = match self.form {
                StorageForm::SasUrl => "holds a SAS URL, which reaches only Blob storage",
                _ => "is a connection string without a Queue endpoint",
            };
            ConfigError::malformed(
                self.source,
                format!(
                    "{what}; the Functions host reads this setting as a connection string to bind \
                     RecordingTransfer's queue trigger, in every ARCHIVE_MODE. Use a connection \
                     string with AccountName and AccountKey (or BlobEndpoint, QueueEndpoint and an \
                     account SharedAccessSignature), or the identity-based \
                     {BLOB_SERVICE_URI} and {QUEUE_SERVICE_URI}"
                ),
            )
        })
    }

    /// Checks that `container` is reachable with these settings: a container SAS URL grants
    /// only the container it names.
    pub(crate) fn check_container(&self, container: &str) -> Result<(), ConfigError> {
        match &self.sas_container {
            Some(granted) if granted != container => Err(ConfigError::malformed(
                RECORDINGS_CONTAINER,
                format!(
                    "`{container}` differs from container `{granted}` that the SAS URL in {} grants",
                    self.source
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// Reads the storage settings, when present.
pub fn load(lookup: &impl Lookup) -> Result<Option<StorageSettings>, ConfigError> {
    for name in [RECORDINGS_STORAGE, AZURE_WEBJOBS_RECORDINGS_STORAGE] {
        if let Some(value) = lookup.get(name) {
            let scheme = value.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            return match scheme.as_deref() {
                Some("http" | "https") => parse_sas_url(name, &value),
                _ => parse_connection_string(name, &value),
            }
            .map(Some);
        }
    }
    load_identity(lookup)
}

/// The recognised keys of a storage connection string (matched case-insensitively).
#[derive(Default)]
struct ConnectionString<'a> {
    protocol: Option<&'a str>,
    account: Option<&'a str>,
    key: Option<&'a str>,
    sas: Option<&'a str>,
    blob_endpoint: Option<&'a str>,
    queue_endpoint: Option<&'a str>,
    suffix: Option<&'a str>,
    dev_storage: Option<&'a str>,
}

fn parse_connection_string(
    setting: &'static str,
    value: &str,
) -> Result<StorageSettings, ConfigError> {
    let bad = |reason: String| ConfigError::malformed(setting, reason);
    let mut cs = ConnectionString::default();
    for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, val)) = part.split_once('=') else {
            return Err(bad(
                "a connection string is `Key=value` pairs separated by `;`, or a SAS URL".into(),
            ));
        };
        let (key, val) = (key.trim(), val.trim());
        let slot = match key.to_ascii_lowercase().as_str() {
            "defaultendpointsprotocol" => &mut cs.protocol,
            "accountname" => &mut cs.account,
            "accountkey" => &mut cs.key,
            "sharedaccesssignature" => &mut cs.sas,
            "blobendpoint" => &mut cs.blob_endpoint,
            "queueendpoint" => &mut cs.queue_endpoint,
            "endpointsuffix" => &mut cs.suffix,
            "usedevelopmentstorage" => &mut cs.dev_storage,
            // Other services' endpoints are valid in a connection string; we do not use them.
            "tableendpoint" | "fileendpoint" => continue,
            _ => return Err(bad(format!("unknown key `{key}`"))),
        };
        if slot.replace(val).is_some() {
            return Err(bad(format!("key `{key}` appears twice")));
        }
    }

    if let Some(dev) = cs.dev_storage {
        if !dev.eq_ignore_ascii_case("true") {
            return Err(bad("UseDevelopmentStorage accepts only `true`".into()));
        }
        let only_key = value.split(';').filter(|p| !p.trim().is_empty()).count() == 1;
        if !only_key {
            return Err(bad(
                "UseDevelopmentStorage=true stands alone; for other Azurite ports write the explicit \
                 form with BlobEndpoint and QueueEndpoint"
                    .into(),
            ));
        }
        return parse_connection_string(setting, DEV_STORAGE_EXPANDED);
    }

    let protocol = match cs.protocol.map(str::to_ascii_lowercase).as_deref() {
        None | Some("https") => "https",
        Some("http") => "http",
        Some(_) => {
            return Err(bad(
                "DefaultEndpointsProtocol must be `https` or `http`".into()
            ))
        }
    };
    let account = cs.account.map(|a| check_account(setting, a)).transpose()?;
    let suffix = cs.suffix.unwrap_or(DEFAULT_ENDPOINT_SUFFIX);
    if suffix.is_empty()
        || !suffix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(bad(
            "EndpointSuffix must be a DNS suffix such as `core.windows.net`".into(),
        ));
    }
    let derived = |service: &str| -> Result<Option<Url>, ConfigError> {
        account
            .as_deref()
            .map(|a| {
                endpoint(
                    setting,
                    "EndpointSuffix",
                    &format!("{protocol}://{a}.{service}.{suffix}"),
                )
            })
            .transpose()
    };
    let blob_endpoint = match cs.blob_endpoint {
        Some(e) => endpoint(setting, "BlobEndpoint", e)?,
        None => derived("blob")?
            .ok_or_else(|| bad("AccountName is required unless BlobEndpoint is given".into()))?,
    };
    let queue_endpoint = match cs.queue_endpoint {
        Some(e) => Some(endpoint(setting, "QueueEndpoint", e)?),
        // An explicit BlobEndpoint (an emulator, a custom domain) says nothing about where the
        // queue lives, unless the suffix is given too.
        None if cs.blob_endpoint.is_none() || cs.suffix.is_some() => derived("queue")?,
        None => None,
    };

    let credential = match (cs.key, cs.sas) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "give either AccountKey or SharedAccessSignature, not both".into(),
            ))
        }
        (Some(key), None) => {
            let account = account
                .clone()
                .ok_or_else(|| bad("AccountName is required with AccountKey".into()))?;
            StorageCredential::SharedKey {
                account,
                key: Secret::new(decode_key(setting, key)?),
            }
        }
        (None, Some(sas)) => StorageCredential::Sas(Secret::new(check_sas(
            setting,
            "SharedAccessSignature",
            sas,
        )?)),
        (None, None) => {
            return Err(bad(
                "needs AccountKey or SharedAccessSignature (for a managed identity, use the \
                 RECORDINGS_STORAGE__blobServiceUri form instead)"
                    .into(),
            ))
        }
    };
    Ok(StorageSettings {
        blob_endpoint,
        queue_endpoint,
        account,
        credential,
        sas_container: None,
        source: setting,
        form: StorageForm::ConnectionString,
    })
}

/// `https://acct.blob.core.windows.net/container?sv=...&sig=...`, or path-style for an emulator:
/// `http://127.0.0.1:10000/devstoreaccount1/container?...`.
fn parse_sas_url(setting: &'static str, value: &str) -> Result<StorageSettings, ConfigError> {
    let bad = |reason: &str| ConfigError::malformed(setting, reason.to_string());
    // url's parse errors never quote the input, so they are safe to show.
    let url = Url::parse(value).map_err(|e| bad(&format!("not a valid URL ({e})")))?;
    let sas = url
        .query()
        .ok_or_else(|| bad("a SAS URL needs its query string (sv=...&sig=...)"))?;
    let sas = check_sas(setting, "the SAS URL", sas)?;
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(bad("a SAS URL has no user name, password or #fragment"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| bad("the SAS URL has no host"))?;
    let mut segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let path_style = is_loopback_or_ip(&url);
    let account = if path_style {
        if segments.is_empty() {
            return Err(bad(
                "a path-style (emulator) SAS URL starts with the account name",
            ));
        }
        Some(segments.remove(0).to_string())
    } else {
        host.split_once(".blob.").map(|(a, _)| a.to_string())
    };
    let container = match segments.as_slice() {
        [] => None,
        [c] if is_dns_style_name(c) => Some(c.to_string()),
        [_] => {
            return Err(bad(
                "the SAS URL's container name is not a valid container name",
            ))
        }
        _ => return Err(bad("the SAS URL names a blob; give a container SAS URL")),
    };
    let mut blob_endpoint = url.clone();
    blob_endpoint.set_query(None);
    blob_endpoint.set_path(account.as_deref().filter(|_| path_style).unwrap_or(""));
    Ok(StorageSettings {
        blob_endpoint,
        queue_endpoint: None,
        account,
        credential: StorageCredential::Sas(Secret::new(sas)),
        sas_container: container,
        source: setting,
        form: StorageForm::SasUrl,
    })
}

fn load_identity(lookup: &impl Lookup) -> Result<Option<StorageSettings>, ConfigError> {
    if lookup.get(SERVICE_URI).is_some() {
        return Err(ConfigError::malformed(
            SERVICE_URI,
            format!(
                "to the Functions host this is the Queue service URL (an alias of \
                 __queueServiceUri), and it cannot describe a connection used for both Blob and \
                 Queue, as this one is. Set {BLOB_SERVICE_URI} and {QUEUE_SERVICE_URI} instead \
                 (or {ACCOUNT_NAME} alone)"
            ),
        ));
    }
    let account = lookup
        .get(ACCOUNT_NAME)
        .map(|a| check_account(ACCOUNT_NAME, &a))
        .transpose()?;
    let blob_uri = lookup.get(BLOB_SERVICE_URI);
    let queue_uri = lookup.get(QUEUE_SERVICE_URI);
    let (blob, queue) = match (&account, blob_uri, queue_uri) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(ConfigError::malformed(
                ACCOUNT_NAME,
                format!(
                    "give either {ACCOUNT_NAME} or the service URLs ({BLOB_SERVICE_URI}, \
                     {QUEUE_SERVICE_URI}), not both: the Functions host takes {ACCOUNT_NAME} first, \
                     so the trigger and the handler could reach different services"
                ),
            ))
        }
        (Some(a), None, None) => {
            let derived = |service: &str| {
                endpoint(
                    ACCOUNT_NAME,
                    "the derived URL",
                    &format!("https://{a}.{service}.core.windows.net"),
                )
            };
            (
                Some((ACCOUNT_NAME, derived("blob")?)),
                Some(derived("queue")?),
            )
        }
        (None, blob, queue) => (
            blob.map(|uri| Ok::<_, ConfigError>((BLOB_SERVICE_URI, identity_endpoint(BLOB_SERVICE_URI, &uri)?)))
                .transpose()?,
            queue
                .map(|uri| identity_endpoint(QUEUE_SERVICE_URI, &uri))
                .transpose()?,
        ),
    };
    let credential = lookup.get(CREDENTIAL);
    let client_id = lookup.get(CLIENT_ID);
    let Some((source, blob_endpoint)) = blob else {
        if queue.is_some() || credential.is_some() || client_id.is_some() {
            return Err(ConfigError::missing(
                BLOB_SERVICE_URI,
                format!("the Blob service URL (or set {ACCOUNT_NAME}, or a {RECORDINGS_STORAGE} connection string)"),
            ));
        }
        return Ok(None);
    };
    if let Some(c) = credential.filter(|c| !c.eq_ignore_ascii_case("managedidentity")) {
        return Err(ConfigError::malformed(
            CREDENTIAL,
            format!("only `managedidentity` is supported, got `{c}`"),
        ));
    }
    if lookup.get(CLIENT_SECRET).is_some() {
        return Err(ConfigError::malformed(
            CLIENT_SECRET,
            "client secrets are not supported; use a managed identity (or a connection string)",
        ));
    }
    if let Some(id) = &client_id {
        if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ConfigError::malformed(
                CLIENT_ID,
                "expected a client id (a GUID)",
            ));
        }
    }
    let account = account.or_else(|| {
        blob_endpoint
            .host_str()
            .and_then(|h| h.split_once(".blob."))
            .map(|(a, _)| a.to_string())
    });
    Ok(Some(StorageSettings {
        blob_endpoint,
        queue_endpoint: queue,
        account,
        credential: StorageCredential::ManagedIdentity { client_id },
        sas_container: None,
        source,
        form: StorageForm::Identity,
    }))
}

/// A service endpoint: http(s), a host, no query, user info or fragment. The value is not
/// echoed, as a misplaced SAS URL would leak its signature.
fn endpoint(setting: &str, what: &str, value: &str) -> Result<Url, ConfigError> {
    let bad = |reason: String| ConfigError::malformed(setting, format!("{what}: {reason}"));
    let url = Url::parse(value).map_err(|e| bad(format!("not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("expected an http(s) URL with a host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not carry a query string or #fragment".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry a user name or password".into()));
    }
    Ok(url)
}

/// A service URL for bearer tokens: those need HTTPS, except on the local machine.
fn identity_endpoint(setting: &str, value: &str) -> Result<Url, ConfigError> {
    let url = endpoint(setting, "the service URL", value)?;
    if url.scheme() != "https" && !is_loopback_or_ip(&url) {
        return Err(ConfigError::malformed(
            setting,
            "bearer tokens are only sent over https",
        ));
    }
    Ok(url)
}

fn is_loopback_or_ip(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(_) => true,
        None => false,
    }
}

fn check_account(setting: &str, name: &str) -> Result<String, ConfigError> {
    if (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(name.to_string())
    } else {
        Err(ConfigError::malformed(
            setting,
            "the account name must be letters and digits",
        ))
    }
}

fn decode_key(setting: &str, key: &str) -> Result<Vec<u8>, ConfigError> {
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .ok()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ConfigError::malformed(setting, "AccountKey is not valid base64"))
}

/// A SAS is a query string with at least `sig`; a leading `?` is dropped.
fn check_sas(setting: &str, what: &str, sas: &str) -> Result<String, ConfigError> {
    let sas = sas.strip_prefix('?').unwrap_or(sas);
    let has_sig = sas.split('&').any(|p| {
        p.split_once('=')
            .is_some_and(|(k, v)| k.eq_ignore_ascii_case("sig") && !v.is_empty())
    });
    let clean = !sas
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'#');
    if has_sig && clean {
        Ok(sas.to_string())
    } else {
        Err(ConfigError::malformed(
            setting,
            format!("{what} is not a shared access signature (a query string with sig=...)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::lookup;

    /// The Blob and Queue endpoints, as strings.
    fn endpoints(s: &StorageSettings) -> (&str, Option<&str>) {
        (
            s.blob_endpoint.as_str(),
            s.queue_endpoint.as_ref().map(Url::as_str),
        )
    }

    fn load_one(value: &str) -> Result<StorageSettings, ConfigError> {
        load(&lookup(&[(RECORDINGS_STORAGE, value)])).map(|s| s.expect("settings present"))
    }

    const KEY: &str = "a2V5LWJ5dGVzLWZvci10ZXN0cw=="; // "key-bytes-for-tests"

    #[test]
    fn nothing_set_means_no_storage() {
        assert_eq!(load(&lookup(&[])).unwrap(), None);
    }

    #[test]
    fn development_storage_expands_to_azurite_defaults() {
        let s = load_one("UseDevelopmentStorage=true").unwrap();
        assert_eq!(
            endpoints(&s),
            (
                "http://127.0.0.1:10000/devstoreaccount1",
                Some("http://127.0.0.1:10001/devstoreaccount1")
            )
        );
        assert_eq!(s.account.as_deref(), Some(DEV_ACCOUNT));
        let expected_key = base64::engine::general_purpose::STANDARD
            .decode(DEV_ACCOUNT_KEY)
            .unwrap();
        assert_eq!(
            s.credential,
            StorageCredential::SharedKey {
                account: DEV_ACCOUNT.into(),
                key: Secret::new(expected_key)
            }
        );
        assert_eq!(
            s,
            load_one(DEV_STORAGE_EXPANDED).unwrap(),
            "same as the explicit form"
        );
        assert_eq!(s, load_one("usedevelopmentstorage=TRUE;").unwrap());
        assert!(load_one("UseDevelopmentStorage=true;AccountName=x").is_err());
        assert!(load_one("UseDevelopmentStorage=false").is_err());
    }

    #[test]
    fn account_key_string_derives_both_endpoints() {
        let s = load_one(&format!(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.chinacloudapi.cn"
        ))
        .unwrap();
        assert_eq!(
            endpoints(&s),
            (
                "https://acct.blob.core.chinacloudapi.cn/",
                Some("https://acct.queue.core.chinacloudapi.cn/")
            )
        );
        assert_eq!(s.source, RECORDINGS_STORAGE);
        let s = load_one(&format!("AccountName=acct;AccountKey={KEY}")).unwrap();
        assert_eq!(
            s.blob_endpoint.as_str(),
            "https://acct.blob.core.windows.net/"
        );
    }

    #[test]
    fn keys_are_case_insensitive_and_trailing_semicolons_ignored() {
        let a = load_one(&format!("accountname=acct;ACCOUNTKEY={KEY};;")).unwrap();
        let b = load_one(&format!("AccountName=acct;AccountKey={KEY}")).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn explicit_endpoints_are_used_as_given() {
        let s = load_one(&format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};\
             BlobEndpoint=http://127.0.0.1:41000/devstoreaccount1;"
        ))
        .unwrap();
        assert_eq!(
            s.blob_endpoint.as_str(),
            "http://127.0.0.1:41000/devstoreaccount1"
        );
        assert_eq!(
            s.queue_endpoint, None,
            "no guess when only BlobEndpoint is given"
        );
        assert!(s.require_queue_endpoint().is_err());
    }

    #[test]
    fn sas_connection_string_needs_no_account() {
        let s = load_one("BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature=?sv=2021-08-06&sig=abc%2B").unwrap();
        assert_eq!(
            s.credential,
            StorageCredential::Sas(Secret::new("sv=2021-08-06&sig=abc%2B".into()))
        );
        assert_eq!(s.account, None);
    }

    #[test]
    fn bad_connection_strings_name_the_setting_and_hide_secrets() {
        for (value, needle) in [
            (
                "AccountName=acct;AccountKey=not*base64!",
                "AccountKey is not valid base64",
            ),
            (
                &format!("AccountKey={KEY}") as &str,
                "AccountName is required",
            ),
            (
                "AccountName=acct",
                "needs AccountKey or SharedAccessSignature",
            ),
            (
                &format!("AccountName=acct;AccountKey={KEY};SharedAccessSignature=sig=x"),
                "not both",
            ),
            (
                "AccountName=acct;AccountKey=secretvalue;Colour=blue",
                "unknown key `Colour`",
            ),
            (
                &format!("AccountName=a;AccountName=b;AccountKey={KEY}"),
                "appears twice",
            ),
            (
                "AccountName=acct;SharedAccessSignature=sv=1&se=2",
                "not a shared access signature",
            ),
            (
                "BlobEndpoint=https://x.example?sig=topsecret;SharedAccessSignature=sig=y",
                "must not carry a query",
            ),
            ("just some text", "Key=value"),
        ] {
            let err = load_one(value).unwrap_err().to_string();
            assert!(err.contains(RECORDINGS_STORAGE), "{err}");
            assert!(err.contains(needle), "{value}: {err}");
            for secret in ["not*base64!", KEY, "secretvalue", "topsecret"] {
                assert!(!err.contains(secret), "{err} leaks {secret}");
            }
        }
    }

    #[test]
    fn container_sas_url_gives_endpoint_container_and_token() {
        let s = load_one(
            "https://acct.blob.core.windows.net/recordings?sv=2021-08-06&sr=c&sp=racwl&sig=c2ln%3D",
        )
        .unwrap();
        assert_eq!(
            s.blob_endpoint.as_str(),
            "https://acct.blob.core.windows.net/"
        );
        assert_eq!(s.sas_container.as_deref(), Some("recordings"));
        assert_eq!(s.account.as_deref(), Some("acct"));
        assert_eq!(s.queue_endpoint, None);
        assert_eq!(
            s.credential,
            StorageCredential::Sas(Secret::new(
                "sv=2021-08-06&sr=c&sp=racwl&sig=c2ln%3D".into()
            ))
        );
        assert!(s.check_container("recordings").is_ok());
        let err = s.check_container("other").unwrap_err().to_string();
        assert!(
            err.contains(RECORDINGS_CONTAINER) && !err.contains("c2ln"),
            "{err}"
        );
        assert!(format!("{s:?}").contains("***") && !format!("{s:?}").contains("c2ln"));
    }

    #[test]
    fn path_style_sas_url_keeps_the_account_in_the_endpoint() {
        let s = load_one("http://127.0.0.1:10000/devstoreaccount1/recordings?sv=2021-08-06&sig=x")
            .unwrap();
        assert_eq!(
            s.blob_endpoint.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(s.account.as_deref(), Some(DEV_ACCOUNT));
        assert_eq!(s.sas_container.as_deref(), Some("recordings"));
    }

    #[test]
    fn bad_sas_urls_are_refused_without_echoing_the_signature() {
        for value in [
            "https://acct.blob.core.windows.net/recordings",
            "https://acct.blob.core.windows.net/recordings?sv=1&sp=r",
            "https://acct.blob.core.windows.net/recordings/blob.mp3?sv=1&sig=supersecret",
            "https://acct.blob.core.windows.net/Bad_Container?sv=1&sig=supersecret",
        ] {
            let err = load_one(value).unwrap_err().to_string();
            assert!(err.contains(RECORDINGS_STORAGE), "{err}");
            assert!(!err.contains("supersecret"), "{err}");
        }
    }

    #[test]
    fn exact_setting_beats_the_identity_prefix() {
        let s = load(&lookup(&[
            (
                RECORDINGS_STORAGE,
                &format!("AccountName=acct;AccountKey={KEY}"),
            ),
            (BLOB_SERVICE_URI, "https://other.blob.core.windows.net"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.account.as_deref(), Some("acct"));
        let s = load(&lookup(&[(
            AZURE_WEBJOBS_RECORDINGS_STORAGE,
            "UseDevelopmentStorage=true",
        )]))
        .unwrap()
        .unwrap();
        assert_eq!(s.source, AZURE_WEBJOBS_RECORDINGS_STORAGE);
    }

    #[test]
    fn identity_settings_with_service_uris() {
        let s = load(&lookup(&[
            (BLOB_SERVICE_URI, "https://acct.blob.core.windows.net"),
            (QUEUE_SERVICE_URI, "https://acct.queue.core.windows.net"),
            (CREDENTIAL, "ManagedIdentity"),
            (CLIENT_ID, "7c9a3b8e-0000-4000-8000-000000000001"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            endpoints(&s),
            (
                "https://acct.blob.core.windows.net/",
                Some("https://acct.queue.core.windows.net/")
            )
        );
        assert_eq!(s.account.as_deref(), Some("acct"));
        assert_eq!(
            s.credential,
            StorageCredential::ManagedIdentity {
                client_id: Some("7c9a3b8e-0000-4000-8000-000000000001".into())
            }
        );
    }

    #[test]
    fn account_name_alone_derives_both_endpoints() {
        let s = load(&lookup(&[(ACCOUNT_NAME, "acct")])).unwrap().unwrap();
        assert_eq!(
            endpoints(&s),
            (
                "https://acct.blob.core.windows.net/",
                Some("https://acct.queue.core.windows.net/")
            )
        );
        assert_eq!(
            s.credential,
            StorageCredential::ManagedIdentity { client_id: None }
        );
        assert_eq!(s.form, StorageForm::Identity);
    }

    #[test]
    fn service_uri_is_refused_as_the_hosts_queue_alias() {
        // To the host's Storage extension `__serviceUri` is the Queue service; we used to take it
        // as the Blob service, so the handler and the trigger would reach different services.
        for pairs in [
            vec![(SERVICE_URI, "https://acct.blob.core.windows.net")],
            vec![
                (SERVICE_URI, "https://acct.queue.core.windows.net"),
                (BLOB_SERVICE_URI, "https://acct.blob.core.windows.net"),
            ],
        ] {
            let err = load(&lookup(&pairs)).unwrap_err().to_string();
            assert!(err.contains(SERVICE_URI), "{err}");
            assert!(
                err.contains(BLOB_SERVICE_URI) && err.contains(QUEUE_SERVICE_URI),
                "names both settings to use instead: {err}"
            );
        }
    }

    #[test]
    fn account_name_with_service_uris_is_refused() {
        // The host takes `__accountName` before any `__*ServiceUri`.
        for other in [BLOB_SERVICE_URI, QUEUE_SERVICE_URI] {
            let err = load(&lookup(&[
                (ACCOUNT_NAME, "acct"),
                (other, "https://other.blob.core.windows.net"),
            ]))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(ACCOUNT_NAME) && err.contains("not both"),
                "{err}"
            );
        }
    }

    #[test]
    fn settings_the_queue_trigger_cannot_bind_name_the_alternatives() {
        let blob_only = load(&lookup(&[(
            BLOB_SERVICE_URI,
            "https://acct.blob.core.windows.net",
        )]))
        .unwrap()
        .unwrap();
        let err = blob_only.require_queue_endpoint().unwrap_err().to_string();
        assert!(err.contains(QUEUE_SERVICE_URI), "{err}");

        let sas_url = load_one(
            "https://acct.blob.core.windows.net/recordings?sv=2021-08-06&sr=c&sp=racwl&sig=c2ln%3D",
        )
        .unwrap();
        assert_eq!(sas_url.form, StorageForm::SasUrl);
        let err = sas_url.require_queue_endpoint().unwrap_err().to_string();
        assert!(
            err.contains("SAS URL") && err.contains("queue trigger"),
            "{err}"
        );
        assert!(
            err.contains("AccountKey") && err.contains(BLOB_SERVICE_URI),
            "names the supported forms: {err}"
        );
        assert!(!err.contains("c2ln"), "{err}");

        let blob_endpoint_only = load_one(&format!(
            "AccountName=acct;AccountKey={KEY};BlobEndpoint=https://files.example.com"
        ))
        .unwrap();
        let err = blob_endpoint_only
            .require_queue_endpoint()
            .unwrap_err()
            .to_string();
        assert!(err.contains("without a Queue endpoint"), "{err}");
        assert!(!err.contains(KEY), "{err}");

        let full = load_one(&format!("AccountName=acct;AccountKey={KEY}")).unwrap();
        assert!(full.require_queue_endpoint().is_ok());
    }

    #[test]
    fn bad_identity_settings_are_named() {
        for (pairs, name) in [
            (vec![(CREDENTIAL, "managedidentity")], BLOB_SERVICE_URI),
            (
                vec![(QUEUE_SERVICE_URI, "https://acct.queue.core.windows.net")],
                BLOB_SERVICE_URI,
            ),
            (
                vec![(BLOB_SERVICE_URI, "http://acct.blob.core.windows.net")],
                BLOB_SERVICE_URI,
            ),
            (vec![(BLOB_SERVICE_URI, "not a url")], BLOB_SERVICE_URI),
            (
                vec![
                    (BLOB_SERVICE_URI, "https://acct.blob.core.windows.net"),
                    (CREDENTIAL, "clientsecret"),
                ],
                CREDENTIAL,
            ),
            (
                vec![(ACCOUNT_NAME, "acct"), (CLIENT_SECRET, "s3cret")],
                CLIENT_SECRET,
            ),
            (vec![(ACCOUNT_NAME, "acct"), (CLIENT_ID, "a b")], CLIENT_ID),
            (vec![(ACCOUNT_NAME, "my_account")], ACCOUNT_NAME),
        ] {
            let err = load(&lookup(&pairs)).unwrap_err().to_string();
            assert!(err.contains(name), "{pairs:?}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}
