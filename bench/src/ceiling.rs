//! The raw ingest ceiling of a Blob endpoint: `total` bytes as parallel Put Blocks of
//! `block` bytes from memory, then one Put Block List, with nothing else in the way (no ACS,
//! no handler, no hashing). The client is the archiver's own [`BlobClient`] (one signed
//! request per block, HTTP/1.1 over a connection pool), given more parallelism than the
//! handler uses by default so that the client is not what limits it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use recording_archiver::blob::{BlobClient, BlobCommitOptions, BlockId};

/// Content for the blocks: generated like a recording, so nothing compresses or dedupes.
pub fn block_content(block: usize) -> Bytes {
    let content = archiver_testkit::acs::Content::new(block as u64, 0xCE11);
    let mut data = vec![0u8; block];
    content.read_at(0, &mut data);
    data.into()
}

/// Uploads `total` bytes into `blob` through `client` (its container must exist) and returns
/// the wall time from the first Put Block to the committed list.
pub async fn measure(
    client: &BlobClient,
    blob: &str,
    total: u64,
    block: usize,
    parallel: usize,
) -> Result<Duration, String> {
    let data = block_content(block);
    let blocks = total.div_ceil(block as u64);
    let started = Instant::now();
    stream::iter(0..blocks)
        .map(|i| {
            let len = (total - i * block as u64).min(block as u64) as usize;
            let body = data.slice(..len);
            async move {
                client
                    .put_block(blob, &BlockId::from_index(i as u32), body, None)
                    .await
            }
        })
        .buffer_unordered(parallel.max(1))
        .try_collect::<Vec<()>>()
        .await
        .map_err(|e| format!("ceiling: {e}"))?;
    let ids: Vec<BlockId> = (0..blocks as u32).map(BlockId::from_index).collect();
    client
        .put_block_list(blob, &ids, &BlobCommitOptions::default())
        .await
        .map_err(|e| format!("ceiling commit: {e}"))?;
    let elapsed = started.elapsed();
    let stored = client
        .get_properties(blob)
        .await
        .map_err(|e| format!("ceiling check: {e}"))?
        .map(|p| p.content_length);
    if stored != Some(total) {
        return Err(format!(
            "ceiling: committed {stored:?} bytes, expected {total}"
        ));
    }
    Ok(elapsed)
}
