//! Scaling before clustering: each row (or the whole tensor) is divided by its largest
//! absolute value so that blocks of rows with very different magnitudes share one codebook.
//! After clustering, each scale is refit by least squares to the codewords chosen
//! ([`FittedScales::refit`]): the stored scale is then the best one for the stored indices.
//!
//! Scales are stored as F16 when every scale is zero or a normal F16 number (exactly
//! representable after rounding), otherwise as F32. The clustering sees `x * (1 / s)` with `s`
//! the *stored* (rounded) scale, and decoding computes `s * codeword`, so storage rounding
//! costs no accuracy.

use crate::dtype::Dtype;
use crate::error::{LgnError, Result};
use crate::format::decode::ScaleView;
use half::f16;

/// How a clustered tensor is scaled before clustering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScaleMode {
    /// No scaling.
    None,
    /// One scale for the whole tensor.
    Tensor,
    /// One scale per row of the 2-D view (per output channel).
    Row,
}

impl ScaleMode {
    /// Parses `"none" | "tensor" | "row"`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(ScaleMode::None),
            "tensor" => Ok(ScaleMode::Tensor),
            "row" => Ok(ScaleMode::Row),
            _ => Err(LgnError::invalid(
                "scale",
                format!("expected \"none\", \"tensor\" or \"row\", got {s:?}"),
            )),
        }
    }

    /// The name used in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            ScaleMode::None => "none",
            ScaleMode::Tensor => "tensor",
            ScaleMode::Row => "row",
        }
    }
}

/// What the encoder divides each row (or the tensor) by before clustering. Files do not
/// record it: the stored scales are refit by least squares after clustering either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ScaleStat {
    /// The largest absolute value (every scaled value in `[-1, 1]`).
    #[default]
    AbsMax,
    /// The root mean square (every scaled row of unit energy; outliers stay large).
    Rms,
}

/// Parses the encoder's scale option: `"none" | "tensor" | "row" | "row-rms"` (`row-rms`:
/// row scales computed as RMS instead of largest absolute value, stored as mode `row`).
pub fn parse_option(s: &str) -> Result<(ScaleMode, ScaleStat)> {
    if s == "row-rms" {
        return Ok((ScaleMode::Row, ScaleStat::Rms));
    }
    match ScaleMode::parse(s) {
        Ok(mode) => Ok((mode, ScaleStat::AbsMax)),
        Err(_) => Err(LgnError::invalid(
            "scale",
            format!("expected \"none\", \"tensor\", \"row\" or \"row-rms\", got {s:?}"),
        )),
    }
}

/// The scales fitted to one tensor by the encoder: their mode, the values used (already
/// rounded to the storage type) and that type.
///
/// The mode is [`ScaleMode::Tensor`] or [`ScaleMode::Row`], never [`ScaleMode::None`] (a tensor
/// without scaling has no `FittedScales`). A single row's scale is also the whole tensor's, so
/// [`compute`] records row scales of a one-row tensor as mode `tensor`: that is what files have
/// always stored for them, and both decode the same.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedScales {
    /// `Tensor` (one value) or `Row` (one value per row of the 2-D view).
    pub mode: ScaleMode,
    /// One value per row (mode `row`) or a single value (mode `tensor`).
    pub values: Vec<f32>,
    /// `F16` or `F32`.
    pub dtype: Dtype,
}

impl FittedScales {
    /// The decoder's view of these scales (per-row scales from row 0).
    pub fn view(&self) -> ScaleView<'_> {
        ScaleView::new(self.mode, 0, &self.values)
    }
}

fn f16_exact_ok(v: f32) -> bool {
    v == 0.0 || (v >= f16::MIN_POSITIVE.to_f32() && v <= f16::MAX.to_f32())
}

/// Computes scales (per `stat`) of a `rows x cols` row-major matrix, or `None` for
/// [`ScaleMode::None`]. Row scales of a one-row matrix come back as mode `tensor` (see
/// [`FittedScales`]).
pub fn compute(
    x: &[f32],
    rows: usize,
    cols: usize,
    mode: ScaleMode,
    stat: ScaleStat,
) -> Option<FittedScales> {
    let of = |s: &[f32]| match stat {
        ScaleStat::AbsMax => s.iter().fold(0f32, |m, v| m.max(v.abs())),
        ScaleStat::Rms => {
            let sum: f64 = s.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            (sum / s.len().max(1) as f64).sqrt() as f32
        }
    };
    match mode {
        ScaleMode::None => None,
        ScaleMode::Tensor => Some(FittedScales::from_raw(ScaleMode::Tensor, vec![of(x)])),
        // One row: its scale is the tensor's (the same statistic over the same elements).
        ScaleMode::Row if rows == 1 => Some(FittedScales::from_raw(ScaleMode::Tensor, vec![of(x)])),
        ScaleMode::Row => {
            let raw = (0..rows)
                .map(|r| of(&x[r * cols..(r + 1) * cols]))
                .collect();
            Some(FittedScales::from_raw(ScaleMode::Row, raw))
        }
    }
}

