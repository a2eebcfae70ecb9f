//! Nearest-centroid search: the hot loop of k-means.
//!
//! # Kernel
//! For a point `x` the nearest centroid minimises `||c||^2 - 2 x.c` (the norm trick: `||x||^2`
//! is the same for every centroid). Centroids are packed into *panels* of [`LANES`] centroids,
//! stored transposed (`panel[j][lane]`), with their squared norms beside them. The kernel takes
//! [`GROUP`] points at a time and, for each panel, accumulates `x.c` into a `GROUP x LANES`
//! array with the dimension loop outermost: every step is a broadcast of one coordinate times
//! one contiguous row of 16 centroid coordinates, which the compiler turns into vector
//! multiplies and adds held in registers. A lane-wise running minimum (value and panel index)
//! follows each panel; the lanes are reduced once per tile of panels. Panels are processed in
//! tiles of about [`TILE_FLOATS`] floats so that a tile stays in L1/L2 cache while a chunk of
//! points streams over it.
//!
//! Before packing, the mean of the centroids is subtracted from centroids and points alike
//! (a translation changes no distance) so that data far from the origin does not lose the
//! precision of `x.c` to cancellation.
//!
//! # Exactness and determinism
//! The norm trick rounds differently from `||x - c||^2`: on near ties the kernel may pick a
//! centroid whose exact distance is larger than the minimum by a few ulps of `||x||^2 + ||c||^2`.
//! The distance reported for each point is recomputed exactly (in f64) for the chosen centroid.
//! Ties between equal kernel values go to the lowest index.
//!
//! On x86-64 a copy of the same generic kernel compiled with AVX2 is selected at run time when
//! the CPU has it. It performs the same IEEE operations in the same order (Rust never contracts
//! `a * b + c` into a fused multiply-add), so both paths return bit-identical results; the tests
//! check this. Every point is handled independently, so results never depend on how the points
//! are split between threads.

use crate::par;

/// Centroids per panel (the width of the kernel's vectors).
pub(crate) const LANES: usize = 16;
/// Points processed together by the kernel (register blocking).
pub(crate) const GROUP: usize = 4;
/// Points per parallel work item.
pub(crate) const CHUNK: usize = 512;
/// Target size, in floats, of a tile of packed centroids (32 KiB).
pub(crate) const TILE_FLOATS: usize = 8192;

/// Which compiled copy of the kernels to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Baseline instructions of the target (SSE2 on x86-64, NEON on aarch64).
    Portable,
    /// x86-64 with AVX2 and FMA, detected at run time (FMA is enabled but never used for
    /// contraction, so results equal the portable path's).
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// The fastest copy this CPU supports.
    pub(crate) fn detect() -> Isa {
        Isa::avx2().unwrap_or(Isa::Portable)
    }

    /// The AVX2 copy, if this CPU supports it (never on other architectures).
    pub(crate) fn avx2() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Some(Isa::Avx2);
            }
        }
        None
    }

    /// Every copy this CPU can run (for tests).
    #[cfg(test)]
    pub(crate) fn all() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        v.extend(Isa::avx2());
        v
    }
}

/// The nearest centroid of one point and the exact squared distance to it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Slot {
    /// Centroid index.
    pub idx: u32,
    /// Exact squared Euclidean distance (computed in f64, stored as f32).
    pub dist: f32,
}

