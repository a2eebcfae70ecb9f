//! Nearest-centroid assignment: the chunk driver around the kernels of `simd/`, and the public
//! [`assign`].
//!
//! Points are assigned in chunks of [`CHUNK`] (the unit of parallel work). For each chunk the
//! driver transposes the points (shifted like the packed centroids, see `packed.rs`) into a
//! coordinate-major buffer, runs the kernel over every block of points and every tile of
//! centroids, then recomputes the exact distance (f64) of each point to the centroid the
//! kernel chose. The driver is written once: it is compiled for each instruction set through
//! [`simd::assign_chunks`], and [`assign_range`] picks the copy unrolled for the dimension.
//!
//! # Exactness and determinism
//! The norm trick rounds differently from `||x - c||^2`: on near ties the kernel may pick a
//! centroid whose exact distance is larger than the minimum by a few ulps of `||x||^2 + ||c||^2`.
//! The distance reported for each point is recomputed exactly (in f64) for the chosen centroid.
//! Ties between equal kernel values go to the lowest index. Every kernel copy returns
//! bit-identical results (see `simd/`), and every point is handled independently, so results
//! never depend on how the points are split between chunks or threads.

use super::means::Sums;
use super::oracle::{nearest_brute, sq_dist_f64};
use super::packed::Packed;
use super::points::Points;
use super::simd::{self, Isa, NearestBlock, PB};
use crate::par;

/// Points per parallel work item.
pub(crate) const CHUNK: usize = 512;

/// The nearest centroid of one point and the exact squared distance to it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Slot {
    /// Centroid index.
    pub idx: u32,
    /// Exact squared Euclidean distance (computed in f64, stored as f32).
    pub dist: f32,
}

/// Reusable buffers of [`chunk_kernel`].
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
    let dim = if D > 0 { D } else { packed.dim() };
    assert_eq!(dim, packed.dim());
    let m = points.len() / dim;
    let stride = m.div_ceil(PB) * PB;
    let Scratch { xt, best, bidx } = scratch;
    xt.clear();
    xt.resize(dim * stride, 0.0);
    for (j, row) in xt.chunks_exact_mut(stride).enumerate() {
        let sj = packed.shift()[j];
        for (o, x) in row.iter_mut().zip(points.chunks_exact(dim)) {
            *o = x[j] - sj;
        }
    }
    best.clear();
    best.resize(stride, f32::NEG_INFINITY);
    bidx.clear();
    bidx.resize(stride, u32::MAX);
    let kp = packed.nhn().len();
    let tile = packed.tile();
    let mut c0 = 0;
    while c0 < kp {
        let c1 = (c0 + tile).min(kp);
        for (bi, (bv, bx)) in best
            .chunks_exact_mut(PB)
            .zip(bidx.chunks_exact_mut(PB))
            .enumerate()
        {
            let blk = NearestBlock {
                xt,
                stride,
                p0: bi * PB,
                dim,
                cent: packed.cent(),
                nhn: packed.nhn(),
                c0,
                c1,
            };
            simd::nearest_block::<D>(isa, &blk, bv, bx);
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
    let dim = if D > 0 { D } else { packed.dim() };
    assert_eq!(dim, packed.dim());
    let (k, m) = (packed.k(), out.len());
    let mut pc = points.chunks_exact(dim * EXACT_GROUP);
    let mut oc = out.chunks_exact_mut(EXACT_GROUP);
    let mut ic = bidx[..m].chunks_exact(EXACT_GROUP);
    for ((xs, os), is) in (&mut pc).zip(&mut oc).zip(&mut ic) {
        if is.iter().all(|&i| (i as usize) < k) {
            let mut acc = [0f64; EXACT_GROUP];
            let rows: [&[f32]; EXACT_GROUP] =
                std::array::from_fn(|g| &packed.rows()[is[g] as usize * dim..][..dim]);
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
    let (idx, dist) = if (i as usize) < packed.k() {
        (i, sq_dist_f64(x, packed.row(i as usize)))
    } else {
        // Only when every kernel value was -inf or NaN (huge or non-finite input).
        nearest_brute(x, packed.rows(), packed.dim())
    };
    Slot {
        idx,
        dist: dist as f32,
    }
}

/// Assigns the points `start..start + out.len()` of `points` chunk by chunk (listed points are
/// gathered into a contiguous buffer first) and, with `sums`, adds each point to its cluster
/// in point order, with the kernel of `isa`. Inlined into each instruction-set copy of
/// [`simd::assign_chunks`]: call that, not this.
#[inline(always)]
pub(crate) fn assign_chunks_with<const D: usize>(
    isa: Isa,
    points: Points<'_>,
    start: usize,
    packed: &Packed,
    out: &mut [Slot],
    mut sums: Option<&mut Sums>,
) {
    let dim = if D > 0 { D } else { packed.dim() };
    assert_eq!(dim, packed.dim());
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

/// Nearest centroids of points `start..start + out.len()` (sequentially, one chunk at a time),
/// optionally summing them per cluster: the copy of the chunk driver for `isa` and
/// `packed.dim()` (unrolled for 4, 8 and 16).
pub(crate) fn assign_range(
    isa: Isa,
    points: Points<'_>,
    start: usize,
    packed: &Packed,
    out: &mut [Slot],
    sums: Option<&mut Sums>,
) {
    assert!(
        start + out.len() <= points.len(packed.dim()),
        "points out of range"
    );
    match packed.dim() {
        4 => simd::assign_chunks::<4>(isa, points, start, packed, out, sums),
        8 => simd::assign_chunks::<8>(isa, points, start, packed, out, sums),
        16 => simd::assign_chunks::<16>(isa, points, start, packed, out, sums),
        _ => simd::assign_chunks::<0>(isa, points, start, packed, out, sums),
    }
}

/// Fills `out[i]` with the nearest centroid of point `i` of `points`, in parallel over chunks.
pub(crate) fn assign_points(isa: Isa, points: Points<'_>, packed: &Packed, out: &mut [Slot]) {
    assert_eq!(
        points.len(packed.dim()),
        out.len(),
        "points and output sizes differ"
    );
    par::for_each_chunk_mut(out, CHUNK, |ci, o| {
        assign_range(isa, points, ci * CHUNK, packed, o, None);
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

/// Panics unless `dim >= 1`, `data` holds whole rows and `centroids` at least one row.
pub(crate) fn check_shapes(data: &[f32], dim: usize, centroids: &[f32]) {
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
/// [`assign_brute_force`](super::assign_brute_force)'s, with an exact distance larger by at
/// most a few ulps of `||x||^2 + ||c||^2` (measured after translating by the centroids' mean).
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

#[cfg(test)]
mod tests {
    use super::super::oracle::{assign_brute_force, nearest_brute, sq_dist_f64};
    use super::super::testutil::{assert_near_oracle, run, uniform};
    use super::*;
    use proptest::prelude::*;

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
