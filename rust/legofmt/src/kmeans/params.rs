//! Parameters of [`fit`](super::fit), their validation, and what `fit` returns.

use crate::error::{LgnError, Result};

pub use crate::limits::{MAX_BLOCK_DIM as MAX_DIM, MAX_K, MIN_K};
/// Default budget of the sample phase in "epochs" (passes' worth of points), an upper bound:
/// the phase usually assigns far fewer points (each sample stops on its iteration cap or its
/// convergence test).
pub const DEFAULT_MAX_ITER: usize = 10;
/// Default size of the smallest sample of the sample phase (it is at least `64 k` anyway).
pub const DEFAULT_BATCH_SIZE: usize = 2048;
/// Default relative tolerance of the early-stopping tests.
pub const DEFAULT_TOL: f64 = 1e-4;
/// Default number of full-data Lloyd iterations after the sample phase: none. The sample phase
/// ends on the whole data set when it is small (`n <= 2304 k`); on larger data sets its last
/// sample (`48 sqrt(n k)` points) already gives the quality full-data iterations would reach
/// on weight blocks (see docs/benchmarks.md, "k-means"), and a full-data iteration would
/// cost a whole extra assignment pass.
pub const DEFAULT_LLOYD_ITERS: usize = 0;
/// The initialisation sample holds at least this many points by default (or all of them).
pub const DEFAULT_INIT_SAMPLE_MIN: usize = 16384;
/// ... and at least this many points per cluster.
pub const DEFAULT_INIT_SAMPLE_PER_CLUSTER: usize = 16;

/// Parameters of k-means; validate them with [`KMeansParams::check`].
///
/// The fit runs in four stages (see [`ProgressStage`](super::ProgressStage)): k-means++
/// initialisation on a sample, the sample phase (Lloyd iterations with momentum on nested
/// random samples), optional full-data Lloyd iterations, and a final full assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansParams {
    /// Number of clusters, in `2..=65536` and at most the number of points.
    pub k: usize,
    /// Seed of every random choice (initialisation sample, initial centroids, nested samples).
    pub seed: u64,
    /// Upper bound of the sample phase in epochs: it assigns at most `max_iter * n` points in
    /// all. It usually assigns far fewer (each sample stops on its iteration cap or its
    /// convergence test). 0 skips the sample phase.
    pub max_iter: usize,
    /// The smallest sample size of the sample phase: its first nested sample holds
    /// `max(batch_size, 64 k)` points (capped at the number of points), each later one twice
    /// as many. At least 1. (The name is the one the bindings and the Python API use; the fit
    /// runs no mini-batch algorithm.)
    pub batch_size: usize,
    /// Relative tolerance: the full-data Lloyd iterations stop when the inertia improves by
    /// less than `tol` times itself, and each sample of the sample phase when its inertia
    /// improves by less than `15 * tol` times itself.
    pub tol: f64,
    /// Size of the random sample that initialisation runs on (clamped to `k..=n`).
    pub init_sample: usize,
    /// Number of full-data Lloyd iterations after the sample phase (0, the default, allowed).
    pub lloyd_iters: usize,
}

impl KMeansParams {
    /// Parameters for `k` clusters with the defaults: seed 0, `max_iter` 10, `batch_size` 2048,
    /// `tol` 1e-4, `init_sample` `max(16384, 16 * k)`, `lloyd_iters` 0.
    pub fn new(k: usize) -> Self {
        KMeansParams {
            k,
            seed: 0,
            max_iter: DEFAULT_MAX_ITER,
            batch_size: DEFAULT_BATCH_SIZE,
            tol: DEFAULT_TOL,
            init_sample: DEFAULT_INIT_SAMPLE_MIN
                .max(DEFAULT_INIT_SAMPLE_PER_CLUSTER.saturating_mul(k)),
            lloyd_iters: DEFAULT_LLOYD_ITERS,
        }
    }

    /// Returns a copy with another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validates the parameters for `n_points` vectors of dimension `dim`, once, before any work.
    ///
    /// Errors ([`LgnError::InvalidArgument`]): `k` outside `2..=65536` or above `n_points`,
    /// `dim` outside `1..=64`, `n_points * dim` overflowing or `n_points` above `u32::MAX`,
    /// `batch_size` 0, `tol` negative or not finite.
    pub fn check(&self, n_points: usize, dim: usize) -> Result<ValidKMeansParams> {
        if !(MIN_K..=MAX_K).contains(&self.k) {
            return Err(LgnError::invalid(
                "k",
                format!("must be in {MIN_K}..={MAX_K}, got {}", self.k),
            ));
        }
        if !(1..=MAX_DIM).contains(&dim) {
            return Err(LgnError::invalid(
                "dim",
                format!("must be in 1..={MAX_DIM}, got {dim}"),
            ));
        }
        if self.k > n_points {
            return Err(LgnError::invalid(
                "k",
                format!(
                    "must not exceed the number of points ({n_points}), got {}",
                    self.k
                ),
            ));
        }
        if n_points > u32::MAX as usize || n_points.checked_mul(dim).is_none() {
            return Err(LgnError::invalid(
                "n_points",
                format!("too many points: {n_points} of dimension {dim}"),
            ));
        }
        if self.batch_size == 0 {
            return Err(LgnError::invalid("batch_size", "must be at least 1, got 0"));
        }
        if !self.tol.is_finite() || self.tol < 0.0 {
            return Err(LgnError::invalid(
                "tol",
                format!("must be finite and >= 0, got {}", self.tol),
            ));
        }
        Ok(ValidKMeansParams {
            k: self.k,
            seed: self.seed,
            max_iter: self.max_iter,
            batch_size: self.batch_size.min(n_points),
            tol: self.tol,
            init_sample: self.init_sample.clamp(self.k, n_points),
            lloyd_iters: self.lloyd_iters,
            n_points,
            dim,
        })
    }
}

