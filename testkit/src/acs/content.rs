//! Deterministic recording content of any size, computed on the fly.
//!
//! The object is cut into 64 KiB blocks; block `b` is a 64 KiB window of a small random pool,
//! at an offset picked by hashing `(seed, b)`, with `b` stamped over its first 8 bytes. Any
//! byte range can be produced at memcpy speed, no two blocks are alike, and a misplaced or
//! repeated range shows up in a SHA-256.

use std::sync::Arc;

use sha2::{Digest, Sha256};

const BLOCK: usize = 64 * 1024;
/// How many window positions the pool offers.
const ORIGINS: usize = 2 * BLOCK;

/// A recording's bytes: `size` bytes derived from `seed`.
#[derive(Clone)]
pub struct Content {
    size: u64,
    seed: u64,
    pool: Arc<[u8]>,
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Content")
            .field("size", &self.size)
            .field("seed", &self.seed)
            .finish()
    }
}

/// SplitMix64: a cheap, well-mixed hash of one `u64`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Content {
    /// The content of a `size`-byte recording made from `seed`.
    pub fn new(size: u64, seed: u64) -> Self {
        let words = (ORIGINS + BLOCK) / 8;
        let pool: Vec<u8> = (0..words as u64)
            .flat_map(|i| splitmix64(seed ^ i.wrapping_mul(0xA24B_AED4_963E_E407)).to_le_bytes())
            .collect();
        Content {
            size,
            seed,
            pool: pool.into(),
        }
    }

    /// The length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Fills `buf` with the bytes from `offset`; returns how many there were (fewer at the end).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        let n = (buf.len() as u64).min(self.size.saturating_sub(offset)) as usize;
        let mut done = 0;
        while done < n {
            let pos = offset + done as u64;
            let block = pos / BLOCK as u64;
            let within = (pos % BLOCK as u64) as usize;
            let take = (BLOCK - within).min(n - done);
            let origin = (splitmix64(
                self.seed
                    .wrapping_add(block.wrapping_mul(0xD1B5_4A32_D192_ED03)),
            ) % ORIGINS as u64) as usize
                + within;
            let out = &mut buf[done..done + take];
            out.copy_from_slice(&self.pool[origin..origin + take]);
            let stamp = block.to_le_bytes();
            for (i, byte) in out
                .iter_mut()
                .enumerate()
                .take(8usize.saturating_sub(within))
            {
                *byte ^= stamp[within + i];
            }
            done += take;
        }
        n
    }

    /// SHA-256 of `[offset, size)`.
    pub fn sha256_from(&self, offset: u64) -> [u8; 32] {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1024 * 1024];
        let mut pos = offset;
        loop {
            let n = self.read_at(pos, &mut buf);
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
        hasher.finalize().into()
    }

    /// SHA-256 of the whole content.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256_from(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_range_reads_the_same_bytes() {
        let c = Content::new(300_000, 7);
        let mut whole = vec![0u8; 300_000];
        assert_eq!(c.read_at(0, &mut whole), 300_000);
        for (offset, len) in [
            (0usize, 1usize),
            (3, 10),
            (65_530, 20),
            (131_072, 8),
            (299_990, 64),
        ] {
            let mut part = vec![0u8; len];
            let n = c.read_at(offset as u64, &mut part);
            assert_eq!(&part[..n], &whole[offset..offset + n], "{offset}+{len}");
        }
        assert_eq!(c.read_at(300_000, &mut [0u8; 4]), 0);
    }

    #[test]
    fn blocks_differ_and_seeds_differ() {
        let c = Content::new(4 * BLOCK as u64, 1);
        let mut a = vec![0u8; BLOCK];
        let mut b = vec![0u8; BLOCK];
        c.read_at(0, &mut a);
        c.read_at(BLOCK as u64, &mut b);
        assert_ne!(a, b);
        assert_ne!(
            Content::new(1000, 1).sha256(),
            Content::new(1000, 2).sha256()
        );
        assert_eq!(
            Content::new(1000, 1).sha256(),
            Content::new(1000, 1).sha256()
        );
    }
}
