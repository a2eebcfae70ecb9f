//! The fused decoder: unpack indices, gather codewords, sum stages, scale, and write straight
//! into the final tensor layout in one pass, parallel over block rows.
//!
//! Arithmetic is normative (see `spec/lgn.md`, "Reconstruction"): in IEEE-754 binary32,
//! `acc = c_1; acc = acc + c_2; ...; value = acc * s` (with `s = 1` without scales), then
//! rounded to the output dtype with round-to-nearest-even. No fused multiply-add is used, so
//! every platform and every conforming decoder produces the same bits.

use std::sync::Mutex;

use half::{bf16, f16};

use crate::bitpack;
use crate::blocks::Grid;
use crate::error::{LgnError, Result};

/// An element type the decoder can write.
pub trait OutElem: Copy + Send + Sync + bytemuck::Pod {
    /// Conversion from f32 (round to nearest even for narrower types).
    fn from_f32(v: f32) -> Self;
}
impl OutElem for f32 {
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}
impl OutElem for f16 {
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}
impl OutElem for bf16 {
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

/// One residual stage as the decoder needs it.
#[derive(Debug, Clone, Copy)]
pub struct StageParts<'a> {
    /// Codebook, `k * bh * bw` values.
    pub codebook: &'a [f32],
    /// Number of codewords.
    pub k: usize,
    /// Index width in bits.
    pub bits: u32,
    /// Packed indices (at least `packed_len(n_blocks, bits)` bytes).
    pub packed: &'a [u8],
}

