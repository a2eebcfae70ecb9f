//! Test helpers shared by the k-means modules: seeded random data, an assignment with a chosen
//! kernel copy, and the comparison with the brute-force oracle.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::assign::{assign_slots, inertia_of, Slot};
use super::oracle::{assign_brute_force, sq_dist_f64};
use super::packed::Packed;
use super::simd::Isa;

/// `n` values drawn uniformly from `lo..hi` with a seeded RNG.
pub(crate) fn uniform(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// The slots [`assign_slots`] gives with the kernels of `isa`.
pub(crate) fn run(isa: Isa, data: &[f32], dim: usize, centroids: &[f32]) -> Vec<Slot> {
    let packed = Packed::new(centroids, dim);
    let mut slots = vec![Slot::default(); data.len() / dim];
    assign_slots(isa, data, &packed, &mut slots);
    slots
}

/// Asserts that each point's fast distance is within a relative tolerance of the minimum.
pub(crate) fn assert_near_oracle(data: &[f32], dim: usize, centroids: &[f32], slots: &[Slot]) {
    let k = centroids.len() / dim;
    let (bf, bf_inertia) = assign_brute_force(data, dim, centroids);
    let mut agree = 0;
    let mut tol = 0f64;
    for (i, (x, s)) in data.chunks_exact(dim).zip(slots).enumerate() {
        assert!((s.idx as usize) < k);
        let exact = sq_dist_f64(x, &centroids[s.idx as usize * dim..][..dim]);
        let min = sq_dist_f64(x, &centroids[bf[i] as usize * dim..][..dim]);
        assert_eq!(s.dist, exact as f32);
        // The f32 norm trick (|c|^2 - 2 x.c) resolves distances to a few ulps of the
        // squared norms involved, not of the distance itself.
        let scale = sq_dist_f64(x, &vec![0.0; dim])
            + sq_dist_f64(&centroids[bf[i] as usize * dim..][..dim], &vec![0.0; dim]);
        tol += min * 1e-4 + 1e-6 * scale;
        assert!(
            exact <= min * (1.0 + 1e-4) + 1e-6 * scale,
            "point {i}: fast {exact} vs min {min} (dim {dim}, k {k})"
        );
        agree += usize::from(s.idx == bf[i]);
    }
    // Near-ties may resolve either way (above); on random data most points still agree.
    assert!(agree * 100 >= slots.len() * 90, "only {agree} agree");
    let inertia = inertia_of(slots);
    assert!((inertia - bf_inertia).abs() <= tol.max(1e-30));
}
