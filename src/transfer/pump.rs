//! The pump: reads a chunk's ranges, `parallel_ranges` at a time, cuts each into blocks and
//! stages them, `parallel_blocks` Put Blocks at a time, while the hasher reads the same blocks
//! in index order.
//!
//! Memory: a block exists while it is being filled, waits to be hashed, or is being staged.
//! With the SHA-256 on, a reader may start block `i` only while `i < hashed + parallel_ranges
//! x range_blocks` (the blocks of the ranges in flight), so unhashed blocks are at most that
//! many; hashed blocks still being staged are at most `parallel_blocks`; one more waits to be
//! handed to the stager. Hence [`TransferSettings::max_blocks_in_memory`], flat in chunk size.
//! Without the hash there is no order to wait for: each reader holds one block.
//!
//! A block is not a buffer of its own but the network reads it was cut from ([`Blocks`]), so it
//! keeps alive the read buffers those came in (hyper's, at most ~408 KiB, usually filled by the
//! read). Measured against copying into pooled buffers (discarding sink, same session): peak
//! RSS for a 1.5 GiB chunk 42 -> 46 MiB (medians of 8), and 44 -> 41-49 MiB through the
//! shaped links of `--wan`; CPU per byte down by 0.22 s/GiB with hashing off.
//!
//! A ranged read costs a round trip before its first byte. So that a reader's link does not
//! idle for it between ranges, each reader asks for its next range about one round trip
//! before its current range ends ([`Lead`]: the current range's rate times how long the last
//! answer took), the way a pipelined connection would; the new answer's bytes start as the
//! old ones end, so a reader holds two connections for about a round trip per range and
//! never reads from both at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use url::Url;

use super::blocks::BlockTag;
use super::hash::{md5_digest, ChunkHasher};
use super::plan::{BlockRange, Layout, Plan};
use super::{BlockStore, ChunkReader, SourceStream, Transfer, TransferError};
use crate::acs::ByteRange;
use crate::blob::BlockId;
use crate::config::TransferSettings;
use crate::recording::ChunkJob;
use crate::storage::Payload;

/// One copy's inputs.
pub(super) struct Copying<'a> {
    pub(super) job: &'a ChunkJob,
    pub(super) media: &'a Url,
    pub(super) blob: &'a str,
    pub(super) blocks_of: BlockTag,
    pub(super) layout: Layout,
    pub(super) plan: Plan,
}

/// What the readers share.
struct Shared<'a> {
    copying: &'a Copying<'a>,
    queue: Mutex<Queue>,
    hasher: Option<ChunkHasher>,
    /// Blocks a reader may be ahead of the hash.
    window: u64,
}

struct Queue {
    next: usize,
    opened: Option<Opened>,
}

/// A ranged read whose answer has come: the range, its stream, how long the answer took
/// (which is about when to ask for the next one) and when it came (the stream's bytes flow
/// from then, read or not, so its rate counts from then).
pub(super) struct Opened {
    pub(super) range: BlockRange,
    pub(super) stream: SourceStream,
    pub(super) answered_in: Duration,
    pub(super) answered_at: Instant,
}

impl Opened {
    /// Opens `bytes`, the bytes of `range`, timing how long the answer takes.
    pub(super) async fn open(
        reader: &dyn ChunkReader,
        job: &ChunkJob,
        media: &Url,
        range: BlockRange,
        bytes: ByteRange,
    ) -> Result<Opened, TransferError> {
        let asked_at = Instant::now();
        let stream = reader.open(job, media, bytes).await?;
        let answered_at = Instant::now();
        Ok(Opened {
            range,
            stream,
            answered_in: answered_at - asked_at,
            answered_at,
        })
    }
}

impl Shared<'_> {
    /// The next range to read, with its stream if it is the one already opened.
    fn next_range(&self) -> Option<(BlockRange, Option<Opened>)> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let range = *self.copying.plan.ranges.get(queue.next)?;
        queue.next += 1;
        let opened = match queue.opened.take() {
            Some(o) if o.range.first == range.first && o.range.end >= range.end => {
                Some(Opened { range, ..o })
            }
            // The plan starts elsewhere (a staged block turned out short): not needed.
            _ => None,
        };
        Some((range, opened))
    }
}

