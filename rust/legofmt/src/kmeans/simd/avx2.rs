//! The AVX2 copies of the kernels (x86-64, selected at run time by [`Isa::detect`]): the same
//! operations as `portable.rs`, eight lanes per instruction, and the chunk driver compiled
//! with AVX2 around them.
//!
//! [`Isa::detect`]: super::Isa::detect

use super::super::assign::{assign_chunks_with, Slot};
use super::super::means::Sums;
use super::super::packed::Packed;
use super::super::points::Points;
use super::portable::pp_tail;
use super::{pp_bounds, Isa, NearestBlock, CG, PV, SUM_LANES, VL};

/// The AVX2 nearest-centroid kernel: the same operations as the portable copy, eight lanes
/// per instruction.
///
/// # Safety
/// The CPU must support AVX2 (and FMA, enabled for code generation only).
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // register arrays indexed like the portable copy
pub(super) unsafe fn nearest_block<const D: usize>(
    b: &NearestBlock<'_>,
    best: &mut [f32],
    bidx: &mut [u32],
) {
    use std::arch::x86_64::*;
    b.check(best, bidx);
    let dim = if D > 0 { D } else { b.dim };
    assert_eq!(dim, b.dim);
    // SAFETY (all loads and stores below): `check` bounds every index used: points
    // `p0..p0 + PB` of rows `0..dim` of `xt`, centroids `c0..c1` of `cent` and `nhn`, and the
    // `PB` entries of `best` and `bidx`.
    unsafe {
        let xp = b.xt.as_ptr().add(b.p0);
        let mut bv = [_mm256_setzero_ps(); PV];
        let mut bi = [_mm256_setzero_ps(); PV];
        for v in 0..PV {
            bv[v] = _mm256_loadu_ps(best.as_ptr().add(v * VL));
            bi[v] = _mm256_loadu_ps(bidx.as_ptr().add(v * VL).cast::<f32>());
        }
        let mut c = b.c0;
        while c < b.c1 {
            let mut acc = [[_mm256_setzero_ps(); CG]; PV];
            for g in 0..CG {
                let h = _mm256_set1_ps(*b.nhn.get_unchecked(c + g));
                for a in acc.iter_mut() {
                    a[g] = h;
                }
            }
            let cp = b.cent.as_ptr().add(c * dim);
            for j in 0..dim {
                let mut x = [_mm256_setzero_ps(); PV];
                for (v, xv) in x.iter_mut().enumerate() {
                    *xv = _mm256_loadu_ps(xp.add(j * b.stride + v * VL));
                }
                for g in 0..CG {
                    let cv = _mm256_broadcast_ss(&*cp.add(g * dim + j));
                    for v in 0..PV {
                        acc[v][g] = _mm256_add_ps(acc[v][g], _mm256_mul_ps(x[v], cv));
                    }
                }
            }
            for g in 0..CG {
                let ci = _mm256_castsi256_ps(_mm256_set1_epi32((c + g) as i32));
                for v in 0..PV {
                    let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(acc[v][g], bv[v]);
                    bv[v] = _mm256_blendv_ps(bv[v], acc[v][g], gt);
                    bi[v] = _mm256_blendv_ps(bi[v], ci, gt);
                }
            }
            c += CG;
        }
        for v in 0..PV {
            _mm256_storeu_ps(best.as_mut_ptr().add(v * VL), bv[v]);
            _mm256_storeu_ps(bidx.as_mut_ptr().add(v * VL).cast::<f32>(), bi[v]);
        }
    }
}

/// The chunk driver with the AVX2 kernel, compiled for AVX2 as a whole.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn assign_chunks<const D: usize>(
    points: Points<'_>,
    start: usize,
    packed: &Packed,
    out: &mut [Slot],
    sums: Option<&mut Sums>,
) {
    assign_chunks_with::<D>(Isa::Avx2, points, start, packed, out, sums)
}

/// The AVX2 k-means++ kernel: the same operations as the portable copy, eight points per
/// instruction.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pp_pass<const G: usize>(
    xt: &[f32],
    dmin: &[f32],
    dim: usize,
    cands: &[f32],
    lanes: &mut [[f64; SUM_LANES]; G],
    mut store: Option<&mut [f32]>,
) {
    use std::arch::x86_64::*;
    let (len, full) = pp_bounds::<G>(xt, dmin, dim, cands, store.as_deref());
    // SAFETY (all loads and stores): `i0 + SUM_LANES <= full <= len`, `j < dim`, `g < G`,
    // within the lengths asserted above.
    unsafe {
        let xp = xt.as_ptr();
        let dp = dmin.as_ptr();
        let cp = cands.as_ptr();
        let mut lo = [_mm256_setzero_pd(); G];
        let mut hi = [_mm256_setzero_pd(); G];
        for g in 0..G {
            lo[g] = _mm256_loadu_pd(lanes[g].as_ptr());
            hi[g] = _mm256_loadu_pd(lanes[g].as_ptr().add(4));
        }
        let mut i0 = 0;
        while i0 < full {
            let mut acc = [_mm256_setzero_ps(); G];
            for j in 0..dim {
                let x = _mm256_loadu_ps(xp.add(j * len + i0));
                for (g, a) in acc.iter_mut().enumerate() {
                    let t = _mm256_sub_ps(x, _mm256_broadcast_ss(&*cp.add(g * dim + j)));
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(t, t));
                }
            }
            let dm = _mm256_loadu_ps(dp.add(i0));
            for g in 0..G {
                let m = _mm256_min_ps(acc[g], dm);
                lo[g] = _mm256_add_pd(lo[g], _mm256_cvtps_pd(_mm256_castps256_ps128(m)));
                hi[g] = _mm256_add_pd(hi[g], _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(m)));
            }
            if let Some(out) = store.as_deref_mut() {
                _mm256_storeu_ps(out.as_mut_ptr().add(i0), _mm256_min_ps(acc[0], dm));
            }
            i0 += SUM_LANES;
        }
        for g in 0..G {
            _mm256_storeu_pd(lanes[g].as_mut_ptr(), lo[g]);
            _mm256_storeu_pd(lanes[g].as_mut_ptr().add(4), hi[g]);
        }
    }
    pp_tail::<G>(xt, dmin, dim, cands, lanes, store, full);
}
