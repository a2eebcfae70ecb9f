//! Nearest-centroid search: the hot loop of k-means.
//!
//! # Kernel
//! For a point `x` the nearest centroid maximises `x.c - ||c||^2 / 2` (the norm trick: `||x||^2`
//! is the same for every centroid). The kernel works on a chunk of points stored transposed
//! (`xt[j][i]`, coordinate-major), so that one vector register holds coordinate `j` of
//! [`VL`] consecutive points: for a block of [`PB`] points and a group of [`CG`] centroids it
//! starts `PV x CG` accumulators at `-||c||^2 / 2` and adds `x_j * c_j` for `j = 0..dim` (one
//! vector load of points, one broadcast per centroid, a multiply and an add per accumulator),
//! then folds each centroid, in index order, into a lane-wise running maximum (value and
//! index): there is no horizontal reduction at all. The running maximum of a block of points
//! stays in registers while a tile of about [`TILE_FLOATS`] floats of centroids (in L1 cache)
//! streams past it; the points of a chunk stay in L1/L2 cache across tiles. Dimensions 4, 8
//! and 16 (2x2, 2x4 and 4x4 blocks) get copies with the dimension loop fully unrolled.
//!
//! Before packing, the mean of the centroids is subtracted from centroids and points alike
//! (a translation changes no distance) so that data far from the origin does not lose the
//! precision of `x.c` to cancellation.
//!
//! # Exactness and determinism
//! The norm trick rounds differently from `||x - c||^2`: on near ties the kernel may pick a
//! centroid whose exact distance is larger than the minimum by a few ulps of `||x||^2 + ||c||^2`.
//! The distance reported for each point is recomputed exactly (in f64) for the chosen centroid.
//! Ties between equal kernel values go to the lowest index.
//!
//! The kernel's value for a point and a centroid is defined operation by operation: start at
//! `-0.5 * ||c||^2` (an f32 sum of squares in coordinate order), then for `j = 0..dim` add the
//! rounded product `x_j * c_j` (two roundings: Rust never contracts `a * b + c` into a fused
//! multiply-add, and the AVX2 code uses separate multiply and add instructions); centroids are
//! visited in index order and replace the running best only when strictly greater. On x86-64
//! an AVX2 copy written with intrinsics is selected at run time; the portable copy (plain
//! Rust on arrays of [`VL`] lanes) performs the same IEEE operations in the same order, so both
//! return bit-identical results; the tests check this. Every point is handled independently,
//! so results never depend on how the points are split between chunks or threads.

use crate::par;

/// Lanes of the kernel's vectors: points per vector.
pub(crate) const VL: usize = 8;
/// Point vectors per kernel block.
pub(crate) const PV: usize = 2;
/// Points per kernel block.
pub(crate) const PB: usize = VL * PV;
/// Centroids per kernel group (the number of accumulators is `PV * CG`).
pub(crate) const CG: usize = 4;
/// Points per parallel work item.
pub(crate) const CHUNK: usize = 512;
/// Target size, in floats, of a tile of packed centroids (16 KiB, half an L1 cache).
pub(crate) const TILE_FLOATS: usize = 4096;

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

/// The nearest centroid of one point and the exact squared distance to it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Slot {
    /// Centroid index.
    pub idx: u32,
    /// Exact squared Euclidean distance (computed in f64, stored as f32).
    pub dist: f32,
}

/// Centroids laid out for the kernel: translated by `shift`, with their negated half norms.
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    dim: usize,
    k: usize,
    /// The centroids as given, `k * dim` row-major (for exact distances).
    rows: Vec<f32>,
    /// Subtracted from centroids and points before the kernel.
    shift: Vec<f32>,
    /// `kp * dim` shifted centroids, row-major, `kp = k` rounded up to a multiple of [`CG`];
    /// padding rows are zero.
    cent: Vec<f32>,
    /// `kp` values `-0.5 * ||c - shift||^2`; `-inf` in padding rows (never chosen).
    nhn: Vec<f32>,
}

