//! Cluster means: per-cluster point counts and coordinate sums ([`Sums`]), computed in a fixed
//! order, and the re-seeding of empty clusters. Both the sample phase and the full-data Lloyd
//! iterations move centroids with these sums.
//!
//! The sums are accumulated in f64 over a fixed partition of the points (each part summed in
//! point order, in parallel, the parts added in order; see [`cluster_sums`]), so they do not
//! depend on the thread count, and a cluster of identical points gets exactly that point as its
//! mean. [`assign_sum`] computes the same sums while the points are assigned (each chunk summed
//! while it is in cache). Clusters left empty are re-seeded with the points farthest from their
//! centroids (largest distance first, lowest index on ties), each taken from a cluster that
//! keeps at least one point, as scikit-learn does.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::assign::{assign_points, assign_range, Slot, CHUNK};
use super::packed::Packed;
use super::points::Points;
use super::simd::Isa;
use crate::error::Result;
use crate::par;

/// Most parts the points are cut into when summing clusters.
const MAX_PARTS: usize = 64;
/// Fewest points per part.
const MIN_PART_POINTS: usize = 4096;
/// Assignment and summing are fused when there are at least this many parts.
const FUSED_MIN_PARTS: usize = 16;
/// Bound on the memory of all parts' partial sums together.
const PARTS_BYTES: usize = 32 << 20;
/// Multiply-adds per slab of a full pass (between two progress/cancellation checks).
pub(crate) const SLAB_WORK: usize = 1 << 27;

/// Per-cluster point counts and coordinate sums (f64) of a run of points.
pub(crate) struct Sums {
    counts: Vec<u32>,
    sums: Vec<f64>,
}

