//! Element types, named as safetensors names them, and the float conversions clustering needs.

use crate::error::{LgnError, Result};
use half::{bf16, f16};

/// The element type of a stored or original tensor (safetensors' dtype names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    U16,
    I16,
    F16,
    BF16,
    U32,
    I32,
    F32,
    U64,
    I64,
    F64,
}

impl Dtype {
    /// Every dtype this crate knows, in safetensors' order.
    pub const ALL: [Dtype; 13] = [
        Dtype::Bool,
        Dtype::U8,
        Dtype::I8,
        Dtype::U16,
        Dtype::I16,
        Dtype::F16,
        Dtype::BF16,
        Dtype::U32,
        Dtype::I32,
        Dtype::F32,
        Dtype::U64,
        Dtype::I64,
        Dtype::F64,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }

    /// The safetensors name (`"F32"`, `"BF16"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::U16 => "U16",
            Dtype::I16 => "I16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::U32 => "U32",
            Dtype::I32 => "I32",
            Dtype::F32 => "F32",
            Dtype::U64 => "U64",
            Dtype::I64 => "I64",
            Dtype::F64 => "F64",
        }
    }

    /// Parses a safetensors dtype name; `what` names the field for the error.
    pub fn parse(s: &str) -> Result<Dtype> {
        Dtype::ALL
            .iter()
            .copied()
            .find(|d| d.name() == s)
            .ok_or_else(|| LgnError::invalid("dtype", format!("unknown dtype `{s}`")))
    }

    /// True for the float types that can be clustered (F32, F16, BF16).
    pub fn is_clusterable(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F16 | Dtype::BF16)
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Reads little-endian elements of a float dtype (F32/F16/BF16) into f32 (exact widening).
/// `out.len()` elements are read from the front of `bytes`.
pub(crate) fn float_bytes_to_f32(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Dtype::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        other => unreachable!("float_bytes_to_f32 called with non-float dtype {other}"),
    }
}

/// Writes one f32 as `dtype` (F32/F16/BF16, round to nearest even) into `out` (little endian).
#[inline(always)]
pub(crate) fn write_float(dtype: Dtype, v: f32, out: &mut [u8]) {
    match dtype {
        Dtype::F32 => out[..4].copy_from_slice(&v.to_le_bytes()),
        Dtype::F16 => out[..2].copy_from_slice(&f16::from_f32(v).to_le_bytes()),
        Dtype::BF16 => out[..2].copy_from_slice(&bf16::from_f32(v).to_le_bytes()),
        other => unreachable!("write_float called with non-float dtype {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::parse(d.name()).unwrap(), d);
        }
        assert!(Dtype::parse("F8_E4M3").is_err());
    }

    #[test]
    fn float_conversions_round_to_nearest_even() {
        let mut b = [0u8; 2];
        write_float(Dtype::BF16, 1.0 + 1.0 / 256.0, &mut b); // exactly halfway: ties to even (1.0)
        assert_eq!(bf16::from_le_bytes(b).to_f32(), 1.0);
        let mut o = [0f32; 1];
        float_bytes_to_f32(Dtype::F16, &f16::from_f32(0.5).to_le_bytes(), &mut o);
        assert_eq!(o[0], 0.5);
    }
}
