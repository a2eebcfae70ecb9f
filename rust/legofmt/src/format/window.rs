//! Row-window arithmetic: which blocks, index bytes, scales and raw bytes a range of rows of a
//! tensor's 2-D view needs.
//!
//! A range of rows of a clustered tensor touches the blocks of its block rows only. Packed
//! indices of `bits` bits are read from a block whose index starts on a byte (a multiple of 8
//! blocks), so the decoder can unpack the window as if it were the start of the stored piece.

use std::ops::Range;

use crate::blocks::Grid;
use crate::scale::ScaleMode;

/// The blocks of a clustered tensor that a range of its rows needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockWindow {
    /// The first block whose index is read: 8-aligned, so its index starts on a byte.
    pub(crate) first_block: usize,
    /// One past the last block that holds one of the rows.
    pub(crate) end_block: usize,
}

impl BlockWindow {
    /// The blocks that hold `rows` of `grid` (`first_block` 0 for an empty range).
    pub(crate) fn of_rows(grid: &Grid, rows: &Range<usize>) -> BlockWindow {
        let gc = grid.grid_cols;
        // Blocks `b0..end_block` hold the rows; the window starts 8-aligned so it starts on a byte.
        let b0 = rows.start / grid.block.bh * gc;
        let end_block = (rows.end.div_ceil(grid.block.bh) * gc).min(grid.n_blocks());
        let first_block = if rows.is_empty() { 0 } else { b0 / 8 * 8 };
        BlockWindow {
            first_block,
            end_block,
        }
    }

    /// The bytes of a stage's packed indices (`bits` per block, a stored piece of `piece_len`
    /// bytes, which holds the indices of every block, as the layout checks) that hold the
    /// indices of the window's blocks.
    pub(crate) fn index_bytes(&self, bits: u32, piece_len: usize) -> Range<usize> {
        let bits = bits as usize;
        let begin = self.first_block * bits / 8;
        let end = (self.end_block * bits).div_ceil(8).clamp(begin, piece_len);
        begin..end
    }
}

/// The scale values that `rows` need: their own with per-row scales, else the one scale.
pub(crate) fn scale_values(mode: ScaleMode, rows: &Range<usize>) -> Range<usize> {
    match mode {
        ScaleMode::Row => rows.clone(),
        _ => 0..1,
    }
}

/// The bytes of a raw tensor's stored piece that hold `rows` (rows of `row_bytes` bytes).
pub(crate) fn raw_bytes(rows: &Range<usize>, row_bytes: usize) -> Range<usize> {
    rows.start * row_bytes..rows.end * row_bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::BlockShape;

    #[test]
    fn a_row_range_needs_its_block_rows_from_a_byte_boundary() {
        // 121 x 66 in 3 x 4 blocks: 41 block rows of 17 blocks.
        let grid = Grid::new(&[121, 66], BlockShape::new(3, 4).unwrap()).unwrap();
        assert_eq!((grid.grid_cols, grid.n_blocks()), (17, 41 * 17));
        // Rows 30..33 are block row 10: blocks 170..187, read from block 168.
        let w = BlockWindow::of_rows(&grid, &(30..33));
        assert_eq!((w.first_block, w.end_block), (168, 187));
        assert_eq!(w.index_bytes(4, 349), 84..94);
        assert_eq!(w.index_bytes(3, 262), 63..71);
        // The last rows end at the last block, whose index ends in the piece's last byte.
        let w = BlockWindow::of_rows(&grid, &(119..121));
        assert_eq!(w.end_block, grid.n_blocks());
        assert_eq!(w.index_bytes(4, 349).end, 349);
        // An empty range reads nothing.
        let w = BlockWindow::of_rows(&grid, &(0..0));
        assert_eq!(w.index_bytes(4, 349), 0..0);
    }

    #[test]
    fn scales_and_raw_bytes_follow_the_rows() {
        assert_eq!(scale_values(ScaleMode::Row, &(4..9)), 4..9);
        assert_eq!(scale_values(ScaleMode::Tensor, &(4..9)), 0..1);
        assert_eq!(raw_bytes(&(2..4), 28), 56..112);
    }
}
