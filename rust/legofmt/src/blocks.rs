//! Block tiling: a tensor of rank >= 2 seen as a 2-D matrix cut into `bh x bw` blocks.
//!
//! A tensor of shape `(d0, d1, ..., dn)` is viewed as the row-major matrix `(d0, d1*...*dn)`
//! (for a convolution `(out, in, kh, kw)` that is `(out, in*kh*kw)`). The matrix is covered by a
//! grid of `ceil(rows/bh) x ceil(cols/bw)` blocks, numbered row-major over the grid; inside a
//! block, element `(i, j)` is component `i*bw + j` of the block's vector. Positions past the
//! matrix edge (padding) are zero in extracted blocks and ignored when decoding.

use crate::error::{LgnError, Result};

pub use crate::limits::MAX_BLOCK_SIDE;

/// A block shape `bh x bw`, each side in `1..=8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockShape {
    /// Block height (rows of the 2-D view).
    pub bh: usize,
    /// Block width (columns of the 2-D view).
    pub bw: usize,
}

impl BlockShape {
    /// Validated constructor.
    pub fn new(bh: usize, bw: usize) -> Result<Self> {
        if !(1..=MAX_BLOCK_SIDE).contains(&bh) || !(1..=MAX_BLOCK_SIDE).contains(&bw) {
            return Err(LgnError::invalid(
                "block",
                format!("block sides must be in 1..={MAX_BLOCK_SIDE}, got {bh}x{bw}"),
            ));
        }
        Ok(BlockShape { bh, bw })
    }

    /// Elements per block (the dimension of the clustered vectors).
    pub fn dim(&self) -> usize {
        self.bh * self.bw
    }
}

/// The block grid over one tensor's 2-D view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Rows of the 2-D view (`shape[0]`).
    pub rows: usize,
    /// Columns of the 2-D view (product of the other dimensions).
    pub cols: usize,
    /// The block shape.
    pub block: BlockShape,
    /// Blocks down (`ceil(rows / bh)`).
    pub grid_rows: usize,
    /// Blocks across (`ceil(cols / bw)`).
    pub grid_cols: usize,
}

impl Grid {
    /// The grid of a tensor of `shape` (rank >= 2, no overflow) cut into `block`s.
    pub fn new(shape: &[usize], block: BlockShape) -> Result<Grid> {
        if shape.len() < 2 {
            return Err(LgnError::invalid(
                "shape",
                format!("only tensors of rank >= 2 can be tiled, got shape {shape:?}"),
            ));
        }
        let cols = shape[1..]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| LgnError::invalid("shape", format!("shape {shape:?} overflows")))?;
        let rows = shape[0];
        rows.checked_mul(cols)
            .ok_or_else(|| LgnError::invalid("shape", format!("shape {shape:?} overflows")))?;
        Ok(Grid {
            rows,
            cols,
            block,
            grid_rows: rows.div_ceil(block.bh),
            grid_cols: cols.div_ceil(block.bw),
        })
    }

    /// Number of blocks.
    pub fn n_blocks(&self) -> usize {
        self.grid_rows * self.grid_cols
    }

    /// Elements of the tensor.
    pub fn numel(&self) -> usize {
        self.rows * self.cols
    }
}

/// Cuts the row-major matrix `x` (`grid.rows x grid.cols`) into blocks, dividing row `r` by
/// `inv_scale`-style multiplication: each element is multiplied by `row_mul[r]` (pass `1/scale`,
/// or `None` for no scaling). `out` has `n_blocks * dim` elements; padding is zero.
pub fn extract(x: &[f32], grid: &Grid, row_mul: Option<&[f32]>, out: &mut [f32]) {
    let BlockShape { bh, bw } = grid.block;
    let d = bh * bw;
    assert_eq!(x.len(), grid.numel());
    assert_eq!(out.len(), grid.n_blocks() * d);
    let per_block_row = grid.grid_cols * d;
    crate::par::for_each_chunk_mut(out, per_block_row, |br, chunk| {
        chunk.fill(0.0);
        for i in 0..bh {
            let r = br * bh + i;
            if r >= grid.rows {
                break;
            }
            let m = row_mul.map_or(1.0, |s| s[r]);
            let src = &x[r * grid.cols..(r + 1) * grid.cols];
            for (bc, seg) in src.chunks(bw).enumerate() {
                let dst = &mut chunk[bc * d + i * bw..bc * d + i * bw + seg.len()];
                for (o, &v) in dst.iter_mut().zip(seg) {
                    *o = v * m;
                }
            }
        }
    });
}

/// The exact inverse of [`extract`] without scaling: writes blocks back into the matrix,
/// dropping padding.
pub fn untile(blocks: &[f32], grid: &Grid, out: &mut [f32]) {
    let BlockShape { bh, bw } = grid.block;
    let d = bh * bw;
    assert_eq!(blocks.len(), grid.n_blocks() * d);
    assert_eq!(out.len(), grid.numel());
    if grid.numel() == 0 {
        return;
    }
    crate::par::for_each_chunk_mut(out, bh * grid.cols, |br, rows| {
        for (i, row) in rows.chunks_mut(grid.cols).enumerate() {
            for (bc, seg) in row.chunks_mut(bw).enumerate() {
                let b = br * grid.grid_cols + bc;
                let n = seg.len();
                seg.copy_from_slice(&blocks[b * d + i * bw..b * d + i * bw + n]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn worked_example() {
        // A 3x5 matrix with 2x2 blocks: grid 2x3, padding on the last row and column.
        let x: Vec<f32> = (0..15).map(|v| v as f32).collect();
        let g = Grid::new(&[3, 5], BlockShape::new(2, 2).unwrap()).unwrap();
        assert_eq!((g.grid_rows, g.grid_cols, g.n_blocks()), (2, 3, 6));
        let mut b = vec![f32::NAN; 24];
        extract(&x, &g, None, &mut b);
        assert_eq!(&b[0..4], &[0.0, 1.0, 5.0, 6.0]);
        assert_eq!(&b[8..12], &[4.0, 0.0, 9.0, 0.0]); // last column padded
        assert_eq!(&b[12..16], &[10.0, 11.0, 0.0, 0.0]); // last row padded
    }

    #[test]
    fn conv_shapes_flatten_trailing_dims() {
        let g = Grid::new(&[64, 3, 7, 7], BlockShape::new(4, 4).unwrap()).unwrap();
        assert_eq!(
            (g.rows, g.cols, g.grid_rows, g.grid_cols),
            (64, 147, 16, 37)
        );
        assert!(Grid::new(&[5], BlockShape::new(4, 4).unwrap()).is_err());
        assert!(Grid::new(&[usize::MAX, 2], BlockShape::new(4, 4).unwrap()).is_err());
        assert!(BlockShape::new(0, 4).is_err());
        assert!(BlockShape::new(4, 9).is_err());
    }

    proptest! {
        #[test]
        fn untile_inverts_extract(rows in 1usize..20, cols in 1usize..20, bh in 1usize..=8, bw in 1usize..=8, seed in any::<u32>()) {
            let x: Vec<f32> = (0..rows * cols).map(|i| (i as u32 ^ seed) as f32).collect();
            let g = Grid::new(&[rows, cols], BlockShape::new(bh, bw).unwrap()).unwrap();
            let mut b = vec![0f32; g.n_blocks() * bh * bw];
            extract(&x, &g, None, &mut b);
            let mut y = vec![0f32; rows * cols];
            untile(&b, &g, &mut y);
            prop_assert_eq!(x, y);
        }
    }
}