impl Packed {
    /// Packs `centroids` (`k * dim` row-major, `k >= 1`).
    pub(crate) fn new(centroids: &[f32], dim: usize) -> Self {
        assert!(dim >= 1, "dim must be at least 1");
        assert!(
            !centroids.is_empty() && centroids.len() % dim == 0,
            "centroids must hold k >= 1 rows of dim values"
        );
        let k = centroids.len() / dim;
        assert!(k <= u32::MAX as usize / 2, "too many centroids");
        let mut mean = vec![0f64; dim];
        for row in centroids.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        let shift = mean.iter().map(|m| (m / k as f64) as f32).collect();
        let kp = k.div_ceil(CG) * CG;
        let mut packed = Packed {
            dim,
            k,
            rows: centroids.to_vec(),
            shift,
            cent: vec![0.0; kp * dim],
            nhn: vec![f32::NEG_INFINITY; kp],
        };
        for c in 0..k {
            packed.pack(c);
        }
        packed
    }

    /// Number of centroids.
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Vector dimension.
    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    fn pack(&mut self, c: usize) {
        let dim = self.dim;
        let row = &self.rows[c * dim..(c + 1) * dim];
        let out = &mut self.cent[c * dim..(c + 1) * dim];
        let mut norm = 0f32;
        for j in 0..dim {
            let v = row[j] - self.shift[j];
            out[j] = v;
            norm += v * v;
        }
        self.nhn[c] = -0.5 * norm;
    }

    /// Centroid `c` as given.
    pub(crate) fn row(&self, c: usize) -> &[f32] {
        &self.rows[c * self.dim..(c + 1) * self.dim]
    }

    /// Centroids per tile: a multiple of [`CG`], about [`TILE_FLOATS`] floats.
    fn tile(&self) -> usize {
        ((TILE_FLOATS / self.dim) / CG).max(1) * CG
    }
}

/// Exact squared Euclidean distance, accumulated in f64 in index order.
#[inline(always)]
pub(crate) fn sq_dist_f64(a: &[f32], b: &[f32]) -> f64 {
    let mut s = 0f64;
    for (&x, &y) in a.iter().zip(b) {
        let t = f64::from(x) - f64::from(y);
        s += t * t;
    }
    s
}

/// Brute-force nearest centroid of one point: (index, exact distance), lowest index on ties.
fn nearest_brute(x: &[f32], centroids: &[f32], dim: usize) -> (u32, f64) {
    let mut best = (0u32, f64::INFINITY);
    for (c, row) in centroids.chunks_exact(dim).enumerate() {
        let d = sq_dist_f64(x, row);
        if d < best.1 || c == 0 {
            best = (c as u32, d);
        }
    }
    best
}

/// Arguments of one kernel call: a block of [`PB`] points against centroids `c0..c1`.
struct Block<'a> {
    /// Transposed shifted points of the chunk: `xt[j * stride + i]`.
    xt: &'a [f32],
    stride: usize,
    /// First point of the block (a multiple of [`PB`]).
    p0: usize,
    dim: usize,
    cent: &'a [f32],
    nhn: &'a [f32],
    /// Centroid range, multiples of [`CG`].
    c0: usize,
    c1: usize,
}

impl Block<'_> {
    #[inline(always)]
    fn check(&self, best: &[f32], bidx: &[u32]) {
        assert!(self.dim >= 1 && self.p0 % PB == 0 && self.p0 + PB <= self.stride);
        assert!(self.xt.len() >= self.dim * self.stride);
        assert!(self.c0 % CG == 0 && self.c1 % CG == 0 && self.c0 <= self.c1);
        assert!(self.cent.len() >= self.c1 * self.dim && self.nhn.len() >= self.c1);
        assert!(best.len() == PB && bidx.len() == PB);
    }
}

