//! The values Blob operations take and give (block ids, commit options, outcomes, block lists,
//! properties), and what the service would refuse in them, refused before sending (pure).

use std::fmt;

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, IF_NONE_MATCH};

pub(crate) const MS_META_PREFIX: &str = "x-ms-meta-";
pub(crate) const MS_BLOB_CONTENT_TYPE: HeaderName =
    HeaderName::from_static("x-ms-blob-content-type");

/// A block id as sent: base64 of at most 64 bytes. Every id in one blob must have the same
/// length (the service answers 400 `InvalidBlobOrBlock` otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(String);

impl BlockId {
    /// Longest id before base64 encoding.
    pub const MAX_RAW_LEN: usize = 64;

    /// The id for the block at `index`: base64 of the index zero-padded to ten digits, so every
    /// id has the same length and a retry reuses the id of the block it repeats.
    pub fn from_index(index: u32) -> BlockId {
        BlockId(base64::engine::general_purpose::STANDARD.encode(format!("{index:010}")))
    }

    /// An id from raw bytes (1 to 64 of them).
    pub fn from_raw(raw: &[u8]) -> Option<BlockId> {
        (1..=Self::MAX_RAW_LEN)
            .contains(&raw.len())
            .then(|| BlockId(base64::engine::general_purpose::STANDARD.encode(raw)))
    }

    /// An id already in base64, as Get Block List returns it.
    pub fn from_base64(encoded: &str) -> Option<BlockId> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        (1..=Self::MAX_RAW_LEN)
            .contains(&raw.len())
            .then(|| BlockId(encoded.to_string()))
    }

    /// The base64 form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Blob properties set when a blob is committed (Put Block List) or written (Put Blob). A commit
/// replaces every property and all metadata, so send them every time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobCommitOptions {
    /// `x-ms-blob-content-type`, e.g. `audio/mpeg` or `application/json`.
    pub content_type: Option<String>,
    /// `x-ms-meta-<name>: value`. Names are lower-case ASCII letters and digits, starting with a
    /// letter (so that signing order cannot differ from the service's); values printable ASCII.
    pub metadata: Vec<(String, String)>,
    /// Send `If-None-Match: *`: create only, never overwrite.
    pub if_none_match_star: bool,
    /// More `x-ms-*` headers for the write: index tags, access tier, encryption scope,
    /// immutability policy, legal hold (see [`crate::catalog::write`]).
    pub headers: Vec<(&'static str, String)>,
}

/// What Get Container Properties tells about a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerProperties {
    /// `x-ms-immutable-storage-with-versioning-enabled`: blobs in it can carry a version-level
    /// immutability policy or legal hold. Absent (as from Azurite) means no.
    pub version_level_worm: bool,
}

/// What Create Container found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The container was created.
    Created,
    /// It existed already (409 `ContainerAlreadyExists`): fine.
    AlreadyExists,
}

/// What a create-only write found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The blob was written.
    Committed {
        /// The new blob's ETag.
        etag: Option<String>,
    },
    /// `If-None-Match: *` found the blob already there (409 `BlobAlreadyExists` or 412): a
    /// previous attempt or delivery finished the job, so the caller can count it as done.
    AlreadyExists,
}

/// A blob's blocks, from Get Block List.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockList {
    /// Committed blocks in blob order, with their sizes.
    pub committed: Vec<(BlockId, u64)>,
    /// Staged blocks not yet committed, with their sizes.
    pub uncommitted: Vec<(BlockId, u64)>,
    /// `x-ms-blob-content-length`: 0 before the first commit; `None` when the service knows
    /// neither the blob nor any staged block for it (404 `BlobNotFound`).
    pub blob_content_length: Option<u64>,
}

/// What Get Blob Properties tells about a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobProperties {
    /// Size in bytes.
    pub content_length: u64,
    /// The stored content type.
    pub content_type: Option<String>,
    /// User metadata, names as the service returns them (lower-case here), sorted by name.
    pub metadata: Vec<(String, String)>,
    /// The ETag.
    pub etag: Option<String>,
}

