//! The sample phase: Lloyd iterations with momentum on nested random samples.
//!
//! Full-data Lloyd iterations are the expensive way to a good codebook: on weight blocks (a
//! continuum, not separated clusters) Lloyd converges slowly, and every iteration costs a full
//! nearest-centroid pass. This phase does most of the work on samples instead (the
//! "mini-batches" of the parameters), which grow geometrically:
//!
//! - **Nested samples.** Level `l` holds about `s_0 * 2^l` points, with
//!   `s_0 = max(batch_size, 64 k)`; the last level holds `min(n, 48 sqrt(n k))` points (about
//!   1M of 1.6M points at `k = 256`, 2.1M of 6.4M): the sample a codebook needs grows with the
//!   data, but more slowly, so for large `n` the phase costs a fraction of a full pass. When
//!   `n <= 48^2 k` the last level is the whole data set. Each point `i` draws a uniform number
//!   `u_i` from a hash of the seed and `i`, and level `l` is `{i : u_i < s_l / n}`, so every
//!   level contains the previous one (its size is within a few standard deviations of the
//!   target). The levels are one list of point indices (each level's new points in index
//!   order) whose prefixes are the levels; the kernel gathers the listed points a chunk at a
//!   time, so a sample costs 4 bytes a point.
//! - **Iterations.** Level `l` runs at most `24 * 0.7^l` iterations (at least 1, and up to 24
//!   while the level's iterations cost at most 2^30 multiply-adds in all); each assigns the
//!   level's points with the parallel kernel and moves the centroids with a heavy-ball step
//!   towards the means of their points, `v <- b v + 1.5 (mean - c)`, `c <- c + v`, with `b`
//!   ramping up to 0.5 over the first five iterations: an over-relaxed Lloyd step with
//!   momentum, which needs about half as many iterations as plain Lloyd for the same inertia
//!   on weight blocks. The momentum is dropped whenever a level's inertia rises. A level stops
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

use super::assign::{Isa, Packed, Points, Slot};
use super::lloyd::assign_sum;
use super::params::{Progress, ProgressStage, ValidKMeansParams};
use super::report::Reporter;
use crate::error::Result;
use crate::par;

/// RNG stream of the sample.
const STREAM_SAMPLE: u64 = 2;
/// The smallest sample holds at least this many points per cluster.
pub(crate) const FIRST_SAMPLE_PER_CLUSTER: usize = 64;
/// The largest sample holds at most `SAMPLE_SCALE * sqrt(n k)` points (then the whole data
/// set is a level of its own when `n <= SAMPLE_SCALE^2 k`).
const SAMPLE_SCALE: f64 = 48.0;
/// Each sample is this many times larger than the previous one.
const GROWTH: usize = 2;
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
/// Points per part of the parallel sample scan.
const SCAN_PART: usize = 1 << 16;

/// The nested samples: `idx` lists the points of level 0, then those added by level 1, ...
/// (each part in index order); level `l` is the prefix of `ends[l]` points. `full` says the last
/// level is the whole data set (not listed).
struct Samples {
    idx: Vec<u32>,
    ends: Vec<usize>,
    full: bool,
}

/// A 64-bit mix (splitmix64's finaliser).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Most iterations on level `l`: `24 * 0.7^l`, rounded, at least 1.
fn iterations(l: usize) -> usize {
    ((FIRST_ITERS as f64 * ITERS_DECAY.powi(l.min(64) as i32)).round() as usize).max(1)
}

/// Target sizes of the levels for `n` points, and whether the last one is the whole data set.
fn level_sizes(n: usize, k: usize, batch_size: usize) -> (Vec<usize>, bool) {
    let first = batch_size.max(FIRST_SAMPLE_PER_CLUSTER.saturating_mul(k));
    let cap = (SAMPLE_SCALE * ((n as f64) * (k as f64)).sqrt()) as usize;
    let mut sizes = Vec::new();
    let mut s = first;
    while s < n.min(cap) {
        sizes.push(s);
        s = s.saturating_mul(GROWTH);
    }
    let full = n <= cap;
    sizes.push(n.min(cap));
    (sizes, full)
}