/// Parameters checked against a data shape by [`KMeansParams::check`]; the getters return the
/// effective values (`batch_size` capped at `n_points`, `init_sample` clamped to `k..=n_points`).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidKMeansParams {
    k: usize,
    seed: u64,
    max_iter: usize,
    batch_size: usize,
    tol: f64,
    init_sample: usize,
    lloyd_iters: usize,
    n_points: usize,
    dim: usize,
}

impl ValidKMeansParams {
    /// Number of clusters.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Random seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// Upper bound of the sample phase, in epochs.
    pub fn max_iter(&self) -> usize {
        self.max_iter
    }
    /// Effective smallest sample size of the sample phase (capped at `n_points`, before the
    /// `64 k` floor).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
    /// Relative tolerance of the early-stopping tests.
    pub fn tol(&self) -> f64 {
        self.tol
    }
    /// Effective initialisation sample size.
    pub fn init_sample(&self) -> usize {
        self.init_sample
    }
    /// Number of full-data Lloyd iterations.
    pub fn lloyd_iters(&self) -> usize {
        self.lloyd_iters
    }
    /// Number of points the parameters were checked for.
    pub fn n_points(&self) -> usize {
        self.n_points
    }
    /// Vector dimension the parameters were checked for.
    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// What [`fit`](super::fit) returns.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansResult {
    /// `k * dim` centroid coordinates, row-major.
    pub centroids: Vec<f32>,
    /// Index of the nearest centroid of every point.
    pub assignments: Vec<u32>,
    /// Sum over points of the squared distance to their centroid (accumulated in f64).
    pub inertia: f64,
    /// Centroid updates performed: sample-phase iterations plus full-data Lloyd iterations.
    pub iterations: usize,
}

#[cfg(test)]
mod tests {
    use super::super::progress::Progress;
    use super::*;

    fn name_of(e: LgnError) -> &'static str {
        match e {
            LgnError::InvalidArgument { name, .. } => name,
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn rejects_bad_parameters() {
        assert_eq!(
            name_of(KMeansParams::new(1).check(100, 16).unwrap_err()),
            "k"
        );
        assert_eq!(
            name_of(KMeansParams::new(0).check(100, 16).unwrap_err()),
            "k"
        );
        assert_eq!(
            name_of(KMeansParams::new(65537).check(1 << 20, 16).unwrap_err()),
            "k"
        );
        assert_eq!(
            name_of(KMeansParams::new(11).check(10, 16).unwrap_err()),
            "k"
        );
        assert_eq!(
            name_of(KMeansParams::new(4).check(10, 0).unwrap_err()),
            "dim"
        );
        assert_eq!(
            name_of(KMeansParams::new(4).check(10, 65).unwrap_err()),
            "dim"
        );
        let mut p = KMeansParams::new(4);
        p.batch_size = 0;
        assert_eq!(name_of(p.check(10, 4).unwrap_err()), "batch_size");
        let mut p = KMeansParams::new(4);
        p.tol = f64::NAN;
        assert_eq!(name_of(p.check(10, 4).unwrap_err()), "tol");
        p.tol = -1.0;
        assert_eq!(name_of(p.check(10, 4).unwrap_err()), "tol");
        let msg = KMeansParams::new(1).check(100, 16).unwrap_err().to_string();
        assert!(msg.contains("2..=65536"), "{msg}");
    }

    #[test]
    fn accepts_limits_and_clamps() {
        let v = KMeansParams::new(2).check(2, 1).unwrap();
        assert_eq!((v.k(), v.dim(), v.n_points()), (2, 1, 2));
        assert_eq!(v.batch_size(), 2);
        assert_eq!(v.init_sample(), 2);
        let v = KMeansParams::new(65536).check(65536, 64).unwrap();
        assert_eq!(v.init_sample(), 65536);
        let mut p = KMeansParams::new(8).with_seed(9);
        p.init_sample = 0;
        let v = p.check(1000, 3).unwrap();
        assert_eq!((v.init_sample(), v.seed()), (8, 9));
        assert_eq!(KMeansParams::new(300).init_sample, 16384);
        assert_eq!(KMeansParams::new(8192).init_sample, 16 * 8192);
    }

    #[test]
    fn public_types_are_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<KMeansParams>();
        check::<ValidKMeansParams>();
        check::<Progress>();
        check::<KMeansResult>();
    }
}
