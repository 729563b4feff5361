//! Digests: the chunk's SHA-256 on a thread of its own, and a block's `Content-MD5`.

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// SHA-256 of a chunk, fed block by block on its own thread so hashing overlaps the network.
pub(super) struct ChunkHasher {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    done: std::thread::JoinHandle<[u8; 32]>,
}

impl ChunkHasher {
    pub(super) fn spawn(queue: usize) -> ChunkHasher {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(queue.max(1));
        let done = std::thread::spawn(move || {
            let mut h = Sha256::new();
            while let Some(block) = rx.blocking_recv() {
                h.update(&block);
            }
            h.finalize().into()
        });
        ChunkHasher { tx, done }
    }

    /// Queues a block; waits only when the hasher is `queue` blocks behind, which bounds the
    /// memory it holds.
    pub(super) async fn feed(&self, block: Bytes) {
        let _ = self.tx.send(block).await;
    }

    pub(super) async fn finish(self) -> [u8; 32] {
        drop(self.tx);
        let done = self.done;
        tokio::task::spawn_blocking(move || done.join().unwrap_or([0; 32]))
            .await
            .unwrap_or([0; 32])
    }
}

pub(super) fn md5_digest(data: &[u8]) -> [u8; 16] {
    use md5::Digest as _;
    md5::Md5::digest(data).into()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
