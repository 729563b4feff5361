//! Entra ID bearer tokens from the App Service / Functions managed-identity endpoint
//! (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`), cached and refreshed before expiry.
//!
//! Protocol (`docs/protocols.md` §6): `GET $IDENTITY_ENDPOINT?resource=<r>&api-version=2019-08-01`
//! `[&client_id=<id>]` with header `X-IDENTITY-HEADER: $IDENTITY_HEADER`; the answer holds
//! `access_token` and `expires_on`, epoch seconds as a *string*. ACS, Blob and Queue all use the
//! same [`TokenSource`], one instance per resource.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::Deserialize;
use url::Url;

use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, Lookup, Secret};
use crate::disposition::Disposition;

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
#[error("managed identity token for {resource}: {reason}")]
pub struct IdentityError {
    resource: String,
    reason: String,
    disposition: Disposition,
    /// The HTTP client's or the JSON parser's error, when one caused this.
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl IdentityError {
    /// A failure to get a token for `resource`; `disposition` says whether asking again later
    /// may help (the endpoint's hiccups) or not (a malformed answer, a missing identity).
    pub(crate) fn new(
        resource: impl Into<String>,
        reason: impl Into<String>,
        disposition: Disposition,
    ) -> Self {
        IdentityError {
            resource: resource.into(),
            reason: reason.into(),
            disposition,
            source: None,
        }
    }

    /// The same error, caused by `source`.
    fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What the caller must do: retry later, or give up on this credential.
    pub fn disposition(&self) -> Disposition {
        self.disposition
    }

    /// The resource (audience) asked for.
    pub fn resource(&self) -> &str {
        &self.resource
    }
}

/// Hands out bearer tokens for one resource.
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A token valid for at least a few minutes more.
    fn token(&self) -> BoxFuture<'_, Result<Secret<String>, IdentityError>>;
}

/// The local token endpoint the platform gives the app.
pub(crate) const IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
/// The secret the token endpoint wants back in `X-IDENTITY-HEADER` (rotated by the platform).
pub(crate) const IDENTITY_HEADER: &str = "IDENTITY_HEADER";
/// The App Service managed-identity protocol version.
pub(crate) const API_VERSION: &str = "2019-08-01";
/// Resource (audience) for ACS data-plane calls. The SDKs' scope is
/// `https://communication.azure.com//.default`; the token endpoint takes the resource.
pub const ACS_RESOURCE: &str = "https://communication.azure.com/";
/// A cached token is replaced this long before it expires, so a request signed with it never
/// reaches the service already expired.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// The token endpoint is local; a reply slower than this means it is in trouble.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Tokens from the App Service / Functions managed-identity endpoint, cached until
/// `REFRESH_MARGIN` (five minutes) before they expire.
pub struct ManagedIdentityTokens {
    http: reqwest::Client,
    endpoint: Url,
    header: Secret<String>,
    resource: String,
    client_id: Option<String>,
    clock: Arc<dyn Clock>,
    cache: tokio::sync::Mutex<Option<CachedToken>>,
}

struct CachedToken {
    token: Secret<String>,
    expires_on: SystemTime,
}

impl std::fmt::Debug for ManagedIdentityTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedIdentityTokens")
            .field("endpoint", &self.endpoint.as_str())
            .field("resource", &self.resource)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

