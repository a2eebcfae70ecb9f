//! Initial centroids.
//!
//! Both schemes work on a deterministic random sample of `init_sample` points (all points when
//! the sample would be as large as the data).
//!
//! - `k <= 4096` ([`KMEANSPP_MAX_K`]): greedy k-means++ (Arthur & Vassilvitskii 2007, with the
//!   `2 + ln k` local trials of scikit-learn): each new centroid is the best, by resulting
//!   potential, of several candidates drawn with probability proportional to the squared
//!   distance to the nearest centroid chosen so far. Distances are computed as `(x - c)^2`
//!   (no norm trick), so a point identical to a chosen centroid has distance exactly 0 and is
//!   never drawn again while another point remains: if the sample has at least `k` distinct
//!   points the centroids are distinct, and if it has fewer, every distinct point becomes a
//!   centroid and the rest are duplicates drawn uniformly. The cost is
//!   `O(sample * k * dim * (2 + ln k))`, about `k^2` with the default sample of `16 k`.
//! - `k > 4096`: that cost would dominate the fit (it grows as `k^2`), so the centroids are
//!   `k` points of the sample taken in random order, skipping values already taken (distinct
//!   bit patterns, `-0.0 == 0.0`), padded with duplicates if the sample has fewer than `k`
//!   distinct points. This is the random initialisation faiss uses; the sample phase and the
//!   Lloyd stage then do the work. (k-means|| would be the next step up if large-k quality
//!   matters.)
//!
//! The k-means++ work is parallel over fixed blocks of sample points, with per-block partial
//! sums combined in block order, so the result does not depend on the thread count. The
//! per-block kernel (the potential of a few candidates) is in `simd/`, one copy per
//! instruction set.

use std::collections::HashSet;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::params::ValidKMeansParams;
use super::progress::{Progress, ProgressStage, ProgressThrottle};
use super::simd::{self, Isa, SUM_LANES};
use crate::error::Result;
use crate::par;

/// Largest k initialised with k-means++; above it, random distinct sample points.
pub const KMEANSPP_MAX_K: usize = 4096;
/// Sample points per k-means++ block (the unit of parallel work).
const BLOCK: usize = 1024;
/// RNG stream of the initialisation.
const STREAM_INIT: u64 = 1;

/// Chooses `k` initial centroids (`k * dim` values, row-major) from `data`.
pub(crate) fn init_centroids(
    data: &[f32],
    params: &ValidKMeansParams,
    isa: Isa,
    throttle: &mut ProgressThrottle<'_>,
) -> Result<Vec<f32>> {
    let (n, dim, k) = (params.n_points(), params.dim(), params.k());
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed());
    rng.set_stream(STREAM_INIT);
    let sample: Vec<usize> = if params.init_sample() >= n {
        (0..n).collect()
    } else {
        let mut s = rand::seq::index::sample(&mut rng, n, params.init_sample()).into_vec();
        s.sort_unstable();
        s
    };
    let chosen = if k <= KMEANSPP_MAX_K {
        kmeans_pp(data, dim, k, &sample, &mut rng, isa, throttle)?
    } else {
        random_distinct(data, dim, k, &sample, &mut rng)
    };
    throttle.report_now(Progress {
        stage: ProgressStage::Init,
        done: k,
        total: k,
        inertia: None,
    })?;
    let mut centroids = Vec::with_capacity(k * dim);
    for &p in &chosen {
        let i = sample[p];
        centroids.extend_from_slice(&data[i * dim..(i + 1) * dim]);
    }
    Ok(centroids)
}

/// Positions (in `sample`) of `k` random points with distinct values, padded with duplicates.
fn random_distinct(
    data: &[f32],
    dim: usize,
    k: usize,
    sample: &[usize],
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    let bits: Vec<u32> = sample
        .iter()
        .flat_map(|&i| {
            data[i * dim..(i + 1) * dim]
                .iter()
                .map(|&v| (v + 0.0).to_bits())
        })
        .collect();
    let mut order: Vec<usize> = (0..sample.len()).collect();
    order.shuffle(rng);
    let mut seen: HashSet<&[u32]> = HashSet::with_capacity(k);
    let mut chosen = Vec::with_capacity(k);
    for p in order {
        if seen.insert(&bits[p * dim..(p + 1) * dim]) {
            chosen.push(p);
            if chosen.len() == k {
                return chosen;
            }
        }
    }
    let distinct = chosen.len();
    while chosen.len() < k {
        chosen.push(chosen[rng.random_range(0..distinct)]);
    }
    chosen
}

/// A block of sample points, transposed (`xt[j * len + i]`), with each point's squared
/// distance to the nearest chosen centroid and their sum.
struct SampleBlock {
    xt: Vec<f32>,
    dmin: Vec<f32>,
    sum: f64,
}

/// Candidates evaluated together (accumulators held in registers).
const CAND_GROUP: usize = 4;

/// Sum of the lanes, in order.
fn lane_sum(lanes: &[f64; SUM_LANES]) -> f64 {
    let mut s = 0f64;
    for &v in lanes {
        s += v;
    }
    s
}

