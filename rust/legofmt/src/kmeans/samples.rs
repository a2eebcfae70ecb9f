//! The sample phase: Lloyd iterations with momentum on nested random samples.
//!
//! Full-data Lloyd iterations are the expensive way to a good codebook: on weight blocks (a
//! continuum, not separated clusters) Lloyd converges slowly, and every iteration costs a full
//! nearest-centroid pass. This phase does most of the work on samples instead, which grow
//! geometrically:
//!
//! - **Nested samples** (`sampler.rs`). Level `l` holds about `s_0 * 2^l` points, with
//!   `s_0 = max(batch_size, 64 k)`, up to `min(n, 48 sqrt(n k))` points (the whole data set
//!   when `n <= 48^2 k`); every level contains the previous one.
//! - **Iterations.** Level `l` runs at most `24 * 0.7^l` iterations (at least 1, and up to 24
//!   while the level's iterations cost at most 2^30 multiply-adds in all); each assigns the
//!   level's points with the parallel kernel and moves the centroids with a heavy-ball step
//!   towards the means of their points, `v <- b v + 1.5 (mean - c)`, `c <- c + v`, with `b`
//!   ramping up to 0.5 over the first five iterations: an over-relaxed Lloyd step with
//!   momentum, which needs fewer iterations than plain Lloyd for the same inertia on weight
//!   blocks. The momentum is dropped whenever a level's inertia rises. A level stops
//!   early once its inertia improves by less than `15 * tol` times itself (`tol` on the cheap
//!   levels of small `k`). The very last update is a plain Lloyd step (centroids = means of
//!   the last assignment), and so is the last one before the budget runs out.
//! - **Budget.** The phase assigns at most `max_iter * n` points in all (`max_iter = 0` skips
//!   it).
//!
//! Empty clusters are re-seeded from the level's farthest points, as in the Lloyd stage. All
//! arithmetic happens in a fixed order (means in f64 from fixed parts, summed while the
//! points are assigned, see [`assign_sum`]), so the result depends only on the seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::assign::{inertia_of, Slot};
use super::means::assign_sum;
use super::packed::Packed;
use super::params::ValidKMeansParams;
use super::points::Points;
use super::progress::{Progress, ProgressStage, ProgressThrottle};
use super::sampler::{sample_sizes, NestedSamples};
use super::simd::Isa;
use crate::error::Result;

/// RNG stream of the sample.
const STREAM_SAMPLE: u64 = 2;
/// Iterations shrink by this factor from one level to the next.
const ITERS_DECAY: f64 = 0.7;
/// Iterations on the smallest sample (see [`iterations`]).
const FIRST_ITERS: usize = 24;
/// Step towards the means (over-relaxation).
const STEP: f64 = 1.5;
/// Momentum, reached after [`WARMUP`] iterations.
const MOMENTUM: f64 = 0.5;
/// Iterations over which the momentum ramps up from 0.
const WARMUP: usize = 5;
/// Multiply-adds a level may spend on iterations beyond [`iterations`] (up to
/// [`FIRST_ITERS`] in all): small `k` makes passes so cheap that more iterations cost nothing.
const CHEAP_WORK: usize = 1 << 30;
/// A level stops when its inertia improves by less than this times `tol` (relative).
const LEVEL_TOL_FACTOR: f64 = 15.0;
/// Most iterations on level `l`: `24 * 0.7^l`, rounded, at least 1.
fn iterations(l: usize) -> usize {
    ((FIRST_ITERS as f64 * ITERS_DECAY.powi(l.min(64) as i32)).round() as usize).max(1)
}

