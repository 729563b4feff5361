//! [`BlobClient`]: the Blob operations the archiver makes, on one container, over the Storage
//! [`Transport`] (which authorizes, sends and retries).
//!
//! Every call here is safe to repeat: Put Block with the same id replaces the uncommitted block,
//! and a commit or Put Blob with `If-None-Match: *` that already succeeded answers 409/412, which
//! [`CommitOutcome::AlreadyExists`] reports as the success it is.
//!
//! An operation is a method, a path under the container, a query, headers and the error
//! statuses it reads itself: see [`BlobClient::request`] and the operations below.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest, Md5};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MATCH};
use reqwest::{Method, StatusCode};
use url::Url;

use super::model::{
    check_blob_name, commit_headers, BlobCommitOptions, BlobProperties, BlockId, BlockList,
    CommitOutcome, ContainerProperties, CreateOutcome, MS_BLOB_CONTENT_TYPE, MS_META_PREFIX,
};
use super::xml;
use crate::clock::Clock;
use crate::config::storage::StorageSettings;
use crate::identity::TokenSource;
use crate::retry::{Jitter, RetryPolicy};
use crate::storage::transport::{Request, Response};
use crate::storage::{AuthError, Payload, StorageAuth, StorageError, Transport};

/// Largest Put Blob body (version 2019-12-12 and later); bigger uploads must use blocks.
pub(crate) const MAX_PUT_BLOB_BYTES: usize = 5000 * 1024 * 1024;

const MS_BLOB_TYPE: HeaderName = HeaderName::from_static("x-ms-blob-type");
const MS_BLOB_CONTENT_LENGTH: &str = "x-ms-blob-content-length";
const CONTENT_MD5: HeaderName = HeaderName::from_static("content-md5");
const MS_RANGE: HeaderName = HeaderName::from_static("x-ms-range");
const MS_IMMUTABLE_WITH_VERSIONING: &str = "x-ms-immutable-storage-with-versioning-enabled";

/// Blob REST calls on one container.
#[derive(Clone)]
pub struct BlobClient {
    transport: Transport,
    container: String,
}

impl fmt::Debug for BlobClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobClient")
            .field("container", &self.container)
            .field("transport", &self.transport)
            .finish()
    }
}

impl BlobClient {
    /// A client for `container` at the Blob service `endpoint` (host-style
    /// `https://acct.blob.core.windows.net` or path-style `http://127.0.0.1:10000/devstoreaccount1`).
    pub fn new(
        http: reqwest::Client,
        endpoint: Url,
        container: impl Into<String>,
        auth: StorageAuth,
    ) -> Self {
        BlobClient {
            transport: Transport::new(http, endpoint, auth),
            container: container.into(),
        }
    }

    /// A client from validated settings; `tokens` is needed when they name a managed identity.
    pub fn from_settings(
        settings: &StorageSettings,
        container: impl Into<String>,
        http: reqwest::Client,
        tokens: Option<Arc<dyn TokenSource>>,
    ) -> Result<Self, AuthError> {
        let auth = StorageAuth::from_credential(&settings.credential, tokens)?;
        Ok(Self::new(
            http,
            settings.blob_endpoint.clone(),
            container,
            auth,
        ))
    }

