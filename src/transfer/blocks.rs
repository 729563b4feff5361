//! Block ids, and how many blocks a blob may have.

use sha2::{Digest, Sha256};

use crate::acs::RecordingObject;
use crate::blob::BlockId;

/// Most blocks one blob may commit.
pub(crate) const MAX_BLOCKS: u64 = 50_000;

/// The block ids of one source. Staged blocks outlive a failed attempt, and another event may
/// name the same blob for another recording object; tagging the ids with the source means
/// a resume reuses only blocks of the same source. 10 raw bytes, like the untagged ids of
/// earlier versions (Blob Storage wants one id length per blob): 5 bytes of the source's
/// SHA-256, then the index in 5 digits ([`MAX_BLOCKS`] is below 100,000).
#[derive(Debug, Clone, Copy)]
pub(super) struct BlockTag([u8; 5]);

impl BlockTag {
    pub(super) fn of(source: &RecordingObject) -> BlockTag {
        let digest = Sha256::digest(source.to_string().as_bytes());
        BlockTag([digest[0], digest[1], digest[2], digest[3], digest[4]])
    }

    pub(super) fn id(self, index: u32) -> BlockId {
        let mut raw = self.0.to_vec();
        raw.extend_from_slice(format!("{:05}", index % 100_000).as_bytes());
        BlockId::from_raw(&raw).expect("10 bytes is a valid block id length")
    }
}
