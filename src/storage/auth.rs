//! Authorization of Storage REST requests, for Blob and Queue alike: SharedKey signing, SAS
//! query parameters, or an Entra ID bearer token.
//!
//! The SharedKey string-to-sign is a pure function of method, URL, headers and account
//! ([`string_to_sign`]), tested on a fixed vector; [`StorageAuth::authorize`] applies it (or the
//! SAS, or the token) to a request about to be sent, and must run again on every retry because
//! the signature covers `x-ms-date`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use sha2::Sha256;
use url::Url;

use crate::config::storage::StorageCredential;
use crate::config::Secret;
use crate::identity::{IdentityError, TokenSource};

/// `x-ms-date`: the signing time, sent on every request.
pub(crate) const MS_DATE: HeaderName = HeaderName::from_static("x-ms-date");
/// `x-ms-version`: the REST API version, sent on every request.
pub(crate) const MS_VERSION: HeaderName = HeaderName::from_static("x-ms-version");

/// How requests to one storage account are authorized. Cheap to clone; shared by the Blob and
/// Queue clients. `Debug` never shows the key, SAS or token.
#[derive(Clone, Debug)]
pub enum StorageAuth {
    /// SharedKey: HMAC-SHA256 of the canonical request with the account key.
    SharedKey {
        /// Account name, as it appears in the string-to-sign.
        account: String,
        /// The decoded account key.
        key: Secret<Vec<u8>>,
    },
    /// A shared access signature (query parameters without `?`) appended to every URL.
    Sas(Secret<String>),
    /// `Authorization: Bearer` with a token for `https://storage.azure.com/`.
    Bearer(Arc<dyn TokenSource>),
}

/// Why a request could not be authorized.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token source failed.
    #[error(transparent)]
    Token(#[from] IdentityError),
    /// The settings ask for a managed identity but no token source was supplied.
    #[error("storage settings use a managed identity, but no token source was configured")]
    NoTokenSource,
    /// A token or signature cannot be carried in an HTTP header.
    #[error("the {0} is not a valid HTTP header value")]
    InvalidHeader(&'static str),
}

impl StorageAuth {
    /// The authorization the settings describe; `tokens` is required for a managed identity
    /// (it must hand out tokens for `https://storage.azure.com/`).
    pub fn from_credential(
        credential: &StorageCredential,
        tokens: Option<Arc<dyn TokenSource>>,
    ) -> Result<StorageAuth, AuthError> {
        Ok(match credential {
            StorageCredential::SharedKey { account, key } => StorageAuth::SharedKey {
                account: account.clone(),
                key: key.clone(),
            },
            StorageCredential::Sas(sas) => StorageAuth::Sas(sas.clone()),
            StorageCredential::ManagedIdentity { .. } => {
                StorageAuth::Bearer(tokens.ok_or(AuthError::NoTokenSource)?)
            }
        })
    }

    /// Stamps `x-ms-date` with `now` and authorizes `request`. Call it once per attempt, after
    /// every other header is set: SharedKey signs the headers as they are.
    pub async fn authorize(
        &self,
        request: &mut reqwest::Request,
        now: SystemTime,
    ) -> Result<(), AuthError> {
        let date = HeaderValue::from_str(&httpdate::fmt_http_date(now))
            .map_err(|_| AuthError::InvalidHeader("date"))?;
        request.headers_mut().insert(MS_DATE, date);
        match self {
            StorageAuth::SharedKey { account, key } => {
                let to_sign =
                    string_to_sign(request.method(), request.url(), request.headers(), account);
                let signature = shared_key_signature(key.expose(), &to_sign);
                let value = sensitive(&format!("SharedKey {account}:{signature}"), "signature")?;
                request.headers_mut().insert(AUTHORIZATION, value);
            }
            StorageAuth::Sas(sas) => append_sas(request.url_mut(), sas.expose()),
            StorageAuth::Bearer(tokens) => {
                let token = tokens.token().await?;
                let value = sensitive(&format!("Bearer {}", token.expose()), "bearer token")?;
                request.headers_mut().insert(AUTHORIZATION, value);
            }
        }
        Ok(())
    }
}

fn sensitive(value: &str, what: &'static str) -> Result<HeaderValue, AuthError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| AuthError::InvalidHeader(what))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The SharedKey string-to-sign for Blob and Queue (version 2009-09-19 and later): twelve
/// standard header lines, the canonicalized `x-ms-*` headers, then the canonicalized resource.
///
/// `Content-Length` is signed as an empty string when it is absent or `0` (version 2015-02-21
/// and later; Azurite refuses a signed `0`). `Date` is always empty: we send `x-ms-date`.
pub(crate) fn string_to_sign(
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    account: &str,
) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
            .unwrap_or_default()
    };
    let content_length = Some(header("content-length"))
        .filter(|l| l != "0")
        .unwrap_or_default();
    let lines = [
        method.as_str().to_string(),
        header("content-encoding"),
        header("content-language"),
        content_length,
        header("content-md5"),
        header("content-type"),
        String::new(), // Date: we always send x-ms-date instead
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    ];
    let mut out = lines.join("\n");
    out.push('\n');
    out.push_str(&canonicalized_headers(headers));
    out.push_str(&canonicalized_resource(url, account));
    out
}

