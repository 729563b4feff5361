//! Reused block buffers, so a chunk's memory is a fixed set of buffers instead of fresh pages
//! for every block.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Block buffers, reused: a block's buffer comes back when the last reference to it is
/// dropped (after its Put Block, a retry, the hasher). Without reuse every block was fresh
/// memory for the kernel to fault in and zero, and the allocator's churn held on to more:
/// measured (hashing off, discarding sink) 0.55 -> 0.44 CPU s/GiB, and a peak RSS of 79 ->
/// 41 MiB for a 1.5 GiB chunk.
#[derive(Clone)]
pub(super) struct BlockPool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    block: usize,
    keep: usize,
}

/// A filled block that returns its buffer to the pool when dropped.
struct PooledBlock {
    data: Vec<u8>,
    pool: BlockPool,
}

impl AsRef<[u8]> for PooledBlock {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for PooledBlock {
    fn drop(&mut self) {
        let mut data = std::mem::take(&mut self.data);
        data.clear();
        let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.pool.keep {
            free.push(data);
        }
    }
}

impl BlockPool {
    pub(super) fn new(block: usize, keep: usize) -> BlockPool {
        BlockPool {
            free: Arc::default(),
            block,
            keep,
        }
    }

    /// An empty buffer with room for a block.
    pub(super) fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        reused.unwrap_or_else(|| Vec::with_capacity(self.block))
    }

    /// The block as `Bytes` whose buffer comes back here when the last clone is dropped.
    pub(super) fn freeze(&self, data: Vec<u8>) -> Bytes {
        Bytes::from_owner(PooledBlock {
            data,
            pool: self.clone(),
        })
    }
}
