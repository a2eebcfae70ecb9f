//! k-means for small vectors (flattened weight blocks, at most 64 values), built for many
//! points: it aims at the quality of many full-data Lloyd iterations at the cost of a few
//! nearest-centroid passes over the data (docs/benchmarks.md, "k-means", has the figures).
//!
//! [`fit`] runs four stages, each reported through the progress callback:
//!
//! 1. **Init** (`init.rs`): greedy k-means++ on a random sample of the points (see `init.rs`
//!    for the exact sampling rule and what happens for very large `k`).
//! 2. **Samples** ([`ProgressStage::Samples`], `samples.rs`): Lloyd iterations with
//!    over-relaxation and momentum on nested random samples growing from `64 k` points to
//!    `48 sqrt(n k)` (the whole data set when that is smaller; the sampler is `sampler.rs`),
//!    many cheap iterations on the small samples, one or two on the largest.
//! 3. **Lloyd** (`lloyd.rs`): optional full-data iterations (assignment + exact means; none by
//!    default); empty clusters are re-seeded with the points farthest from their centroid
//!    (`means.rs`).
//! 4. **Assign**: the final assignment of every point to its nearest centroid.
//!
//! The nearest-centroid search is the hot loop: centroids are shifted by their mean and packed
//! (`packed.rs`), the chunk driver (`assign.rs`) compares points with them through the kernels
//! of `simd/` (`x.c - |c|^2 / 2` in f32, eight points per vector register against groups of
//! four centroids), then recomputes the winner's exact distance in f64; `oracle.rs` holds the
//! brute-force search it is tested against. Every floating-point reduction runs in a fixed
//! order, so a fit is deterministic for a seed, independent of the thread count and of the
//! instruction set (AVX2 or portable) it runs on. Memory stays
//! `O(n + sample * dim + k * dim)`: there is never an `n x k` matrix. Progress reports go
//! through a throttle (`progress.rs`) that calls the callback only every so much work.

mod assign;
mod init;
mod lloyd;
mod means;
mod oracle;
mod packed;
mod params;
mod points;
mod progress;
mod sampler;
mod samples;
mod simd;
#[cfg(test)]
mod testutil;

pub use assign::assign;
pub use oracle::assign_brute_force;
pub use params::{
    KMeansParams, KMeansResult, ValidKMeansParams, DEFAULT_BATCH_SIZE, DEFAULT_LLOYD_ITERS,
    DEFAULT_MAX_ITER, DEFAULT_TOL, MAX_DIM, MAX_K, MIN_K,
};
pub use progress::{Progress, ProgressStage};

use crate::error::Result;
use progress::ProgressThrottle;
use simd::Isa;

/// Clusters `data` (`n * dim` values, row-major, `n` and `dim` as checked in `params`).
///
/// `progress` is called from the calling thread after every 2^26 multiply-adds of work or so,
/// after every iteration and at the end of every stage; returning `false` stops the fit with
/// [`LgnError::Cancelled`].
///
/// [`LgnError::Cancelled`]: crate::LgnError::Cancelled
pub fn fit(
    data: &[f32],
    dim: usize,
    params: &ValidKMeansParams,
    progress: &(dyn Fn(&Progress) -> bool + Sync),
) -> Result<KMeansResult> {
    fit_with(data, dim, params, progress, Isa::detect())
}

