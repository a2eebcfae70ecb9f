//! Scaling before clustering: each row (or the whole tensor) is divided by its largest
//! absolute value so that blocks of rows with very different magnitudes share one codebook.
//!
//! Scales are stored as F16 when every scale is zero or a normal F16 number (exactly
//! representable after rounding), otherwise as F32. The clustering sees `x * (1 / s)` with `s`
//! the *stored* (rounded) scale, and decoding computes `s * codeword`, so storage rounding
//! costs no accuracy.

use crate::dtype::Dtype;
use crate::error::{LgnError, Result};
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

/// Scales of one tensor: the values used (already rounded to the storage type) and that type.
#[derive(Debug, Clone, PartialEq)]
pub struct Scales {
    /// One value per row (mode `row`) or a single value (mode `tensor`).
    pub values: Vec<f32>,
    /// `F16` or `F32`.
    pub dtype: Dtype,
}

fn f16_exact_ok(v: f32) -> bool {
    v == 0.0 || (v >= f16::MIN_POSITIVE.to_f32() && v <= f16::MAX.to_f32())
}

/// Computes scales of a `rows x cols` row-major matrix, or `None` for [`ScaleMode::None`].
pub fn compute(x: &[f32], rows: usize, cols: usize, mode: ScaleMode) -> Option<Scales> {
    let absmax = |s: &[f32]| s.iter().fold(0f32, |m, v| m.max(v.abs()));
    let raw: Vec<f32> = match mode {
        ScaleMode::None => return None,
        ScaleMode::Tensor => vec![absmax(x)],
        ScaleMode::Row => (0..rows)
            .map(|r| absmax(&x[r * cols..(r + 1) * cols]))
            .collect(),
    };
    if raw.iter().all(|&v| f16_exact_ok(v)) {
        let values = raw.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
        Some(Scales {
            values,
            dtype: Dtype::F16,
        })
    } else {
        Some(Scales {
            values: raw,
            dtype: Dtype::F32,
        })
    }
}

impl Scales {
    /// The multiplier applied to row `r` before clustering (`1/s`, or 0 for a zero scale).
    pub fn row_multipliers(&self, rows: usize) -> Vec<f32> {
        let inv = |s: f32| if s == 0.0 { 0.0 } else { 1.0 / s };
        if self.values.len() == 1 {
            vec![inv(self.values[0]); rows]
        } else {
            self.values.iter().map(|&s| inv(s)).collect()
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
        let s = compute(&x, 3, 2, ScaleMode::Row).unwrap();
        assert_eq!(s.dtype, Dtype::F16);
        assert_eq!(s.values, vec![3.0, 0.5, 0.0]);
        assert_eq!(s.row_multipliers(3), vec![1.0 / 3.0, 2.0, 0.0]);
        assert_eq!(s.to_bytes().len(), 6);
    }

    #[test]
    fn out_of_f16_range_falls_back_to_f32() {
        let s = compute(&[1e-6, 1e5], 2, 1, ScaleMode::Row).unwrap();
        assert_eq!(s.dtype, Dtype::F32);
        assert_eq!(s.values, vec![1e-6, 1e5]);
        let t = compute(&[2.0, -4.0], 2, 1, ScaleMode::Tensor).unwrap();
        assert_eq!(t.values, vec![4.0]);
        assert!(compute(&[1.0], 1, 1, ScaleMode::None).is_none());
        assert!(ScaleMode::parse("rows").is_err());
    }
}