/// Centroids laid out for the kernel: translated by `shift`, transposed into panels.
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    dim: usize,
    k: usize,
    /// The centroids as given, `k * dim` row-major (for exact distances).
    rows: Vec<f32>,
    /// Subtracted from centroids and points before the kernel.
    shift: Vec<f32>,
    /// `n_panels * dim * LANES`: `panels[(p * dim + j) * LANES + l]` is coordinate `j` of
    /// centroid `p * LANES + l`, shifted.
    panels: Vec<f32>,
    /// `n_panels * LANES` squared norms of the shifted centroids; `+inf` in padding lanes.
    norms: Vec<f32>,
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
        let n_panels = k.div_ceil(LANES);
        let mut packed = Packed {
            dim,
            k,
            rows: centroids.to_vec(),
            shift,
            panels: vec![0.0; n_panels * dim * LANES],
            norms: vec![f32::INFINITY; n_panels * LANES],
        };
        for c in 0..k {
            packed.pack(c);
        }
        packed
    }

    /// Number of centroids.
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Vector dimension.
    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    /// Replaces centroid `c` by `row` (keeping the shift).
    pub(crate) fn set(&mut self, c: usize, row: &[f32]) {
        self.rows[c * self.dim..(c + 1) * self.dim].copy_from_slice(row);
        self.pack(c);
    }

    fn pack(&mut self, c: usize) {
        let dim = self.dim;
        let (p, l) = (c / LANES, c % LANES);
        let row = &self.rows[c * dim..(c + 1) * dim];
        let panel = &mut self.panels[p * dim * LANES..(p + 1) * dim * LANES];
        let mut norm = 0f32;
        for j in 0..dim {
            let v = row[j] - self.shift[j];
            panel[j * LANES + l] = v;
            norm += v * v;
        }
        self.norms[p * LANES + l] = norm;
    }

    /// Centroid `c` as given.
    pub(crate) fn row(&self, c: usize) -> &[f32] {
        &self.rows[c * self.dim..(c + 1) * self.dim]
    }
}

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
fn nearest_brute(x: &[f32], centroids: &[f32], dim: usize) -> (u32, f64) {
    let mut best = (0u32, f64::INFINITY);
    for (c, row) in centroids.chunks_exact(dim).enumerate() {
        let d = sq_dist_f64(x, row);
        if d < best.1 || c == 0 {
            best = (c as u32, d);
        }
    }
    best
}

/// Runs the kernel on `P` points (`xs`: `P * dim` shifted coordinates) against a tile of
/// panels starting at panel `first_panel`, merging into `best` (kernel value, index).
#[inline(always)]
fn group_kernel<const P: usize>(
    xs: &[f32],
    dim: usize,
    panels: &[f32],
    norms: &[f32],
    first_panel: usize,
    best: &mut [(f32, u32)],
) {
    assert!(xs.len() == P * dim && best.len() == P);
    assert!(panels.len() == norms.len() * dim);
    let mut bv = [[f32::INFINITY; LANES]; P];
    let mut bi = [[0u32; LANES]; P];
    for (pi, (panel, nrm)) in panels
        .chunks_exact(dim * LANES)
        .zip(norms.chunks_exact(LANES))
        .enumerate()
    {
        let nrm: &[f32; LANES] = nrm.try_into().unwrap();
        let mut acc = [[0f32; LANES]; P];
        for j in 0..dim {
            let c: &[f32; LANES] = panel[j * LANES..(j + 1) * LANES].try_into().unwrap();
            for p in 0..P {
                let xv = xs[p * dim + j];
                for l in 0..LANES {
                    acc[p][l] += xv * c[l];
                }
            }
        }
        let idx = (first_panel + pi) as u32;
        for p in 0..P {
            for l in 0..LANES {
                let dv = nrm[l] - 2.0 * acc[p][l];
                let better = dv < bv[p][l];
                bv[p][l] = if better { dv } else { bv[p][l] };
                bi[p][l] = if better { idx } else { bi[p][l] };
            }
        }
    }
    for p in 0..P {
        let (mut v, mut i) = best[p];
        for l in 0..LANES {
            let lv = bv[p][l];
            let li = bi[p][l] * LANES as u32 + l as u32;
            if lv < f32::INFINITY && (lv < v || (lv == v && li < i)) {
                v = lv;
                i = li;
            }
        }
        best[p] = (v, i);
    }
}