/// The portable kernel: `D` is the dimension when known at compile time (0: `b.dim`).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane loops read like the AVX2 copy
fn block_portable<const D: usize>(b: &Block<'_>, best: &mut [f32], bidx: &mut [u32]) {
    b.check(best, bidx);
    let dim = if D > 0 { D } else { b.dim };
    assert_eq!(dim, b.dim);
    let mut bv = [[0f32; VL]; PV];
    let mut bi = [[0u32; VL]; PV];
    for v in 0..PV {
        bv[v].copy_from_slice(&best[v * VL..(v + 1) * VL]);
        bi[v].copy_from_slice(&bidx[v * VL..(v + 1) * VL]);
    }
    let mut c = b.c0;
    while c < b.c1 {
        let mut acc = [[[0f32; VL]; CG]; PV];
        for g in 0..CG {
            for a in acc.iter_mut() {
                a[g] = [b.nhn[c + g]; VL];
            }
        }
        for j in 0..dim {
            let xr = &b.xt[j * b.stride + b.p0..j * b.stride + b.p0 + PB];
            for g in 0..CG {
                let cv = b.cent[(c + g) * dim + j];
                for v in 0..PV {
                    for l in 0..VL {
                        acc[v][g][l] += xr[v * VL + l] * cv;
                    }
                }
            }
        }
        for (g, ci) in (c as u32..).take(CG).enumerate() {
            for v in 0..PV {
                for l in 0..VL {
                    let a = acc[v][g][l];
                    let gt = a > bv[v][l];
                    bv[v][l] = if gt { a } else { bv[v][l] };
                    bi[v][l] = if gt { ci } else { bi[v][l] };
                }
            }
        }
        c += CG;
    }
    for v in 0..PV {
        best[v * VL..(v + 1) * VL].copy_from_slice(&bv[v]);
        bidx[v * VL..(v + 1) * VL].copy_from_slice(&bi[v]);
    }
}

