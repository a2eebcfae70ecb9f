//! Everything that depends on the instruction set: run-time detection ([`Isa`]), the kernels,
//! one file per instruction set, and the dispatch from an [`Isa`] value to a kernel copy.
//!
//! Two kernels, each written once per instruction set with the same IEEE operations in the same
//! order, so that every copy returns bit-identical results (the tests compare them):
//!
//! - **Nearest centroid** ([`nearest_block`], the hot loop of k-means): for a block of [`PB`]
//!   points against centroids `c0..c1`, the lane-wise running maximum of `x.c - ||c||^2 / 2`
//!   and its centroid index (see "The nearest-centroid kernel" below).
//! - **k-means++ potential** ([`pp_pass`]): for a block of sample points and a few candidate
//!   centroids, the sum of `min(||x - c||^2, dmin)` over the points, in [`SUM_LANES`] partial
//!   sums (the initialisation, `init.rs`).
//!
//! Files: `portable.rs` (plain Rust on arrays of lanes: compiled, run and tested on every
//! target), `avx2.rs` (x86-64 intrinsics, selected at run time). Another instruction set (NEON
//! on aarch64) slots in as one more file with the same two kernels, one more [`Isa`] variant
//! and one more arm in each dispatch function here ([`nearest_block`], [`pp_pass`] and
//! [`assign_chunks`]).
//!
//! # The nearest-centroid kernel
//! For a point `x` the nearest centroid maximises `x.c - ||c||^2 / 2` (the norm trick: `||x||^2`
//! is the same for every centroid). The kernel works on a chunk of points stored transposed
//! (`xt[j][i]`, coordinate-major), so that one vector register holds coordinate `j` of
//! [`VL`] consecutive points: for a block of [`PB`] points and a group of [`CG`] centroids it
//! starts `PV x CG` accumulators at `-||c||^2 / 2` and adds `x_j * c_j` for `j = 0..dim` (one
//! vector load of points, one broadcast per centroid, a multiply and an add per accumulator),
//! then folds each centroid, in index order, into a lane-wise running maximum (value and
//! index): there is no horizontal reduction at all. The running maximum of a block of points
//! stays in registers while a tile of packed centroids (in L1 cache, see `packed.rs`) streams
//! past it; the points of a chunk stay in L1/L2 cache across tiles. Dimensions 4, 8 and 16
//! (2x2, 2x4 and 4x4 blocks) get copies with the dimension loop fully unrolled (the const
//! parameter `D`).
//!
//! The kernel's value for a point and a centroid is defined operation by operation: start at
//! `-0.5 * ||c||^2` (an f32 sum of squares in coordinate order), then for `j = 0..dim` add the
//! rounded product `x_j * c_j` (two roundings: Rust never contracts `a * b + c` into a fused
//! multiply-add, and the AVX2 code uses separate multiply and add instructions); centroids are
//! visited in index order and replace the running best only when strictly greater, so ties
//! between equal kernel values go to the lowest index.
//!
//! # Dispatch
//! The chunk driver (`assign.rs`) is written once, generic over the kernel through an [`Isa`]
//! value, and marked `#[inline(always)]`. [`assign_chunks`] calls it through a wrapper compiled
//! for the instruction set (`#[target_feature]`), so the whole driver, not only the kernel, is
//! compiled for it, and the `isa` match of [`nearest_block`] inside it folds to one call.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod portable;
#[cfg(test)]
mod tests;

use super::assign::{assign_chunks_with, Slot};
use super::means::Sums;
use super::packed::Packed;
use super::points::Points;

/// Lanes of the kernel's vectors: points per vector.
pub(crate) const VL: usize = 8;
/// Point vectors per kernel block.
pub(crate) const PV: usize = 2;
/// Points per kernel block.
pub(crate) const PB: usize = VL * PV;
/// Centroids per kernel group (the number of accumulators is `PV * CG`).
pub(crate) const CG: usize = 4;
/// Partial sums kept per k-means++ block so that reductions vectorise (combined in a fixed
/// order by the caller).
pub(crate) const SUM_LANES: usize = 8;

/// Which compiled copy of the kernels to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Baseline instructions of the target (SSE2 on x86-64, NEON on aarch64).
    Portable,
    /// x86-64 with AVX2 and FMA, detected at run time (FMA is enabled but never used for
    /// contraction, so results equal the portable path's).
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// The fastest copy this CPU supports.
    pub(crate) fn detect() -> Isa {
        Isa::avx2().unwrap_or(Isa::Portable)
    }

    /// The AVX2 copy, if this CPU supports it (never on other architectures).
    pub(crate) fn avx2() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Some(Isa::Avx2);
            }
        }
        None
    }

    /// Every copy this CPU can run (for tests).
    #[cfg(test)]
    pub(crate) fn all() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        v.extend(Isa::avx2());
        v
    }
}