/// Every `x-ms-*` header as `name:value\n`, names lower-case and sorted, values trimmed, repeated
/// headers joined with commas. Plain byte order equals the service's collation for the
/// headers we send (metadata names are restricted to lower-case letters and digits).
fn canonicalized_headers(headers: &HeaderMap) -> String {
    let mut ms: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if name.as_str().starts_with("x-ms-") {
            ms.entry(name.as_str())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).trim().to_string());
        }
    }
    ms.into_iter()
        .map(|(name, values)| format!("{name}:{}\n", values.join(",")))
        .collect()
}

/// `/account` + the URL path as sent (still percent-encoded), then each query parameter as
/// `\nname:value`, names lower-case and sorted, values percent-decoded, repeated names' values
/// sorted and joined with commas.
///
/// With a path-style emulator URL the path already starts with the account, so the account
/// appears twice (`/devstoreaccount1/devstoreaccount1/container/blob`), as Azurite expects.
fn canonicalized_resource(url: &Url, account: &str) -> String {
    let mut out = format!("/{account}{}", url.path());
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in url
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        params
            .entry(decode(name).to_ascii_lowercase())
            .or_default()
            .push(decode(value));
    }
    for (name, mut values) in params {
        values.sort();
        out.push('\n');
        out.push_str(&name);
        out.push(':');
        out.push_str(&values.join(","));
    }
    out
}

/// Percent-decoding without turning `+` into a space (SAS signatures contain literal `+`).
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `base64(HMAC-SHA256(key, string_to_sign))`.
pub(crate) fn shared_key_signature(key: &[u8], string_to_sign: &str) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Appends a SAS (already URL-encoded query parameters, no `?`) to `url`'s query.
pub(crate) fn append_sas(url: &mut Url, sas: &str) {
    let query = match url.query() {
        Some(q) if !q.is_empty() => format!("{q}&{sas}"),
        _ => sas.to_string(),
    };
    url.set_query(Some(&query));
}

