//! The emulator's own check of ACS request authentication, written independently of the
//! archiver's signer so that a shared mistake cannot pass both.
//!
//! Like the service: HMAC-SHA256 over `VERB\n<path[?query]>\n<date>;<host>;<content hash>`
//! with `SignedHeaders=x-ms-date;host;x-ms-content-sha256` (or the 2021 preview's
//! `date;host;...`), the date within 15 minutes of now, the content hash equal to the body's,
//! and the signed host equal to the ACS resource: the `Host` header for requests to the resource
//! itself, `x-ms-host` for requests to the storage host (signed then for the path alone).

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The largest clock difference the service tolerates.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// What a request presented, as received.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// Request method.
    pub method: &'a str,
    /// Path and query, as on the request line.
    pub target: &'a str,
    /// Header lookup (lower-case names).
    pub headers: &'a [(String, String)],
    /// The body.
    pub body: &'a [u8],
}

impl Presented<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Who may call, and where.
#[derive(Debug, Clone)]
pub struct Authority<'a> {
    /// The ACS resource's authority (`host:port`): every request must be signed for it.
    pub acs_host: &'a str,
    /// The authority of the server that received the request.
    pub this_host: &'a str,
    /// The access key.
    pub key: &'a [u8],
    /// A bearer token to accept as well, if any.
    pub bearer: Option<&'a str>,
    /// Tolerated clock difference.
    pub max_skew: Duration,
    /// The emulator's now.
    pub now: SystemTime,
}

/// Checks a request; `Err` says why it would get a 401.
pub fn verify(request: &Presented<'_>, who: &Authority<'_>) -> Result<(), String> {
    let authorization = request
        .header("authorization")
        .ok_or("no Authorization header")?;
    let host = request.header("host").ok_or("no Host header")?;
    if !host.eq_ignore_ascii_case(who.this_host) {
        return Err(format!(
            "Host `{host}` is not this server ({})",
            who.this_host
        ));
    }
    let x_ms_host = request.header("x-ms-host");
    let signed_host = match x_ms_host {
        Some(h) if h.eq_ignore_ascii_case(who.acs_host) => h,
        Some(h) => {
            return Err(format!(
                "x-ms-host `{h}` is not the ACS resource ({})",
                who.acs_host
            ))
        }
        None if who.this_host == who.acs_host => host,
        None => {
            return Err(format!(
                "no x-ms-host: requests to the storage host must name the ACS resource ({}) they are signed for",
                who.acs_host
            ))
        }
    };
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        return match who.bearer {
            Some(expected) if expected == token.trim() => Ok(()),
            Some(_) => Err("the bearer token is not valid".into()),
            None => Err("bearer tokens are not accepted here".into()),
        };
    }
    let params = authorization
        .strip_prefix("HMAC-SHA256 ")
        .ok_or("Authorization is neither `HMAC-SHA256 ...` nor `Bearer ...`")?;
    let mut signed_headers = None;
    let mut signature = None;
    for part in params.split('&') {
        match part.split_once('=') {
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            // The signature is base64 and may itself end in `=`.
            Some(("Signature", _)) => signature = part.strip_prefix("Signature="),
            _ => return Err("malformed HMAC-SHA256 Authorization".into()),
        }
    }
    let date_header = match signed_headers.ok_or("no SignedHeaders")? {
        "x-ms-date;host;x-ms-content-sha256" => "x-ms-date",
        "date;host;x-ms-content-sha256" => "date",
        other => return Err(format!("unexpected SignedHeaders `{other}`")),
    };
    let signature = signature.ok_or("no Signature")?;

    let date = request
        .header(date_header)
        .ok_or_else(|| format!("no {date_header} header"))?;
    let at = httpdate::parse_http_date(date)
        .map_err(|_| format!("{date_header} `{date}` is not an RFC 1123 date"))?;
    let skew = who
        .now
        .duration_since(at)
        .or_else(|_| at.duration_since(who.now))
        .unwrap_or_default();
    if skew > who.max_skew {
        return Err(format!(
            "{date_header} `{date}` is {}s away from the server's clock (at most {}s allowed)",
            skew.as_secs(),
            who.max_skew.as_secs()
        ));
    }
    let hash = request
        .header("x-ms-content-sha256")
        .ok_or("no x-ms-content-sha256 header")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    if hash != b64.encode(Sha256::digest(request.body)) {
        return Err("x-ms-content-sha256 does not match the body".into());
    }
    let path = if x_ms_host.is_some() {
        request.target.split('?').next().unwrap_or_default()
    } else {
        request.target
    };
    let text = format!(
        "{}\n{path}\n{date};{signed_host};{hash}",
        request.method.to_uppercase()
    );
    let presented = b64
        .decode(signature)
        .map_err(|_| "Signature is not base64")?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(who.key).map_err(|e| e.to_string())?;
    mac.update(text.as_bytes());
    mac.verify_slice(&presented).map_err(|_| {
        "the signature does not match (wrong key, or signed for another host/path)".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn authority<'a>(key: &'a [u8], this_host: &'a str) -> Authority<'a> {
        Authority {
            acs_host: "contoso.communication.azure.com",
            this_host,
            key,
            bearer: None,
            max_skew: MAX_SKEW,
            now: httpdate::parse_http_date("Wed, 13 Apr 2022 18:10:00 GMT").unwrap(),
        }
    }

    const DATE: &str = "Wed, 13 Apr 2022 18:09:12 GMT";
    const EMPTY: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    #[test]
    fn the_published_vectors_verify() {
        let key = [0xA7u8]; // `pw==`
        let h = headers(&[
            ("host", "example.com"),
            ("x-ms-date", DATE),
            ("x-ms-content-sha256", EMPTY),
            ("authorization", "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=DGdgwggJWnQyc6EHjR/Vbqg1ES64KpD6U2XwTDDj3tU="),
        ]);
        let req = Presented {
            method: "GET",
            target: "/testPath?testQuery=test",
            headers: &h,
            body: b"",
        };
        let mut who = authority(&key, "example.com");
        who.acs_host = "example.com";
        assert_eq!(verify(&req, &who), Ok(()));

        // The storage-host recipe (`docs/protocols.md` §2.3).
        let h = headers(&[
            ("host", "us-storage.asm.skype.com"),
            ("x-ms-host", "contoso.communication.azure.com"),
            ("x-ms-date", DATE),
            ("x-ms-content-sha256", EMPTY),
            ("authorization", "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=1KKK/f+ovwnCUBiXz++XX9rhwpvJcKshf6QCOnVo9vE="),
        ]);
        let req = Presented {
            method: "GET",
            target: "/v1/objects/0-wus-d10-00000000000000000000000000000000/content/audio",
            headers: &h,
            body: b"",
        };
        assert_eq!(
            verify(&req, &authority(&key, "us-storage.asm.skype.com")),
            Ok(())
        );

        // Same request without x-ms-host, or with a wrong key, or an old date: refused.
        let no_x_ms_host: Vec<_> = h
            .iter()
            .filter(|(n, _)| n != "x-ms-host")
            .cloned()
            .collect();
        let req2 = Presented {
            headers: &no_x_ms_host,
            ..req
        };
        assert!(verify(&req2, &authority(&key, "us-storage.asm.skype.com"))
            .unwrap_err()
            .contains("x-ms-host"));
        assert!(verify(&req, &authority(&[1u8], "us-storage.asm.skype.com"))
            .unwrap_err()
            .contains("signature"));
        let mut late = authority(&key, "us-storage.asm.skype.com");
        late.now += Duration::from_secs(16 * 60);
        assert!(verify(&req, &late).unwrap_err().contains("clock"));
    }
}