impl ManagedIdentityTokens {
    /// Tokens for `resource` from `endpoint`, for the system-assigned identity or, with
    /// `client_id`, a user-assigned one.
    pub fn new(
        http: reqwest::Client,
        endpoint: Url,
        header: Secret<String>,
        resource: impl Into<String>,
        client_id: Option<String>,
    ) -> Self {
        ManagedIdentityTokens {
            http,
            endpoint,
            header,
            resource: resource.into(),
            client_id,
            clock: Arc::new(SystemClock),
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Reads `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`, which the platform sets when the app has
    /// a managed identity. An error names the missing setting.
    pub fn from_lookup(
        lookup: &impl Lookup,
        http: reqwest::Client,
        resource: impl Into<String>,
        client_id: Option<String>,
    ) -> Result<Self, ConfigError> {
        let hint = "set by App Service / Functions when the app has a managed identity: turn one on, and give it access to the resource";
        let endpoint = lookup
            .get(IDENTITY_ENDPOINT)
            .ok_or_else(|| ConfigError::missing(IDENTITY_ENDPOINT, hint))?;
        let endpoint = Url::parse(&endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                ConfigError::malformed(
                    IDENTITY_ENDPOINT,
                    format!("`{endpoint}` is not an http(s) URL"),
                )
            })?;
        let header = lookup
            .get(IDENTITY_HEADER)
            .ok_or_else(|| ConfigError::missing(IDENTITY_HEADER, hint))?;
        Ok(Self::new(
            http,
            endpoint,
            Secret::new(header),
            resource,
            client_id,
        ))
    }

    /// Uses `clock` to judge expiry (tests move it forward).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The resource tokens are asked for.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    async fn cached_or_fetch(&self) -> Result<Secret<String>, IdentityError> {
        // Holding the lock while fetching makes concurrent callers share one request.
        let mut cache = self.cache.lock().await;
        let now = self.clock.now();
        if let Some(cached) = cache.as_ref() {
            if now + REFRESH_MARGIN < cached.expires_on {
                return Ok(cached.token.clone());
            }
        }
        match self.fetch(now).await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                *cache = Some(fresh);
                Ok(token)
            }
            // A failed refresh inside the margin still leaves a usable token.
            Err(e) => match cache.as_ref() {
                Some(cached) if now < cached.expires_on => {
                    tracing::warn!(resource = %self.resource, error = %e, "token refresh failed; using the cached token until it expires");
                    Ok(cached.token.clone())
                }
                _ => Err(e),
            },
        }
    }

    async fn fetch(&self, now: SystemTime) -> Result<CachedToken, IdentityError> {
        let fail = |reason: String, disposition| {
            IdentityError::new(self.resource.clone(), reason, disposition)
        };
        let mut url = self.endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("resource", &self.resource);
            q.append_pair("api-version", API_VERSION);
            if let Some(id) = &self.client_id {
                q.append_pair("client_id", id);
            }
        }
        let request = self
            .http
            .get(url)
            .header("X-IDENTITY-HEADER", self.header.expose().as_str())
            .header("Metadata", "true")
            .send();
        let response = match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Err(_) => {
                return Err(fail(
                    "the identity endpoint did not answer in time".into(),
                    Disposition::Retry,
                ))
            }
            Ok(Err(e)) => {
                let e = e.without_url();
                return Err(fail(format!("request failed: {e}"), Disposition::Retry).caused_by(e));
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, response.bytes())
            .await
            .map_err(|_| {
                fail(
                    "the identity endpoint stalled mid-answer".into(),
                    Disposition::Retry,
                )
            })?
            .map_err(|e| {
                let e = e.without_url();
                fail(
                    format!("reading the answer failed: {e}"),
                    Disposition::Retry,
                )
                .caused_by(e)
            })?;
        if !status.is_success() {
            let snippet: String = String::from_utf8_lossy(&body[..body.len().min(300)])
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            return Err(fail(
                format!("the identity endpoint answered {status}: {snippet}"),
                if crate::retry::is_retryable_status(status.as_u16()) {
                    Disposition::Retry
                } else {
                    Disposition::Drop
                },
            ));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            fail(
                format!("the identity endpoint's answer is not a token ({e})"),
                Disposition::Drop,
            )
            .caused_by(e)
        })?;
        let expires_on = expiry(&parsed, now).ok_or_else(|| {
            fail(
                "the identity endpoint's answer has no usable `expires_on`".into(),
                Disposition::Drop,
            )
        })?;
        if parsed.access_token.is_empty() {
            return Err(fail(
                "the identity endpoint returned an empty token".into(),
                Disposition::Drop,
            ));
        }
        Ok(CachedToken {
            token: Secret::new(parsed.access_token),
            expires_on,
        })
    }
}

impl TokenSource for ManagedIdentityTokens {
    fn token(&self) -> BoxFuture<'_, Result<Secret<String>, IdentityError>> {
        Box::pin(self.cached_or_fetch())
    }
}

