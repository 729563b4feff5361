//! ACS credentials: `ACS_CONNECTION_STRING`, or an endpoint plus managed identity.
//!
//! Two ways in, mirroring how Azure Functions names identity-based connections:
//! - `ACS_CONNECTION_STRING=endpoint=https://<name>.communication.azure.com/;accesskey=<base64>`
//!   (the string the portal shows under *Keys*); requests are HMAC-signed with the key.
//! - `ACS_ENDPOINT=https://<name>.communication.azure.com/` with `ACS_CREDENTIAL=managedidentity`
//!   (and `ACS_CLIENT_ID` for a user-assigned identity), for resources whose access keys are
//!   disabled; requests carry an Entra bearer token for `https://communication.azure.com/`.
//!
//! Errors name the setting and never repeat the key.

use base64::Engine as _;
use url::{Host, Url};

use super::{ConfigError, Lookup, Secret};

/// The connection string from the portal's *Keys* blade.
pub const ACS_CONNECTION_STRING: &str = "ACS_CONNECTION_STRING";
/// The resource endpoint, for managed-identity authentication.
pub(crate) const ACS_ENDPOINT: &str = "ACS_ENDPOINT";
/// `managedidentity`: authenticate with the app's managed identity instead of a key.
pub(crate) const ACS_CREDENTIAL: &str = "ACS_CREDENTIAL";
/// Client id of a user-assigned managed identity (omit for the system-assigned one).
pub(crate) const ACS_CLIENT_ID: &str = "ACS_CLIENT_ID";

/// How we reach and authenticate to Azure Communication Services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcsSettings {
    /// The resource endpoint, normalised to `scheme://host[:port]/`. Its authority is the host
    /// every request is signed for, including downloads sent to the recording storage hosts.
    pub endpoint: Url,
    /// The credential.
    pub auth: AcsAuth,
}

/// The credential requests are authorised with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcsAuth {
    /// The resource's access key (base64-decoded): requests are HMAC-SHA256 signed.
    AccessKey(Secret<Vec<u8>>),
    /// An Entra bearer token from the managed-identity endpoint.
    ManagedIdentity {
        /// A user-assigned identity's client id; `None` for the system-assigned identity.
        client_id: Option<String>,
    },
}

/// Reads the ACS settings, when present: `None` when neither `ACS_CONNECTION_STRING` nor
/// `ACS_ENDPOINT` is set.
pub fn load(lookup: &impl Lookup) -> Result<Option<AcsSettings>, ConfigError> {
    let connection_string = lookup.get(ACS_CONNECTION_STRING);
    let endpoint = lookup.get(ACS_ENDPOINT);
    let credential = lookup.get(ACS_CREDENTIAL);
    let client_id = lookup.get(ACS_CLIENT_ID);

    let managed_identity = match credential.as_deref() {
        None => false,
        Some(c) if c.eq_ignore_ascii_case("managedidentity") => true,
        Some(other) => {
            return Err(ConfigError::malformed(
                ACS_CREDENTIAL,
                format!("expected `managedidentity`, got `{other}`"),
            ))
        }
    };

    match (connection_string, endpoint) {
        (None, None) if managed_identity || client_id.is_some() => Err(ConfigError::missing(
            ACS_ENDPOINT,
            "the ACS resource endpoint, e.g. https://<name>.communication.azure.com/",
        )),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ConfigError::malformed(
            ACS_CONNECTION_STRING,
            format!("set either {ACS_CONNECTION_STRING} or {ACS_ENDPOINT} (with {ACS_CREDENTIAL}=managedidentity), not both"),
        )),
        (Some(_), None) if managed_identity => Err(ConfigError::malformed(
            ACS_CREDENTIAL,
            format!("`managedidentity` needs {ACS_ENDPOINT} instead of {ACS_CONNECTION_STRING}"),
        )),
        (Some(cs), None) => {
            let (endpoint, key) = parse_connection_string(&cs)?;
            Ok(Some(AcsSettings {
                endpoint,
                auth: AcsAuth::AccessKey(key),
            }))
        }
        (None, Some(_)) if !managed_identity => Err(ConfigError::missing(
            ACS_CREDENTIAL,
            format!("set it to `managedidentity` to use {ACS_ENDPOINT} with the app's identity, or set {ACS_CONNECTION_STRING} instead"),
        )),
        (None, Some(ep)) => Ok(Some(AcsSettings {
            endpoint: parse_endpoint(ACS_ENDPOINT, &ep)?,
            auth: AcsAuth::ManagedIdentity { client_id },
        })),
    }
}

