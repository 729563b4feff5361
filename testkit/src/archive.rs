//! Reads archived blobs back from a container, as any client without the account key would:
//! through a read/list SAS. The demo's report and the tests' assertions read the archive
//! through this one reader.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::azurite::Azurite;

/// A blob in the container, as List Blobs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBlob {
    /// Blob name.
    pub name: String,
    /// `Content-Length`.
    pub size: u64,
    /// `Content-Type`.
    pub content_type: String,
}

/// What was read from a blob.
#[derive(Debug, Clone, PartialEq)]
pub enum BlobContent {
    /// A `.json` archive record, parsed (`Value::Null` when it is not JSON).
    Record(Value),
    /// Anything else: the SHA-256 of its bytes.
    Media([u8; 32]),
}

/// A read that failed: the request, and the status when the service answered.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct ReadError {
    what: String,
    /// The HTTP status of a refusal (404: no such container or blob).
    pub status: Option<u16>,
    reason: String,
}

/// Reads one container through a read/list SAS.
pub struct ArchiveReader {
    http: reqwest::Client,
    container: String,
    container_url: String,
    sas: String,
}

impl ArchiveReader {
    /// A reader for `container` on `azurite`, with a SAS valid for an hour.
    pub fn new(http: reqwest::Client, azurite: &Azurite, container: &str) -> Self {
        ArchiveReader {
            http,
            container: container.to_string(),
            container_url: format!("{}/{container}", azurite.blob_endpoint()),
            sas: azurite.container_sas(container, "rl", Duration::from_secs(3600)),
        }
    }

    /// Every committed blob (List Blobs; one page holds 5000, far more than a test writes).
    pub async fn list(&self) -> Result<Vec<ListedBlob>, ReadError> {
        let url = format!(
            "{}?restype=container&comp=list&{}",
            self.container_url, self.sas
        );
        let what = format!("List Blobs on `{}`", self.container);
        let r = self.get(&url, &what).await?;
        let text = r.text().await.map_err(|e| failed(&what, None, e))?;
        parse_blob_list(&text).map_err(|e| failed(&what, None, e))
    }

    /// A blob's bytes.
    pub async fn bytes(&self, name: &str) -> Result<Bytes, ReadError> {
        let what = format!("GET {name}");
        let r = self.get(&self.blob_url(name), &what).await?;
        r.bytes().await.map_err(|e| failed(&what, None, e))
    }

    /// A `.json` blob parsed, or any other blob's SHA-256, streamed.
    pub async fn read(&self, name: &str) -> Result<BlobContent, ReadError> {
        if name.ends_with(".json") {
            let bytes = self.bytes(name).await?;
            return Ok(BlobContent::Record(
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            ));
        }
        let what = format!("GET {name}");
        let r = self.get(&self.blob_url(name), &what).await?;
        let mut hasher = Sha256::new();
        let mut body = r.bytes_stream();
        while let Some(piece) = body.next().await {
            hasher.update(piece.map_err(|e| failed(&what, None, e))?);
        }
        Ok(BlobContent::Media(hasher.finalize().into()))
    }

    fn blob_url(&self, name: &str) -> String {
        format!("{}/{name}?{}", self.container_url, self.sas)
    }

    /// A successful answer to a GET, or an error naming `what` with the status and body.
    async fn get(&self, url: &str, what: &str) -> Result<reqwest::Response, ReadError> {
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| failed(what, None, e))?;
        let status = r.status();
        if status.is_success() {
            return Ok(r);
        }
        let body = r.text().await.unwrap_or_default();
        Err(failed(
            what,
            Some(status.as_u16()),
            format!("{status}: {body}"),
        ))
    }
}

fn failed(what: &str, status: Option<u16>, reason: impl ToString) -> ReadError {
    ReadError {
        what: what.to_string(),
        status,
        reason: reason.to_string(),
    }
}

/// `<EnumerationResults>` of List Blobs, as far as the reader needs it.
#[derive(Deserialize)]
struct EnumerationResults {
    #[serde(rename = "Blobs", default)]
    blobs: Blobs,
}

#[derive(Deserialize, Default)]
struct Blobs {
    #[serde(rename = "Blob", default)]
    blob: Vec<BlobItem>,
}

#[derive(Deserialize)]
struct BlobItem {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Properties")]
    properties: Properties,
}

#[derive(Deserialize)]
struct Properties {
    #[serde(rename = "Content-Length")]
    content_length: u64,
    #[serde(rename = "Content-Type", default)]
    content_type: String,
}

/// The blobs of a List Blobs answer.
pub fn parse_blob_list(xml: &str) -> Result<Vec<ListedBlob>, quick_xml::DeError> {
    let results: EnumerationResults = quick_xml::de::from_str(xml.trim_start_matches('\u{feff}'))?;
    Ok(results
        .blobs
        .blob
        .into_iter()
        .map(|b| ListedBlob {
            name: b.name,
            size: b.properties.content_length,
            content_type: b.properties.content_type,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_list_xml_gives_names_sizes_and_types() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1:1/devstoreaccount1" ContainerName="recordings"><Prefix/><Marker/><MaxResults>5000</MaxResults><Blobs><Blob><Name>2026/a&amp;b.mp4</Name><Properties><Creation-Time>x</Creation-Time><Content-Length>125829120</Content-Length><Content-Type>video/mp4</Content-Type></Properties></Blob><Blob><Name>2026/a&amp;b.mp4.json</Name><Properties><Content-Length>812</Content-Length><Content-Type>application/json</Content-Type></Properties></Blob></Blobs><NextMarker/></EnumerationResults>"#;
        assert_eq!(
            parse_blob_list(xml).unwrap(),
            vec![
                ListedBlob {
                    name: "2026/a&b.mp4".into(),
                    size: 125829120,
                    content_type: "video/mp4".into()
                },
                ListedBlob {
                    name: "2026/a&b.mp4.json".into(),
                    size: 812,
                    content_type: "application/json".into()
                }
            ]
        );
    }

    #[test]
    fn an_empty_container_lists_nothing() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ContainerName="c"><Blobs /><NextMarker /></EnumerationResults>"#;
        assert_eq!(parse_blob_list(xml).unwrap(), Vec::new());
    }
}