/// Nearest centroids of the points of one chunk (`points`: `out.len() * dim` values).
#[inline(always)]
fn nearest_chunk_generic(points: &[f32], packed: &Packed, out: &mut [Slot]) {
    let dim = packed.dim;
    let m = out.len();
    debug_assert_eq!(points.len(), m * dim);
    let mut xs = vec![0f32; m * dim];
    for (xr, pr) in xs.chunks_exact_mut(dim).zip(points.chunks_exact(dim)) {
        for j in 0..dim {
            xr[j] = pr[j] - packed.shift[j];
        }
    }
    let mut best = vec![(f32::INFINITY, u32::MAX); m];
    let panel_floats = dim * LANES;
    let n_panels = packed.norms.len() / LANES;
    let tile = (TILE_FLOATS / panel_floats).max(1);
    let mut t0 = 0;
    while t0 < n_panels {
        let t1 = (t0 + tile).min(n_panels);
        let tp = &packed.panels[t0 * panel_floats..t1 * panel_floats];
        let tn = &packed.norms[t0 * LANES..t1 * LANES];
        let mut xg = xs.chunks_exact(GROUP * dim);
        let mut bg = best.chunks_exact_mut(GROUP);
        for (x, b) in (&mut xg).zip(&mut bg) {
            group_kernel::<GROUP>(x, dim, tp, tn, t0, b);
        }
        for (x, b) in xg
            .remainder()
            .chunks_exact(dim)
            .zip(bg.into_remainder().chunks_exact_mut(1))
        {
            group_kernel::<1>(x, dim, tp, tn, t0, b);
        }
        t0 = t1;
    }
    for ((slot, &(_, i)), x) in out.iter_mut().zip(&best).zip(points.chunks_exact(dim)) {
        let (idx, dist) = if (i as usize) < packed.k {
            (i, sq_dist_f64(x, packed.row(i as usize)))
        } else {
            // Only when every kernel value was infinite or NaN (huge or non-finite input).
            nearest_brute(x, &packed.rows, dim)
        };
        *slot = Slot {
            idx,
            dist: dist as f32,
        };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn nearest_chunk_avx2(points: &[f32], packed: &Packed, out: &mut [Slot]) {
    nearest_chunk_generic(points, packed, out)
}

fn nearest_chunk_portable(points: &[f32], packed: &Packed, out: &mut [Slot]) {
    nearest_chunk_generic(points, packed, out)
}

/// Nearest centroids of one chunk with the chosen kernel copy.
pub(crate) fn nearest_chunk(isa: Isa, points: &[f32], packed: &Packed, out: &mut [Slot]) {
    match isa {
        Isa::Portable => nearest_chunk_portable(points, packed, out),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only produced by `Isa::avx2`, after detecting AVX2 and FMA.
        Isa::Avx2 => unsafe { nearest_chunk_avx2(points, packed, out) },
    }
}

/// Fills `out[i]` with the nearest centroid of point `i` of `data`, in parallel over chunks.
pub(crate) fn assign_slots(isa: Isa, data: &[f32], packed: &Packed, out: &mut [Slot]) {
    let dim = packed.dim;
    assert_eq!(data.len(), out.len() * dim, "data and output sizes differ");
    par::for_each_chunk_mut(out, CHUNK, |ci, o| {
        let start = ci * CHUNK;
        nearest_chunk(isa, &data[start * dim..(start + o.len()) * dim], packed, o);
    });
}

/// Sum of the distances of `slots`, in f64, in order.
pub(crate) fn inertia_of(slots: &[Slot]) -> f64 {
    slots.iter().map(|s| f64::from(s.dist)).sum()
}

fn check_shapes(data: &[f32], dim: usize, centroids: &[f32]) {
    assert!(dim >= 1, "dim must be at least 1");
    assert!(
        data.len() % dim == 0,
        "data length is not a multiple of dim"
    );
    assert!(
        !centroids.is_empty() && centroids.len() % dim == 0,
        "centroids must hold at least one row of dim values"
    );
}

/// Fast nearest-centroid assignment of every point of `data` (`n * dim` f32, row-major) to
/// `centroids` (`k * dim`, row-major): returns the index of each point's centroid and the
/// inertia (sum of exact squared distances, in f64).
///
/// Runs the tiled norm-trick kernel in parallel over chunks of points; memory stays
/// `O(n + k * dim)` (no `n x k` matrix). On near ties the chosen centroid may differ from
/// [`assign_brute_force`]'s, with an exact distance larger by at most a few ulps of
/// `||x||^2 + ||c||^2` (measured after translating by the centroids' mean).
///
/// # Panics
/// If `dim` is 0, `data.len()` is not a multiple of `dim`, or `centroids` is empty or not a
/// multiple of `dim`.
pub fn assign(data: &[f32], dim: usize, centroids: &[f32]) -> (Vec<u32>, f64) {
    check_shapes(data, dim, centroids);
    let packed = Packed::new(centroids, dim);
    let mut slots = vec![Slot::default(); data.len() / dim];
    assign_slots(Isa::detect(), data, &packed, &mut slots);
    (slots.iter().map(|s| s.idx).collect(), inertia_of(&slots))
}

/// Brute-force nearest-centroid assignment, the oracle of [`assign`]: plain loops, exact squared
/// Euclidean distances accumulated in f64, the lowest index wins ties. Returns the indices and
/// the inertia (sum of the minimum distances, in f64, in point order).
///
/// # Panics
/// As [`assign`].
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    pub(crate) fn uniform(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    }

    fn run(isa: Isa, data: &[f32], dim: usize, centroids: &[f32]) -> Vec<Slot> {
        let packed = Packed::new(centroids, dim);
        let mut slots = vec![Slot::default(); data.len() / dim];
        assign_slots(isa, data, &packed, &mut slots);
        slots
    }

    /// Asserts that each point's fast distance is within a relative tolerance of the minimum.
    fn assert_near_oracle(data: &[f32], dim: usize, centroids: &[f32], slots: &[Slot]) {
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

    #[test]
    fn matches_brute_force_on_random_data() {
        for &dim in &[1usize, 3, 16, 64] {
            for &k in &[2usize, 7, 256, 1500] {
                let n = 700;
                let data = uniform(n * dim, (dim * 1000 + k) as u64, -1.0, 1.0);
                let centroids = uniform(k * dim, (dim * 7 + k) as u64, -1.0, 1.0);
                for isa in Isa::all() {
                    let slots = run(isa, &data, dim, &centroids);
                    assert_near_oracle(&data, dim, &centroids, &slots);
                }
                let (idx, inertia) = assign(&data, dim, &centroids);
                let slots = run(Isa::detect(), &data, dim, &centroids);
                assert_eq!(idx, slots.iter().map(|s| s.idx).collect::<Vec<_>>());
                assert_eq!(inertia, inertia_of(&slots));
            }
        }
    }

    #[test]
    fn far_from_origin_data_keeps_precision() {
        // Clusters of spread 1e-3 around 1000: without the shift the norm trick would drown.
        let dim = 4;
        let centroids: Vec<f32> = (0..8 * dim)
            .map(|i| 1000.0 + (i % 5) as f32 * 0.01)
            .collect();
        let noise = uniform(300 * dim, 5, -1e-3, 1e-3);
        let data: Vec<f32> = noise
            .iter()
            .enumerate()
            .map(|(i, e)| centroids[(i / dim % 8) * dim + i % dim] + e)
            .collect();
        let slots = run(Isa::detect(), &data, dim, &centroids);
        assert_near_oracle(&data, dim, &centroids, &slots);
    }

    #[test]
    fn exact_on_well_separated_data() {
        for &dim in &[1usize, 3, 16, 64] {
            for &k in &[2usize, 7, 256] {
                // Centroids on a coarse grid, points within 0.1 of one of them.
                let centroids: Vec<f32> = (0..k * dim)
                    .map(|i| ((i * 7919 + i / dim * 31) % 97) as f32 * 10.0)
                    .collect();
                let n = 600;
                let noise = uniform(n * dim, 11, -0.1, 0.1);
                let truth: Vec<usize> = (0..n).map(|i| (i * 13) % k).collect();
                let data: Vec<f32> = (0..n * dim)
                    .map(|e| centroids[truth[e / dim] * dim + e % dim] + noise[e])
                    .collect();
                let (bf, bf_inertia) = assign_brute_force(&data, dim, &centroids);
                for isa in Isa::all() {
                    let slots = run(isa, &data, dim, &centroids);
                    let idx: Vec<u32> = slots.iter().map(|s| s.idx).collect();
                    assert_eq!(idx, bf, "dim {dim} k {k} {isa:?}");
                    let inertia = inertia_of(&slots);
                    assert!((inertia - bf_inertia).abs() <= 1e-5 * bf_inertia);
                }
            }
        }
    }

    #[test]
    fn kernel_copies_are_bit_identical() {
        let dim = 16;
        let data = uniform(3000 * dim, 1, -3.0, 3.0);
        let centroids = uniform(300 * dim, 2, -3.0, 3.0);
        let all: Vec<Vec<Slot>> = Isa::all()
            .into_iter()
            .map(|isa| run(isa, &data, dim, &centroids))
            .collect();
        for s in &all[1..] {
            assert_eq!(s, &all[0]);
        }
    }

    #[test]
    fn ties_go_to_the_lowest_index() {
        let dim = 2;
        // Centroids 0 and 2 (and 17, in another panel) are identical.
        let mut centroids = uniform(20 * dim, 3, 5.0, 9.0);
        centroids[4..6].copy_from_slice(&[0.5, 0.5]);
        centroids[0..2].copy_from_slice(&[0.5, 0.5]);
        centroids[34..36].copy_from_slice(&[0.5, 0.5]);
        let data = vec![0.5, 0.5, 0.4, 0.6];
        for isa in Isa::all() {
            let slots = run(isa, &data, dim, &centroids);
            assert_eq!(slots[0], Slot { idx: 0, dist: 0.0 });
            assert_eq!(slots[1].idx, 0);
        }
        assert_eq!(assign_brute_force(&data, dim, &centroids).0, vec![0, 0]);
    }

    #[test]
    fn non_finite_input_stays_in_range() {
        let dim = 3;
        let centroids = vec![1.0, 2.0, 3.0, f32::MAX, f32::MAX, f32::MAX, -1.0, 0.0, 0.0];
        let data = vec![
            f32::NAN,
            0.0,
            0.0,
            f32::INFINITY,
            1.0,
            1.0,
            f32::MAX,
            -f32::MAX,
            0.0,
            1.0,
            2.0,
            3.0,
        ];
        let (idx, _) = assign(&data, dim, &centroids);
        assert!(idx.iter().all(|&i| i < 3), "{idx:?}");
        assert_eq!(idx[3], 0);
        assert_eq!(assign(&[], dim, &centroids), (vec![], 0.0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn assign_is_in_range_and_near_brute_force(
            dim in 1usize..=64,
            k in 1usize..=40,
            n in 0usize..=40,
            seed in any::<u64>(),
            scale in prop_oneof![Just(1e-3f32), Just(1.0f32), Just(1e3f32)],
        ) {
            let data = uniform(n * dim, seed, -scale, scale);
            let centroids = uniform(k * dim, seed ^ 0x5555, -scale, scale);
            let (idx, inertia) = assign(&data, dim, &centroids);
            prop_assert_eq!(idx.len(), n);
            prop_assert!(idx.iter().all(|&i| (i as usize) < k));
            let (_, bf_inertia) = assign_brute_force(&data, dim, &centroids);
            prop_assert!(inertia >= bf_inertia * (1.0 - 1e-6));
            prop_assert!(inertia <= bf_inertia * (1.0 + 1e-4) + 1e-30);
            for (x, &i) in data.chunks_exact(dim).zip(&idx) {
                let d = sq_dist_f64(x, &centroids[i as usize * dim..][..dim]);
                let (_, min) = nearest_brute(x, &centroids, dim);
                prop_assert!(d <= min * (1.0 + 1e-4) + 1e-30);
            }
        }
    }
}