/// `url` with the value of any `sig` query parameter replaced by `REDACTED`: the only form of a
/// storage URL that may reach a log line or an error message.
pub(crate) fn redact_url(url: &Url) -> String {
    let mut url = url.clone();
    if let Some(query) = url.query() {
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("sig") => format!("{name}=REDACTED"),
                _ => pair.to_string(),
            })
            .collect();
        url.set_query(Some(&redacted.join("&")));
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::BoxFuture;

    const AZURITE_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn azurite_key() -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(AZURITE_KEY)
            .unwrap()
    }

    /// The self-computed vector from `docs/protocols.md` §5.3: Put Block on a path-style
    /// Azurite URL, so the account appears twice in the resource.
    #[test]
    fn put_block_vector_matches_string_to_sign_and_signature() {
        let url = Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/recordings/call1/chunk0.mp3?comp=block&blockid=MDAwMDAw",
        )
        .unwrap();
        let h = headers(&[
            ("content-length", "1000"),
            ("content-md5", "dkRnLQSSkPA5DZyZPH00PQ=="),
            ("x-ms-date", "Wed, 13 Apr 2022 18:09:12 GMT"),
            ("x-ms-version", "2021-08-06"),
        ]);
        let sts = string_to_sign(&Method::PUT, &url, &h, "devstoreaccount1");
        assert_eq!(
            sts,
            "PUT\n\n\n1000\ndkRnLQSSkPA5DZyZPH00PQ==\n\n\n\n\n\n\n\n\
             x-ms-date:Wed, 13 Apr 2022 18:09:12 GMT\nx-ms-version:2021-08-06\n\
             /devstoreaccount1/devstoreaccount1/recordings/call1/chunk0.mp3\nblockid:MDAwMDAw\ncomp:block"
        );
        assert_eq!(
            shared_key_signature(&azurite_key(), &sts),
            "lI4qWke6olodmO/mzdOd1zAKSp93k8MaHi/Y+k5/pW8="
        );
    }

    #[test]
    fn zero_content_length_is_signed_as_empty() {
        let url = Url::parse("https://acct.blob.core.windows.net/c?restype=container").unwrap();
        let with_zero = string_to_sign(
            &Method::PUT,
            &url,
            &headers(&[("content-length", "0")]),
            "acct",
        );
        let without = string_to_sign(&Method::PUT, &url, &HeaderMap::new(), "acct");
        assert_eq!(with_zero, without);
        assert!(with_zero.starts_with("PUT\n\n\n\n"), "{with_zero:?}");
        assert!(
            with_zero.ends_with("\n/acct/c\nrestype:container"),
            "{with_zero:?}"
        );
    }

    #[test]
    fn query_values_are_decoded_and_names_sorted_case_insensitively() {
        let url = Url::parse(
            "https://acct.blob.core.windows.net/c/a%20b.json?comp=block&BlockId=YWJj%2B%2F%3D%3D&x=2&x=1",
        )
        .unwrap();
        let sts = string_to_sign(&Method::PUT, &url, &HeaderMap::new(), "acct");
        assert!(
            sts.ends_with("/acct/c/a%20b.json\nblockid:YWJj+/==\ncomp:block\nx:1,2"),
            "{sts:?}"
        );
    }

    #[test]
    fn only_ms_headers_are_canonicalized_sorted_and_trimmed() {
        let h = headers(&[
            ("x-ms-version", "2021-08-06"),
            ("x-ms-meta-callid", "  abc "),
            ("x-ms-blob-content-type", "audio/mpeg"),
            ("user-agent", "ignored"),
            ("if-none-match", "*"),
        ]);
        assert_eq!(
            canonicalized_headers(&h),
            "x-ms-blob-content-type:audio/mpeg\nx-ms-meta-callid:abc\nx-ms-version:2021-08-06\n"
        );
        let url = Url::parse("https://acct.blob.core.windows.net/c/b?comp=blocklist").unwrap();
        let sts = string_to_sign(&Method::PUT, &url, &h, "acct");
        assert_eq!(
            sts.lines().nth(9),
            Some("*"),
            "If-None-Match is the tenth line"
        );
    }

    #[test]
    fn sas_is_appended_and_redacted() {
        let mut url = Url::parse("https://acct.blob.core.windows.net/c/b?comp=block").unwrap();
        append_sas(&mut url, "sv=2021-08-06&sr=c&sig=abc%2Bdef%3D");
        assert_eq!(
            url.as_str(),
            "https://acct.blob.core.windows.net/c/b?comp=block&sv=2021-08-06&sr=c&sig=abc%2Bdef%3D"
        );
        let redacted = redact_url(&url);
        assert!(redacted.ends_with("sr=c&sig=REDACTED"), "{redacted}");
        let mut bare = Url::parse("https://acct.blob.core.windows.net/c").unwrap();
        append_sas(&mut bare, "sig=x");
        assert_eq!(bare.query(), Some("sig=x"));
    }

    #[derive(Debug)]
    struct FixedToken;
    impl TokenSource for FixedToken {
        fn token(&self) -> BoxFuture<'_, Result<Secret<String>, IdentityError>> {
            Box::pin(async { Ok(Secret::new("tok123".to_string())) })
        }
    }

    fn request(url: &str) -> reqwest::Request {
        reqwest::Request::new(Method::GET, Url::parse(url).unwrap())
    }

    fn now() -> SystemTime {
        httpdate::parse_http_date("Wed, 13 Apr 2022 18:09:12 GMT").unwrap()
    }

    #[tokio::test]
    async fn each_scheme_authorizes_the_request_without_leaking_in_debug() {
        let shared = StorageAuth::SharedKey {
            account: "devstoreaccount1".into(),
            key: Secret::new(azurite_key()),
        };
        let mut r = request("http://127.0.0.1:10000/devstoreaccount1/c?restype=container");
        shared.authorize(&mut r, now()).await.unwrap();
        assert_eq!(r.headers()["x-ms-date"], "Wed, 13 Apr 2022 18:09:12 GMT");
        let auth = r.headers()[AUTHORIZATION].to_str().unwrap();
        assert!(auth.starts_with("SharedKey devstoreaccount1:"), "{auth}");
        assert!(r.headers()[AUTHORIZATION].is_sensitive());

        let sas = StorageAuth::Sas(Secret::new("sv=2021-08-06&sig=s3cr3t".into()));
        let mut r = request("http://127.0.0.1:10000/devstoreaccount1/c/b?comp=blocklist");
        sas.authorize(&mut r, now()).await.unwrap();
        assert_eq!(
            r.url().query(),
            Some("comp=blocklist&sv=2021-08-06&sig=s3cr3t")
        );
        assert!(r.headers().get(AUTHORIZATION).is_none());

        let bearer = StorageAuth::Bearer(Arc::new(FixedToken));
        let mut r = request("https://acct.blob.core.windows.net/c/b");
        bearer.authorize(&mut r, now()).await.unwrap();
        assert_eq!(r.headers()[AUTHORIZATION], "Bearer tok123");

        let shown = format!("{shared:?} {sas:?} {bearer:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("tok123"),
            "{shown}"
        );
        assert!(!shown.contains("Eby8"), "{shown}");
    }

    #[test]
    fn managed_identity_needs_a_token_source() {
        let cred = StorageCredential::ManagedIdentity { client_id: None };
        assert!(matches!(
            StorageAuth::from_credential(&cred, None),
            Err(AuthError::NoTokenSource)
        ));
        assert!(matches!(
            StorageAuth::from_credential(&cred, Some(Arc::new(FixedToken))),
            Ok(StorageAuth::Bearer(_))
        ));
    }
}
