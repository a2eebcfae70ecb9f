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
use crate::scale::ScaleMode;

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

/// An `f32` output that holds values rounded through binary16 (`decode_f32_into` of an F16
/// tensor gives the tensor's own values, widened exactly).
#[derive(Debug, Clone, Copy, Default)]
#[repr(transparent)]
pub(crate) struct F16Widened(pub f32);
// SAFETY: a transparent wrapper of `f32`, which is `Zeroable` and `Pod`.
unsafe impl bytemuck::Zeroable for F16Widened {}
// SAFETY: as above.
unsafe impl bytemuck::Pod for F16Widened {}
impl OutElem for F16Widened {
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        F16Widened(f16::from_f32(v).to_f32())
    }
}

/// An `f32` output that holds values rounded through bfloat16.
#[derive(Debug, Clone, Copy, Default)]
#[repr(transparent)]
pub(crate) struct Bf16Widened(pub f32);
// SAFETY: a transparent wrapper of `f32`, which is `Zeroable` and `Pod`.
unsafe impl bytemuck::Zeroable for Bf16Widened {}
// SAFETY: as above.
unsafe impl bytemuck::Pod for Bf16Widened {}
impl OutElem for Bf16Widened {
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        Bf16Widened(bf16::from_f32(v).to_f32())
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
    /// Packed indices (at least `packed_len(n_blocks, bits)` bytes; with
    /// [`decode_rows_window`], the index bytes from `first_block` on).
    pub packed: &'a [u8],
}

/// The decoder's view of a clustered tensor's scales, as [`decode_rows_window`] takes them:
/// the variant is the scale mode.
#[derive(Debug, Clone, Copy)]
pub enum ScaleView<'a> {
    /// No scaling.
    None,
    /// One scale for the whole tensor.
    Tensor(f32),
    /// Per-row scales: `values[i]` is the scale of view row `first_row + i`.
    Rows {
        /// The view row of `values[0]`.
        first_row: usize,
        /// The scales.
        values: &'a [f32],
    },
}

