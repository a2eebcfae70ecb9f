//! Full-data Lloyd iterations and the final assignment.
//!
//! A Lloyd iteration assigns every point (parallel kernel) and moves each centroid to the exact
//! mean of its points, with empty clusters re-seeded (both in `means.rs`). The iterations stop
//! after `lloyd_iters` (none by default) or once the inertia improves by less than `tol` times
//! itself; the final assignment then gives every point its nearest centroid. Full passes run
//! in slabs of about [`SLAB_WORK`] multiply-adds, with a progress report (and a chance to
//! cancel) between slabs.

use super::assign::{assign_slots, inertia_of, Slot, CHUNK};
use super::means::{update_centroids, SLAB_WORK};
use super::packed::Packed;
use super::params::ValidKMeansParams;
use super::progress::{Progress, ProgressStage, ProgressThrottle};
use super::simd::Isa;
use crate::error::Result;

/// Assigns all points in slabs, reporting progress (`done0 + points`) between slabs.
#[allow(clippy::too_many_arguments)]
fn full_pass(
    data: &[f32],
    packed: &Packed,
    isa: Isa,
    slots: &mut [Slot],
    throttle: &mut ProgressThrottle<'_>,
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
        throttle.tick(
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

/// Runs up to `lloyd_iters` Lloyd iterations on `centroids` (updated in place), then the final
/// assignment; returns the assignment, its inertia and the number of centroid updates.
pub(crate) fn run(
    data: &[f32],
    params: &ValidKMeansParams,
    isa: Isa,
    centroids: &mut [f32],
    throttle: &mut ProgressThrottle<'_>,
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
            throttle,
            ProgressStage::Lloyd,
            it * n,
            total,
        )?;
        let inertia = inertia_of(&slots);
        throttle.report_now(Progress {
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
                throttle,
                ProgressStage::Assign,
                0,
                n,
            )?;
            inertia_of(&slots)
        }
    };
    throttle.report_now(Progress {
        stage: ProgressStage::Assign,
        done: n,
        total: n,
        inertia: Some(inertia),
    })?;
    Ok((slots, inertia, updates))
}
