//! Bit packing of codebook indices, any width from 1 to 16 bits.
//!
//! Bit order (normative, see `spec/lgn.md`): the packed bytes form one little-endian bit
//! stream. Bit `j` of the stream is bit `j % 8` (value `1 << (j % 8)`) of byte `j / 8`.
//! Index `i` occupies stream bits `i*b .. i*b + b`, least significant bit first. Equivalently,
//! read the bytes as one little-endian integer `S`; then `index[i] = (S >> (i*b)) & (2^b - 1)`.
//! Unused bits of the last byte are zero.

use crate::error::{LgnError, Result};

pub use crate::limits::{MAX_BITS, MIN_BITS};

/// Bits needed to store indices `0..k`: `ceil(log2(k))`, at least 1.
pub fn bits_for_k(k: usize) -> u32 {
    if k <= 2 {
        1
    } else {
        usize::BITS - (k - 1).leading_zeros()
    }
}

/// Bytes needed to pack `n` indices of `bits` bits, or `None` on overflow.
pub fn packed_len(n: usize, bits: u32) -> Option<usize> {
    n.checked_mul(bits as usize)?.checked_add(7).map(|b| b / 8)
}

fn check_bits(bits: u32) -> Result<()> {
    if (MIN_BITS..=MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(LgnError::invalid(
            "bits",
            format!("index width must be in {MIN_BITS}..={MAX_BITS}, got {bits}"),
        ))
    }
}

/// Packs `indices` (each `< 2^bits`) into `packed_len(indices.len(), bits)` bytes.
pub fn pack(indices: &[u32], bits: u32) -> Result<Vec<u8>> {
    check_bits(bits)?;
    let len = packed_len(indices.len(), bits)
        .ok_or_else(|| LgnError::invalid("indices", "too many indices"))?;
    let mut out = vec![0u8; len];
    let limit = 1u64 << bits;
    let mut acc: u64 = 0;
    let mut nacc: u32 = 0;
    let mut pos = 0usize;
    for (i, &ix) in indices.iter().enumerate() {
        if u64::from(ix) >= limit {
            return Err(LgnError::invalid(
                "indices",
                format!("index {ix} at position {i} does not fit in {bits} bits"),
            ));
        }
        acc |= u64::from(ix) << nacc;
        nacc += bits;
        while nacc >= 8 {
            out[pos] = acc as u8;
            pos += 1;
            acc >>= 8;
            nacc -= 8;
        }
    }
    if nacc > 0 {
        out[pos] = acc as u8;
    }
    Ok(out)
}

/// Reads 4 bytes little endian from `b[at..]`, treating bytes past the end as zero.
#[inline(always)]
fn read_u32_padded(b: &[u8], at: usize) -> u32 {
    if let Some(s) = b.get(at..at + 4) {
        u32::from_le_bytes([s[0], s[1], s[2], s[3]])
    } else {
        let mut w = [0u8; 4];
        for (k, x) in w.iter_mut().enumerate() {
            *x = b.get(at + k).copied().unwrap_or(0);
        }
        u32::from_le_bytes(w)
    }
}

/// Unpacks indices `start .. start + out.len()` from `packed` into `out`.
///
/// The caller guarantees `packed` holds at least `packed_len(start + out.len(), bits)` bytes
/// and `bits` is in `1..=16` (the reader validates both before decoding).
pub fn unpack_range(packed: &[u8], bits: u32, start: usize, out: &mut [u32]) {
    debug_assert!((MIN_BITS..=MAX_BITS).contains(&bits));
    match bits {
        8 => {
            for (o, &b) in out.iter_mut().zip(&packed[start..]) {
                *o = u32::from(b);
            }
        }
        16 => {
            for (o, c) in out.iter_mut().zip(packed[start * 2..].chunks_exact(2)) {
                *o = u32::from(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        _ => {
            let mask = (1u32 << bits) - 1;
            let b = bits as usize;
            for (i, o) in out.iter_mut().enumerate() {
                let bit = (start + i) * b;
                *o = (read_u32_padded(packed, bit >> 3) >> (bit & 7)) & mask;
            }
        }
    }
}

/// Unpacks all `n` indices.
pub fn unpack(packed: &[u8], bits: u32, n: usize) -> Vec<u32> {
    let mut out = vec![0u32; n];
    unpack_range(packed, bits, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bits_for_k_is_ceil_log2() {
        assert_eq!(bits_for_k(2), 1);
        assert_eq!(bits_for_k(3), 2);
        assert_eq!(bits_for_k(4), 2);
        assert_eq!(bits_for_k(5), 3);
        assert_eq!(bits_for_k(256), 8);
        assert_eq!(bits_for_k(257), 9);
        assert_eq!(bits_for_k(65536), 16);
    }

    #[test]
    fn worked_example_from_the_spec() {
        // 3-bit indices [5, 1, 7, 2]: stream bits (LSB first) 101 100 111 010
        // -> byte0 = 0b11_001_101 = 0xCD, byte1 = 0b0000_0101 = 0x05 (value 2 straddles? no: 2 at bits 9..12)
        let packed = pack(&[5, 1, 7, 2], 3).unwrap();
        assert_eq!(packed, vec![0xCD, 0x05]);
        assert_eq!(unpack(&packed, 3, 4), vec![5, 1, 7, 2]);
    }

    #[test]
    fn rejects_bad_widths_and_values() {
        assert!(pack(&[1], 0).is_err());
        assert!(pack(&[1], 17).is_err());
        assert!(pack(&[4], 2).is_err());
    }

    proptest! {
        #[test]
        fn pack_unpack_inverse(bits in 1u32..=16, raw in proptest::collection::vec(any::<u32>(), 0..300), start in 0usize..50) {
            let mask = if bits == 32 { u32::MAX } else { (1u32 << bits) - 1 };
            let idx: Vec<u32> = raw.iter().map(|x| x & mask).collect();
            let packed = pack(&idx, bits).unwrap();
            prop_assert_eq!(packed.len(), packed_len(idx.len(), bits).unwrap());
            prop_assert_eq!(unpack(&packed, bits, idx.len()), idx.clone());
            let start = start.min(idx.len());
            let mut part = vec![0u32; idx.len() - start];
            unpack_range(&packed, bits, start, &mut part);
            prop_assert_eq!(&part[..], &idx[start..]);
        }
    }
}