fn fit_with(
    data: &[f32],
    dim: usize,
    params: &ValidKMeansParams,
    progress: &(dyn Fn(&Progress) -> bool + Sync),
    isa: Isa,
) -> Result<KMeansResult> {
    assert_eq!(
        dim,
        params.dim(),
        "dim differs from the one the params were checked for"
    );
    assert_eq!(
        data.len(),
        params.n_points() * dim,
        "data length differs from the one the params were checked for"
    );
    let mut throttle = ProgressThrottle::new(progress);
    let mut centroids = init::init_centroids(data, params, isa, &mut throttle)?;
    let steps = samples::run(data, params, isa, &mut centroids, &mut throttle)?;
    let (slots, inertia, updates) = lloyd::run(data, params, isa, &mut centroids, &mut throttle)?;
    Ok(KMeansResult {
        centroids,
        assignments: slots.iter().map(|s| s.idx).collect(),
        inertia,
        iterations: steps + updates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LgnError;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `centers` well separated clusters of `per` points each, in `dim` dimensions.
    fn blobs(centers: usize, per: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut data = Vec::new();
        let mut labels = Vec::new();
        let means: Vec<Vec<f32>> = (0..centers)
            .map(|c| (0..dim).map(|j| (c * 10 + j) as f32 * 3.0).collect())
            .collect();
        for i in 0..centers * per {
            let c = i % centers;
            for m in &means[c] {
                data.push(m + rng.random_range(-0.5f32..0.5));
            }
            labels.push(c);
        }
        (data, labels)
    }

    fn never_cancel(_: &Progress) -> bool {
        true
    }

    #[test]
    fn recovers_separated_clusters() {
        let (data, labels) = blobs(8, 500, 16, 1);
        let params = KMeansParams::new(8).check(labels.len(), 16).unwrap();
        let res = fit(&data, 16, &params, &never_cancel).unwrap();
        // Points with the same true label share a cluster, different labels differ.
        let mut map = std::collections::HashMap::new();
        for (&l, &a) in labels.iter().zip(&res.assignments) {
            assert_eq!(*map.entry(l).or_insert(a), a, "label {l} split");
        }
        let distinct: std::collections::HashSet<_> = map.values().collect();
        assert_eq!(distinct.len(), 8);
    }

    #[test]
    fn final_assignment_matches_brute_force_oracle() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let dim = 16;
        let n = 5000;
        let data: Vec<f32> = (0..n * dim)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let params = KMeansParams::new(37).check(n, dim).unwrap();
        let res = fit(&data, dim, &params, &never_cancel).unwrap();
        let (oracle, oracle_inertia) = assign_brute_force(&data, dim, &res.centroids);
        for (i, (&a, &o)) in res.assignments.iter().zip(&oracle).enumerate() {
            if a != o {
                // Ties or near-ties only: the distances must agree to rounding.
                let x = &data[i * dim..(i + 1) * dim];
                let d = |c: u32| -> f64 {
                    let c = &res.centroids[c as usize * dim..(c as usize + 1) * dim];
                    x.iter().zip(c).map(|(p, q)| f64::from(p - q).powi(2)).sum()
                };
                assert!((d(a) - d(o)).abs() <= 1e-5 * d(o).max(1e-12), "point {i}");
            }
        }
        assert!((res.inertia - oracle_inertia).abs() <= 1e-6 * oracle_inertia);
    }

    #[test]
    fn deterministic_for_a_seed_and_isa_independent() {
        let (data, _) = blobs(20, 300, 16, 3);
        let n = data.len() / 16;
        let params = KMeansParams::new(24).with_seed(42).check(n, 16).unwrap();
        let a = fit(&data, 16, &params, &never_cancel).unwrap();
        let b = fit(&data, 16, &params, &never_cancel).unwrap();
        assert_eq!(a, b);
        for isa in Isa::all() {
            let c = fit_with(&data, 16, &params, &never_cancel, isa).unwrap();
            assert_eq!(a, c, "{isa:?}");
        }
        let other = KMeansParams::new(24).with_seed(43).check(n, 16).unwrap();
        let d = fit(&data, 16, &other, &never_cancel).unwrap();
        assert_ne!(a.centroids, d.centroids);
    }

    #[test]
    fn two_by_two_blocks_are_isa_independent_and_beat_a_sample_fit() {
        // 2x2 blocks (dim 4, the library default) on more points than the largest sample, so
        // the fit ends with the sample phase and the final assignment only.
        let dim = 4;
        let n = 40_000;
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let data: Vec<f32> = (0..n * dim)
            .map(|_| {
                let u: f32 = rng.random_range(-1.0f32..1.0);
                u * u * u
            })
            .collect();
        let params = KMeansParams::new(16).with_seed(4).check(n, dim).unwrap();
        let a = fit(&data, dim, &params, &never_cancel).unwrap();
        for isa in Isa::all() {
            assert_eq!(
                fit_with(&data, dim, &params, &never_cancel, isa).unwrap(),
                a
            );
        }
        let (_, brute) = assign_brute_force(&data, dim, &a.centroids);
        assert!((a.inertia - brute).abs() <= 1e-6 * brute);
        // No worse than 30 plain Lloyd iterations from the same k-means++ start on all points.
        let mut p = KMeansParams::new(16).with_seed(4);
        p.max_iter = 0;
        p.lloyd_iters = 30;
        let lloyd = fit(&data, dim, &p.check(n, dim).unwrap(), &never_cancel).unwrap();
        assert!(
            a.inertia <= lloyd.inertia * 1.01,
            "{} vs {}",
            a.inertia,
            lloyd.inertia
        );
    }

    #[cfg(feature = "parallel")]
    #[test]
    fn deterministic_across_thread_counts() {
        let (data, _) = blobs(12, 400, 8, 5);
        let n = data.len() / 8;
        let params = KMeansParams::new(16).check(n, 8).unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| fit(&data, 8, &params, &never_cancel).unwrap())
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }

    #[test]
    fn lloyd_refinement_reaches_a_fixed_point_quality() {
        // Inertia after the fit is no worse than after a further Lloyd step from its centroids.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let dim = 4;
        let n = 20000;
        let data: Vec<f32> = (0..n * dim)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let params = KMeansParams::new(64).check(n, dim).unwrap();
        let res = fit(&data, dim, &params, &never_cancel).unwrap();
        let (_, brute) = assign_brute_force(&data, dim, &res.centroids);
        assert!(res.inertia <= brute * (1.0 + 1e-9));
        // Uniform data in [-1,1]^4 with 64 centroids: the optimum is near a 2x2x2x2 grid
        // refinement; a broken fit (e.g. stuck centroids) is far above this.
        let per_point = res.inertia / n as f64;
        let uniform_var = dim as f64 / 3.0;
        assert!(per_point < 0.15 * uniform_var, "{per_point}");
    }

    #[test]
    fn cancellation_is_reported() {
        let (data, _) = blobs(4, 5000, 16, 9);
        let n = data.len() / 16;
        let params = KMeansParams::new(4).check(n, 16).unwrap();
        let err = fit(&data, 16, &params, &|_: &Progress| false).unwrap_err();
        assert!(matches!(err, LgnError::Cancelled));
    }

    #[test]
    fn progress_reports_every_stage_in_order() {
        let (data, _) = blobs(4, 2000, 16, 13);
        let n = data.len() / 16;
        let params = KMeansParams::new(4).check(n, 16).unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        fit(&data, 16, &params, &|p: &Progress| {
            seen.lock().unwrap().push(p.stage);
            true
        })
        .unwrap();
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.last(), Some(&ProgressStage::Assign));
        let order = |s: &ProgressStage| *s as usize;
        assert!(seen.windows(2).all(|w| order(&w[0]) <= order(&w[1])));
    }
}