/// Blob names: 1 to 1024 characters, no control characters, no `.`/`..` segments (URL
/// normalization would rewrite them) and no trailing `/` or `.`.
pub(crate) fn check_blob_name(blob: &str) -> Result<(), String> {
    let ok = !blob.is_empty()
        && blob.chars().count() <= 1024
        && !blob.chars().any(char::is_control)
        && !blob.split('/').any(|s| s == "." || s == "..")
        && !blob.ends_with('/')
        && !blob.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(
            "invalid blob name (1-1024 characters, no `.`/`..` segments, no trailing `/` or `.`)"
                .into(),
        )
    }
}

/// Headers shared by Put Block List and Put Blob: content type, metadata, create-only.
pub(crate) fn commit_headers(options: &BlobCommitOptions) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    if let Some(ct) = &options.content_type {
        let value = HeaderValue::from_str(ct)
            .map_err(|_| format!("content type `{ct}` is not a header value"))?;
        headers.insert(MS_BLOB_CONTENT_TYPE, value);
    }
    for (name, value) in &options.metadata {
        let good_name = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !good_name {
            return Err(format!(
                "metadata name `{name}` must be lower-case letters and digits"
            ));
        }
        let good_value = value.trim() == value && value.bytes().all(|b| (b' '..=b'~').contains(&b));
        let header = HeaderName::from_bytes(format!("{MS_META_PREFIX}{name}").as_bytes()).ok();
        match (good_value, header, HeaderValue::from_str(value)) {
            (true, Some(header), Ok(value)) => {
                if headers.insert(header, value).is_some() {
                    return Err(format!("metadata name `{name}` appears twice"));
                }
            }
            _ => {
                return Err(format!(
                    "metadata `{name}` must be printable ASCII without surrounding spaces"
                ))
            }
        }
    }
    for (name, value) in &options.headers {
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("`{name}` value is not a header value"))?;
        headers.insert(HeaderName::from_static(name), value);
    }
    if options.if_none_match_star {
        headers.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_from_indexes_share_one_length() {
        assert_eq!(BlockId::from_index(0).as_str(), "MDAwMDAwMDAwMA==");
        assert_eq!(
            BlockId::from_index(0).as_str().len(),
            BlockId::from_index(u32::MAX).as_str().len()
        );
        assert_eq!(BlockId::from_raw(b"000000").unwrap().as_str(), "MDAwMDAw");
        assert!(BlockId::from_raw(&[0; 65]).is_none());
        assert!(BlockId::from_raw(&[]).is_none());
        assert!(BlockId::from_base64("MDAwMDAw").is_some());
        assert!(BlockId::from_base64("not base64!").is_none());
    }

    #[test]
    fn blob_names_that_urls_would_rewrite_are_refused() {
        assert!(check_blob_name("call 1/chunk#0.mp3").is_ok());
        for bad in ["", "a/../b", "./a", "dir/", "name.", "tab\there"] {
            assert!(check_blob_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commit_headers_validate_metadata() {
        let ok = BlobCommitOptions {
            content_type: Some("audio/mpeg".into()),
            metadata: vec![
                ("callid".into(), "abc-123".into()),
                ("chunk2".into(), "0".into()),
            ],
            if_none_match_star: true,
            headers: vec![("x-ms-tags", "callId=c-1".into())],
        };
        let h = commit_headers(&ok).unwrap();
        assert_eq!(h["x-ms-blob-content-type"], "audio/mpeg");
        assert_eq!(h["x-ms-meta-callid"], "abc-123");
        assert_eq!(h[IF_NONE_MATCH], "*");
        assert_eq!(h["x-ms-tags"], "callId=c-1");
        for (name, value) in [
            ("CallId", "x"),
            ("call-id", "x"),
            ("call_id", "x"),
            ("2x", "x"),
            ("ok", " padded"),
            ("ok", "é"),
        ] {
            let bad = BlobCommitOptions {
                metadata: vec![(name.into(), value.into())],
                ..Default::default()
            };
            assert!(commit_headers(&bad).is_err(), "{name}={value}");
        }
    }
}
