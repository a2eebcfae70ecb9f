//! Full-data Lloyd iterations, empty-cluster re-seeding and the final assignment.
//!
//! A Lloyd iteration assigns every point (parallel kernel) and moves each centroid to the exact
//! mean of its points. The means are accumulated in f64, each cluster's points in index order
//! (points are bucketed by cluster with a counting sort, then clusters are summed in parallel),
//! so they do not depend on the thread count, and a cluster of identical points gets exactly
//! that point. Clusters left empty are re-seeded with the points farthest from their centroids
//! (largest distance first, lowest index on ties), each taken from a cluster that keeps at
//! least one point, as scikit-learn does.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::assign::{assign_slots, inertia_of, Isa, Packed, Slot, CHUNK};
use super::params::{Progress, ProgressStage, ValidKMeansParams};
use super::report::Reporter;
use crate::error::Result;
use crate::par;

/// Clusters per parallel work item when summing.
const SUM_CLUSTERS: usize = 64;
/// Multiply-adds per slab of a full pass (between two progress/cancellation checks).
const SLAB_WORK: usize = 1 << 27;

/// Assigns all points in slabs, reporting progress (`done0 + points`) between slabs.
#[allow(clippy::too_many_arguments)]
fn full_pass(
    data: &[f32],
    packed: &Packed,
    isa: Isa,
    slots: &mut [Slot],
    reporter: &mut Reporter<'_>,
    stage: ProgressStage,
    done0: usize,
    total: usize,
) -> Result<()> {
    let dim = packed.dim();
    let per_point = packed.k().div_ceil(16) * 16 * dim;
    let slab = (SLAB_WORK / per_point).div_ceil(CHUNK).max(1) * CHUNK;
    let mut start = 0;
    for out in slots.chunks_mut(slab) {
        let end = start + out.len();
        assign_slots(isa, &data[start * dim..end * dim], packed, out);
        start = end;
        reporter.tick(
            Progress {
                stage,
                done: done0 + end,
                total,
                inertia: None,
            },
            (out.len() * per_point) as u64,
        )?;
    }
    Ok(())
}

/// Moves every centroid to the mean of its points, re-seeding empty clusters.
pub(crate) fn update_centroids(data: &[f32], dim: usize, slots: &[Slot], centroids: &mut [f32]) {
    let k = centroids.len() / dim;
    let mut counts = vec![0u32; k];
    for s in slots {
        counts[s.idx as usize] += 1;
    }
    let mut offsets = vec![0usize; k + 1];
    for c in 0..k {
        offsets[c + 1] = offsets[c] + counts[c] as usize;
    }
    let mut cursor = offsets.clone();
    let mut order = vec![0u32; slots.len()];
    for (i, s) in slots.iter().enumerate() {
        let c = s.idx as usize;
        order[cursor[c]] = i as u32;
        cursor[c] += 1;
    }
    drop(cursor);
    let mut sums = vec![0f64; k * dim];
    par::for_each_chunk_mut(&mut sums, SUM_CLUSTERS * dim, |ci, chunk| {
        for (cc, row) in chunk.chunks_exact_mut(dim).enumerate() {
            let c = ci * SUM_CLUSTERS + cc;
            for &p in &order[offsets[c]..offsets[c + 1]] {
                let x = &data[p as usize * dim..(p as usize + 1) * dim];
                for (s, &v) in row.iter_mut().zip(x) {
                    *s += f64::from(v);
                }
            }
        }
    });
    drop(order);
    relocate_empty(data, dim, slots, &mut counts, &mut sums);
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

/// Gives each empty cluster one of the points farthest from their centroids.
fn relocate_empty(data: &[f32], dim: usize, slots: &[Slot], counts: &mut [u32], sums: &mut [f64]) {
    let empty: Vec<usize> = (0..counts.len()).filter(|&c| counts[c] == 0).collect();
    if empty.is_empty() {
        return;
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
            let x = &data[p * dim..(p + 1) * dim];
            for (j, &v) in x.iter().enumerate() {
                sums[old * dim + j] -= f64::from(v);
                sums[e * dim + j] = f64::from(v);
            }
            counts[old] -= 1;
            counts[e] = 1;
            continue 'clusters;
        }
        break;
    }
}

/// Runs up to `lloyd_iters` Lloyd iterations on `centroids` (updated in place), then the final
/// assignment; returns the assignment, its inertia and the number of centroid updates.
pub(crate) fn run(
    data: &[f32],
    params: &ValidKMeansParams,
    isa: Isa,
    centroids: &mut [f32],
    reporter: &mut Reporter<'_>,
) -> Result<(Vec<Slot>, f64, usize)> {
    let (n, dim) = (params.n_points(), params.dim());
    let iters = params.lloyd_iters();
    let mut slots = vec![Slot::default(); n];
    let mut previous: Option<f64> = None;
    let mut updates = 0;
    let mut converged = None;
    for it in 0..iters {
        let packed = Packed::new(centroids, dim);
        let total = iters * n;
        full_pass(
            data,
            &packed,
            isa,
            &mut slots,
            reporter,
            ProgressStage::Lloyd,
            it * n,
            total,
        )?;
        let inertia = inertia_of(&slots);
        reporter.force(Progress {
            stage: ProgressStage::Lloyd,
            done: (it + 1) * n,
            total,
            inertia: Some(inertia),
        })?;
        if let Some(prev) = previous {
            if prev - inertia <= params.tol() * prev {
                // The assignment is that of the current centroids: it is the final one.
                converged = Some(inertia);
                break;
            }
        }
        update_centroids(data, dim, &slots, centroids);
        updates += 1;
        previous = Some(inertia);
    }
    let inertia = match converged {
        Some(inertia) => inertia,
        None => {
            let packed = Packed::new(centroids, dim);
            full_pass(
                data,
                &packed,
                isa,
                &mut slots,
                reporter,
                ProgressStage::Assign,
                0,
                n,
            )?;
            inertia_of(&slots)
        }
    };
    reporter.force(Progress {
        stage: ProgressStage::Assign,
        done: n,
        total: n,
        inertia: Some(inertia),
    })?;
    Ok((slots, inertia, updates))
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
