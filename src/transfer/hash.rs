//! Digests: the chunk's SHA-256 on a thread of its own, fed in block order, and a block's
//! `Content-MD5`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::storage::Payload;

/// SHA-256 of a chunk whose blocks arrive in any order: blocks wait here until the ones
/// before them are in, then go to a thread that hashes them so hashing overlaps the network.
/// [`ChunkHasher::hashed`] says how many blocks are done, which is what bounds the blocks
/// read ahead (see `pump.rs`).
pub(super) struct ChunkHasher {
    order: Mutex<Order>,
    hashed: watch::Receiver<u64>,
    done: std::thread::JoinHandle<[u8; 32]>,
}

struct Order {
    next: u64,
    waiting: BTreeMap<u64, Payload>,
    tx: Option<std::sync::mpsc::Sender<Payload>>,
}

impl ChunkHasher {
    pub(super) fn spawn() -> ChunkHasher {
        let (tx, rx) = std::sync::mpsc::channel::<Payload>();
        let (count, hashed) = watch::channel(0u64);
        let done = std::thread::spawn(move || {
            let mut h = Sha256::new();
            for block in rx {
                block.parts().iter().for_each(|part| h.update(part));
                drop(block);
                count.send_modify(|n| *n += 1);
            }
            h.finalize().into()
        });
        ChunkHasher {
            order: Mutex::new(Order {
                next: 0,
                waiting: BTreeMap::new(),
                tx: Some(tx),
            }),
            hashed,
            done,
        }
    }

    /// Hands over block `index`; it is hashed once every block before it is.
    pub(super) fn feed(&self, index: u64, block: Payload) {
        let mut order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        order.waiting.insert(index, block);
        loop {
            let next = order.next;
            let Some(block) = order.waiting.remove(&next) else {
                break;
            };
            if let Some(tx) = &order.tx {
                let _ = tx.send(block);
            }
            order.next += 1;
        }
    }

    /// How many leading blocks are hashed, as it changes.
    pub(super) fn hashed(&self) -> watch::Receiver<u64> {
        self.hashed.clone()
    }

    /// The digest, once all `blocks` blocks are in; `None` if some never came.
    pub(super) async fn finish(self, blocks: u64) -> Option<[u8; 32]> {
        let complete = {
            let mut order = self.order.lock().unwrap_or_else(|e| e.into_inner());
            order.tx = None;
            order.next == blocks
        };
        let done = self.done;
        let digest = tokio::task::spawn_blocking(move || done.join().ok())
            .await
            .ok()
            .flatten();
        digest.filter(|_| complete)
    }
}

pub(super) fn md5_digest(data: &Payload) -> [u8; 16] {
    use md5::Digest as _;
    let mut md5 = md5::Md5::new();
    data.parts().iter().for_each(|part| md5.update(part));
    md5.finalize().into()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