/// Parses `endpoint=...;accesskey=...`: keys in any case and order, pairs split on their first
/// `=` (the key's base64 padding is `=`), empty pairs (a trailing `;`) ignored.
pub fn parse_connection_string(value: &str) -> Result<(Url, Secret<Vec<u8>>), ConfigError> {
    const NAME: &str = ACS_CONNECTION_STRING;
    let mut endpoint = None;
    let mut key = None;
    for pair in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, v)) = pair.split_once('=') else {
            // Never echo the pair: it may be a pasted key.
            return Err(ConfigError::malformed(
                NAME,
                "expected `endpoint=...;accesskey=...` (a part has no `=`)",
            ));
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "endpoint" => endpoint = Some(v.trim().to_string()),
            "accesskey" => key = Some(v.trim().to_string()),
            other => {
                return Err(ConfigError::malformed(
                    NAME,
                    format!("unknown part `{other}` (expected `endpoint` and `accesskey`)"),
                ))
            }
        }
    }
    let endpoint = endpoint
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ConfigError::malformed(NAME, "the `endpoint=` part is missing"))?;
    let key = key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ConfigError::malformed(NAME, "the `accesskey=` part is missing"))?;
    let endpoint = parse_endpoint(NAME, &endpoint)?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .map_err(|_| ConfigError::malformed(NAME, "the `accesskey=` part is not valid base64"))?;
    if key.is_empty() {
        return Err(ConfigError::malformed(
            NAME,
            "the `accesskey=` part is empty",
        ));
    }
    Ok((endpoint, Secret::new(key)))
}

