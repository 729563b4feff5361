//! The Blob client against a real Azurite (the repo's pinned version, started once for this test
//! binary on free ports, in memory), directly and through a fault-injecting proxy.
//!
//! Needs Node.js 18+ and `npm ci` in the repo root; the first test to start Azurite fails with a
//! message saying which is missing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use archiver_testkit::azurite::{ACCOUNT, ACCOUNT_KEY};
use archiver_testkit::proxy::{Fault, FaultProxy, RequestKind};
use bytes::Bytes;
use md5::{Digest, Md5};
use recording_archiver::blob::{
    BlobClient, BlobCommitOptions, BlockId, CommitOutcome, CreateOutcome,
};
use recording_archiver::config::{storage, Secret};
use recording_archiver::disposition::Disposition;
use recording_archiver::retry::{FixedJitter, RetryPolicy};
use recording_archiver::storage::{Payload, StorageAuth, StorageError};
use support::azurite;
use url::Url;

/// Quick retries, so the fault tests take milliseconds.
fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        deadline: Duration::from_secs(20),
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

fn shared_key() -> StorageAuth {
    StorageAuth::SharedKey {
        account: ACCOUNT.into(),
        key: Secret::new(base64_decode(ACCOUNT_KEY)),
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn client(endpoint: &str, container: &str, auth: StorageAuth) -> BlobClient {
    BlobClient::new(
        reqwest::Client::new(),
        Url::parse(endpoint).unwrap(),
        container,
        auth,
    )
    .with_retry_policy(fast_retries(4))
    .with_jitter(Arc::new(FixedJitter(0.5)))
}

async fn fresh_container(name: &str) -> BlobClient {
    let c = client(&azurite().blob_endpoint(), name, shared_key());
    assert_eq!(c.create_container().await.unwrap(), CreateOutcome::Created);
    c
}

fn md5(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

fn audio_options() -> BlobCommitOptions {
    BlobCommitOptions {
        content_type: Some("audio/mpeg".into()),
        metadata: vec![
            ("callid".into(), "call-1".into()),
            ("chunkindex".into(), "0".into()),
        ],
        if_none_match_star: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn shared_key_round_trip_stages_commits_and_reads_back() {
    let c = fresh_container("shared-key").await;
    assert_eq!(
        c.create_container().await.unwrap(),
        CreateOutcome::AlreadyExists
    );
    let blob = "call 1/chunk0.mp3";
    let blocks: Vec<(BlockId, Bytes)> = (0..3u32)
        .map(|i| {
            (
                BlockId::from_index(i),
                Bytes::from(vec![b'a' + i as u8; 1000 + i as usize]),
            )
        })
        .collect();
    for (id, data) in &blocks {
        c.put_block(blob, id, data.clone(), Some(md5(data)))
            .await
            .unwrap();
    }

    let staged = c.get_block_list(blob).await.unwrap();
    assert!(staged.committed.is_empty());
    assert_eq!(
        staged.uncommitted,
        blocks
            .iter()
            .map(|(id, d)| (id.clone(), d.len() as u64))
            .collect::<Vec<_>>()
    );
    assert_eq!(staged.blob_content_length, Some(0), "nothing committed yet");
    assert_eq!(
        c.get_properties(blob).await.unwrap(),
        None,
        "staged blocks are no blob"
    );

    let ids: Vec<BlockId> = blocks.iter().map(|(id, _)| id.clone()).collect();
    let committed = c
        .put_block_list(blob, &ids, &audio_options())
        .await
        .unwrap();
    assert!(
        matches!(committed, CommitOutcome::Committed { etag: Some(_) }),
        "{committed:?}"
    );

    let props = c.get_properties(blob).await.unwrap().expect("blob exists");
    assert_eq!(props.content_length, 3003);
    assert_eq!(props.content_type.as_deref(), Some("audio/mpeg"));
    assert_eq!(
        props.metadata,
        vec![
            ("callid".into(), "call-1".into()),
            ("chunkindex".into(), "0".into())
        ]
    );
    assert!(props.etag.is_some());

    let list = c.get_block_list(blob).await.unwrap();
    assert_eq!(list.committed.len(), 3);
    assert!(list.uncommitted.is_empty());
    assert_eq!(list.blob_content_length, Some(3003));

    let again = c
        .put_block_list(blob, &ids, &audio_options())
        .await
        .unwrap();
    assert_eq!(
        again,
        CommitOutcome::AlreadyExists,
        "a repeated create-only commit is done"
    );
}

#[tokio::test]
async fn bad_content_md5_is_a_permanent_error_with_request_id() {
    let c = fresh_container("bad-md5").await;
    let err = c
        .put_block(
            "b.mp3",
            &BlockId::from_index(0),
            Bytes::from_static(b"hello"),
            Some([0; 16]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Service {
                status: 400,
                attempts: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.disposition(), Disposition::Drop);
    assert!(err.request_id().is_some_and(|id| !id.is_empty()), "{err}");
    assert!(err.error_code().is_some(), "{err}");
}

#[tokio::test]
async fn block_ids_of_different_lengths_are_refused_permanently() {
    let c = fresh_container("id-lengths").await;
    let data = Bytes::from_static(b"data");
    c.put_block(
        "b.mp3",
        &BlockId::from_raw(b"000000").unwrap(),
        data.clone(),
        None,
    )
    .await
    .unwrap();
    let err = c
        .put_block("b.mp3", &BlockId::from_raw(b"0000001").unwrap(), data, None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert_eq!(err.error_code(), Some("InvalidBlobOrBlock"), "{err}");
    assert_eq!(err.disposition(), Disposition::Drop);
}

#[tokio::test]
async fn missing_blob_reads_as_absent_but_missing_container_is_an_error() {
    let c = fresh_container("absent").await;
    let list = c.get_block_list("never-written.mp3").await.unwrap();
    assert_eq!(list.blob_content_length, None);
    assert!(list.committed.is_empty() && list.uncommitted.is_empty());
    assert_eq!(c.get_properties("never-written.mp3").await.unwrap(), None);

    let nowhere = client(
        &azurite().blob_endpoint(),
        "no-such-container",
        shared_key(),
    );
    let err = nowhere.get_block_list("b.mp3").await.unwrap_err();
    assert_eq!(err.error_code(), Some("ContainerNotFound"), "{err}");
    // Our setup is wrong, not the recording: keep it for a retry once the container exists.
    assert_eq!(err.disposition(), Disposition::Retry);
}

#[tokio::test]
async fn connection_string_settings_build_a_working_client() {
    let conn = azurite().connection_string();
    let settings =
        storage::load(&|name: &str| (name == "RECORDINGS_STORAGE").then(|| conn.clone()))
            .unwrap()
            .expect("settings");
    assert_eq!(settings.blob_endpoint.as_str(), azurite().blob_endpoint());
    assert_eq!(
        settings.queue_endpoint.as_ref().map(Url::as_str),
        Some(azurite().queue_endpoint().as_str())
    );
    let c = BlobClient::from_settings(&settings, "from-settings", reqwest::Client::new(), None)
        .unwrap();
    assert_eq!(c.create_container().await.unwrap(), CreateOutcome::Created);

    let json = BlobCommitOptions {
        content_type: Some("application/json".into()),
        metadata: vec![],
        if_none_match_star: true,
        ..Default::default()
    };
    let body = Bytes::from_static(br#"{"recordingId":"r1"}"#);
    let first = c
        .put_blob_small("call1/metadata.json", body.clone(), &json)
        .await
        .unwrap();
    assert!(
        matches!(first, CommitOutcome::Committed { .. }),
        "{first:?}"
    );
    let second = c
        .put_blob_small("call1/metadata.json", body, &json)
        .await
        .unwrap();
    assert_eq!(second, CommitOutcome::AlreadyExists);
    let props = c
        .get_properties("call1/metadata.json")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(props.content_type.as_deref(), Some("application/json"));
    assert_eq!(props.content_length, 20);
}

#[tokio::test]
async fn blob_503_through_fault_proxy_is_retried_with_the_same_parts_and_succeeds() {
    fresh_container("flaky").await;
    let proxy = FaultProxy::start(&azurite().blob_endpoint()).await.unwrap();
    let c = client(&proxy.endpoint(), "flaky", shared_key());
    proxy.inject(Fault::status(RequestKind::PutBlock, 2, 503).with_retry_after(0));
    proxy.inject(Fault::status(RequestKind::PutBlockList, 1, 500));

    // A block in three parts, as the network delivered it: signed with its whole length,
    // checked against its MD5 by the service, and sent again in full on each retry.
    let data = Bytes::from((0..4096u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let parts = vec![
        data.slice(..1000),
        data.slice(1000..1001),
        data.slice(1001..),
    ];
    let id = BlockId::from_index(0);
    c.put_block("b.mp3", &id, Payload::from(parts), Some(md5(&data)))
        .await
        .unwrap();
    assert_eq!(
        proxy.count(RequestKind::PutBlock),
        3,
        "two 503s, then the real one"
    );
    assert_eq!(proxy.failed(RequestKind::PutBlock), 2);

    let outcome = c
        .put_block_list("b.mp3", &[id], &audio_options())
        .await
        .unwrap();
    assert!(matches!(outcome, CommitOutcome::Committed { .. }));
    assert_eq!(proxy.count(RequestKind::PutBlockList), 2);

    // HEAD through the proxy keeps its Content-Length.
    let props = c.get_properties("b.mp3").await.unwrap().unwrap();
    assert_eq!(props.content_length, 4096);
    assert_eq!(c.get_blob_small("b.mp3", 8192).await.unwrap(), Some(data));
}

#[tokio::test]
async fn retries_are_bounded_and_client_errors_are_not_retried() {
    fresh_container("bounded").await;
    let proxy = FaultProxy::start(&azurite().blob_endpoint()).await.unwrap();
    let c = client(&proxy.endpoint(), "bounded", shared_key()).with_retry_policy(fast_retries(3));
    let data = Bytes::from_static(b"x");

    proxy.inject(Fault::status(RequestKind::PutBlock, 10, 503));
    let err = c
        .put_block("b", &BlockId::from_index(0), data.clone(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Service {
                status: 503,
                attempts: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.disposition(), Disposition::Retry);
    assert_eq!(err.request_id(), Some("fault-proxy-3"));
    assert_eq!(proxy.count(RequestKind::PutBlock), 3);

    proxy.inject(Fault::status(RequestKind::GetBlockList, 1, 403));
    let err = c.get_block_list("b").await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert_eq!(err.disposition(), Disposition::Retry, "{err}");
    assert_eq!(
        proxy.count(RequestKind::GetBlockList),
        1,
        "403 is never repeated"
    );

    proxy.inject(
        Fault::status(RequestKind::GetProperties, 1, 503).with_delay(Duration::from_secs(5)),
    );
    // Only the delayed attempt may time out: the retry goes to Azurite, which on a loaded
    // machine (other test binaries run beside this one) can take a good part of a second.
    let impatient = c.clone().with_attempt_timeout(Duration::from_secs(2));
    assert_eq!(
        impatient.get_properties("b").await.unwrap(),
        None,
        "timed-out attempt retried"
    );
    assert_eq!(proxy.count(RequestKind::GetProperties), 2);
}

#[tokio::test]
async fn container_sas_allows_staging_and_committing() {
    fresh_container("with-sas").await;
    let sas = azurite().container_sas("with-sas", "rcw", Duration::from_secs(600));
    let c = client(
        &azurite().blob_endpoint(),
        "with-sas",
        StorageAuth::Sas(Secret::new(sas)),
    );
    let data = Bytes::from(vec![1u8; 2048]);
    let id = BlockId::from_index(0);
    c.put_block("sas/b.wav", &id, data.clone(), Some(md5(&data)))
        .await
        .unwrap();
    let mut options = audio_options();
    options.content_type = Some("audio/wav".into());
    let outcome = c
        .put_block_list("sas/b.wav", &[id], &options)
        .await
        .unwrap();
    assert!(matches!(outcome, CommitOutcome::Committed { .. }));
    assert_eq!(
        c.get_properties("sas/b.wav")
            .await
            .unwrap()
            .unwrap()
            .content_length,
        2048
    );

    // Read-only SAS: writing is refused for good, and the error does not carry the signature.
    let read_only = azurite().container_sas("with-sas", "r", Duration::from_secs(600));
    let sig = read_only.split("sig=").nth(1).unwrap().to_string();
    let c = client(
        &azurite().blob_endpoint(),
        "with-sas",
        StorageAuth::Sas(Secret::new(read_only)),
    );
    let err = c
        .put_block("sas/c.wav", &BlockId::from_index(0), data, None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert_eq!(
        err.disposition(),
        Disposition::Retry,
        "an expired or short SAS is fixed by the operator"
    );
    assert!(!format!("{err} {err:?}").contains(&sig), "{err:?}");
}