/// When to ask for a reader's next range: once the bytes left in the current one would take
/// no longer than an answer takes to come (the quickest this reader has had: an answer on a
/// connection that had to be opened first took a round trip more than the usual one on a
/// kept-alive connection), at the rate the current one runs. The rate is trusted only after
/// the stream has run for as long as an answer takes: its first reads may be what the
/// connection buffered before anyone read (measured: a stream "ran" at hundreds of MB/s for
/// its first half millisecond, which asked for the next range at once and read both ranges
/// side by side).
#[derive(Debug)]
struct Lead {
    bytes: u64,
    read: u64,
    answered_in: Duration,
    started: Instant,
}

impl Lead {
    fn new(bytes: u64, answered_in: Duration, started: Instant) -> Lead {
        Lead {
            bytes,
            read: 0,
            answered_in,
            started,
        }
    }

    /// Counts `n` more bytes read at `now`; true once the next range is due.
    fn due(&mut self, n: u64, now: Instant) -> bool {
        self.read += n;
        let left = self.bytes.saturating_sub(self.read);
        let elapsed = now.saturating_duration_since(self.started).as_secs_f64();
        let answer = self.answered_in.as_secs_f64();
        if left == 0 || elapsed <= 0.0 || elapsed < answer {
            return left == 0;
        }
        let rate = self.read as f64 / elapsed;
        left as f64 <= rate * answer
    }
}

impl Transfer {
    /// Reads and stages what `copying.plan` says, starting with `opened`, the first read
    /// (already answered: it told the chunk's length) and the blocks it asked for. Returns the chunk's SHA-256 when it was asked
    /// for (every block is read then, kept ones for the hash only).
    ///
    /// Each block is staged by its own task, so its MD5, its request and the reading of its
    /// answer go on while the readers read on; the stager waits for a task only when
    /// `parallel_blocks` are already in flight. (Futures kept in the pump's own
    /// `FuturesUnordered` progressed only while it waited on a full queue; measured with the
    /// discarding sink, tasks are 5-8% faster and use ~8% less CPU.)
    pub(super) async fn pump(
        &self,
        copying: Copying<'_>,
        opened: Opened,
    ) -> Result<Option<[u8; 32]>, TransferError> {
        let settings = self.settings;
        let opened = Some(opened);
        let readers = settings
            .parallel_ranges
            .min(copying.plan.ranges.len())
            .max(1);
        let blob: Arc<str> = Arc::from(copying.blob);
        let shared = Shared {
            copying: &copying,
            queue: Mutex::new(Queue { next: 0, opened }),
            hasher: settings.sha256.then(ChunkHasher::spawn),
            window: (settings.parallel_ranges * settings.range_blocks()) as u64,
        };
        let (tx, rx) = mpsc::channel::<(u64, Payload)>(1);
        let readers = async {
            let all = (0..readers).map(|_| self.read_ranges(&shared, tx.clone()));
            let result = futures_util::future::try_join_all(all).await;
            drop(tx);
            result
        };
        let stager = stage_all(
            self.store.clone(),
            blob.clone(),
            copying.blocks_of,
            settings,
            rx,
        );
        match tokio::join!(readers, stager) {
            (_, Err(e)) | (Err(e), _) => return Err(e),
            (Ok(_), Ok(())) => {}
        }
        let blocks = copying.layout.blocks();
        match shared.hasher {
            None => Ok(None),
            Some(h) => match h.finish(blocks).await {
                Some(digest) => Ok(Some(digest)),
                None => Err(TransferError::Incomplete {
                    blob: blob.to_string(),
                    reason: "the chunk's hash missed blocks",
                }),
            },
        }
    }

    /// One reader: takes ranges until none is left, asking for each next one while it reads
    /// the current one (see [`Lead`]).
    async fn read_ranges(
        &self,
        shared: &Shared<'_>,
        stager: mpsc::Sender<(u64, Payload)>,
    ) -> Result<(), TransferError> {
        let mut hashed = shared.hasher.as_ref().map(ChunkHasher::hashed);
        let Some(mut current) = self.next_opened(shared).await? else {
            return Ok(());
        };
        let mut quickest = Duration::MAX;
        loop {
            quickest = quickest.min(current.answered_in);
            current.answered_in = quickest;
            let (due, ask) = oneshot::channel::<()>();
            let read = self.read_range(shared, current, due, &stager, &mut hashed);
            // The read drops `due` when it ends, so the next range is asked for by then at
            // the latest.
            let ahead = async {
                let _ = ask.await;
                self.next_opened(shared).await
            };
            let ((), next) = futures_util::future::try_join(read, ahead).await?;
            match next {
                Some(next) => current = next,
                None => return Ok(()),
            }
        }
    }