    /// Replaces the retry policy (attempts, deadline, delays).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.transport = self.transport.with_retry_policy(retry);
        self
    }

    /// Replaces the jitter source (tests use [`crate::retry::FixedJitter`]).
    pub fn with_jitter(mut self, jitter: Arc<dyn Jitter>) -> Self {
        self.transport = self.transport.with_jitter(jitter);
        self
    }

    /// Replaces the clock that dates (and so signs) requests.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.transport = self.transport.with_clock(clock);
        self
    }

    /// Replaces the per-attempt timeout.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.transport = self.transport.with_attempt_timeout(timeout);
        self
    }

    /// The container this client writes to.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// The blob's URL, without any SAS: safe to log.
    pub fn blob_url(&self, blob: &str) -> Option<Url> {
        check_blob_name(blob).ok()?;
        self.transport
            .url(&format!("{}/{blob}", self.container), "")
            .ok()
    }

    /// Create Container. 409 `ContainerAlreadyExists` is [`CreateOutcome::AlreadyExists`].
    /// (A container SAS cannot create its container: expect 403.)
    pub async fn create_container(&self) -> Result<CreateOutcome, StorageError> {
        let request = self
            .request("Create Container", None, Method::PUT, "restype=container")?
            .expect(&[StatusCode::CONFLICT]);
        let response = self.transport.send(&request).await?;
        match (response.status, response.error_code().as_deref()) {
            (StatusCode::CONFLICT, Some("ContainerAlreadyExists")) => {
                Ok(CreateOutcome::AlreadyExists)
            }
            (StatusCode::CONFLICT, _) => Err(request.service_error(&response)),
            _ => Ok(CreateOutcome::Created),
        }
    }

    /// Put Block: stages `data` (its parts as they are, never joined) as block `block_id` of
    /// `blob`, with an explicit `Content-Length` and, when given, a `Content-MD5` the service
    /// checks (400 on mismatch). Staging the same id again replaces the block.
    pub async fn put_block(
        &self,
        blob: &str,
        block_id: &BlockId,
        data: impl Into<Payload>,
        content_md5: Option<[u8; 16]>,
    ) -> Result<(), StorageError> {
        let query = format!(
            "comp=block&blockid={}",
            utf8_percent_encode(block_id.as_str(), NON_ALPHANUMERIC)
        );
        let mut request = self
            .request("Put Block", Some(blob), Method::PUT, &query)?
            .body(data);
        if let Some(md5) = content_md5 {
            request = request.header(CONTENT_MD5, base64_header(&md5));
        }
        self.transport.send(&request).await.map(drop)
    }

    /// Put Block List: commits `blocks` in order as `blob`, setting its content type and
    /// metadata. With `if_none_match_star`, a blob that already exists gives
    /// [`CommitOutcome::AlreadyExists`].
    pub async fn put_block_list(
        &self,
        blob: &str,
        blocks: &[BlockId],
        options: &BlobCommitOptions,
    ) -> Result<CommitOutcome, StorageError> {
        let request = self.request("Put Block List", Some(blob), Method::PUT, "comp=blocklist")?;
        let headers = commit_headers(options).map_err(|r| request.invalid(r))?;
        let body = xml::block_list_body(blocks.iter().map(BlockId::as_str));
        let request = request
            .headers(headers)
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/xml; charset=utf-8"),
            )
            .body(Bytes::from(body));
        self.commit(request, options).await
    }

    /// Put Blob: writes a small blob (a JSON document, say) in one request, with its MD5 and
    /// the same properties and conditions as a commit. At most 5000 MiB (`MAX_PUT_BLOB_BYTES`).
    pub async fn put_blob_small(
        &self,
        blob: &str,
        body: Bytes,
        options: &BlobCommitOptions,
    ) -> Result<CommitOutcome, StorageError> {
        let mut request = self.request("Put Blob", Some(blob), Method::PUT, "")?;
        if body.len() > MAX_PUT_BLOB_BYTES {
            let reason = format!(
                "{} bytes is over the Put Blob limit; use blocks",
                body.len()
            );
            return Err(request.invalid(reason));
        }
        let headers = commit_headers(options).map_err(|r| request.invalid(r))?;
        if let Some(content_type) = headers.get(&MS_BLOB_CONTENT_TYPE).cloned() {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let request = request
            .headers(headers)
            .header(MS_BLOB_TYPE, HeaderValue::from_static("BlockBlob"))
            .header(CONTENT_MD5, base64_header(&Md5::digest(&body)))
            .body(body);
        self.commit(request, options).await
    }

    /// Sends a write that may be create-only, and reads its outcome.
    async fn commit(
        &self,
        request: Request,
        options: &BlobCommitOptions,
    ) -> Result<CommitOutcome, StorageError> {
        let request = request.expect(&[StatusCode::CONFLICT, StatusCode::PRECONDITION_FAILED]);
        let response = self.transport.send(&request).await?;
        commit_outcome(&request, &response, options)
    }

    /// List Blobs: the names of the committed blobs under `prefix`, in name order, every page
    /// followed. Names only: 5,000 per page at most, about 0.5 MB of answer.
    pub async fn list_blob_names(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let query = format!(
            "restype=container&comp=list&prefix={}",
            utf8_percent_encode(prefix, NON_ALPHANUMERIC)
        );
        self.blob_names("List Blobs", &query).await
    }

    /// Get Blob of bytes `offset..offset + len` of `blob` (`x-ms-range`), only while its ETag
    /// is still `etag` (`If-Match`): a blob replaced during a long read answers 412 instead of
    /// mixing two versions. Reading a large blob range by range keeps memory to one range and
    /// lets each range be retried on its own.
    pub async fn get_range(
        &self,
        blob: &str,
        offset: u64,
        len: u64,
        etag: &str,
    ) -> Result<Bytes, StorageError> {
        let request = self.request("Get Blob", Some(blob), Method::GET, "")?;
        let range = format!("bytes={offset}-{}", offset + len.max(1) - 1);
        let range = HeaderValue::from_str(&range).map_err(|_| request.invalid(range))?;
        let etag = HeaderValue::from_str(etag)
            .map_err(|_| request.invalid(format!("ETag `{etag}` is not a header value")))?;
        let request = request
            .header(HeaderName::from_static("x-ms-range"), range)
            .header(IF_MATCH, etag);
        let response = self.transport.send(&request).await?;
        if response.body.len() as u64 != len {
            let reason = format!(
                "{} bytes for a range of {len} at {offset}",
                response.body.len()
            );
            return Err(request.unexpected(&response, reason));
        }
        Ok(response.body)
    }

    /// Get Block List (`blocklisttype=all`): what is committed and what is staged, to resume an
    /// upload. A blob the service does not know gives an empty list with
    /// `blob_content_length: None`; a missing container is an error.
    pub async fn get_block_list(&self, blob: &str) -> Result<BlockList, StorageError> {
        let query = "comp=blocklist&blocklisttype=all";
        let Some((request, response)) = self
            .read("Get Block List", blob, Method::GET, query)
            .await?
        else {
            return Ok(BlockList::default());
        };
        let text = std::str::from_utf8(&response.body)
            .map_err(|_| request.unexpected(&response, "body is not UTF-8".into()))?;
        let (committed, uncommitted) = xml::parse_block_list(text)
            .map_err(|e| request.unexpected(&response, e.to_string()))?;
        let ids = |blocks: Vec<(String, u64)>| {
            blocks
                .into_iter()
                .map(|(name, size)| {
                    BlockId::from_base64(&name)
                        .map(|id| (id, size))
                        .ok_or_else(|| {
                            request.unexpected(
                                &response,
                                format!("block name `{name}` is not a base64 id"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let length = match response.header(MS_BLOB_CONTENT_LENGTH) {
            Some(v) => v.trim().parse().map_err(|_| {
                request.unexpected(&response, format!("{MS_BLOB_CONTENT_LENGTH} `{v}`"))
            })?,
            None => 0,
        };
        Ok(BlockList {
            committed: ids(committed)?,
            uncommitted: ids(uncommitted)?,
            blob_content_length: Some(length),
        })
    }

    /// Get Blob Properties: `None` when the blob does not exist (or has only staged blocks).
    pub async fn get_properties(&self, blob: &str) -> Result<Option<BlobProperties>, StorageError> {
        let Some((request, response)) = self
            .read("Get Blob Properties", blob, Method::HEAD, "")
            .await?
        else {
            return Ok(None);
        };
        let content_length = response
            .header(CONTENT_LENGTH.as_str())
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| request.unexpected(&response, "no Content-Length".into()))?;
        let mut metadata: Vec<(String, String)> = response
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let key = name.as_str().strip_prefix(MS_META_PREFIX)?;
                Some((
                    key.to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                ))
            })
            .collect();
        metadata.sort();
        Ok(Some(BlobProperties {
            content_length,
            content_type: response.header(CONTENT_TYPE.as_str()),
            metadata,
            etag: response.header(ETAG.as_str()),
        }))
    }

    /// Get Blob of a small blob (a record, a manifest): its bytes, or `None` when it does not
    /// exist. Asks for at most `max_bytes` (`x-ms-range`), so a blob that grew beyond what the
    /// caller can hold costs nothing to refuse.
    pub async fn get_blob_small(
        &self,
        blob: &str,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, StorageError> {
        let range = HeaderValue::from_str(&format!("bytes=0-{}", max_bytes.saturating_sub(1)))
            .expect("a byte range is a header value");
        let request = self
            .request("Get Blob", Some(blob), Method::GET, "")?
            .expect(&[StatusCode::NOT_FOUND, StatusCode::RANGE_NOT_SATISFIABLE])
            .header(MS_RANGE, range);
        let response = self.transport.send(&request).await?;
        match response.status {
            // An empty blob has no byte 0.
            StatusCode::RANGE_NOT_SATISFIABLE => return Ok(Some(Bytes::new())),
            StatusCode::NOT_FOUND => {
                return match response.error_code().as_deref() {
                    None | Some("BlobNotFound") => Ok(None),
                    Some(_) => Err(request.service_error(&response)),
                }
            }
            _ => {}
        }
        let total = response
            .header("content-range")
            .and_then(|v| {
                v.rsplit_once('/')
                    .and_then(|(_, t)| t.trim().parse::<u64>().ok())
            })
            .unwrap_or(response.body.len() as u64);
        if total > max_bytes as u64 {
            return Err(request.invalid(format!(
                "{total} bytes is more than the {max_bytes} this read accepts"
            )));
        }
        Ok(Some(response.body))
    }

    /// Find Blobs by Tags in Container (version 2021-04-10 and later): the names of this
    /// container's blobs whose index tags match `expression`, every page followed.
    pub async fn find_blobs_by_tags(&self, expression: &str) -> Result<Vec<String>, StorageError> {
        let query = format!(
            "restype=container&comp=blobs&where={}",
            utf8_percent_encode(expression, NON_ALPHANUMERIC)
        );
        self.blob_names("Find Blobs by Tags", &query).await
    }

    /// The blob names of a container listing (`query`), following `NextMarker` page by page.
    async fn blob_names(
        &self,
        operation: &'static str,
        query: &str,
    ) -> Result<Vec<String>, StorageError> {
        let mut names = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut query = query.to_string();
            if let Some(m) = &marker {
                query.push_str("&marker=");
                query.extend(utf8_percent_encode(m, NON_ALPHANUMERIC));
            }
            let request = self.request(operation, None, Method::GET, &query)?;
            let response = self.transport.send(&request).await?;
            let text = std::str::from_utf8(&response.body)
                .map_err(|_| request.unexpected(&response, "body is not UTF-8".into()))?;
            let (page, next) = xml::parse_blob_names(text)
                .map_err(|e| request.unexpected(&response, e.to_string()))?;
            names.extend(page);
            match next {
                Some(next) if Some(&next) != marker.as_ref() => marker = Some(next),
                _ => return Ok(names),
            }
        }
    }

    /// Get Container Properties: what the start-up probe must know before writing WORM blobs.
    pub async fn container_properties(&self) -> Result<ContainerProperties, StorageError> {
        let request = self.request(
            "Get Container Properties",
            None,
            Method::HEAD,
            "restype=container",
        )?;
        let response = self.transport.send(&request).await?;
        Ok(ContainerProperties {
            version_level_worm: response
                .header(MS_IMMUTABLE_WITH_VERSIONING)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
        })
    }

    /// A read of `blob`: `None` when the service says 404 `BlobNotFound`; any other 404 (the
    /// container is missing) is an error.
    async fn read(
        &self,
        operation: &'static str,
        blob: &str,
        method: Method,
        query: &str,
    ) -> Result<Option<(Request, Response)>, StorageError> {
        let request = self
            .request(operation, Some(blob), method, query)?
            .expect(&[StatusCode::NOT_FOUND]);
        let response = self.transport.send(&request).await?;
        if response.status != StatusCode::NOT_FOUND {
            return Ok(Some((request, response)));
        }
        match response.error_code().as_deref() {
            None | Some("BlobNotFound") => Ok(None),
            Some(_) => Err(request.service_error(&response)),
        }
    }

    /// A request for `operation` on `blob` (or on the container, for `None`), the blob's name
    /// checked: the start of every operation.
    pub(crate) fn request(
        &self,
        operation: &'static str,
        blob: Option<&str>,
        method: Method,
        query: &str,
    ) -> Result<Request, StorageError> {
        let Some(blob) = blob else {
            return self.transport.request(
                operation,
                &self.container,
                method,
                &self.container,
                query,
            );
        };
        check_blob_name(blob).map_err(|reason| StorageError::Invalid {
            operation,
            resource: blob.to_string(),
            reason,
        })?;
        let path = format!("{}/{blob}", self.container);
        self.transport
            .request(operation, blob, method, &path, query)
    }
}

/// 201 is a commit; with `If-None-Match: *`, 409 `BlobAlreadyExists` and 412 mean the blob is
/// already there; any other 409/412 is a failure.
fn commit_outcome(
    request: &Request,
    response: &Response,
    options: &BlobCommitOptions,
) -> Result<CommitOutcome, StorageError> {
    let code = response.error_code();
    match response.status {
        s if s.is_success() => Ok(CommitOutcome::Committed {
            etag: response.header(ETAG.as_str()),
        }),
        StatusCode::CONFLICT
            if options.if_none_match_star && code.as_deref() == Some("BlobAlreadyExists") =>
        {
            Ok(CommitOutcome::AlreadyExists)
        }
        StatusCode::PRECONDITION_FAILED
            if options.if_none_match_star
                && matches!(code.as_deref(), None | Some("ConditionNotMet")) =>
        {
            Ok(CommitOutcome::AlreadyExists)
        }
        _ => Err(request.service_error(response)),
    }
}

fn base64_header(bytes: &[u8]) -> HeaderValue {
    // base64 output is always a valid header value.
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
        .expect("base64 is visible ASCII")
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderMap;

    use super::*;
    use crate::config::Secret;

    fn client() -> BlobClient {
        BlobClient::new(
            reqwest::Client::new(),
            Url::parse("http://127.0.0.1:10000/devstoreaccount1").unwrap(),
            "recordings",
            StorageAuth::Sas(Secret::new("sv=2021-08-06&sig=hidden".into())),
        )
    }

    #[test]
    fn requests_name_the_blob_or_the_container_and_refuse_bad_names() {
        let c = client();
        assert_eq!(
            c.blob_url("call 1/chunk#0.mp3").unwrap().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/recordings/call%201/chunk%230.mp3"
        );
        let container = c
            .request("Create Container", None, Method::PUT, "restype=container")
            .unwrap();
        assert_eq!(
            container.url.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/recordings?restype=container"
        );
        assert_eq!(container.resource, "recordings");
        for bad in ["", "a/../b", "dir/"] {
            assert!(c.blob_url(bad).is_none(), "{bad:?}");
            let err = c
                .request("Put Blob", Some(bad), Method::PUT, "")
                .unwrap_err();
            assert!(matches!(err, StorageError::Invalid { .. }), "{err}");
        }
        assert!(!format!("{c:?}").contains("hidden"));
    }

    fn response(status: u16, code: Option<&str>) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(code) = code {
            headers.insert("x-ms-error-code", HeaderValue::from_str(code).unwrap());
        }
        headers.insert("x-ms-request-id", HeaderValue::from_static("req-1"));
        Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: Bytes::new(),
            attempts: 1,
        }
    }

    #[test]
    fn already_exists_only_counts_for_create_only_writes() {
        let create_only = BlobCommitOptions {
            if_none_match_star: true,
            ..Default::default()
        };
        let c = client();
        let request = c
            .request("Put Block List", Some("b"), Method::PUT, "")
            .unwrap();
        let outcome = |status, code, opts| commit_outcome(&request, &response(status, code), opts);
        assert_eq!(
            outcome(409, Some("BlobAlreadyExists"), &create_only).unwrap(),
            CommitOutcome::AlreadyExists
        );
        assert_eq!(
            outcome(412, Some("ConditionNotMet"), &create_only).unwrap(),
            CommitOutcome::AlreadyExists
        );
        let err = outcome(409, Some("LeaseIdMissing"), &create_only).unwrap_err();
        assert_eq!(err.request_id(), Some("req-1"));
        assert!(outcome(412, Some("LeaseIdMissing"), &create_only).is_err());
        assert!(outcome(
            409,
            Some("BlobAlreadyExists"),
            &BlobCommitOptions::default()
        )
        .is_err());
    }
}