/// Arguments of one nearest-centroid kernel call: a block of [`PB`] points against centroids
/// `c0..c1`.
pub(crate) struct NearestBlock<'a> {
    /// Transposed shifted points of the chunk: `xt[j * stride + i]`.
    pub(crate) xt: &'a [f32],
    pub(crate) stride: usize,
    /// First point of the block (a multiple of [`PB`]).
    pub(crate) p0: usize,
    pub(crate) dim: usize,
    pub(crate) cent: &'a [f32],
    pub(crate) nhn: &'a [f32],
    /// Centroid range, multiples of [`CG`].
    pub(crate) c0: usize,
    pub(crate) c1: usize,
}

impl NearestBlock<'_> {
    /// Checks every bound the kernel copies index within.
    #[inline(always)]
    fn check(&self, best: &[f32], bidx: &[u32]) {
        assert!(self.dim >= 1 && self.p0 % PB == 0 && self.p0 + PB <= self.stride);
        assert!(self.xt.len() >= self.dim * self.stride);
        assert!(self.c0 % CG == 0 && self.c1 % CG == 0 && self.c0 <= self.c1);
        assert!(self.cent.len() >= self.c1 * self.dim && self.nhn.len() >= self.c1);
        assert!(best.len() == PB && bidx.len() == PB);
    }
}

/// Runs the nearest-centroid kernel of `isa` on one block: folds centroids `b.c0..b.c1` into
/// the running maximum `best` / `bidx` of the block's [`PB`] points.
#[inline(always)]
pub(crate) fn nearest_block<const D: usize>(
    isa: Isa,
    b: &NearestBlock<'_>,
    best: &mut [f32],
    bidx: &mut [u32],
) {
    match isa {
        Isa::Portable => portable::nearest_block::<D>(b, best, bidx),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only produced by `Isa::avx2`, after detecting AVX2 and FMA.
        Isa::Avx2 => unsafe { avx2::nearest_block::<D>(b, best, bidx) },
    }
}

/// Runs the chunk driver ([`assign_chunks_with`]) compiled for `isa`: nearest centroids of
/// points `start..start + out.len()`, optionally summed per cluster.
pub(crate) fn assign_chunks<const D: usize>(
    isa: Isa,
    points: Points<'_>,
    start: usize,
    packed: &Packed,
    out: &mut [Slot],
    sums: Option<&mut Sums>,
) {
    match isa {
        Isa::Portable => assign_chunks_with::<D>(Isa::Portable, points, start, packed, out, sums),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only produced by `Isa::avx2`, after detecting AVX2 and FMA.
        Isa::Avx2 => unsafe { avx2::assign_chunks::<D>(points, start, packed, out, sums) },
    }
}

/// Checks the slice lengths both k-means++ kernel copies rely on; returns the number of points
/// of the block and how many of them fall in full groups of [`SUM_LANES`].
#[inline(always)]
fn pp_bounds<const G: usize>(
    xt: &[f32],
    dmin: &[f32],
    dim: usize,
    cands: &[f32],
    store: Option<&[f32]>,
) -> (usize, usize) {
    let len = dmin.len();
    assert!(xt.len() == len * dim && cands.len() == G * dim);
    assert!(store.map_or(true, |out| out.len() == len));
    (len, len - len % SUM_LANES)
}

/// Runs one k-means++ pass over a block of sample points with the kernel copy of `isa`: adds
/// `min(||x_i - c_g||^2, dmin_i)` to `lanes[g][i % SUM_LANES]` for every point `i` (`xt`
/// transposed, `xt[j * len + i]`) and each of the `G` candidates of `cands` (`G * dim`
/// values). With `store` (one candidate, `cands` repeating it), also writes the minimum into
/// `store`.
pub(crate) fn pp_pass<const G: usize>(
    isa: Isa,
    xt: &[f32],
    dmin: &[f32],
    dim: usize,
    cands: &[f32],
    lanes: &mut [[f64; SUM_LANES]; G],
    store: Option<&mut [f32]>,
) {
    match isa {
        Isa::Portable => portable::pp_pass::<G>(xt, dmin, dim, cands, lanes, store),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only produced after detecting AVX2 and FMA.
        Isa::Avx2 => unsafe { avx2::pp_pass::<G>(xt, dmin, dim, cands, lanes, store) },
    }
}
