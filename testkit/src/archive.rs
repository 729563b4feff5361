//! Reads archived blobs back from a container, as any client without the account key would:
//! through a read/list SAS.

use std::time::Duration;

use futures_util::StreamExt as _;
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

    /// Every committed blob (List Blobs; one page holds 5000, far more than the demo writes).
    pub async fn list(&self) -> Result<Vec<ListedBlob>, String> {
        let url = format!(
            "{}?restype=container&comp=list&{}",
            self.container_url, self.sas
        );
        let what = format!("List Blobs on `{}`", self.container);
        let r = self.get(&url, &what).await?;
        let text = r.text().await.map_err(|e| format!("{what}: {e}"))?;
        Ok(parse_blob_list(&text))
    }

    /// A `.json` blob parsed, or any other blob's SHA-256, streamed.
    pub async fn read(&self, name: &str) -> Result<BlobContent, String> {
        let url = format!("{}/{name}?{}", self.container_url, self.sas);
        let r = self.get(&url, &format!("GET {name}")).await?;
        if name.ends_with(".json") {
            let bytes = r.bytes().await.map_err(|e| format!("GET {name}: {e}"))?;
            return Ok(BlobContent::Record(
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            ));
        }
        let mut hasher = Sha256::new();
        let mut body = r.bytes_stream();
        while let Some(piece) = body.next().await {
            hasher.update(piece.map_err(|e| format!("GET {name}: {e}"))?);
        }
        Ok(BlobContent::Media(hasher.finalize().into()))
    }

    /// A successful answer to a GET, or an error naming `what` with the status and body.
    async fn get(&self, url: &str, what: &str) -> Result<reqwest::Response, String> {
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let status = r.status();
        if status.is_success() {
            return Ok(r);
        }
        Err(format!(
            "{what}: {status}: {}",
            r.text().await.unwrap_or_default()
        ))
    }
}

/// The blobs of a List Blobs answer (a flat, service-generated document: a tag scan will do).
pub fn parse_blob_list(xml: &str) -> Vec<ListedBlob> {
    let tag = |s: &str, name: &str| -> String {
        let open = format!("<{name}>");
        let Some(start) = s.find(&open).map(|i| i + open.len()) else {
            return String::new();
        };
        let end = s[start..]
            .find(&format!("</{name}>"))
            .map_or(start, |i| i + start);
        s[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    };
    xml.split("<Blob>")
        .skip(1)
        .map(|b| ListedBlob {
            name: tag(b, "Name"),
            size: tag(b, "Content-Length").parse().unwrap_or(0),
            content_type: tag(b, "Content-Type"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_list_xml_gives_names_sizes_and_types() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1:1/devstoreaccount1" ContainerName="recordings"><Prefix/><Marker/><MaxResults>5000</MaxResults><Blobs><Blob><Name>2026/a&amp;b.mp4</Name><Properties><Creation-Time>x</Creation-Time><Content-Length>125829120</Content-Length><Content-Type>video/mp4</Content-Type></Properties></Blob><Blob><Name>2026/a&amp;b.mp4.json</Name><Properties><Content-Length>812</Content-Length><Content-Type>application/json</Content-Type></Properties></Blob></Blobs><NextMarker/></EnumerationResults>"#;
        assert_eq!(
            parse_blob_list(xml),
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
}
