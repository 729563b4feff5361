//! ACS HMAC-SHA256 request signing, as pure functions (`docs/protocols.md` §2.2).
//!
//! String-to-sign: `VERB\n<path and query>\n<date>;<host>;<content-sha256>`, keyed with the
//! base64-decoded access key. Recording downloads are the twist (§2.3): the request goes to the
//! storage host in `contentLocation`, but is signed *as if* addressed to the ACS endpoint (its
//! authority, the content URL's path, no query) and carries that authority in `x-ms-host`, as
//! every SDK does. Signing for the storage host instead is the classic 401.

use std::time::SystemTime;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use url::Url;

use crate::config::Secret;

/// `x-ms-content-sha256` of an empty body.
pub const EMPTY_BODY_SHA256: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
/// The headers the signature covers, in the order the service expects.
pub const SIGNED_HEADERS: &str = "x-ms-date;host;x-ms-content-sha256";

/// base64(SHA-256(body)), the `x-ms-content-sha256` value.
pub fn content_sha256(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
}

/// The text the signature is computed over.
pub fn string_to_sign(
    method: &str,
    path_and_query: &str,
    date: &str,
    host: &str,
    content_sha256: &str,
) -> String {
    format!(
        "{}\n{path_and_query}\n{date};{host};{content_sha256}",
        method.to_ascii_uppercase()
    )
}

/// base64(HMAC-SHA256(key, string_to_sign)).
pub fn signature(key: &[u8], string_to_sign: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `host[:port]` as .NET's `Uri.Authority` gives it: the port only when it is not the scheme's
/// default (the `Host` header a client sends looks the same).
pub fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// What a request is signed as: which host and path, and whether it needs `x-ms-host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningTarget {
    /// The authority in the string-to-sign.
    pub host: String,
    /// The path (and query) in the string-to-sign.
    pub path_and_query: String,
    /// `x-ms-host` to send, when the request goes somewhere other than the signed host.
    pub x_ms_host: Option<String>,
}

/// The signing target for `url` on behalf of the resource at `acs_endpoint`.
///
/// A URL on the endpoint itself (the preview `recording/download` shape) is signed as it is,
/// query included. Any other URL (GA `contentLocation`, `metadataLocation`, `deleteLocation`) is
/// signed for the endpoint's authority with the URL's path alone, and names that authority in
/// `x-ms-host`: exactly what the .NET, JS and Python SDKs do.
pub fn signing_target(url: &Url, acs_endpoint: &Url) -> SigningTarget {
    let endpoint_authority = authority(acs_endpoint);
    let url_authority = authority(url);
    if url_authority == endpoint_authority && url.scheme() == acs_endpoint.scheme() {
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        SigningTarget {
            host: url_authority,
            path_and_query,
            x_ms_host: None,
        }
    } else {
        SigningTarget {
            host: endpoint_authority.clone(),
            path_and_query: url.path().to_string(),
            x_ms_host: Some(endpoint_authority),
        }
    }
}

/// The headers that authorise one request. `Debug` hides the authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `x-ms-date` and `Date` (RFC 1123; sent under both names, as .NET does, because the 2021
    /// preview signed `date` and current SDKs sign `x-ms-date`: the string is the same).
    pub date: String,
    /// `x-ms-content-sha256`.
    pub content_sha256: String,
    /// `Authorization: HMAC-SHA256 SignedHeaders=...&Signature=...`.
    pub authorization: Secret<String>,
    /// `x-ms-host`, when the target says so.
    pub x_ms_host: Option<String>,
}

