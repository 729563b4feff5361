//! Storage SharedKey signing (Blob and Queue, version 2009-09-19 and later). Pure: the
//! string-to-sign is a function of method, URL, headers and account, tested on a fixed vector.
//!
//! Written independently of the main crate's signer on purpose: the emulator checks the
//! handler against the protocol, not against itself.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::Url;
use sha2::Sha256;

/// The standard headers, in the order the string-to-sign lists them.
const STANDARD_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// The SharedKey string-to-sign for a request with `headers` (every header that will be sent,
/// except `Authorization`).
///
/// `Content-Length` is signed as an empty string when it is 0 (version 2015-02-21 and later).
/// The canonicalized resource is `/` + account + the URL path as sent, so a path-style
/// Azurite URL puts the account in it twice. Query values are signed decoded.
pub fn string_to_sign(
    account: &str,
    method: &str,
    url: &Url,
    headers: &[(String, String)],
) -> String {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .unwrap_or("")
    };
    let mut out = String::with_capacity(256);
    out.push_str(method);
    out.push('\n');
    for name in STANDARD_HEADERS {
        let value = header(name);
        if !(name == "content-length" && value == "0") {
            out.push_str(value);
        }
        out.push('\n');
    }
    let canonical: BTreeMap<String, &str> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim()))
        .filter(|(k, _)| k.starts_with("x-ms-"))
        .collect();
    for (k, v) in canonical {
        out.push_str(&k);
        out.push(':');
        out.push_str(v);
        out.push('\n');
    }
    out.push('/');
    out.push_str(account);
    out.push_str(url.path());
    let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in url.query_pairs() {
        query
            .entry(k.to_ascii_lowercase())
            .or_default()
            .push(v.into_owned());
    }
    for (k, mut values) in query {
        values.sort();
        out.push('\n');
        out.push_str(&k);
        out.push(':');
        out.push_str(&values.join(","));
    }
    out
}

/// The `Authorization` header value: `SharedKey account:base64(HMAC-SHA256(key, string_to_sign))`.
pub fn authorization(account: &str, key: &[u8], string_to_sign: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(string_to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("SharedKey {account}:{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::account::AZURITE_KEY;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The vector of `docs/protocols.md` §5.3 (Put Block on a path-style Azurite URL).
    #[test]
    fn put_block_vector_matches_the_reference() {
        let url = Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/recordings/call1/chunk0.mp3?comp=block&blockid=MDAwMDAw",
        )
        .unwrap();
        let headers = h(&[
            ("Content-Length", "1000"),
            ("Content-MD5", "dkRnLQSSkPA5DZyZPH00PQ=="),
            ("x-ms-version", "2021-08-06"),
            ("x-ms-date", "Wed, 13 Apr 2022 18:09:12 GMT"),
        ]);
        let sts = string_to_sign("devstoreaccount1", "PUT", &url, &headers);
        assert_eq!(
            sts,
            "PUT\n\n\n1000\ndkRnLQSSkPA5DZyZPH00PQ==\n\n\n\n\n\n\n\nx-ms-date:Wed, 13 Apr 2022 18:09:12 GMT\n\
             x-ms-version:2021-08-06\n/devstoreaccount1/devstoreaccount1/recordings/call1/chunk0.mp3\nblockid:MDAwMDAw\ncomp:block"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(AZURITE_KEY)
            .unwrap();
        assert_eq!(
            authorization("devstoreaccount1", &key, &sts),
            "SharedKey devstoreaccount1:lI4qWke6olodmO/mzdOd1zAKSp93k8MaHi/Y+k5/pW8="
        );
    }

    #[test]
    fn zero_content_length_is_signed_empty_and_query_values_decoded() {
        let url = Url::parse(
            "http://127.0.0.1:10001/devstoreaccount1/jobs/messages/id-1?popreceipt=AQ%2BB%3D&visibilitytimeout=30",
        )
        .unwrap();
        let headers = h(&[
            ("content-length", "0"),
            ("X-MS-Version", "2021-08-06"),
            ("x-ms-date", "Mon, 24 Nov 2025 10:00:00 GMT"),
        ]);
        let sts = string_to_sign("devstoreaccount1", "PUT", &url, &headers);
        assert_eq!(
            sts,
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Mon, 24 Nov 2025 10:00:00 GMT\nx-ms-version:2021-08-06\n\
             /devstoreaccount1/devstoreaccount1/jobs/messages/id-1\npopreceipt:AQ+B=\nvisibilitytimeout:30"
        );
    }
}