/// Decodes rows `row_begin..row_end` of a clustered tensor into `out`
/// (`(row_end - row_begin) * grid.cols` elements). `scales` has one value per row, one value
/// for the whole tensor, or is empty for no scaling. `tensor` names the tensor in errors.
///
/// Indices `>= k` are reported as a format error naming the tensor, stage and block.
pub fn decode_rows<T: OutElem>(
    tensor: &str,
    grid: &Grid,
    stages: &[StageParts<'_>],
    scales: &[f32],
    row_begin: usize,
    row_end: usize,
    out: &mut [T],
) -> Result<()> {
    let (bh, bw) = (grid.block.bh, grid.block.bw);
    let d = bh * bw;
    let cols = grid.cols;
    assert!(row_begin <= row_end && row_end <= grid.rows);
    assert_eq!(out.len(), (row_end - row_begin) * cols);
    if out.is_empty() {
        return Ok(());
    }
    for st in stages {
        debug_assert_eq!(st.codebook.len(), st.k * d);
        debug_assert!(st.packed.len() >= bitpack::packed_len(grid.n_blocks(), st.bits).unwrap());
    }
    let first_error: Mutex<Option<(usize, usize, u32)>> = Mutex::new(None);
    // Chunks are whole block rows of the output, aligned to the tensor's block grid. When the
    // range starts inside a block row the first chunk is shorter.
    let lead = (bh - row_begin % bh) % bh;
    let lead = lead.min(row_end - row_begin);
    let (head, tail) = out.split_at_mut(lead * cols);
    let work = |first_row: usize, chunk: &mut [T]| {
        let br = first_row / bh;
        let mut idx = vec![0u32; grid.grid_cols * stages.len()];
        for (s, st) in stages.iter().enumerate() {
            let dst = &mut idx[s * grid.grid_cols..(s + 1) * grid.grid_cols];
            bitpack::unpack_range(st.packed, st.bits, br * grid.grid_cols, dst);
            let max = dst.iter().copied().max().unwrap_or(0);
            if max as usize >= st.k {
                let pos = dst.iter().position(|&v| v as usize >= st.k).unwrap_or(0);
                let mut e = first_error.lock().unwrap_or_else(|p| p.into_inner());
                if e.is_none() {
                    *e = Some((s, br * grid.grid_cols + pos, max));
                }
                return;
            }
        }
        for (ri, row) in chunk.chunks_mut(cols).enumerate() {
            let r = first_row + ri;
            let i = r % bh;
            let s = match scales.len() {
                0 => 1.0f32,
                1 => scales[0],
                _ => scales[r],
            };
            if stages.len() == 1 {
                let cb = stages[0].codebook;
                for (seg, &ix) in row.chunks_mut(bw).zip(&idx[..grid.grid_cols]) {
                    let cw = &cb[ix as usize * d + i * bw..ix as usize * d + i * bw + seg.len()];
                    for (o, &c) in seg.iter_mut().zip(cw) {
                        *o = T::from_f32(c * s);
                    }
                }
            } else {
                for (bc, seg) in row.chunks_mut(bw).enumerate() {
                    for (j, o) in seg.iter_mut().enumerate() {
                        let off = i * bw + j;
                        let mut acc = stages[0].codebook[idx[bc] as usize * d + off];
                        for (s_i, st) in stages.iter().enumerate().skip(1) {
                            acc += st.codebook[idx[s_i * grid.grid_cols + bc] as usize * d + off];
                        }
                        *o = T::from_f32(acc * s);
                    }
                }
            }
        }
    };
    if !head.is_empty() {
        work(row_begin, head);
    }
    let start = row_begin + lead;
    crate::par::for_each_chunk_mut(tail, bh * cols, |ci, chunk| work(start + ci * bh, chunk));
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        None => Ok(()),
        Some((stage, block, value)) => Err(LgnError::tensor_format(
            tensor,
            format!("stages[{stage}].indices"),
            format!(
                "index {value} at block {block} is out of range for codebook of k={}",
                stages[stage].k
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::{extract, BlockShape};

    #[test]
    fn decodes_identity_codebook_and_row_ranges() {
        // Each block is its own codeword: decoding must reproduce the matrix exactly.
        let (rows, cols) = (7usize, 9usize);
        let x: Vec<f32> = (0..rows * cols).map(|v| v as f32 * 0.5 - 3.0).collect();
        let g = Grid::new(&[rows, cols], BlockShape::new(2, 4).unwrap()).unwrap();
        let mut cb = vec![0f32; g.n_blocks() * 8];
        extract(&x, &g, None, &mut cb);
        let idx: Vec<u32> = (0..g.n_blocks() as u32).collect();
        let bits = bitpack::bits_for_k(g.n_blocks());
        let packed = bitpack::pack(&idx, bits).unwrap();
        let st = [StageParts {
            codebook: &cb,
            k: g.n_blocks(),
            bits,
            packed: &packed,
        }];
        let mut y = vec![0f32; rows * cols];
        decode_rows("t", &g, &st, &[], 0, rows, &mut y).unwrap();
        assert_eq!(x, y);
        for (b, e) in [(1, 4), (3, 7), (0, 1), (5, 5)] {
            let mut part = vec![0f32; (e - b) * cols];
            decode_rows("t", &g, &st, &[], b, e, &mut part).unwrap();
            assert_eq!(&part[..], &x[b * cols..e * cols]);
        }
        // Two stages and a scale: (c1 + c2) * s.
        let zeros = vec![0f32; g.n_blocks() * 8];
        let st2 = [
            st[0],
            StageParts {
                codebook: &zeros,
                ..st[0]
            },
        ];
        let scales: Vec<f32> = (0..rows).map(|r| r as f32).collect();
        decode_rows("t", &g, &st2, &scales, 0, rows, &mut y).unwrap();
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(y[r * cols + c], x[r * cols + c] * r as f32);
            }
        }
    }

    #[test]
    fn out_of_range_index_is_a_typed_error() {
        let g = Grid::new(&[2, 2], BlockShape::new(1, 1).unwrap()).unwrap();
        let cb = [0f32; 3];
        let packed = bitpack::pack(&[0, 1, 3, 2], 2).unwrap();
        let st = [StageParts {
            codebook: &cb,
            k: 3,
            bits: 2,
            packed: &packed,
        }];
        let mut y = [0f32; 4];
        let e = decode_rows("w", &g, &st, &[], 0, 2, &mut y)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tensor `w`") && e.contains("index 3 at block 2"),
            "{e}"
        );
    }
}
