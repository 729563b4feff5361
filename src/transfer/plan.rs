//! Which blocks a chunk still needs, and the ranged reads that fetch them (pure).
//!
//! Block ids are deterministic by index, so a block staged by any earlier attempt, wherever it
//! sits in the chunk, is kept when its id and size match; only the runs of missing blocks are
//! read, each run cut into ranges of at most `range_blocks` blocks. With the SHA-256 on, the
//! kept blocks are read again for the hash only (Blob Storage cannot read back uncommitted
//! blocks), and not staged again.

use super::blocks::MAX_BLOCKS;
use crate::acs::ByteRange;

/// A chunk of `total` bytes cut into blocks of `block` bytes (the last one shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) total: u64,
    pub(super) block: u64,
}

impl Layout {
    /// How many blocks the chunk has.
    pub(super) fn blocks(&self) -> u64 {
        self.total.div_ceil(self.block)
    }

    /// The size of block `index`.
    pub(super) fn size_of(&self, index: u64) -> u64 {
        self.total
            .saturating_sub(index * self.block)
            .min(self.block)
    }

    /// The bytes of `range`.
    pub(super) fn bytes(&self, range: BlockRange) -> ByteRange {
        ByteRange {
            start: range.first * self.block,
            end: Some((range.end * self.block).min(self.total)),
        }
    }
}

/// Blocks `first..end`, read with one ranged request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BlockRange {
    pub(super) first: u64,
    pub(super) end: u64,
}

/// What a copy reads and stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// The ranged reads, in index order.
    pub(super) ranges: Vec<BlockRange>,
    /// `kept[i]`: block `i` is staged already with the right id and size.
    pub(super) kept: Vec<bool>,
}

impl Plan {
    /// Plans the copy of a chunk laid out as `layout`, where `staged(i)` is the size of the
    /// block staged under block `i`'s id, if any. `read_kept`: read kept blocks as well (to
    /// hash them).
    pub(super) fn new(
        layout: Layout,
        staged: impl Fn(u64) -> Option<u64>,
        read_kept: bool,
        range_blocks: u64,
    ) -> Plan {
        let kept: Vec<bool> = (0..layout.blocks())
            .map(|i| staged(i) == Some(layout.size_of(i)))
            .collect();
        let mut ranges: Vec<BlockRange> = Vec::new();
        for (i, kept) in kept.iter().enumerate() {
            let i = i as u64;
            if *kept && !read_kept {
                continue;
            }
            match ranges.last_mut() {
                Some(r) if r.end == i && r.end - r.first < range_blocks.max(1) => r.end += 1,
                _ => ranges.push(BlockRange {
                    first: i,
                    end: i + 1,
                }),
            }
        }
        Plan { ranges, kept }
    }

    /// Bytes of the chunk an earlier attempt staged.
    pub(super) fn kept_bytes(&self, layout: Layout) -> u64 {
        (0..layout.blocks())
            .filter(|i| self.kept[*i as usize])
            .map(|i| layout.size_of(i))
            .sum()
    }

    /// The first byte this attempt stages: where an in-order copy would have resumed.
    pub(super) fn first_staged_byte(&self, layout: Layout) -> u64 {
        let first = self.kept.iter().position(|k| !k).unwrap_or(self.kept.len());
        (first as u64 * layout.block).min(layout.total)
    }
}