/// The AVX2 kernel: the same operations as [`block_portable`], eight lanes per instruction.
///
/// # Safety
/// The CPU must support AVX2 (and FMA, enabled for code generation only).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // register arrays indexed like the portable copy
unsafe fn block_avx2<const D: usize>(b: &Block<'_>, best: &mut [f32], bidx: &mut [u32]) {
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

/// Runs the kernel of `isa` on one block.
#[inline(always)]
fn run_block<const D: usize>(isa: Isa, b: &Block<'_>, best: &mut [f32], bidx: &mut [u32]) {
    match isa {
        Isa::Portable => block_portable::<D>(b, best, bidx),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only produced by `Isa::avx2`, after detecting AVX2 and FMA.
        Isa::Avx2 => unsafe { block_avx2::<D>(b, best, bidx) },
    }
}

/// Reusable buffers of [`nearest_chunk`].
#[derive(Default)]
pub(crate) struct Scratch {
    xt: Vec<f32>,
    best: Vec<f32>,
    bidx: Vec<u32>,
}

/// Kernel maximum (value, index) of each point of a chunk over all centroids, left in
/// `scratch.best` / `scratch.bidx` (index `u32::MAX` when no kernel value was above `-inf`).
#[inline(always)]
fn chunk_kernel<const D: usize>(isa: Isa, points: &[f32], packed: &Packed, scratch: &mut Scratch) {
    let dim = if D > 0 { D } else { packed.dim };
    assert_eq!(dim, packed.dim);
    let m = points.len() / dim;
    let stride = m.div_ceil(PB) * PB;
    let Scratch { xt, best, bidx } = scratch;
    xt.clear();
    xt.resize(dim * stride, 0.0);
    for (j, row) in xt.chunks_exact_mut(stride).enumerate() {
        let sj = packed.shift[j];
        for (o, x) in row.iter_mut().zip(points.chunks_exact(dim)) {
            *o = x[j] - sj;
        }
    }
    best.clear();
    best.resize(stride, f32::NEG_INFINITY);
    bidx.clear();
    bidx.resize(stride, u32::MAX);
    let kp = packed.nhn.len();
    let tile = packed.tile();
    let mut c0 = 0;
    while c0 < kp {
        let c1 = (c0 + tile).min(kp);
        for (bi, (bv, bx)) in best
            .chunks_exact_mut(PB)
            .zip(bidx.chunks_exact_mut(PB))
            .enumerate()
        {
            let blk = Block {
                xt,
                stride,
                p0: bi * PB,
                dim,
                cent: &packed.cent,
                nhn: &packed.nhn,
                c0,
                c1,
            };
            run_block::<D>(isa, &blk, bv, bx);
        }
        c0 = c1;
    }
}

/// Points whose exact distances are computed together (independent f64 chains).
const EXACT_GROUP: usize = 8;

/// Writes the slots of a chunk from the kernel's choices: the exact distance (f64, coordinate
/// order) to the chosen centroid, or a brute-force search where the kernel chose nothing.
#[inline(always)]
fn finish_chunk<const D: usize>(points: &[f32], packed: &Packed, bidx: &[u32], out: &mut [Slot]) {
    let dim = if D > 0 { D } else { packed.dim };
    assert_eq!(dim, packed.dim);
    let (k, m) = (packed.k, out.len());
    let mut pc = points.chunks_exact(dim * EXACT_GROUP);
    let mut oc = out.chunks_exact_mut(EXACT_GROUP);
    let mut ic = bidx[..m].chunks_exact(EXACT_GROUP);
    for ((xs, os), is) in (&mut pc).zip(&mut oc).zip(&mut ic) {
        if is.iter().all(|&i| (i as usize) < k) {
            let mut acc = [0f64; EXACT_GROUP];
            let rows: [&[f32]; EXACT_GROUP] =
                std::array::from_fn(|g| &packed.rows[is[g] as usize * dim..][..dim]);
            for j in 0..dim {
                for g in 0..EXACT_GROUP {
                    let t = f64::from(xs[g * dim + j]) - f64::from(rows[g][j]);
                    acc[g] += t * t;
                }
            }
            for g in 0..EXACT_GROUP {
                os[g] = Slot {
                    idx: is[g],
                    dist: acc[g] as f32,
                };
            }
        } else {
            for g in 0..EXACT_GROUP {
                os[g] = finish_one(&xs[g * dim..(g + 1) * dim], packed, is[g]);
            }
        }
    }
    let xs = pc.remainder();
    for ((o, &i), x) in oc
        .into_remainder()
        .iter_mut()
        .zip(ic.remainder())
        .zip(xs.chunks_exact(dim))
    {
        *o = finish_one(x, packed, i);
    }
}

fn finish_one(x: &[f32], packed: &Packed, i: u32) -> Slot {
    let (idx, dist) = if (i as usize) < packed.k {
        (i, sq_dist_f64(x, packed.row(i as usize)))
    } else {
        // Only when every kernel value was -inf or NaN (huge or non-finite input).
        nearest_brute(x, &packed.rows, packed.dim)
    };
    Slot {
        idx,
        dist: dist as f32,
    }
}

/// A set of points: all rows of `data`, or the rows of `data` listed in `idx`.
#[derive(Clone, Copy)]
pub(crate) enum Points<'a> {
    /// Every row of the slice, in order.
    Dense(&'a [f32]),
    /// The rows listed, in the order listed.
    Indexed(&'a [f32], &'a [u32]),
}

impl<'a> Points<'a> {
    /// Number of points.
    pub(crate) fn len(&self, dim: usize) -> usize {
        match self {
            Points::Dense(d) => d.len() / dim,
            Points::Indexed(_, idx) => idx.len(),
        }
    }

    /// Point `p`.
    #[inline(always)]
    pub(crate) fn row(&self, p: usize, dim: usize) -> &'a [f32] {
        match *self {
            Points::Dense(d) => &d[p * dim..(p + 1) * dim],
            Points::Indexed(d, idx) => {
                let i = idx[p] as usize;
                &d[i * dim..(i + 1) * dim]
            }
        }
    }
}

/// Per-cluster point counts and coordinate sums (f64) of a run of points.
pub(crate) struct Sums {
    pub(crate) counts: Vec<u32>,
    pub(crate) sums: Vec<f64>,
}

impl Sums {
    pub(crate) fn new(k: usize, dim: usize) -> Self {
        Sums {
            counts: vec![0; k],
            sums: vec![0.0; k * dim],
        }
    }