/// An ACS endpoint: `https://host[:port]` with at most a `/` path. Plain `http` only on a
/// loopback host (a local emulator); requests to it are still refused unless the host is also
/// listed in `ACS_EXTRA_ALLOWED_HOSTS`.
fn parse_endpoint(name: &str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| {
        ConfigError::malformed(name, format!("endpoint `{value}` is not a URL ({e})"))
    })?;
    let host = url
        .host()
        .ok_or_else(|| ConfigError::malformed(name, format!("endpoint `{value}` has no host")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        other => {
            return Err(ConfigError::malformed(
                name,
                format!(
                "endpoint must use https (plain http only on a loopback emulator), got `{other}`"
            ),
            ))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::malformed(
            name,
            "endpoint must not contain a user name or password",
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::malformed(
            name,
            format!("endpoint must be just `scheme://host/`, got `{value}`"),
        ));
    }
    Ok(url)
}

/// `localhost`, `127.0.0.0/8` or `::1`: where plain `http` to a local emulator is tolerable.
pub(crate) fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Lookup {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    const KEY_B64: &str = "c2VjcmV0LWtleS1ieXRlcw==";

    #[test]
    fn nothing_set_means_no_acs() {
        assert_eq!(load(&lookup(&[])).unwrap(), None);
    }

    #[test]
    fn connection_string_parses_in_any_case_with_trailing_separators() {
        for cs in [
            format!("endpoint=https://contoso.communication.azure.com/;accesskey={KEY_B64}"),
            format!("Endpoint=https://contoso.communication.azure.com;AccessKey={KEY_B64};"),
            format!(" ACCESSKEY={KEY_B64} ; ENDPOINT=https://Contoso.Communication.Azure.com/ ;"),
        ] {
            let s = load(&lookup(&[(ACS_CONNECTION_STRING, &cs)]))
                .unwrap()
                .unwrap();
            assert_eq!(
                s.endpoint.as_str(),
                "https://contoso.communication.azure.com/"
            );
            assert_eq!(
                s.auth,
                AcsAuth::AccessKey(Secret::new(b"secret-key-bytes".to_vec()))
            );
        }
    }

    #[test]
    fn loopback_http_endpoint_is_accepted_for_emulators() {
        let cs = format!("endpoint=http://127.0.0.1:8099/;accesskey={KEY_B64}");
        let s = load(&lookup(&[(ACS_CONNECTION_STRING, &cs)]))
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint.as_str(), "http://127.0.0.1:8099/");
    }

    #[test]
    fn bad_connection_strings_name_the_setting_and_never_echo_the_key() {
        let secret = "SuperSecretKeyMaterial0123456789";
        for (cs, expect) in [
            (
                "endpoint=https://x.communication.azure.com/".to_string(),
                "accesskey",
            ),
            (format!("accesskey={KEY_B64}"), "endpoint"),
            (
                format!("endpoint=https://x.communication.azure.com/;accesskey=!!{secret}!!"),
                "base64",
            ),
            (
                format!("endpoint=http://x.communication.azure.com/;accesskey={KEY_B64}"),
                "https",
            ),
            (
                format!("endpoint=https://x.communication.azure.com/path;accesskey={KEY_B64}"),
                "scheme://host/",
            ),
            (
                format!("endpoint=not a url;accesskey={KEY_B64}"),
                "not a URL",
            ),
            (
                format!("endpoint=https://x.communication.azure.com/;{secret}"),
                "no `=`",
            ),
            (
                format!("endpoint=https://u:p@x.communication.azure.com/;accesskey={KEY_B64}"),
                "user name",
            ),
            (
                format!("endpoint=https://x/;accesskey={KEY_B64};sharedsecret={secret}"),
                "unknown part",
            ),
        ] {
            let err = load(&lookup(&[(ACS_CONNECTION_STRING, &cs)])).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(ACS_CONNECTION_STRING), "{text}");
            assert!(text.contains(expect), "{cs}: {text}");
            assert!(!text.contains(secret) && !text.contains(KEY_B64), "{text}");
        }
    }

    #[test]
    fn managed_identity_needs_an_endpoint_and_takes_a_client_id() {
        let s = load(&lookup(&[
            (ACS_ENDPOINT, "https://contoso.communication.azure.com"),
            (ACS_CREDENTIAL, "ManagedIdentity"),
            (ACS_CLIENT_ID, "1111-2222"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            s.endpoint.as_str(),
            "https://contoso.communication.azure.com/"
        );
        assert_eq!(
            s.auth,
            AcsAuth::ManagedIdentity {
                client_id: Some("1111-2222".into())
            }
        );

        let err = load(&lookup(&[(ACS_CREDENTIAL, "managedidentity")])).unwrap_err();
        assert!(err.to_string().contains(ACS_ENDPOINT), "{err}");
    }

    #[test]
    fn ambiguous_or_incomplete_combinations_are_named() {
        let cs = format!("endpoint=https://x.communication.azure.com/;accesskey={KEY_B64}");
        for (pairs, name) in [
            (
                vec![(ACS_ENDPOINT, "https://x.communication.azure.com/")],
                ACS_CREDENTIAL,
            ),
            (
                vec![
                    (ACS_ENDPOINT, "https://x.communication.azure.com/"),
                    (ACS_CREDENTIAL, "key"),
                ],
                ACS_CREDENTIAL,
            ),
            (
                vec![
                    (ACS_CONNECTION_STRING, cs.as_str()),
                    (ACS_ENDPOINT, "https://x.communication.azure.com/"),
                ],
                ACS_CONNECTION_STRING,
            ),
            (
                vec![
                    (ACS_CONNECTION_STRING, cs.as_str()),
                    (ACS_CREDENTIAL, "managedidentity"),
                ],
                ACS_CREDENTIAL,
            ),
        ] {
            let err = load(&lookup(&pairs)).unwrap_err();
            assert!(err.to_string().contains(name), "{pairs:?}: {err}");
            assert!(!err.to_string().contains(KEY_B64));
        }
    }

    #[test]
    fn debug_output_hides_the_key() {
        let cs = format!("endpoint=https://x.communication.azure.com/;accesskey={KEY_B64}");
        let s = load(&lookup(&[(ACS_CONNECTION_STRING, &cs)]))
            .unwrap()
            .unwrap();
        let dump = format!("{s:?}");
        assert!(dump.contains("***"), "{dump}");
        assert!(!dump.contains("115"), "key bytes leaked: {dump}"); // b's' == 115
    }
}