impl<'a> ScaleView<'a> {
    /// The view of scales stored with `mode`: `values` are the scales of view rows
    /// `first_row..` for [`ScaleMode::Row`], the one scale (at `values[0]`) for
    /// [`ScaleMode::Tensor`], and unused for [`ScaleMode::None`].
    ///
    /// # Panics
    /// If `mode` is [`ScaleMode::Tensor`] and `values` is empty.
    pub fn new(mode: ScaleMode, first_row: usize, values: &'a [f32]) -> ScaleView<'a> {
        match mode {
            ScaleMode::None => ScaleView::None,
            ScaleMode::Tensor => ScaleView::Tensor(values[0]),
            ScaleMode::Row => ScaleView::Rows { first_row, values },
        }
    }

    /// The scale of view row `r`.
    #[inline(always)]
    fn of_row(&self, r: usize) -> f32 {
        match *self {
            ScaleView::None => 1.0,
            ScaleView::Tensor(s) => s,
            ScaleView::Rows { first_row, values } => values[r - first_row],
        }
    }
}

/// Outputs of fewer elements (times stages) than this are decoded on the calling thread.
const SEQUENTIAL_BELOW: usize = 1 << 17;

/// Decodes rows `row_begin..row_end` of a clustered tensor into `out`
/// (`(row_end - row_begin) * grid.cols` elements), with `scales` as the tensor stores them
/// (per-row scales start at row 0). `tensor` names the tensor in errors.
///
/// Indices `>= k` are reported as a format error naming the tensor, stage and block.
pub fn decode_rows<T: OutElem>(
    tensor: &str,
    grid: &Grid,
    stages: &[StageParts<'_>],
    scales: ScaleView<'_>,
    row_begin: usize,
    row_end: usize,
    out: &mut [T],
) -> Result<()> {
    decode_rows_window(tensor, grid, stages, 0, scales, row_begin..row_end, out)
}

/// Like [`decode_rows`], from a window of the stored data: every stage's `packed` holds the
/// index bytes from block `first_block` on (`first_block * bits` must be a multiple of 8, and
/// the bytes must reach the last block of `rows`), and per-row scales may start at any row.
///
/// # Panics
/// If `rows` is not inside `0..grid.rows`, `out` does not hold `rows.len() * grid.cols`
/// elements, the window does not start on a byte, or per-row scales do not cover `rows`.
pub fn decode_rows_window<T: OutElem>(
    tensor: &str,
    grid: &Grid,
    stages: &[StageParts<'_>],
    first_block: usize,
    scales: ScaleView<'_>,
    rows: std::ops::Range<usize>,
    out: &mut [T],
) -> Result<()> {
    let (row_begin, row_end) = (rows.start, rows.end);
    let (bh, bw) = (grid.block.bh, grid.block.bw);
    let d = bh * bw;
    let cols = grid.cols;
    let gc = grid.grid_cols;
    assert!(row_begin <= row_end && row_end <= grid.rows);
    assert_eq!(out.len(), (row_end - row_begin) * cols);
    if out.is_empty() {
        return Ok(());
    }
    assert!(
        !stages.is_empty(),
        "a clustered tensor has at least one stage"
    );
    if let ScaleView::Rows { first_row, values } = scales {
        assert!(first_row <= row_begin && row_end - first_row <= values.len());
    }
    for st in stages {
        assert_eq!((first_block * st.bits as usize) % 8, 0);
        debug_assert_eq!(st.codebook.len(), st.k * d);
        let last = (row_end.div_ceil(bh) * gc).min(grid.n_blocks());
        debug_assert!(
            first_block <= (row_begin / bh) * gc
                && st.packed.len() * 8 >= (last - first_block) * st.bits as usize
        );
    }
    let first_error: Mutex<Option<(usize, usize, u32)>> = Mutex::new(None);
    // Chunks are whole block rows of the output, aligned to the tensor's block grid. When the
    // range starts inside a block row the first chunk is shorter.
    let lead = (bh - row_begin % bh) % bh;
    let lead = lead.min(row_end - row_begin);
    let (head, tail) = out.split_at_mut(lead * cols);
    let work = |first_row: usize, chunk: &mut [T]| {
        let br = first_row / bh;
        let mut idx = vec![0u32; gc * stages.len()];
        for (s, st) in stages.iter().enumerate() {
            let dst = &mut idx[s * gc..(s + 1) * gc];
            bitpack::unpack_range(st.packed, st.bits, br * gc - first_block, dst);
            let max = dst.iter().copied().max().unwrap_or(0);
            if max as usize >= st.k {
                let pos = dst.iter().position(|&v| v as usize >= st.k).unwrap_or(0);
                let mut e = first_error.lock().unwrap_or_else(|p| p.into_inner());
                if e.is_none() {
                    *e = Some((s, br * gc + pos, max));
                }
                return;
            }
        }
        for (ri, row) in chunk.chunks_mut(cols).enumerate() {
            let r = first_row + ri;
            let i = r % bh;
            let s = scales.of_row(r);
            match bw {
                1 => write_row::<T, 1>(row, stages, &idx, gc, d, i, s),
                2 => write_row::<T, 2>(row, stages, &idx, gc, d, i, s),
                4 => write_row::<T, 4>(row, stages, &idx, gc, d, i, s),
                8 => write_row::<T, 8>(row, stages, &idx, gc, d, i, s),
                _ => write_row_any(row, stages, &idx, gc, bw, d, i, s),
            }
        }
    };
    if !head.is_empty() {
        work(row_begin, head);
    }
    let start = row_begin + lead;
    if tail.len() * stages.len() < SEQUENTIAL_BELOW {
        // Small tensors: waking the thread pool costs more than the work.
        for (ci, chunk) in tail.chunks_mut(bh * cols).enumerate() {
            work(start + ci * bh, chunk);
        }
    } else {
        crate::par::for_each_chunk_mut(tail, bh * cols, |ci, chunk| work(start + ci * bh, chunk));
    }
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

/// Checks the outlier positions of a clustered tensor of `numel` elements (format 2.0): strictly
/// increasing and each `< numel`. `tensor` names the tensor in errors.
pub fn check_outliers(tensor: &str, numel: usize, indices: &[u32]) -> Result<()> {
    let field = "outliers.indices";
    for (m, &p) in indices.iter().enumerate() {
        if p as usize >= numel {
            return Err(LgnError::tensor_format(
                tensor,
                field,
                format!("outlier {m}: position {p} is out of range for {numel} elements"),
            ));
        }
        if m > 0 && p <= indices[m - 1] {
            return Err(LgnError::tensor_format(
                tensor,
                field,
                format!(
                    "outlier {m}: position {p} follows {}: positions must be strictly increasing",
                    indices[m - 1]
                ),
            ));
        }
    }
    Ok(())
}

/// Writes the outliers whose positions fall in view rows `rows` into `out`, which holds those
/// rows (`rows.len() * cols` elements): `out[p - rows.start * cols] = values[m]`, converted to
/// `T` like every decoded value. `indices` must be sorted (see [`check_outliers`]).
pub fn apply_outliers<T: OutElem>(
    indices: &[u32],
    values: &[f32],
    cols: usize,
    rows: std::ops::Range<usize>,
    out: &mut [T],
) {
    debug_assert_eq!(indices.len(), values.len());
    let (lo, hi) = (rows.start * cols, rows.end * cols);
    let first = indices.partition_point(|&p| (p as usize) < lo);
    let last = indices.partition_point(|&p| (p as usize) < hi);
    for (&p, &v) in indices[first..last].iter().zip(&values[first..last]) {
        out[p as usize - lo] = T::from_f32(v);
    }
}

/// One output row (row `i` inside its block row) for blocks `BW` wide: the full blocks with a
/// fixed-size inner loop, then the partial block at the right edge.
#[inline(always)]
fn write_row<T: OutElem, const BW: usize>(
    row: &mut [T],
    stages: &[StageParts<'_>],
    idx: &[u32],
    gc: usize,
    d: usize,
    i: usize,
    s: f32,
) {
    let full = row.len() / BW;
    let (body, rest) = row.split_at_mut(full * BW);
    let off = i * BW;
    if let [st] = stages {
        let cb = st.codebook;
        for (seg, &ix) in body.chunks_exact_mut(BW).zip(&idx[..full]) {
            let at = ix as usize * d + off;
            let cw: &[f32; BW] = cb[at..at + BW].try_into().expect("BW values");
            for j in 0..BW {
                seg[j] = T::from_f32(cw[j] * s);
            }
        }
    } else {
        for (bc, seg) in body.chunks_exact_mut(BW).enumerate() {
            let at = idx[bc] as usize * d + off;
            let mut acc: [f32; BW] = stages[0].codebook[at..at + BW]
                .try_into()
                .expect("BW values");
            for (si, st) in stages.iter().enumerate().skip(1) {
                let at = idx[si * gc + bc] as usize * d + off;
                let cw: &[f32; BW] = st.codebook[at..at + BW].try_into().expect("BW values");
                for j in 0..BW {
                    acc[j] += cw[j];
                }
            }
            for j in 0..BW {
                seg[j] = T::from_f32(acc[j] * s);
            }
        }
    }
    if !rest.is_empty() {
        write_segment(rest, stages, idx, gc, full, d, off, s);
    }
}

/// One output row for any block width.
#[allow(clippy::too_many_arguments)]
fn write_row_any<T: OutElem>(
    row: &mut [T],
    stages: &[StageParts<'_>],
    idx: &[u32],
    gc: usize,
    bw: usize,
    d: usize,
    i: usize,
    s: f32,
) {
    for (bc, seg) in row.chunks_mut(bw).enumerate() {
        write_segment(seg, stages, idx, gc, bc, d, i * bw, s);
    }
}

/// The part of block column `bc` in one output row (`seg.len() <= bw`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn write_segment<T: OutElem>(
    seg: &mut [T],
    stages: &[StageParts<'_>],
    idx: &[u32],
    gc: usize,
    bc: usize,
    d: usize,
    off: usize,
    s: f32,
) {
    for (j, o) in seg.iter_mut().enumerate() {
        let mut acc = stages[0].codebook[idx[bc] as usize * d + off + j];
        for (si, st) in stages.iter().enumerate().skip(1) {
            acc += st.codebook[idx[si * gc + bc] as usize * d + off + j];
        }
        *o = T::from_f32(acc * s);
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
        decode_rows("t", &g, &st, ScaleView::None, 0, rows, &mut y).unwrap();
        assert_eq!(x, y);
        for (b, e) in [(1, 4), (3, 7), (0, 1), (5, 5)] {
            let mut part = vec![0f32; (e - b) * cols];
            decode_rows("t", &g, &st, ScaleView::None, b, e, &mut part).unwrap();
            assert_eq!(&part[..], &x[b * cols..e * cols]);
        }
        // From a window of the index bytes starting at block 8 (a whole byte for any width).
        let window = StageParts {
            packed: &packed[8 * bits as usize / 8..],
            ..st[0]
        };
        // The first block row that starts at or after block 8.
        let first_row = 8usize.div_ceil(g.grid_cols) * 2;
        for (b, e) in [(first_row, rows), (first_row + 1, rows)] {
            let mut part = vec![0f32; (e - b) * cols];
            decode_rows_window("t", &g, &[window], 8, ScaleView::None, b..e, &mut part).unwrap();
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
        decode_rows(
            "t",
            &g,
            &st2,
            ScaleView::new(ScaleMode::Row, 0, &scales),
            0,
            rows,
            &mut y,
        )
        .unwrap();
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
        let e = decode_rows("w", &g, &st, ScaleView::None, 0, 2, &mut y)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tensor `w`") && e.contains("index 3 at block 2"),
            "{e}"
        );
    }
}