impl Sums {
    /// Zero counts and sums for `k` clusters of dimension `dim`.
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

/// Number of consecutive parts the points are cut into when summing clusters: it depends only
/// on `n`, `k` and `dim` (at most [`MAX_PARTS`], at least [`MIN_PART_POINTS`] points each, all
/// parts' sums within [`PARTS_BYTES`]).
fn sum_parts(n: usize, k: usize, dim: usize) -> usize {
    let by_memory = (PARTS_BYTES / (k * dim * 8).max(1)).max(1);
    (n / MIN_PART_POINTS).clamp(1, MAX_PARTS.min(by_memory))
}

/// Per-cluster point counts and coordinate sums of `points` (assigned by `slots`), with empty
/// clusters re-seeded as [`relocate_empty`] does. Returns `(counts, sums, relocated clusters)`.
///
/// The points are cut into [`sum_parts`] consecutive parts; each part is summed in f64 in point
/// order (in parallel), and the parts are added in order. The result does not depend on the
/// thread count, and a cluster of identical points gets exactly that point as its mean.
pub(crate) fn cluster_sums(
    points: Points<'_>,
    dim: usize,
    slots: &[Slot],
    k: usize,
) -> (Vec<u32>, Vec<f64>, Vec<usize>) {
    let n = slots.len();
    assert_eq!(points.len(dim), n, "points and slots differ");
    let parts = sum_parts(n, k, dim);
    let per = n.div_ceil(parts).max(1);
    let partial = par::map_range(parts, |p| {
        let mut s = Sums::new(k, dim);
        let (lo, hi) = ((p * per).min(n), ((p + 1) * per).min(n));
        for (q, slot) in (lo..hi).zip(&slots[lo..hi]) {
            s.add(slot.idx as usize, points.row(q, dim));
        }
        s
    });
    finish_sums(points, dim, slots, k, partial)
}

/// Assigns `points` to their nearest centroids (into `slots`) and returns what
/// [`cluster_sums`] would: the same parts, summed while each chunk of points is in cache when
/// there are enough parts to keep every core busy (else assigned first, then summed).
///
/// The work goes in slabs of about [`SLAB_WORK`] multiply-adds (whole parts, at least
/// [`FUSED_MIN_PARTS`] of them, on the fused path); `tick(points done, work)` runs between slabs
/// and stops everything when it fails (progress reports and cancellation).
pub(crate) fn assign_sum(
    isa: Isa,
    points: Points<'_>,
    packed: &Packed,
    slots: &mut [Slot],
    tick: &mut dyn FnMut(usize, u64) -> Result<()>,
) -> Result<(Vec<u32>, Vec<f64>, Vec<usize>)> {
    let (n, k, dim) = (slots.len(), packed.k(), packed.dim());
    let per_point = k.div_ceil(16) * 16 * dim;
    let parts = sum_parts(n, k, dim);
    if parts < FUSED_MIN_PARTS {
        let slab = (SLAB_WORK / per_point).div_ceil(CHUNK).max(1) * CHUNK;
        let mut start = 0;
        for out in slots.chunks_mut(slab) {
            let end = start + out.len();
            let sub = match points {
                Points::Dense(d) => Points::Dense(&d[start * dim..end * dim]),
                Points::Indexed(d, idx) => Points::Indexed(d, &idx[start..end]),
            };
            assign_points(isa, sub, packed, out);
            start = end;
            tick(end, (out.len() * per_point) as u64)?;
        }
        return Ok(cluster_sums(points, dim, slots, k));
    }
    let per = n.div_ceil(parts).max(1);
    let mut jobs: Vec<(usize, &mut [Slot], Sums)> = slots
        .chunks_mut(per)
        .enumerate()
        .map(|(p, out)| (p * per, out, Sums::new(k, dim)))
        .collect();
    let group = (SLAB_WORK / (per * per_point).max(1)).max(FUSED_MIN_PARTS);
    for g in jobs.chunks_mut(group) {
        par::for_each_chunk_mut(g, 1, |_, job| {
            let (start, out, sums) = &mut job[0];
            assign_range(isa, points, *start, packed, out, Some(sums));
        });
        let (start, out, _) = g.last().expect("chunks are not empty");
        let done: usize = g.iter().map(|j| j.1.len()).sum();
        tick(*start + out.len(), (done * per_point) as u64)?;
    }
    let partial: Vec<Sums> = jobs.into_iter().map(|(_, _, s)| s).collect();
    Ok(finish_sums(points, dim, slots, k, partial))
}

/// Adds the parts' sums in order and re-seeds empty clusters.
fn finish_sums(
    points: Points<'_>,
    dim: usize,
    slots: &[Slot],
    k: usize,
    partial: Vec<Sums>,
) -> (Vec<u32>, Vec<f64>, Vec<usize>) {
    let mut it = partial.into_iter();
    let mut total = it.next().unwrap_or_else(|| Sums::new(k, dim));
    for p in it {
        total.merge(&p);
    }
    let Sums {
        mut counts,
        mut sums,
    } = total;
    let relocated = relocate_empty(points, dim, slots, &mut counts, &mut sums);
    (counts, sums, relocated)
}

/// Moves every centroid to the mean of its points, re-seeding empty clusters.
pub(crate) fn update_centroids(data: &[f32], dim: usize, slots: &[Slot], centroids: &mut [f32]) {
    let k = centroids.len() / dim;
    let (counts, sums, _) = cluster_sums(Points::Dense(data), dim, slots, k);
    for ((c, s), &n) in centroids
        .chunks_exact_mut(dim)
        .zip(sums.chunks_exact(dim))
        .zip(&counts)
    {
        if n > 0 {
            let n = f64::from(n);
            for (cv, sv) in c.iter_mut().zip(s) {
                *cv = (sv / n) as f32;
            }
        }
    }
}

/// Gives each empty cluster one of the points farthest from their centroids; returns the
/// clusters that received a point.
fn relocate_empty(
    points: Points<'_>,
    dim: usize,
    slots: &[Slot],
    counts: &mut [u32],
    sums: &mut [f64],
) -> Vec<usize> {
    let empty: Vec<usize> = (0..counts.len()).filter(|&c| counts[c] == 0).collect();
    let mut relocated = Vec::new();
    if empty.is_empty() {
        return relocated;
    }
    // The `empty.len()` farthest points among clusters of two points or more. Distances are
    // non-negative, so their bit patterns order like their values.
    let m = empty.len();
    let mut heap = BinaryHeap::with_capacity(m + 1);
    for (i, s) in slots.iter().enumerate() {
        if counts[s.idx as usize] >= 2 {
            heap.push(Reverse((s.dist.to_bits(), Reverse(i))));
            if heap.len() > m {
                heap.pop();
            }
        }
    }
    let mut far: Vec<usize> = heap.into_iter().map(|Reverse((_, Reverse(i)))| i).collect();
    far.sort_unstable_by_key(|&i| (Reverse(slots[i].dist.to_bits()), i));
    let mut far = far.into_iter();
    'clusters: for e in empty {
        for p in far.by_ref() {
            let old = slots[p].idx as usize;
            if counts[old] < 2 {
                continue;
            }
            let x = points.row(p, dim);
            for (j, &v) in x.iter().enumerate() {
                sums[old * dim + j] -= f64::from(v);
                sums[e * dim + j] = f64::from(v);
            }
            counts[old] -= 1;
            counts[e] = 1;
            relocated.push(e);
            continue 'clusters;
        }
        break;
    }
    relocated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_are_exact_for_identical_points() {
        let dim = 3;
        let p = [0.1f32, -7.3, 1e-3];
        let q = [5.0f32, 5.0, 5.0];
        let mut data = Vec::new();
        let mut slots = Vec::new();
        for i in 0..1001 {
            data.extend_from_slice(if i % 2 == 0 { &p } else { &q });
            slots.push(Slot {
                idx: (i % 2) as u32,
                dist: 0.0,
            });
        }
        let mut centroids = vec![0.0; 2 * dim];
        update_centroids(&data, dim, &slots, &mut centroids);
        assert_eq!(&centroids[..3], &p);
        assert_eq!(&centroids[3..], &q);
    }