/// Signs one request at time `now`. Called afresh for every attempt: the date is part of the
/// signature and the service refuses dates more than 15 minutes off.
pub fn sign_request(
    method: &str,
    target: &SigningTarget,
    key: &[u8],
    now: SystemTime,
    body: &[u8],
) -> SignedHeaders {
    let date = httpdate::fmt_http_date(now);
    let content_sha256 = content_sha256(body);
    let text = string_to_sign(
        method,
        &target.path_and_query,
        &date,
        &target.host,
        &content_sha256,
    );
    let authorization = format!(
        "HMAC-SHA256 SignedHeaders={SIGNED_HEADERS}&Signature={}",
        signature(key, &text)
    );
    SignedHeaders {
        date,
        content_sha256,
        authorization: Secret::new(authorization),
        x_ms_host: target.x_ms_host.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pw==` from the SDK tests: one byte, 0xA7.
    fn key() -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode("pw==")
            .unwrap()
    }

    fn date() -> SystemTime {
        httpdate::parse_http_date("Wed, 13 Apr 2022 18:09:12 GMT").unwrap()
    }

    fn signature_of(headers: &SignedHeaders) -> String {
        headers
            .authorization
            .expose()
            .split_once("&Signature=")
            .unwrap()
            .1
            .to_string()
    }

    #[test]
    fn hash_and_hmac_primitives_match_the_sdk_vectors() {
        assert_eq!(content_sha256(b""), EMPTY_BODY_SHA256);
        assert_eq!(
            content_sha256(b"banana"),
            "tJPUg2Sv5E0RwBZc9HCkFk0eJgmRHvmYvoaNRq3j3k4="
        );
        assert_eq!(
            signature(&key(), "banana"),
            "88EC05aAS9iXnaimtNO78JLjiPtfWryQB/5QYEzEsu8="
        );
    }

    #[test]
    fn js_sdk_policy_vectors_are_reproduced() {
        // `docs/protocols.md` §2.4: same host as the endpoint, query included when present.
        let endpoint = Url::parse("https://example.com/").unwrap();
        for (url, expected) in [
            (
                "https://example.com/testPath?testQuery=test",
                "DGdgwggJWnQyc6EHjR/Vbqg1ES64KpD6U2XwTDDj3tU=",
            ),
            (
                "https://example.com/testPath",
                "+6tWkg3lNKVjQHHmxkdGQcJjUgzclsWTMebnuCz1ngU=",
            ),
        ] {
            let target = signing_target(&Url::parse(url).unwrap(), &endpoint);
            assert_eq!(target.x_ms_host, None);
            let headers = sign_request("get", &target, &key(), date(), b"");
            assert_eq!(signature_of(&headers), expected, "{url}");
            assert_eq!(headers.date, "Wed, 13 Apr 2022 18:09:12 GMT");
            assert_eq!(headers.content_sha256, EMPTY_BODY_SHA256);
            assert!(headers.authorization.expose().starts_with(
                "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature="
            ));
        }
    }

    #[test]
    fn ga_content_urls_are_signed_for_the_acs_host_with_x_ms_host() {
        // `docs/protocols.md` §2.3 and §2.4, the SDK recipe applied to a storage URL.
        let endpoint = Url::parse("https://contoso.communication.azure.com/").unwrap();
        let url = Url::parse(
            "https://us-storage.asm.skype.com/v1/objects/0-wus-d10-00000000000000000000000000000000/content/audio",
        )
        .unwrap();
        let target = signing_target(&url, &endpoint);
        assert_eq!(target.host, "contoso.communication.azure.com");
        assert_eq!(
            target.x_ms_host.as_deref(),
            Some("contoso.communication.azure.com")
        );
        assert_eq!(
            string_to_sign("GET", &target.path_and_query, "Wed, 13 Apr 2022 18:09:12 GMT", &target.host, EMPTY_BODY_SHA256),
            "GET\n/v1/objects/0-wus-d10-00000000000000000000000000000000/content/audio\nWed, 13 Apr 2022 18:09:12 GMT;contoso.communication.azure.com;47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        let headers = sign_request("GET", &target, &key(), date(), b"");
        assert_eq!(
            signature_of(&headers),
            "1KKK/f+ovwnCUBiXz++XX9rhwpvJcKshf6QCOnVo9vE="
        );
        assert_eq!(
            headers.x_ms_host.as_deref(),
            Some("contoso.communication.azure.com")
        );
    }

    #[test]
    fn located_urls_drop_their_query_and_keep_non_default_ports() {
        let endpoint = Url::parse("http://127.0.0.1:7001/").unwrap();
        let url = Url::parse("http://127.0.0.1:7002/v1/objects/d/content/video?x=1").unwrap();
        let target = signing_target(&url, &endpoint);
        assert_eq!(target.host, "127.0.0.1:7001");
        assert_eq!(target.path_and_query, "/v1/objects/d/content/video");
        assert_eq!(target.x_ms_host.as_deref(), Some("127.0.0.1:7001"));

        let preview = Url::parse(
            "http://127.0.0.1:7001/recording/download/d?api-version=2021-04-15-preview1",
        )
        .unwrap();
        let target = signing_target(&preview, &endpoint);
        assert_eq!(target.host, "127.0.0.1:7001");
        assert_eq!(
            target.path_and_query,
            "/recording/download/d?api-version=2021-04-15-preview1"
        );
        assert_eq!(target.x_ms_host, None);
    }

    #[test]
    fn dates_have_two_digit_days_and_debug_hides_the_signature() {
        let early = httpdate::parse_http_date("Fri, 01 Apr 2022 08:00:00 GMT").unwrap();
        let target = signing_target(
            &Url::parse("https://example.com/p").unwrap(),
            &Url::parse("https://example.com/").unwrap(),
        );
        let headers = sign_request("GET", &target, &key(), early, b"");
        assert_eq!(headers.date, "Fri, 01 Apr 2022 08:00:00 GMT");
        let dump = format!("{headers:?}");
        assert!(!dump.contains(&signature_of(&headers)), "{dump}");
    }
}
