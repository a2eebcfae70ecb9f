//! Exact distances and the brute-force nearest centroid: the oracle the fast assignment
//! ([`assign`](super::assign())) is tested against, and its fallback for points the kernel
//! cannot rank (every kernel value `-inf` or NaN).

use super::assign::check_shapes;

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
pub(crate) fn nearest_brute(x: &[f32], centroids: &[f32], dim: usize) -> (u32, f64) {
    let mut best = (0u32, f64::INFINITY);
    for (c, row) in centroids.chunks_exact(dim).enumerate() {
        let d = sq_dist_f64(x, row);
        if d < best.1 || c == 0 {
            best = (c as u32, d);
        }
    }
    best
}

/// Brute-force nearest-centroid assignment, the oracle of [`assign`]: plain loops, exact squared
/// Euclidean distances accumulated in f64, the lowest index wins ties. Returns the indices and
/// the inertia (sum of the minimum distances, in f64, in point order).
///
/// # Panics
/// As [`assign`].
///
/// [`assign`]: super::assign()
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