/// Runs the sample phase, updating `centroids` in place; returns the number of centroid updates.
pub(crate) fn run(
    data: &[f32],
    params: &ValidKMeansParams,
    isa: Isa,
    centroids: &mut [f32],
    throttle: &mut ProgressThrottle<'_>,
) -> Result<usize> {
    let (n, dim, k) = (params.n_points(), params.dim(), params.k());
    if params.max_iter() == 0 {
        return Ok(0);
    }
    let budget = params.max_iter().saturating_mul(n);
    let (sizes, full) = sample_sizes(n, k, params.batch_size());
    if sizes.is_empty() {
        return Ok(0);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed());
    rng.set_stream(STREAM_SAMPLE);
    let samples = NestedSamples::draw(n, &sizes, full, rng.random());

    let mut c64: Vec<f64> = centroids.iter().map(|&v| f64::from(v)).collect();
    let mut vel = vec![0f64; k * dim];
    let mut slots = vec![Slot::default(); *samples.ends.last().unwrap_or(&0)];
    let mut used = 0usize;
    let mut updates = 0usize;
    let n_levels = samples.ends.len();
    let level_tol = LEVEL_TOL_FACTOR * params.tol();
    'levels: for (l, &s) in samples.ends.iter().enumerate() {
        if s < k {
            continue;
        }
        let last_level = l + 1 == n_levels;
        let points = if samples.full && last_level {
            Points::Dense(data)
        } else {
            Points::Indexed(data, &samples.idx[..s])
        };
        // Cheap levels (small k) get more iterations: up to FIRST_ITERS within CHEAP_WORK.
        let cheap = CHEAP_WORK.div_ceil(s.saturating_mul(k * dim).max(1));
        let max_its = iterations(l).max(cheap.min(FIRST_ITERS));
        // ... and converge further (to `tol` instead of `15 tol`).
        let level_tol = if cheap > iterations(l) {
            params.tol()
        } else {
            level_tol
        };
        let level_slots = &mut slots[..s];
        let mut previous: Option<f64> = None;
        for it in 0..max_its {
            if used.saturating_add(s) > budget {
                break 'levels;
            }
            let packed = Packed::new(centroids, dim);
            let mut tick = |done: usize, work: u64| {
                throttle.tick(
                    Progress {
                        stage: ProgressStage::Samples,
                        done: used + done,
                        total: budget,
                        inertia: None,
                    },
                    work,
                )
            };
            let (counts, sums, relocated) =
                assign_sum(isa, points, &packed, level_slots, &mut tick)?;
            used += s;
            let inertia = inertia_of(level_slots);
            let converged = previous.is_some_and(|p| p - inertia <= level_tol * inertia);
            if previous.is_some_and(|p| inertia > p) {
                vel.fill(0.0);
            }
            let over_budget = used.saturating_add(s) > budget;
            let plain = over_budget || (last_level && (converged || it + 1 == max_its));
            let momentum = MOMENTUM * (updates as f64 / WARMUP as f64).min(1.0);
            for (c, &count) in counts.iter().enumerate() {
                if count == 0 {
                    continue;
                }
                let count = f64::from(count);
                let reset = plain || relocated.contains(&c);
                let rows = c * dim..(c + 1) * dim;
                for ((cv, v), &sum) in c64[rows.clone()]
                    .iter_mut()
                    .zip(&mut vel[rows.clone()])
                    .zip(&sums[rows])
                {
                    let mean = sum / count;
                    if reset {
                        *v = 0.0;
                        *cv = mean;
                    } else {
                        *v = momentum * *v + STEP * (mean - *cv);
                        *cv += *v;
                    }
                }
            }
            for (o, &v) in centroids.iter_mut().zip(&c64) {
                *o = v as f32;
            }
            updates += 1;
            throttle.report_now(Progress {
                stage: ProgressStage::Samples,
                done: used,
                total: budget,
                inertia: Some(inertia * n as f64 / s as f64),
            })?;
            previous = Some(inertia);
            if converged {
                break;
            }
        }
    }
    Ok(updates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterations_shrink_from_level_to_level() {
        assert_eq!(
            (0..10).map(iterations).collect::<Vec<_>>(),
            vec![24, 17, 12, 8, 6, 4, 3, 2, 1, 1]
        );
    }
}
