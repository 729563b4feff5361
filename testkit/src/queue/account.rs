//! Storage connection strings, as the Functions host reads the setting a queue trigger's
//! `connection` names. Pure.

use std::fmt;

use base64::Engine as _;
use reqwest::Url;

/// Azurite's only built-in account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known key for [`AZURITE_ACCOUNT`] (public, printed in Azurite's README).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Azurite's default Queue endpoint, what `UseDevelopmentStorage=true` means for queues.
pub const AZURITE_QUEUE_ENDPOINT: &str = "http://127.0.0.1:10001/devstoreaccount1";

/// Why a connection string cannot be used to reach a Queue service with SharedKey.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    /// A `key=value` pair is required but absent.
    #[error("the connection string has no {0}")]
    Missing(&'static str),
    /// `AccountKey` is not base64.
    #[error("AccountKey is not valid base64")]
    BadKey,
    /// The endpoint is not a URL.
    #[error("{name} is not a URL: {value}")]
    BadEndpoint {
        /// `QueueEndpoint`, or the endpoint built from the account name and suffix.
        name: &'static str,
        /// The offending value.
        value: String,
    },
    /// SAS-only connection strings are valid for the host but not for this SharedKey client.
    #[error("SharedAccessSignature connection strings are not supported by the emulator's queue client; use AccountName/AccountKey")]
    SasNotSupported,
}

/// A storage account reached with SharedKey: name, key and Queue endpoint. `Debug` hides the
/// key.
#[derive(Clone)]
pub struct StorageAccount {
    name: String,
    key: Vec<u8>,
    queue_endpoint: Url,
}

impl StorageAccount {
    /// An account from its parts. `queue_endpoint` is the service URL, e.g.
    /// `http://127.0.0.1:10001/devstoreaccount1` for Azurite (path-style) or
    /// `https://acct.queue.core.windows.net`.
    pub fn new(
        name: &str,
        key_base64: &str,
        queue_endpoint: &str,
    ) -> Result<Self, ConnectionStringError> {
        let key = base64::engine::general_purpose::STANDARD
            .decode(key_base64.trim())
            .map_err(|_| ConnectionStringError::BadKey)?;
        let queue_endpoint = Url::parse(queue_endpoint.trim_end_matches('/')).map_err(|_| {
            ConnectionStringError::BadEndpoint {
                name: "QueueEndpoint",
                value: queue_endpoint.to_string(),
            }
        })?;
        Ok(StorageAccount {
            name: name.to_string(),
            key,
            queue_endpoint,
        })
    }

    /// Azurite's account on a Queue endpoint (e.g. a launcher's free port).
    pub fn azurite(queue_endpoint: &str) -> Result<Self, ConnectionStringError> {
        Self::new(AZURITE_ACCOUNT, AZURITE_KEY, queue_endpoint)
    }

    /// Parses a connection string: the explicit form
    /// `DefaultEndpointsProtocol=http;AccountName=...;AccountKey=...;QueueEndpoint=...;` (without
    /// `QueueEndpoint`, the endpoint is built from the protocol, account and `EndpointSuffix`),
    /// or `UseDevelopmentStorage=true`, which means Azurite on its default ports. Keys are
    /// matched without regard to case, as the Storage SDKs do.
    pub fn from_connection_string(text: &str) -> Result<Self, ConnectionStringError> {
        let pairs: Vec<(String, String)> = text
            .split(';')
            .filter_map(|part| {
                let (k, v) = part.split_once('=')?;
                Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
            })
            .collect();
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Self::azurite(AZURITE_QUEUE_ENDPOINT);
        }
        let name = get("accountname").ok_or(ConnectionStringError::Missing("AccountName"))?;
        let Some(key) = get("accountkey") else {
            if get("sharedaccesssignature").is_some() {
                return Err(ConnectionStringError::SasNotSupported);
            }
            return Err(ConnectionStringError::Missing("AccountKey"));
        };
        let endpoint = match get("queueendpoint") {
            Some(e) => e.to_string(),
            None => format!(
                "{}://{name}.queue.{}",
                get("defaultendpointsprotocol").unwrap_or("https"),
                get("endpointsuffix").unwrap_or("core.windows.net")
            ),
        };
        Self::new(name, key, &endpoint)
    }

    /// The account name (what SharedKey signs with).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The decoded account key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    /// The Queue service URL, without a trailing slash.
    pub fn queue_endpoint(&self) -> &Url {
        &self.queue_endpoint
    }
}

impl fmt::Debug for StorageAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageAccount")
            .field("name", &self.name)
            .field("key", &"***")
            .field("queue_endpoint", &self.queue_endpoint.as_str())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_storage_means_azurite_on_its_default_queue_port() {
        let a = StorageAccount::from_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(a.name(), AZURITE_ACCOUNT);
        assert_eq!(a.queue_endpoint().as_str(), AZURITE_QUEUE_ENDPOINT);
    }

    #[test]
    fn explicit_connection_string_uses_its_queue_endpoint() {
        let text = format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};\
             BlobEndpoint=http://127.0.0.1:41000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:41001/devstoreaccount1/;"
        );
        let a = StorageAccount::from_connection_string(&text).unwrap();
        assert_eq!(
            a.queue_endpoint().as_str(),
            "http://127.0.0.1:41001/devstoreaccount1"
        );
        assert_eq!(a.key().len(), 64);
        assert!(!format!("{a:?}").contains(AZURITE_KEY));
    }

    #[test]
    fn endpoint_is_built_from_account_and_suffix_when_absent() {
        let a = StorageAccount::from_connection_string(&format!(
            "accountname=acct;accountkey={AZURITE_KEY};EndpointSuffix=core.chinacloudapi.cn"
        ))
        .unwrap();
        assert_eq!(
            a.queue_endpoint().as_str(),
            "https://acct.queue.core.chinacloudapi.cn/"
        );
    }

    #[test]
    fn unusable_connection_strings_say_why() {
        assert_eq!(
            StorageAccount::from_connection_string("AccountKey=abc").unwrap_err(),
            ConnectionStringError::Missing("AccountName")
        );
        assert_eq!(
            StorageAccount::from_connection_string("AccountName=a;SharedAccessSignature=sv=1")
                .unwrap_err(),
            ConnectionStringError::SasNotSupported
        );
        assert_eq!(
            StorageAccount::from_connection_string("AccountName=a;AccountKey=!!").unwrap_err(),
            ConnectionStringError::BadKey
        );
    }
}