/// Draws the nested samples (see the module documentation).
fn draw_samples(n: usize, sizes: &[usize], full: bool, key: u64) -> Samples {
    let sampled = if full {
        &sizes[..sizes.len() - 1]
    } else {
        sizes
    };
    let levels = sampled.len();
    // Level of point i: the first l with u_i < s_l / n, compared on 53-bit integers.
    let thresholds: Vec<u64> = sampled
        .iter()
        .map(|&s| ((s as f64 / n as f64) * (1u64 << 53) as f64) as u64)
        .collect();
    let top = thresholds.last().copied().unwrap_or(0);
    let parts = par::map_range(n.div_ceil(SCAN_PART), |p| {
        let (lo, hi) = (p * SCAN_PART, ((p + 1) * SCAN_PART).min(n));
        // Branch-free compaction of the sampled points, then their levels.
        let mut picked = vec![(0u32, 0u64); hi - lo + 1];
        let mut m = 0;
        for i in lo..hi {
            let u = mix(key ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 11;
            picked[m] = (i as u32, u);
            m += usize::from(u < top);
        }
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); levels];
        for &(i, u) in &picked[..m] {
            let l = thresholds.iter().position(|&t| u < t).unwrap_or(levels - 1);
            lists[l].push(i);
        }
        lists
    });
    let mut ends = Vec::with_capacity(sizes.len());
    let mut total = 0;
    for l in 0..levels {
        total += parts.iter().map(|p| p[l].len()).sum::<usize>();
        ends.push(total);
    }
    let mut idx = Vec::with_capacity(total);
    for l in 0..levels {
        for p in &parts {
            idx.extend_from_slice(&p[l]);
        }
    }
    if full {
        ends.push(n);
    }
    Samples { idx, ends, full }
}

/// Runs the sample phase, updating `centroids` in place; returns the number of centroid updates.
pub(crate) fn run(
    data: &[f32],
    params: &ValidKMeansParams,
    isa: Isa,
    centroids: &mut [f32],
    reporter: &mut Reporter<'_>,
) -> Result<usize> {
    let (n, dim, k) = (params.n_points(), params.dim(), params.k());
    if params.max_iter() == 0 {
        return Ok(0);
    }
    let budget = params.max_iter().saturating_mul(n);
    let (sizes, full) = level_sizes(n, k, params.batch_size());
    if sizes.is_empty() {
        return Ok(0);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed());
    rng.set_stream(STREAM_SAMPLE);
    let samples = draw_samples(n, &sizes, full, rng.random());

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
                reporter.tick(
                    Progress {
                        stage: ProgressStage::MiniBatch,
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
            let inertia: f64 = level_slots.iter().map(|q| f64::from(q.dist)).sum();
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
            reporter.force(Progress {
                stage: ProgressStage::MiniBatch,
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
    fn levels_grow_and_end_with_the_data_when_small() {
        // 48 * sqrt(1.6M * 256) = 971,451.4
        let (s, full) = level_sizes(1_600_000, 256, 2048);
        assert_eq!(
            s,
            vec![16384, 32768, 65536, 131072, 262144, 524288, 971_451]
        );
        assert!(!full);
        let (s, full) = level_sizes(100_000, 256, 2048);
        assert_eq!(s, vec![16384, 32768, 65536, 100_000]);
        assert!(full);
        let (s, full) = level_sizes(1000, 8, 2048);
        assert_eq!(s, vec![1000]);
        assert!(full);
        assert_eq!(
            (0..10).map(iterations).collect::<Vec<_>>(),
            vec![24, 17, 12, 8, 6, 4, 3, 2, 1, 1]
        );
    }

    #[test]
    fn samples_are_nested_and_near_their_target_sizes() {
        let n = 300_000;
        let (sizes, full) = level_sizes(n, 64, 2048);
        assert_eq!(
            sizes,
            vec![4096, 8192, 16384, 32768, 65536, 131072, 210_325]
        );
        assert!(!full);
        let s = draw_samples(n, &sizes, full, 7);
        assert_eq!(s.ends.len(), sizes.len());
        for (&e, &t) in s.ends.iter().zip(&sizes) {
            assert!(
                (e as f64 - t as f64).abs() < 5.0 * (t as f64).sqrt() + 5.0,
                "{e} vs {t}"
            );
        }
        assert_eq!(s.idx.len(), *s.ends.last().unwrap());
        // No point twice, all in range, each level's new part in index order.
        let mut seen = std::collections::HashSet::new();
        assert!(s.idx.iter().all(|&i| (i as usize) < n && seen.insert(i)));
        let mut start = 0;
        for &e in &s.ends {
            assert!(s.idx[start..e].windows(2).all(|w| w[0] < w[1]));
            start = e;
        }
        // Another key gives another sample; a small data set ends with all of it.
        assert_ne!(draw_samples(n, &sizes, full, 8).idx[..64], s.idx[..64]);
        let (sizes, full) = level_sizes(100_000, 256, 2048);
        let s = draw_samples(100_000, &sizes, full, 7);
        assert!(s.full && s.ends.len() == 4 && s.ends[3] == 100_000);
        assert_eq!(s.idx.len(), s.ends[2]);
    }
}