    #[test]
    fn fused_sums_equal_separate_sums() {
        use super::super::testutil::uniform;
        let dim = 16;
        let n = 70_000; // 17 parts: the fused path
        assert!(sum_parts(n, 40, dim) >= FUSED_MIN_PARTS);
        let data = uniform(n * dim, 3, -1.0, 1.0);
        let centroids = uniform(40 * dim, 4, -1.0, 1.0);
        let packed = Packed::new(&centroids, dim);
        let idx: Vec<u32> = (0..n as u32).rev().step_by(3).collect();
        for points in [Points::Dense(&data), Points::Indexed(&data, &idx)] {
            let m = points.len(dim);
            let mut fused = vec![Slot::default(); m];
            let mut ticks = 0;
            let a = assign_sum(Isa::detect(), points, &packed, &mut fused, &mut |_, _| {
                ticks += 1;
                Ok(())
            })
            .unwrap();
            assert!(ticks >= 1);
            let mut slots = vec![Slot::default(); m];
            assign_points(Isa::detect(), points, &packed, &mut slots);
            assert_eq!(fused, slots);
            assert_eq!(a, cluster_sums(points, dim, &slots, 40));
        }
    }

    #[test]
    fn empty_clusters_take_the_farthest_points() {
        let dim = 1;
        let data = vec![0.0f32, 1.0, 10.0, 11.0, 50.0];
        // Everything in cluster 0 (centroid 0); clusters 1 and 2 empty.
        let slots: Vec<Slot> = data
            .iter()
            .map(|&x| Slot {
                idx: 0,
                dist: x * x,
            })
            .collect();
        let mut centroids = vec![0.0, -100.0, -200.0];
        update_centroids(&data, dim, &slots, &mut centroids);
        assert_eq!(centroids[1], 50.0);
        assert_eq!(centroids[2], 11.0);
        assert_eq!(centroids[0], (0.0 + 1.0 + 10.0) / 3.0);
    }

    #[test]
    fn relocation_never_empties_a_cluster() {
        let dim = 1;
        let data = vec![3.0f32, 4.0];
        let slots = vec![Slot { idx: 0, dist: 9.0 }, Slot { idx: 1, dist: 1.0 }];
        let mut centroids = vec![0.0, 5.0, 7.0];
        update_centroids(&data, dim, &slots, &mut centroids);
        // No cluster has two points: cluster 2 stays empty and keeps its centroid.
        assert_eq!(centroids, vec![3.0, 4.0, 7.0]);
    }
}