/// The first read, made before the chunk's length is known (its answer tells it): the plan's
/// first range as far as it can be told from the staged blocks alone, assuming every staged
/// block is whole. From block 0 when kept blocks are read too. `range_blocks` may be
/// unbounded (`u64::MAX`: one stream); the search for the next staged block stops at
/// [`MAX_BLOCKS`], past which no chunk goes.
pub(super) fn first_range(
    staged: impl Fn(u64) -> Option<u64>,
    block: u64,
    read_kept: bool,
    range_blocks: u64,
) -> BlockRange {
    let whole = |i: u64| !read_kept && staged(i) == Some(block);
    let first = (0..MAX_BLOCKS).find(|i| !whole(*i)).unwrap_or(MAX_BLOCKS);
    let limit = first.saturating_add(range_blocks.max(1));
    let end = (first + 1..limit.min(MAX_BLOCKS))
        .find(|i| whole(*i))
        .unwrap_or(limit);
    BlockRange { first, end }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u64 = 10;

    fn staged(blocks: &[(u64, u64)]) -> impl Fn(u64) -> Option<u64> + '_ {
        |i| blocks.iter().find(|(b, _)| *b == i).map(|(_, n)| *n)
    }

    fn ranges(plan: &Plan) -> Vec<(u64, u64)> {
        plan.ranges.iter().map(|r| (r.first, r.end)).collect()
    }

    #[test]
    fn a_fresh_chunk_is_read_in_ranges_of_whole_blocks() {
        let layout = Layout {
            total: 95,
            block: B,
        };
        let plan = Plan::new(layout, |_| None, false, 3);
        assert_eq!(ranges(&plan), vec![(0, 3), (3, 6), (6, 9), (9, 10)]);
        assert_eq!(layout.size_of(9), 5);
        assert_eq!(
            layout.bytes(plan.ranges[3]),
            ByteRange {
                start: 90,
                end: Some(95)
            }
        );
        assert_eq!(plan.kept_bytes(layout), 0);
    }

    #[test]
    fn staged_blocks_anywhere_are_kept_and_only_the_gaps_are_read() {
        let layout = Layout {
            total: 95,
            block: B,
        };
        // Blocks 1, 2, 5 and the short last block staged; block 7 staged short (cut): read.
        let s = [(1, 10), (2, 10), (5, 10), (7, 4), (9, 5)];
        let plan = Plan::new(layout, staged(&s), false, 2);
        assert_eq!(ranges(&plan), vec![(0, 1), (3, 5), (6, 8), (8, 9)]);
        assert_eq!(plan.kept_bytes(layout), 35);
        assert_eq!(plan.first_staged_byte(layout), 0);
        assert_eq!(
            first_range(staged(&s), B, false, 2),
            BlockRange { first: 0, end: 1 }
        );
        // With the hash on, everything is read, and the kept blocks are still kept.
        let hashed = Plan::new(layout, staged(&s), true, 2);
        assert_eq!(
            ranges(&hashed),
            vec![(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
        );
        assert_eq!(hashed.kept, plan.kept);
        assert_eq!(
            first_range(staged(&s), B, true, 2),
            BlockRange { first: 0, end: 2 }
        );
    }

    #[test]
    fn the_first_read_starts_at_the_first_gap_and_stops_before_a_staged_block() {
        let s = [(0, 10), (1, 10), (3, 10)];
        assert_eq!(
            first_range(staged(&s), B, false, 4),
            BlockRange { first: 2, end: 3 }
        );
        let layout = Layout {
            total: 40,
            block: B,
        };
        let plan = Plan::new(layout, staged(&s), false, 4);
        assert_eq!(ranges(&plan), vec![(2, 3)]);
        assert_eq!(plan.first_staged_byte(layout), 20);
        // Everything staged: the first read asks for the byte after the end (answered 416).
        let all = [(0, 10), (1, 10)];
        let layout = Layout {
            total: 20,
            block: B,
        };
        assert_eq!(first_range(staged(&all), B, false, 4).first, 2);
        assert!(Plan::new(layout, staged(&all), false, 4).ranges.is_empty());
    }

    #[test]
    fn one_range_reads_each_run_of_missing_blocks_as_one_stream() {
        let layout = Layout {
            total: 95,
            block: B,
        };
        let one_stream = u64::MAX;
        let fresh = Plan::new(layout, |_| None, false, one_stream);
        assert_eq!(ranges(&fresh), vec![(0, 10)]);
        assert_eq!(
            first_range(|_| None, B, false, one_stream),
            BlockRange {
                first: 0,
                end: one_stream
            }
        );
        // Resuming: one stream per gap, the first stopping before the next staged block.
        let s = [(0, 10), (3, 10), (4, 10)];
        let plan = Plan::new(layout, staged(&s), false, one_stream);
        assert_eq!(ranges(&plan), vec![(1, 3), (5, 10)]);
        assert_eq!(
            first_range(staged(&s), B, false, one_stream),
            BlockRange { first: 1, end: 3 }
        );
    }
}