/// `expires_on` (epoch seconds, a string in this protocol but a number elsewhere), else
/// `expires_in` seconds from now.
fn expiry(response: &TokenResponse, now: SystemTime) -> Option<SystemTime> {
    fn seconds(v: &serde_json::Value) -> Option<u64> {
        match v {
            serde_json::Value::String(s) => s.trim().parse().ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        }
    }
    if let Some(at) = response.expires_on.as_ref().and_then(seconds) {
        return Some(UNIX_EPOCH + Duration::from_secs(at));
    }
    response
        .expires_in
        .as_ref()
        .and_then(seconds)
        .map(|s| now + Duration::from_secs(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use warp::Filter;

    #[derive(Debug)]
    struct TestClock(Mutex<SystemTime>);
    impl Clock for TestClock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
    }

    const NOW: u64 = 1_700_000_000;

    /// A token endpoint on 127.0.0.1:0 that checks the protocol, hands out `token-<n>` valid
    /// for one hour from NOW + n hours, and counts calls.
    async fn identity_server(
        status: u16,
    ) -> (
        Url,
        Arc<AtomicUsize>,
        Arc<Mutex<Vec<HashMap<String, String>>>>,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, s) = (calls.clone(), seen.clone());
        let route = warp::path!("msi" / "token")
            .and(warp::query::<HashMap<String, String>>())
            .and(warp::header::optional::<String>("x-identity-header"))
            .map(move |q: HashMap<String, String>, h: Option<String>| {
                let n = c.fetch_add(1, Ordering::SeqCst);
                s.lock().unwrap().push(q.clone());
                let body = if h.as_deref() != Some("platform-secret") {
                    (400, r#"{"error":"bad header"}"#.to_string())
                } else if status != 200 {
                    (status, r#"{"error":"unavailable"}"#.to_string())
                } else {
                    let exp = NOW + 3600 * (n as u64 + 1);
                    (200, format!(r#"{{"access_token":"token-{n}","expires_on":"{exp}","resource":"{}","token_type":"Bearer"}}"#, q.get("resource").cloned().unwrap_or_default()))
                };
                warp::reply::with_status(body.1, warp::http::StatusCode::from_u16(body.0).unwrap())
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        (
            Url::parse(&format!("http://{addr}/msi/token")).unwrap(),
            calls,
            seen,
        )
    }

    fn source(
        endpoint: &Url,
        client_id: Option<&str>,
        clock: Arc<TestClock>,
    ) -> ManagedIdentityTokens {
        let env: HashMap<&str, String> = [
            (IDENTITY_ENDPOINT, endpoint.to_string()),
            (IDENTITY_HEADER, "platform-secret".to_string()),
        ]
        .into();
        ManagedIdentityTokens::from_lookup(
            &move |n: &str| env.get(n).cloned(),
            reqwest::Client::new(),
            ACS_RESOURCE,
            client_id.map(str::to_string),
        )
        .unwrap()
        .with_clock(clock)
    }

    #[tokio::test]
    async fn tokens_are_cached_and_refreshed_five_minutes_before_expiry() {
        let (endpoint, calls, seen) = identity_server(200).await;
        let clock = Arc::new(TestClock(Mutex::new(UNIX_EPOCH + Duration::from_secs(NOW))));
        let tokens = source(&endpoint, Some("user-assigned-id"), clock.clone());

        assert_eq!(tokens.token().await.unwrap().expose(), "token-0");
        assert_eq!(tokens.token().await.unwrap().expose(), "token-0");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "second call is served from the cache"
        );

        // 54 minutes in: still more than 5 minutes left.
        *clock.0.lock().unwrap() += Duration::from_secs(54 * 60);
        assert_eq!(tokens.token().await.unwrap().expose(), "token-0");
        // 56 minutes in: inside the margin, so a new token is fetched.
        *clock.0.lock().unwrap() += Duration::from_secs(2 * 60);
        assert_eq!(tokens.token().await.unwrap().expose(), "token-1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        let q = &seen.lock().unwrap()[0];
        assert_eq!(q["resource"], ACS_RESOURCE);
        assert_eq!(q["api-version"], "2019-08-01");
        assert_eq!(q["client_id"], "user-assigned-id");
    }

    #[tokio::test]
    async fn failures_say_whether_retrying_helps() {
        let clock = Arc::new(TestClock(Mutex::new(UNIX_EPOCH + Duration::from_secs(NOW))));
        let (endpoint, _, seen) = identity_server(503).await;
        let err = source(&endpoint, None, clock.clone())
            .token()
            .await
            .unwrap_err();
        assert_eq!(err.disposition(), Disposition::Retry, "{err}");
        assert!(err.to_string().contains("503"), "{err}");
        assert!(!seen.lock().unwrap()[0].contains_key("client_id"));

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let unreachable = Url::parse(&format!(
            "http://{}/msi/token",
            closed.local_addr().unwrap()
        ))
        .unwrap();
        drop(closed);
        let err = source(&unreachable, None, clock.clone())
            .token()
            .await
            .unwrap_err();
        assert_eq!(err.disposition(), Disposition::Retry, "{err}");
        assert!(
            std::error::Error::source(&err).is_some(),
            "the HTTP client's error stays the cause: {err}"
        );

        let (endpoint, _, _) = identity_server(400).await;
        let err = source(&endpoint, None, clock).token().await.unwrap_err();
        assert_eq!(err.disposition(), Disposition::Drop, "{err}");
        assert!(!err.to_string().contains("platform-secret"), "{err}");
    }

    #[test]
    fn missing_platform_settings_are_named_and_debug_hides_the_header() {
        let none = |_: &str| None;
        let err =
            ManagedIdentityTokens::from_lookup(&none, reqwest::Client::new(), ACS_RESOURCE, None)
                .unwrap_err();
        assert!(err.to_string().contains(IDENTITY_ENDPOINT), "{err}");

        let t = ManagedIdentityTokens::new(
            reqwest::Client::new(),
            Url::parse("http://127.0.0.1:1/msi/token").unwrap(),
            Secret::new("platform-secret".into()),
            ACS_RESOURCE,
            None,
        );
        assert!(!format!("{t:?}").contains("platform-secret"));
    }

    #[test]
    fn expiry_accepts_strings_numbers_and_expires_in() {
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let parse = |json: &str| expiry(&serde_json::from_str::<TokenResponse>(json).unwrap(), now);
        let at = UNIX_EPOCH + Duration::from_secs(NOW + 60);
        assert_eq!(
            parse(&format!(
                r#"{{"access_token":"t","expires_on":"{}"}}"#,
                NOW + 60
            )),
            Some(at)
        );
        assert_eq!(
            parse(&format!(
                r#"{{"access_token":"t","expires_on":{}}}"#,
                NOW + 60
            )),
            Some(at)
        );
        assert_eq!(parse(r#"{"access_token":"t","expires_in":"60"}"#), Some(at));
        assert_eq!(parse(r#"{"access_token":"t"}"#), None);
    }
}