    /// Adds `x` to cluster `c`.
    #[inline(always)]
    pub(crate) fn add(&mut self, c: usize, x: &[f32]) {
        self.counts[c] += 1;
        let dim = x.len();
        for (acc, &v) in self.sums[c * dim..(c + 1) * dim].iter_mut().zip(x) {
            *acc += f64::from(v);
        }
    }

    /// Adds another run's counts and sums.
    pub(crate) fn merge(&mut self, other: &Sums) {
        for (c, v) in self.counts.iter_mut().zip(&other.counts) {
            *c += v;
        }
        for (s, v) in self.sums.iter_mut().zip(&other.sums) {
            *s += v;
        }
    }
}

/// Assigns the points `start..start + out.len()` of `points` chunk by chunk (listed points are
/// gathered into a contiguous buffer first) and, with `sums`, adds each point to its cluster
/// in point order. Inlined into each instruction-set copy.
#[inline(always)]
fn run_generic<const D: usize>(
    isa: Isa,
    points: Points<'_>,
    start: usize,
    packed: &Packed,
    out: &mut [Slot],
    mut sums: Option<&mut Sums>,
) {
    let dim = if D > 0 { D } else { packed.dim };
    assert_eq!(dim, packed.dim);
    let mut scratch = Scratch::default();
    let mut rows: Vec<f32> = Vec::new();
    for (ci, o) in out.chunks_mut(CHUNK).enumerate() {
        let s0 = start + ci * CHUNK;
        let chunk: &[f32] = match points {
            Points::Dense(d) => &d[s0 * dim..(s0 + o.len()) * dim],
            Points::Indexed(d, idx) => {
                rows.clear();
                rows.resize(o.len() * dim, 0.0);
                for (dst, &i) in rows.chunks_exact_mut(dim).zip(&idx[s0..s0 + o.len()]) {
                    dst.copy_from_slice(&d[i as usize * dim..][..dim]);
                }
                &rows
            }
        };
        chunk_kernel::<D>(isa, chunk, packed, &mut scratch);
        finish_chunk::<D>(chunk, packed, &scratch.bidx, o);
        if let Some(s) = sums.as_deref_mut() {
            for (slot, x) in o.iter().zip(chunk.chunks_exact(dim)) {
                s.add(slot.idx as usize, x);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<const D: usize>(
    points: Points<'_>,
    start: usize,
    packed: &Packed,
    out: &mut [Slot],
    sums: Option<&mut Sums>,
) {
    run_generic::<D>(Isa::Avx2, points, start, packed, out, sums)
}

fn run_isa<const D: usize>(
    isa: Isa,
    points: Points<'_>,
    start: usize,
    packed: &Packed,
    out: &mut [Slot],
    sums: Option<&mut Sums>,
) {
    match isa {
        Isa::Portable => run_generic::<D>(Isa::Portable, points, start, packed, out, sums),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only produced by `Isa::avx2`, after detecting AVX2 and FMA.
        Isa::Avx2 => unsafe { run_avx2::<D>(points, start, packed, out, sums) },
    }
}

/// Nearest centroids of points `start..start + out.len()` (sequentially, one chunk at a time),
/// optionally summing them per cluster.
pub(crate) fn run_points(
    isa: Isa,
    points: Points<'_>,
    start: usize,
    packed: &Packed,
    out: &mut [Slot],
    sums: Option<&mut Sums>,
) {
    assert!(
        start + out.len() <= points.len(packed.dim),
        "points out of range"
    );
    match packed.dim {
        4 => run_isa::<4>(isa, points, start, packed, out, sums),
        8 => run_isa::<8>(isa, points, start, packed, out, sums),
        16 => run_isa::<16>(isa, points, start, packed, out, sums),
        _ => run_isa::<0>(isa, points, start, packed, out, sums),
    }
}

/// Fills `out[i]` with the nearest centroid of point `i` of `points`, in parallel over chunks.
pub(crate) fn assign_points(isa: Isa, points: Points<'_>, packed: &Packed, out: &mut [Slot]) {
    assert_eq!(
        points.len(packed.dim),
        out.len(),
        "points and output sizes differ"
    );
    par::for_each_chunk_mut(out, CHUNK, |ci, o| {
        run_points(isa, points, ci * CHUNK, packed, o, None);
    });
}

/// Fills `out[i]` with the nearest centroid of point `i` of `data`, in parallel over chunks.
pub(crate) fn assign_slots(isa: Isa, data: &[f32], packed: &Packed, out: &mut [Slot]) {
    assign_points(isa, Points::Dense(data), packed, out)
}

/// Sum of the distances of `slots`, in f64, in order.
pub(crate) fn inertia_of(slots: &[Slot]) -> f64 {
    slots.iter().map(|s| f64::from(s.dist)).sum()
}

fn check_shapes(data: &[f32], dim: usize, centroids: &[f32]) {
    assert!(dim >= 1, "dim must be at least 1");
    assert!(
        data.len() % dim == 0,
        "data length is not a multiple of dim"
    );
    assert!(
        !centroids.is_empty() && centroids.len() % dim == 0,
        "centroids must hold at least one row of dim values"
    );
}

/// Fast nearest-centroid assignment of every point of `data` (`n * dim` f32, row-major) to
/// `centroids` (`k * dim`, row-major): returns the index of each point's centroid and the
/// inertia (sum of exact squared distances, in f64).
///
/// Runs the tiled norm-trick kernel in parallel over chunks of points; memory stays
/// `O(n + k * dim)` (no `n x k` matrix). On near ties the chosen centroid may differ from
/// [`assign_brute_force`]'s, with an exact distance larger by at most a few ulps of
/// `||x||^2 + ||c||^2` (measured after translating by the centroids' mean).
///
/// # Panics
/// If `dim` is 0, `data.len()` is not a multiple of `dim`, or `centroids` is empty or not a
/// multiple of `dim`.
pub fn assign(data: &[f32], dim: usize, centroids: &[f32]) -> (Vec<u32>, f64) {
    check_shapes(data, dim, centroids);
    let packed = Packed::new(centroids, dim);
    let mut slots = vec![Slot::default(); data.len() / dim];
    assign_slots(Isa::detect(), data, &packed, &mut slots);
    (slots.iter().map(|s| s.idx).collect(), inertia_of(&slots))
}

/// Brute-force nearest-centroid assignment, the oracle of [`assign`]: plain loops, exact squared
/// Euclidean distances accumulated in f64, the lowest index wins ties. Returns the indices and
/// the inertia (sum of the minimum distances, in f64, in point order).
///
/// # Panics
/// As [`assign`].
pub fn assign_brute_force(data: &[f32], dim: usize, centroids: &[f32]) -> (Vec<u32>, f64) {
    check_shapes(data, dim, centroids);
    let mut inertia = 0f64;
    let idx = data
        .chunks_exact(dim)
        .map(|x| {
            let (i, d) = nearest_brute(x, centroids, dim);
            inertia += d;
            i
        })
        .collect();
    (idx, inertia)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    pub(crate) fn uniform(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    }

    fn run(isa: Isa, data: &[f32], dim: usize, centroids: &[f32]) -> Vec<Slot> {
        let packed = Packed::new(centroids, dim);
        let mut slots = vec![Slot::default(); data.len() / dim];
        assign_slots(isa, data, &packed, &mut slots);
        slots
    }

    /// Asserts that each point's fast distance is within a relative tolerance of the minimum.
    fn assert_near_oracle(data: &[f32], dim: usize, centroids: &[f32], slots: &[Slot]) {
        let k = centroids.len() / dim;
        let (bf, bf_inertia) = assign_brute_force(data, dim, centroids);
        let mut agree = 0;
        let mut tol = 0f64;
        for (i, (x, s)) in data.chunks_exact(dim).zip(slots).enumerate() {
            assert!((s.idx as usize) < k);
            let exact = sq_dist_f64(x, &centroids[s.idx as usize * dim..][..dim]);
            let min = sq_dist_f64(x, &centroids[bf[i] as usize * dim..][..dim]);
            assert_eq!(s.dist, exact as f32);
            // The f32 norm trick (|c|^2 - 2 x.c) resolves distances to a few ulps of the
            // squared norms involved, not of the distance itself.
            let scale = sq_dist_f64(x, &vec![0.0; dim])
                + sq_dist_f64(&centroids[bf[i] as usize * dim..][..dim], &vec![0.0; dim]);
            tol += min * 1e-4 + 1e-6 * scale;
            assert!(
                exact <= min * (1.0 + 1e-4) + 1e-6 * scale,
                "point {i}: fast {exact} vs min {min} (dim {dim}, k {k})"
            );
            agree += usize::from(s.idx == bf[i]);
        }
        // Near-ties may resolve either way (above); on random data most points still agree.
        assert!(agree * 100 >= slots.len() * 90, "only {agree} agree");
        let inertia = inertia_of(slots);
        assert!((inertia - bf_inertia).abs() <= tol.max(1e-30));
    }

    #[test]
    fn matches_brute_force_on_random_data() {
        for &dim in &[1usize, 3, 16, 64] {
            for &k in &[2usize, 7, 256, 1500] {
                let n = 700;
                let data = uniform(n * dim, (dim * 1000 + k) as u64, -1.0, 1.0);
                let centroids = uniform(k * dim, (dim * 7 + k) as u64, -1.0, 1.0);
                for isa in Isa::all() {
                    let slots = run(isa, &data, dim, &centroids);
                    assert_near_oracle(&data, dim, &centroids, &slots);
                }
                let (idx, inertia) = assign(&data, dim, &centroids);
                let slots = run(Isa::detect(), &data, dim, &centroids);
                assert_eq!(idx, slots.iter().map(|s| s.idx).collect::<Vec<_>>());
                assert_eq!(inertia, inertia_of(&slots));
            }
        }
    }

    #[test]
    fn far_from_origin_data_keeps_precision() {
        // Clusters of spread 1e-3 around 1000: without the shift the norm trick would drown.
        let dim = 4;
        let centroids: Vec<f32> = (0..8 * dim)
            .map(|i| 1000.0 + (i % 5) as f32 * 0.01)
            .collect();
        let noise = uniform(300 * dim, 5, -1e-3, 1e-3);
        let data: Vec<f32> = noise
            .iter()
            .enumerate()
            .map(|(i, e)| centroids[(i / dim % 8) * dim + i % dim] + e)
            .collect();
        let slots = run(Isa::detect(), &data, dim, &centroids);
        assert_near_oracle(&data, dim, &centroids, &slots);
    }

    #[test]
    fn exact_on_well_separated_data() {
        for &dim in &[1usize, 3, 16, 64] {
            for &k in &[2usize, 7, 256] {
                // Centroids on a coarse grid, points within 0.1 of one of them.
                let centroids: Vec<f32> = (0..k * dim)
                    .map(|i| ((i * 7919 + i / dim * 31) % 97) as f32 * 10.0)
                    .collect();
                let n = 600;
                let noise = uniform(n * dim, 11, -0.1, 0.1);
                let truth: Vec<usize> = (0..n).map(|i| (i * 13) % k).collect();
                let data: Vec<f32> = (0..n * dim)
                    .map(|e| centroids[truth[e / dim] * dim + e % dim] + noise[e])
                    .collect();
                let (bf, bf_inertia) = assign_brute_force(&data, dim, &centroids);
                for isa in Isa::all() {
                    let slots = run(isa, &data, dim, &centroids);
                    let idx: Vec<u32> = slots.iter().map(|s| s.idx).collect();
                    assert_eq!(idx, bf, "dim {dim} k {k} {isa:?}");
                    let inertia = inertia_of(&slots);
                    assert!((inertia - bf_inertia).abs() <= 1e-5 * bf_inertia);
                }
            }
        }
    }

    #[test]
    fn kernel_copies_are_bit_identical() {
        let dim = 16;
        let data = uniform(3000 * dim, 1, -3.0, 3.0);
        let centroids = uniform(300 * dim, 2, -3.0, 3.0);
        let all: Vec<Vec<Slot>> = Isa::all()
            .into_iter()
            .map(|isa| run(isa, &data, dim, &centroids))
            .collect();
        for s in &all[1..] {
            assert_eq!(s, &all[0]);
        }
    }

    #[test]
    fn kernel_copies_agree_for_every_specialisation() {
        // The unrolled dimensions (4, 8, 16) and generic ones, k not a multiple of the
        // centroid group, point counts not a multiple of the point block, several tiles.
        for &(dim, k, n) in &[
            (4usize, 1027usize, 1001usize),
            (8, 300, 77),
            (16, 5, 33),
            (3, 2, 45),
            (64, 70, 19),
        ] {
            let data = uniform(n * dim, dim as u64, -2.0, 2.0);
            let centroids = uniform(k * dim, k as u64, -2.0, 2.0);
            let all: Vec<Vec<Slot>> = Isa::all()
                .into_iter()
                .map(|isa| run(isa, &data, dim, &centroids))
                .collect();
            for s in &all[1..] {
                assert_eq!(s, &all[0], "dim {dim} k {k}");
            }
            assert_near_oracle(&data, dim, &centroids, &all[0]);
        }
    }

    #[test]
    fn ties_go_to_the_lowest_index() {
        let dim = 2;
        // Centroids 0 and 2 (and 17, in another panel) are identical.
        let mut centroids = uniform(20 * dim, 3, 5.0, 9.0);
        centroids[4..6].copy_from_slice(&[0.5, 0.5]);
        centroids[0..2].copy_from_slice(&[0.5, 0.5]);
        centroids[34..36].copy_from_slice(&[0.5, 0.5]);
        let data = vec![0.5, 0.5, 0.4, 0.6];
        for isa in Isa::all() {
            let slots = run(isa, &data, dim, &centroids);
            assert_eq!(slots[0], Slot { idx: 0, dist: 0.0 });
            assert_eq!(slots[1].idx, 0);
        }
        assert_eq!(assign_brute_force(&data, dim, &centroids).0, vec![0, 0]);
    }

    #[test]
    fn non_finite_input_stays_in_range() {
        let dim = 3;
        let centroids = vec![1.0, 2.0, 3.0, f32::MAX, f32::MAX, f32::MAX, -1.0, 0.0, 0.0];
        let data = vec![
            f32::NAN,
            0.0,
            0.0,
            f32::INFINITY,
            1.0,
            1.0,
            f32::MAX,
            -f32::MAX,
            0.0,
            1.0,
            2.0,
            3.0,
        ];
        let (idx, _) = assign(&data, dim, &centroids);
        assert!(idx.iter().all(|&i| i < 3), "{idx:?}");
        assert_eq!(idx[3], 0);
        assert_eq!(assign(&[], dim, &centroids), (vec![], 0.0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn assign_is_in_range_and_near_brute_force(
            dim in 1usize..=64,
            k in 1usize..=40,
            n in 0usize..=40,
            seed in any::<u64>(),
            scale in prop_oneof![Just(1e-3f32), Just(1.0f32), Just(1e3f32)],
        ) {
            let data = uniform(n * dim, seed, -scale, scale);
            let centroids = uniform(k * dim, seed ^ 0x5555, -scale, scale);
            let (idx, inertia) = assign(&data, dim, &centroids);
            prop_assert_eq!(idx.len(), n);
            prop_assert!(idx.iter().all(|&i| (i as usize) < k));
            let (_, bf_inertia) = assign_brute_force(&data, dim, &centroids);
            prop_assert!(inertia >= bf_inertia * (1.0 - 1e-6));
            prop_assert!(inertia <= bf_inertia * (1.0 + 1e-4) + 1e-30);
            for (x, &i) in data.chunks_exact(dim).zip(&idx) {
                let d = sq_dist_f64(x, &centroids[i as usize * dim..][..dim]);
                let (_, min) = nearest_brute(x, &centroids, dim);
                prop_assert!(d <= min * (1.0 + 1e-4) + 1e-30);
            }
        }
    }
}