/// Potential of the block if each candidate were added (`cands`: `out.len() * dim` values).
fn potentials(isa: Isa, block: &SampleBlock, dim: usize, cands: &[f32], out: &mut [f64]) {
    fn group<const G: usize>(
        isa: Isa,
        block: &SampleBlock,
        dim: usize,
        cands: &[f32],
        out: &mut [f64],
    ) {
        let mut lanes = [[0f64; SUM_LANES]; G];
        simd::pp_pass::<G>(isa, &block.xt, &block.dmin, dim, cands, &mut lanes, None);
        for (o, l) in out.iter_mut().zip(&lanes) {
            *o = lane_sum(l);
        }
    }
    let t = out.len();
    let mut g0 = 0;
    while g0 < t {
        let g = (t - g0).min(CAND_GROUP);
        let (c, o) = (&cands[g0 * dim..(g0 + g) * dim], &mut out[g0..g0 + g]);
        match g {
            1 => group::<1>(isa, block, dim, c, o),
            2 => group::<2>(isa, block, dim, c, o),
            3 => group::<3>(isa, block, dim, c, o),
            _ => group::<CAND_GROUP>(isa, block, dim, c, o),
        }
        g0 += g;
    }
}

/// Adds centroid `c` to the block: `dmin = min(dmin, ||x - c||^2)`, `sum` recomputed (the
/// same arithmetic as the candidate's potential, so the two agree bit for bit).
fn update(isa: Isa, block: &mut SampleBlock, dim: usize, c: &[f32]) {
    let mut lanes = [[0f64; SUM_LANES]; 1];
    let old = block.dmin.clone();
    simd::pp_pass::<1>(
        isa,
        &block.xt,
        &old,
        dim,
        c,
        &mut lanes,
        Some(&mut block.dmin),
    );
    block.sum = lane_sum(&lanes[0]);
}

/// Draws a sample position with probability proportional to `dmin`; `r` is uniform in
/// `[0, 1)`, `pot > 0` the total. Never returns a point with `dmin == 0`.
fn draw(blocks: &[SampleBlock], pot: f64, r: f64) -> usize {
    let mut r = r * pot;
    let mut last_positive = None;
    for (b, block) in blocks.iter().enumerate() {
        if block.sum <= 0.0 {
            continue;
        }
        last_positive = Some(b);
        if r < block.sum {
            return b * BLOCK + draw_in(&block.dmin, r);
        }
        r -= block.sum;
    }
    // Rounding ran past the end: the last point with positive distance.
    let b = last_positive.expect("a positive potential has a positive block");
    b * BLOCK + draw_in(&blocks[b].dmin, f64::INFINITY)
}

fn draw_in(dmin: &[f32], mut r: f64) -> usize {
    let mut last = None;
    for (i, &d) in dmin.iter().enumerate() {
        if d > 0.0 {
            last = Some(i);
            if r < f64::from(d) {
                return i;
            }
            r -= f64::from(d);
        }
    }
    last.expect("a positive block sum has a positive point")
}