    /// Takes the next range and opens it (unless it is the read already answered), timing
    /// the answer.
    async fn next_opened(&self, shared: &Shared<'_>) -> Result<Option<Opened>, TransferError> {
        let Some((range, opened)) = shared.next_range() else {
            return Ok(None);
        };
        if let Some(opened) = opened {
            return Ok(Some(opened));
        }
        let Copying {
            job, media, layout, ..
        } = shared.copying;
        let bytes = layout.bytes(range);
        Opened::open(&*self.reader, job, media, range, bytes)
            .await
            .map(Some)
    }

    /// Reads one range, cuts it into blocks, hands the blocks to be staged (unless kept) and
    /// hashed; says on `due` when the next range should be asked for.
    async fn read_range(
        &self,
        shared: &Shared<'_>,
        opened: Opened,
        due: oneshot::Sender<()>,
        stager: &mpsc::Sender<(u64, Payload)>,
        hashed: &mut Option<watch::Receiver<u64>>,
    ) -> Result<(), TransferError> {
        let Copying {
            job, layout, plan, ..
        } = shared.copying;
        let Opened {
            range,
            stream,
            answered_in,
            answered_at,
        } = opened;
        // Each range's answer must be of the same object, from where it was asked.
        if stream.total_len != layout.total || stream.offset != range.first * layout.block {
            return Err(TransferError::SizeMismatch {
                index: job.index,
                document_id: job.document_id.clone(),
                expected: layout.total,
                actual: stream.total_len,
            });
        }
        let bytes = layout.bytes(range);
        let span = bytes.end.unwrap_or(layout.total) - bytes.start;
        // A stream asked for ahead has been filling the connection's buffers since its answer
        // came; counting its rate from the first read would take that backlog for speed.
        let mut lead = Lead::new(span, answered_in, answered_at);
        let mut due = Some(due);
        let body = stream
            .body
            .inspect(move |part| {
                let Ok(part) = part else { return };
                if due.is_some() && lead.due(part.len() as u64, Instant::now()) {
                    if let Some(due) = due.take() {
                        // Nobody waits for it only once the reader is gone.
                        let _ = due.send(());
                    }
                }
            })
            .boxed();
        let mut blocks = Blocks::new(body);
        for index in range.first..range.end {
            if let Some(hashed) = hashed {
                let window = shared.window;
                // The hasher ends only after every reader: an error here cannot happen.
                let _ = hashed.wait_for(|done| index < done + window).await;
            }
            let size = layout.size_of(index) as usize;
            let Some(data) = blocks.next(size).await? else {
                return Err(TransferError::SizeMismatch {
                    index: job.index,
                    document_id: job.document_id.clone(),
                    expected: layout.total,
                    actual: index * layout.block,
                });
            };
            if !plan.kept[index as usize] && stager.send((index, data.clone())).await.is_err() {
                // The stager stopped on an error, which is the one reported.
                return Err(TransferError::Incomplete {
                    blob: shared.copying.blob.to_string(),
                    reason: "block staging stopped",
                });
            }
            if let Some(h) = &shared.hasher {
                h.feed(index, data);
            }
        }
        Ok(())
    }
}

/// A range's bytes cut into blocks. A block is the network's reads themselves (the one that
/// straddles a boundary split without copying), so no byte is copied between the socket it came
/// from and the one it leaves by.
struct Blocks {
    body: BoxStream<'static, Result<Bytes, TransferError>>,
    pending: Bytes,
}

impl Blocks {
    fn new(body: BoxStream<'static, Result<Bytes, TransferError>>) -> Blocks {
        Blocks {
            body,
            pending: Bytes::new(),
        }
    }

