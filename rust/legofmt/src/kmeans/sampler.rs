//! The sampler of the sample phase: the sample-size schedule ([`sample_sizes`]) and the draw of
//! the nested random samples ([`NestedSamples`]).
//!
//! - **Sizes.** Level `l` holds about `s_0 * 2^l` points, with `s_0 = max(batch_size, 64 k)`;
//!   the last level holds `min(n, 48 sqrt(n k))` points (about 1M of 1.6M points at
//!   `k = 256`, 2.1M of 6.4M): the sample a codebook needs grows with the data, but more
//!   slowly, so for large `n` the phase costs a fraction of a full pass. When `n <= 48^2 k`
//!   the last level is the whole data set.
//! - **Draw.** Each point `i` draws a uniform number `u_i` from a hash of the seed and `i`, and
//!   level `l` is `{i : u_i < s_l / n}`, so every level contains the previous one (its size is
//!   within a few standard deviations of the target). The levels are one list of point
//!   indices (each level's new points in index order) whose prefixes are the levels; the
//!   kernel gathers the listed points a chunk at a time, so a sample costs 4 bytes a point.
//!   The scan runs in parallel over fixed parts of the points, so the samples depend only on
//!   the seed, not on the thread count.

use crate::par;

/// The smallest sample holds at least this many points per cluster.
const FIRST_SAMPLE_PER_CLUSTER: usize = 64;
/// The largest sample holds at most `SAMPLE_SCALE * sqrt(n k)` points (then the whole data
/// set is a level of its own when `n <= SAMPLE_SCALE^2 k`).
const SAMPLE_SCALE: f64 = 48.0;
/// Each sample is this many times larger than the previous one.
const GROWTH: usize = 2;
/// Points per part of the parallel sample scan.
const SCAN_PART: usize = 1 << 16;

/// The nested samples: `idx` lists the points of level 0, then those added by level 1, ...
/// (each part in index order); level `l` is the prefix of `ends[l]` points. `full` says the last
/// level is the whole data set (not listed).
pub(crate) struct NestedSamples {
    pub(crate) idx: Vec<u32>,
    pub(crate) ends: Vec<usize>,
    pub(crate) full: bool,
}

/// A 64-bit mix (splitmix64's finaliser).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sample-size schedule: target sizes of the levels for `n` points and `k` clusters, the
/// first `max(smallest, 64 k)` (`smallest`: the `batch_size` parameter), and whether the last
/// level is the whole data set.
pub(crate) fn sample_sizes(n: usize, k: usize, smallest: usize) -> (Vec<usize>, bool) {
    let first = smallest.max(FIRST_SAMPLE_PER_CLUSTER.saturating_mul(k));
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

impl NestedSamples {
    /// Draws the nested samples of target `sizes` (from [`sample_sizes`]) among `n` points, with
    /// the random `key` (see the module documentation).
    pub(crate) fn draw(n: usize, sizes: &[usize], full: bool, key: u64) -> NestedSamples {
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
        NestedSamples { idx, ends, full }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_grow_and_end_with_the_data_when_small() {
        // 48 * sqrt(1.6M * 256) = 971,451.4
        let (s, full) = sample_sizes(1_600_000, 256, 2048);
        assert_eq!(
            s,
            vec![16384, 32768, 65536, 131072, 262144, 524288, 971_451]
        );
        assert!(!full);
        let (s, full) = sample_sizes(100_000, 256, 2048);
        assert_eq!(s, vec![16384, 32768, 65536, 100_000]);
        assert!(full);
        let (s, full) = sample_sizes(1000, 8, 2048);
        assert_eq!(s, vec![1000]);
        assert!(full);
    }

    #[test]
    fn samples_are_nested_and_near_their_target_sizes() {
        let n = 300_000;
        let (sizes, full) = sample_sizes(n, 64, 2048);
        assert_eq!(
            sizes,
            vec![4096, 8192, 16384, 32768, 65536, 131072, 210_325]
        );
        assert!(!full);
        let s = NestedSamples::draw(n, &sizes, full, 7);
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
        assert_ne!(
            NestedSamples::draw(n, &sizes, full, 8).idx[..64],
            s.idx[..64]
        );
        let (sizes, full) = sample_sizes(100_000, 256, 2048);
        let s = NestedSamples::draw(100_000, &sizes, full, 7);
        assert!(s.full && s.ends.len() == 4 && s.ends[3] == 100_000);
        assert_eq!(s.idx.len(), s.ends[2]);
    }
}