/// Greedy k-means++ on the sample; returns positions in `sample`.
fn kmeans_pp(
    data: &[f32],
    dim: usize,
    k: usize,
    sample: &[usize],
    rng: &mut ChaCha8Rng,
    isa: Isa,
    throttle: &mut ProgressThrottle<'_>,
) -> Result<Vec<usize>> {
    let s = sample.len();
    let trials = 2 + (k as f64).ln() as usize;
    let row = |p: usize| &data[sample[p] * dim..(sample[p] + 1) * dim];
    let mut blocks: Vec<SampleBlock> = sample
        .chunks(BLOCK)
        .map(|idx| {
            let len = idx.len();
            let mut xt = vec![0f32; len * dim];
            for (i, &pi) in idx.iter().enumerate() {
                for j in 0..dim {
                    xt[j * len + i] = data[pi * dim + j];
                }
            }
            SampleBlock {
                xt,
                dmin: vec![f32::INFINITY; len],
                sum: 0.0,
            }
        })
        .collect();

    let mut chosen = Vec::with_capacity(k);
    let first = rng.random_range(0..s);
    chosen.push(first);
    let c0 = row(first);
    par::for_each_chunk_mut(&mut blocks, 1, |_, b| update(isa, &mut b[0], dim, c0));

    while chosen.len() < k {
        let pot: f64 = blocks.iter().map(|b| b.sum).sum();
        if pot <= 0.0 {
            // Every sample point equals a chosen centroid: duplicates, uniformly.
            chosen.push(rng.random_range(0..s));
            continue;
        }
        let cand_pos: Vec<usize> = (0..trials)
            .map(|_| draw(&blocks, pot, rng.random::<f64>()))
            .collect();
        let mut cands = Vec::with_capacity(trials * dim);
        for &p in &cand_pos {
            cands.extend_from_slice(row(p));
        }
        let partial = par::map_range(blocks.len(), |b| {
            let mut out = vec![0f64; trials];
            potentials(isa, &blocks[b], dim, &cands, &mut out);
            out
        });
        let mut totals = vec![0f64; trials];
        for p in &partial {
            for (t, v) in totals.iter_mut().zip(p) {
                *t += v;
            }
        }
        let mut best = 0;
        for (t, &v) in totals.iter().enumerate() {
            if v < totals[best] {
                best = t;
            }
        }
        let c = &cands[best * dim..(best + 1) * dim];
        par::for_each_chunk_mut(&mut blocks, 1, |_, b| update(isa, &mut b[0], dim, c));
        chosen.push(cand_pos[best]);
        throttle.tick(
            Progress {
                stage: ProgressStage::Init,
                done: chosen.len(),
                total: k,
                inertia: None,
            },
            (s * dim * (trials + 1)) as u64,
        )?;
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::super::params::KMeansParams;
    use super::super::testutil::uniform;
    use super::*;

    fn init(data: &[f32], dim: usize, p: &KMeansParams, isa: Isa) -> Vec<f32> {
        let v = p.check(data.len() / dim, dim).unwrap();
        let cb = |_: &Progress| true;
        init_centroids(data, &v, isa, &mut ProgressThrottle::new(&cb)).unwrap()
    }

    fn distinct_rows(v: &[f32], dim: usize) -> usize {
        let set: HashSet<Vec<u32>> = v
            .chunks_exact(dim)
            .map(|r| r.iter().map(|x| x.to_bits()).collect())
            .collect();
        set.len()
    }

    #[test]
    fn kmeans_pp_picks_distinct_points_and_is_deterministic() {
        let dim = 3;
        let data = uniform(5000 * dim, 4, -1.0, 1.0);
        let mut p = KMeansParams::new(50).with_seed(3);
        p.init_sample = 2000;
        let a = init(&data, dim, &p, Isa::Portable);
        assert_eq!(a.len(), 50 * dim);
        assert_eq!(distinct_rows(&a, dim), 50);
        for isa in Isa::all() {
            assert_eq!(init(&data, dim, &p, isa), a);
        }
        assert_ne!(init(&data, dim, &p.clone().with_seed(4), Isa::Portable), a);
        // Every centroid is a data point.
        let rows: HashSet<Vec<u32>> = data
            .chunks_exact(dim)
            .map(|r| r.iter().map(|x| x.to_bits()).collect())
            .collect();
        assert!(a
            .chunks_exact(dim)
            .all(|r| rows.contains(&r.iter().map(|x| x.to_bits()).collect::<Vec<_>>())));
    }

    #[test]
    fn kmeans_pp_copies_agree_with_partial_blocks() {
        // 4 and 16 dimensions, a sample with a partial last block and a partial lane group.
        for dim in [4usize, 16] {
            let data = uniform(3000 * dim, dim as u64, -1.0, 1.0);
            let mut p = KMeansParams::new(37).with_seed(5);
            p.init_sample = 1029;
            let a = init(&data, dim, &p, Isa::Portable);
            for isa in Isa::all() {
                assert_eq!(init(&data, dim, &p, isa), a, "dim {dim} {isa:?}");
            }
            assert_eq!(distinct_rows(&a, dim), 37);
        }
    }

    #[test]
    fn few_distinct_points_give_duplicates_without_hanging() {
        let dim = 2;
        let distinct = [[0.0f32, 1.0], [2.0, 3.0], [-1.0, 5.0]];
        let data: Vec<f32> = (0..300).flat_map(|i| distinct[i % 3]).collect();
        for k in [3usize, 5, 40] {
            let a = init(&data, dim, &KMeansParams::new(k), Isa::detect());
            assert_eq!(a.len(), k * dim);
            assert_eq!(distinct_rows(&a, dim), 3, "k = {k}");
        }
    }

    #[test]
    fn large_k_uses_distinct_random_points() {
        let dim = 1;
        // 5000 distinct values, each twice.
        let data: Vec<f32> = (0..10000).map(|i| (i % 5000) as f32).collect();
        let a = init(&data, dim, &KMeansParams::new(4100), Isa::detect());
        assert_eq!(distinct_rows(&a, dim), 4100);
        // Fewer distinct values than k: all of them, then duplicates.
        let data: Vec<f32> = (0..10000).map(|i| (i % 3000) as f32).collect();
        let a = init(&data, dim, &KMeansParams::new(5000), Isa::detect());
        assert_eq!(a.len(), 5000);
        assert_eq!(distinct_rows(&a, dim), 3000);
    }

    #[test]
    fn draw_skips_zero_distances() {
        let blocks = vec![SampleBlock {
            xt: vec![],
            dmin: vec![0.0, 1.0, 0.0, 2.0, 0.0],
            sum: 3.0,
        }];
        assert_eq!(draw(&blocks, 3.0, 0.0), 1);
        assert_eq!(draw(&blocks, 3.0, 0.5), 3);
        assert_eq!(draw(&blocks, 3.0, 0.999_999_9), 3);
        assert_eq!(draw(&blocks, 2.0, 0.999_999_9), 3);
        assert_eq!(draw(&blocks, 4.0, 0.999_999_9), 3);
    }
}
