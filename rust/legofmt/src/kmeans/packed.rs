//! Centroids laid out for the nearest-centroid kernel ([`Packed`]).
//!
//! Before packing, the mean of the centroids is subtracted from centroids and points alike
//! (a translation changes no distance) so that data far from the origin does not lose the
//! precision of `x.c` to cancellation. The shifted centroids are stored row-major, padded with
//! zero rows to a multiple of the kernel's centroid group ([`CG`]), next to their negated half
//! squared norms (`-inf` in padding rows, which are therefore never chosen). The kernel reads
//! them in tiles of about [`TILE_FLOATS`] floats, which stay in L1 cache while a block of
//! points is compared with them.

use super::simd::CG;

/// Target size, in floats, of a tile of packed centroids (16 KiB, half an L1 cache).
pub(crate) const TILE_FLOATS: usize = 4096;

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
    #[inline]
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Vector dimension.
    #[inline]
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

    /// The centroids as given, `k * dim` row-major.
    #[inline]
    pub(crate) fn rows(&self) -> &[f32] {
        &self.rows
    }

    /// The translation subtracted from centroids and points before the kernel (`dim` values).
    #[inline]
    pub(crate) fn shift(&self) -> &[f32] {
        &self.shift
    }

    /// The shifted centroids, `kp * dim` row-major (`kp`: `k` rounded up to a multiple of
    /// [`CG`]), padding rows zero.
    #[inline]
    pub(crate) fn cent(&self) -> &[f32] {
        &self.cent
    }

    /// The `kp` negated half squared norms of the shifted centroids, `-inf` in padding rows.
    #[inline]
    pub(crate) fn nhn(&self) -> &[f32] {
        &self.nhn
    }

    /// Centroid `c` as given.
    pub(crate) fn row(&self, c: usize) -> &[f32] {
        &self.rows[c * self.dim..(c + 1) * self.dim]
    }

    /// Centroids per tile: a multiple of [`CG`], about [`TILE_FLOATS`] floats.
    pub(crate) fn tile(&self) -> usize {
        ((TILE_FLOATS / self.dim) / CG).max(1) * CG
    }
}