impl FittedScales {
    /// Scales of `mode` (`Tensor`: one value; `Row`: one per row; never `None`, which debug
    /// builds check) to store for `raw`: F16 (rounded) when every value is zero or a normal
    /// F16 number, otherwise F32 as given.
    pub fn from_raw(mode: ScaleMode, raw: Vec<f32>) -> FittedScales {
        debug_assert!(mode != ScaleMode::None, "fitted scales have a mode");
        if raw.iter().all(|&v| f16_exact_ok(v)) {
            let values = raw.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
            FittedScales {
                mode,
                values,
                dtype: Dtype::F16,
            }
        } else {
            FittedScales {
                mode,
                values: raw,
                dtype: Dtype::F32,
            }
        }
    }

    /// Least-squares refit after clustering: `x` is the tensor (`rows x cols`), `q` its
    /// reconstruction *before* scaling (the sum of its codewords). Each scale becomes the `s`
    /// minimising `|x_r - s q_r|^2` over its row (or the whole tensor), `<x_r, q_r> / <q_r, q_r>`,
    /// which never increases the error of the stored scale. A scale is kept as it was where
    /// that value is not a finite positive number (a zero row, a reconstruction orthogonal to
    /// the data).
    pub fn refit(&self, x: &[f32], q: &[f32], rows: usize) -> FittedScales {
        // Elements each scale covers.
        let per = match self.mode {
            ScaleMode::Row => x.len() / rows.max(1),
            ScaleMode::Tensor | ScaleMode::None => x.len(),
        };
        let raw = self
            .values
            .iter()
            .enumerate()
            .map(|(i, &old)| {
                let (xs, qs) = (&x[i * per..(i + 1) * per], &q[i * per..(i + 1) * per]);
                let (mut xq, mut qq) = (0f64, 0f64);
                for (&a, &b) in xs.iter().zip(qs) {
                    xq += f64::from(a) * f64::from(b);
                    qq += f64::from(b) * f64::from(b);
                }
                let s = (xq / qq) as f32;
                if qq > 0.0 && s.is_finite() && s > 0.0 {
                    s
                } else {
                    old
                }
            })
            .collect();
        FittedScales::from_raw(self.mode, raw)
    }

    /// The multiplier applied to row `r` before clustering (`1/s`, or 0 for a zero scale).
    pub fn row_multipliers(&self, rows: usize) -> Vec<f32> {
        let inv = |s: f32| if s == 0.0 { 0.0 } else { 1.0 / s };
        match self.mode {
            ScaleMode::Row => self.values.iter().map(|&s| inv(s)).collect(),
            ScaleMode::Tensor | ScaleMode::None => vec![inv(self.values[0]); rows],
        }
    }

