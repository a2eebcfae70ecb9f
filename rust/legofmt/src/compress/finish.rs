//! Step 5, finish: each clustered tensor's scales are refit by least squares to the codewords
//! chosen, then the tensor is decoded exactly as a reader will and its error measured.

use std::borrow::Cow;

use super::outliers::Outliers;
use super::pack::{Codebook, PackedTensor};
use super::{report_progress, to_f32, Event, ProgressFn, TensorInput};
use crate::blocks::Grid;
use crate::dtype::Dtype;
use crate::error::Result;
use crate::format::decode::{apply_outliers, decode_rows, ScaleView, StageParts};
use crate::scale::FittedScales;

/// A clustered tensor ready to lay out.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FinishedTensor {
    /// The packed tensor, its scales refit.
    pub packed: PackedTensor,
    /// `sum((x - x')^2) / sum(x^2)` of the decoded tensor.
    pub rel_mse: f64,
    /// Largest absolute error of the decoded tensor.
    pub max_abs_err: f64,
}

/// Finishes every packed tensor (`packed[i]` is input `i`'s, `None` for a raw one), in input
/// order. Emits `measure` (done: the input's index) before each.
pub(super) fn finish_all(
    inputs: &[TensorInput<'_>],
    codebooks: &[Codebook],
    packed: Vec<Option<PackedTensor>>,
    progress: ProgressFn<'_>,
) -> Result<Vec<Option<FinishedTensor>>> {
    packed
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            p.map(|p| {
                report_progress(
                    progress,
                    &Event {
                        phase: "measure".into(),
                        done: i,
                        total: inputs.len(),
                    },
                )?;
                finish(&inputs[i], codebooks, p)
            })
            .transpose()
        })
        .collect()
}

/// Refits `p`'s scales and measures the error of tensor `t` as it will be decoded.
pub(super) fn finish(
    t: &TensorInput<'_>,
    codebooks: &[Codebook],
    mut p: PackedTensor,
) -> Result<FinishedTensor> {
    let parts = stage_parts(codebooks, &p.codebooks, &p.indices);
    let x = to_f32(t);
    if let Some(s) = &p.scales {
        let refit = refit_scales(t, &x, &p.grid, &parts, s, &p.outliers)?;
        p.scales = Some(refit);
    }
    let scales = p
        .scales
        .as_ref()
        .map_or(ScaleView::None, FittedScales::view);
    let (rel_mse, max_abs_err) = measure(t, &x, &p.grid, &parts, scales, &p.outliers)?;
    drop(parts);
    Ok(FinishedTensor {
        packed: p,
        rel_mse,
        max_abs_err,
    })
}

/// What decoding needs of each stage of a tensor: its codebook (`codebooks[ids[s]]`) and its
/// packed indices (`indices[s]`).
pub(super) fn stage_parts<'c>(
    codebooks: &'c [Codebook],
    ids: &[usize],
    indices: &'c [Vec<u8>],
) -> Vec<StageParts<'c>> {
    ids.iter()
        .zip(indices)
        .map(|(&id, packed)| StageParts {
            codebook: &codebooks[id].centroids,
            k: codebooks[id].k,
            bits: codebooks[id].bits,
            packed,
        })
        .collect()
}

/// The least-squares refit of `scales` (see [`FittedScales::refit`]) to the tensor's
/// unscaled reconstruction (the sum of its codewords).
fn refit_scales(
    t: &TensorInput<'_>,
    x: &[f32],
    grid: &Grid,
    parts: &[StageParts<'_>],
    scales: &FittedScales,
    outliers: &Outliers,
) -> Result<FittedScales> {
    let mut q = vec![0f32; x.len()];
    decode_rows(&t.name, grid, parts, ScaleView::None, 0, grid.rows, &mut q)?;
    // Outliers are overwritten when decoding: they take no part in the fit.
    let mut xz = Cow::Borrowed(x);
    if !outliers.is_empty() {
        outliers.zero_in(xz.to_mut());
        outliers.zero_in(&mut q);
    }
    Ok(scales.refit(&xz, &q, grid.rows))
}

/// Decodes a tensor exactly as a reader will and compares it with the original (`x`, the
/// tensor's values as f32): `(relative MSE, largest absolute error)`.
pub(super) fn measure(
    t: &TensorInput<'_>,
    x: &[f32],
    grid: &Grid,
    parts: &[StageParts<'_>],
    scales: ScaleView<'_>,
    outliers: &Outliers,
) -> Result<(f64, f64)> {
    let (opos, oval) = (&outliers.positions[..], &outliers.values[..]);
    let mut y = vec![0f32; x.len()];
    match t.dtype {
        Dtype::F32 => {
            decode_rows(&t.name, grid, parts, scales, 0, grid.rows, &mut y)?;
            apply_outliers(opos, oval, grid.cols, 0..grid.rows, &mut y);
        }
        Dtype::F16 => {
            let mut h = vec![half::f16::ZERO; x.len()];
            decode_rows(&t.name, grid, parts, scales, 0, grid.rows, &mut h)?;
            apply_outliers(opos, oval, grid.cols, 0..grid.rows, &mut h);
            y.iter_mut().zip(&h).for_each(|(o, v)| *o = v.to_f32());
        }
        Dtype::BF16 => {
            let mut h = vec![half::bf16::ZERO; x.len()];
            decode_rows(&t.name, grid, parts, scales, 0, grid.rows, &mut h)?;
            apply_outliers(opos, oval, grid.cols, 0..grid.rows, &mut h);
            y.iter_mut().zip(&h).for_each(|(o, v)| *o = v.to_f32());
        }
        other => unreachable!("validated clusterable dtype, got {other}"),
    }
    let (mut num, mut den, mut max) = (0f64, 0f64, 0f64);
    for (&a, &b) in x.iter().zip(&y) {
        let e = f64::from(a) - f64::from(b);
        num += e * e;
        den += f64::from(a) * f64::from(a);
        max = max.max(e.abs());
    }
    Ok((
        if den > 0.0 {
            num / den
        } else if num > 0.0 {
            f64::INFINITY
        } else {
            0.0
        },
        max,
    ))
}