    /// The next `size` bytes, or `None` if the stream ends first.
    async fn next(&mut self, size: usize) -> Result<Option<Payload>, TransferError> {
        let mut block = Payload::default();
        while block.len() < size {
            if self.pending.is_empty() {
                match self.body.next().await {
                    Some(Ok(part)) => self.pending = part,
                    Some(Err(e)) => return Err(e),
                    None => return Ok(None),
                }
            }
            let take = (size - block.len()).min(self.pending.len());
            block.push(self.pending.split_to(take));
        }
        Ok(Some(block))
    }
}

/// Stages the blocks it is handed, `parallel_blocks` at a time, and waits for them all. On a
/// failed Put Block it stops taking blocks; the ones already on their way still land, so the
/// next attempt keeps them.
async fn stage_all(
    store: Arc<dyn BlockStore>,
    blob: Arc<str>,
    blocks_of: BlockTag,
    settings: TransferSettings,
    mut blocks: mpsc::Receiver<(u64, Payload)>,
) -> Result<(), TransferError> {
    let mut inflight = tokio::task::JoinSet::new();
    let mut failed = None;
    'take: while let Some((index, data)) = blocks.recv().await {
        while inflight.len() >= settings.parallel_blocks {
            if let Some(Err(e)) = inflight.join_next().await.map(|r| staged(&blob, r)) {
                failed = Some(e);
                break 'take;
            }
        }
        inflight.spawn(stage(
            store.clone(),
            blob.clone(),
            blocks_of.id(index as u32),
            data,
            settings.content_md5,
        ));
    }
    drop(blocks);
    while let Some(r) = inflight.join_next().await {
        if let Err(e) = staged(&blob, r) {
            failed.get_or_insert(e);
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Stages one block: its `Content-MD5` first when asked for (on a blocking thread: MD5 runs
/// at ~600-760 MB/s per core), then the Put Block.
async fn stage(
    store: Arc<dyn BlockStore>,
    blob: Arc<str>,
    id: BlockId,
    data: Payload,
    content_md5: bool,
) -> Result<(), TransferError> {
    let md5 = if content_md5 {
        let d = data.clone();
        tokio::task::spawn_blocking(move || md5_digest(&d))
            .await
            .ok()
    } else {
        None
    };
    store.stage_block(&blob, id, data, md5).await
}

/// The result of a staging task, with a task that died (a panic) reported as retryable.
fn staged(
    blob: &str,
    joined: Result<Result<(), TransferError>, tokio::task::JoinError>,
) -> Result<(), TransferError> {
    joined.unwrap_or_else(|source| {
        Err(TransferError::Task {
            blob: blob.to_string(),
            source,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_next_range_is_due_one_answer_time_before_the_current_one_ends() {
        let t0 = Instant::now();
        // 1,000 bytes; answers took 30 ms; the range runs at 10 bytes per ms.
        let mut lead = Lead::new(1_000, 30 * MS, t0);
        assert!(!lead.due(500, t0 + 50 * MS), "500 left: 50 ms to go");
        assert!(!lead.due(150, t0 + 65 * MS), "350 left: 35 ms to go");
        assert!(
            lead.due(100, t0 + 75 * MS),
            "250 left: 25 ms, less than an answer"
        );
    }

    #[test]
    fn the_next_range_is_due_at_the_end_at_the_latest() {
        let t0 = Instant::now();
        // Answers that come at once (loopback, fakes): due only with the last byte.
        let mut lead = Lead::new(100, Duration::ZERO, t0);
        assert!(!lead.due(99, t0 + MS));
        assert!(lead.due(1, t0 + 2 * MS));
        // No time measured yet: only the end counts.
        let mut lead = Lead::new(100, 30 * MS, t0);
        assert!(!lead.due(50, t0));
        assert!(lead.due(50, t0));
    }

    #[test]
    fn what_the_connection_buffered_before_the_first_read_is_not_taken_for_speed() {
        let t0 = Instant::now();
        let mut lead = Lead::new(1_000, 30 * MS, t0);
        // 900 bytes within a millisecond of the answer: a backlog, not a rate.
        assert!(!lead.due(900, t0 + MS));
        // Once it has run as long as an answer takes, its rate counts.
        assert!(lead.due(10, t0 + 40 * MS), "90 left at ~23 bytes per ms");
    }
}