    /// The stored bytes (little endian, `dtype`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.values.len() * self.dtype.size()];
        for (v, o) in self
            .values
            .iter()
            .zip(out.chunks_exact_mut(self.dtype.size()))
        {
            crate::dtype::write_float(self.dtype, *v, o);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_scales_are_f16_absmax() {
        let x = [1.0, -3.0, 0.5, 0.25, 0.0, 0.0];
        let s = compute(&x, 3, 2, ScaleMode::Row, ScaleStat::AbsMax).unwrap();
        assert_eq!(s.dtype, Dtype::F16);
        assert_eq!(s.values, vec![3.0, 0.5, 0.0]);
        assert_eq!(s.row_multipliers(3), vec![1.0 / 3.0, 2.0, 0.0]);
        assert_eq!(s.to_bytes().len(), 6);
    }

    #[test]
    fn out_of_f16_range_falls_back_to_f32() {
        let s = compute(&[1e-6, 1e5], 2, 1, ScaleMode::Row, ScaleStat::AbsMax).unwrap();
        assert_eq!(s.dtype, Dtype::F32);
        assert_eq!(s.values, vec![1e-6, 1e5]);
        let t = compute(&[2.0, -4.0], 2, 1, ScaleMode::Tensor, ScaleStat::AbsMax).unwrap();
        assert_eq!(t.values, vec![4.0]);
        assert!(compute(&[1.0], 1, 1, ScaleMode::None, ScaleStat::AbsMax).is_none());
        assert!(ScaleMode::parse("rows").is_err());
    }

    #[test]
    fn rms_statistic_and_option_names() {
        let x = [3.0, -4.0, 0.0, 0.0];
        let s = compute(&x, 2, 2, ScaleMode::Row, ScaleStat::Rms).unwrap();
        assert_eq!(s.values, vec![f16::from_f32(12.5f32.sqrt()).to_f32(), 0.0]);
        assert_eq!(
            parse_option("row-rms").unwrap(),
            (ScaleMode::Row, ScaleStat::Rms)
        );
        assert_eq!(
            parse_option("tensor").unwrap(),
            (ScaleMode::Tensor, ScaleStat::AbsMax)
        );
        let e = parse_option("col").unwrap_err().to_string();
        assert!(e.contains("row-rms") && e.contains("\"col\""), "{e}");
        // A manifest never names the statistic: "row-rms" is not a scale mode.
        assert!(ScaleMode::parse("row-rms").is_err());
    }

    #[test]
    fn refit_is_least_squares_and_keeps_degenerate_rows() {
        let old = FittedScales::from_raw(ScaleMode::Row, vec![1.0, 1.0, 3.0, 5.0]);
        // Row 0: x = 2q exactly; row 1: q is zero; row 2: q opposes x; row 3: noisy.
        let x = [2.0, 4.0, 1.0, 1.0, 1.0, 2.0, 3.0, 1.0];
        let q = [1.0, 2.0, 0.0, 0.0, -1.0, -1.0, 1.0, 0.0];
        let s = old.refit(&x, &q, 4);
        assert_eq!(s.dtype, Dtype::F16);
        assert_eq!(s.values, vec![2.0, 1.0, 3.0, 3.0]);
        let t = FittedScales::from_raw(ScaleMode::Tensor, vec![1.0]).refit(&x[..4], &q[..4], 2);
        assert_eq!(t.values, vec![2.0]);
    }

    #[test]
    fn scales_carry_their_mode() {
        let x = [1.0, -3.0, 0.5, 0.25];
        let r = compute(&x, 2, 2, ScaleMode::Row, ScaleStat::AbsMax).unwrap();
        assert_eq!(r.mode, ScaleMode::Row);
        let t = compute(&x, 2, 2, ScaleMode::Tensor, ScaleStat::AbsMax).unwrap();
        assert_eq!((t.mode, t.values.clone()), (ScaleMode::Tensor, vec![3.0]));
        assert_eq!(t.row_multipliers(2), vec![1.0 / 3.0; 2]);
        // A one-row matrix: its row scale is the tensor scale, recorded as such.
        let one = compute(&x, 1, 4, ScaleMode::Row, ScaleStat::Rms).unwrap();
        let whole = compute(&x, 1, 4, ScaleMode::Tensor, ScaleStat::Rms).unwrap();
        assert_eq!(one, whole);
        assert_eq!(one.mode, ScaleMode::Tensor);
        // The mode survives a refit, and a refit of tensor scales fits the whole tensor.
        let q = [0.5, -1.5, 0.25, 0.125];
        let refit = t.refit(&x, &q, 2);
        assert_eq!((refit.mode, refit.values), (ScaleMode::Tensor, vec![2.0]));
        // Zero rows: row scales stay row scales, with no value.
        let empty = compute(&[], 0, 4, ScaleMode::Row, ScaleStat::AbsMax).unwrap();
        assert_eq!((empty.mode, empty.values.len()), (ScaleMode::Row, 0));
    }

    #[test]
    fn refit_never_increases_the_error() {
        let err = |x: &[f32], q: &[f32], s: &[f32]| -> f64 {
            x.iter()
                .zip(q)
                .enumerate()
                .map(|(i, (&a, &b))| (f64::from(a) - f64::from(s[i / 8] * b)).powi(2))
                .sum()
        };
        let mut state = 7u32;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let x: Vec<f32> = (0..64).map(|_| next()).collect();
        let q: Vec<f32> = x.iter().map(|&v| 0.7 * v + 0.1 * next()).collect();
        let old = compute(&x, 8, 8, ScaleMode::Row, ScaleStat::AbsMax).unwrap();
        let qn: Vec<f32> = q
            .iter()
            .enumerate()
            .map(|(i, &v)| v / old.values[i / 8])
            .collect();
        let new = old.refit(&x, &qn, 8);
        assert!(err(&x, &qn, &new.values) < err(&x, &qn, &old.values));
    }
}
