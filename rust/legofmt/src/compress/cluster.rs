//! Step 3, cluster: one codebook per residual stage of a group. Stage `s` clusters the
//! blocks of the members with more than `s` stages, then (unless it is the last) subtracts
//! each block's codeword so that the next stage clusters what it left.

use std::collections::HashMap;

use super::plan::GroupPlan;
use super::{CompressOptions, Event, GroupSpec, ProgressFn};
use crate::error::Result;
use crate::kmeans::{self, KMeansParams, Progress as KProgress};

/// Blocks per parallel work unit when a stage's codewords are subtracted from the blocks:
/// enough work per unit to outweigh the cost of handing it to a thread, and units enough to
/// keep every thread busy on a large group. Each block is updated on its own, so the result
/// is the same for any value.
const RESIDUAL_CHUNK_BLOCKS: usize = 4096;

/// `floor(2^64 / phi)`, an odd number (Fibonacci hashing): multiplying by it spreads a small
/// integer over all 64 bits.
const SEED_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// The k-means seed of stage `stage` of group `group` for the run's `seed`: every (group,
/// stage) gets its own well-mixed seed, so no two codebooks of a run share a random stream.
/// Part of what makes files reproducible: changing it changes the files written for a seed.
pub(super) fn stage_seed(seed: u64, group: usize, stage: usize) -> u64 {
    seed ^ ((group as u64) << 32 | stage as u64).wrapping_mul(SEED_MIX)
}

/// The codebook of one stage and each block's codeword in it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StageFit {
    /// `k x dim` codewords.
    pub centroids: Vec<f32>,
    /// Codewords used (at most the group's `k`; at least 2).
    pub k: usize,
    /// The codeword of each block the stage clustered.
    pub assignments: Vec<u32>,
}

/// Clusters group `gi`'s `blocks` (prepared, `plan.n_blocks x dim`) stage by stage. Emits
/// `cluster g{gi} s{s} {kmeans stage}` events from k-means.
pub(super) fn cluster_group(
    mut blocks: Vec<f32>,
    plan: &GroupPlan,
    gi: usize,
    spec: &GroupSpec,
    opts: &CompressOptions,
    progress: ProgressFn<'_>,
) -> Result<Vec<StageFit>> {
    let dim = spec.block.dim();
    let mut fits = Vec::with_capacity(plan.n_stages);
    for s in 0..plan.n_stages {
        let phase = format!("cluster g{gi} s{s}");
        let seed = stage_seed(opts.seed, gi, s);
        // The members with more than `s` stages: a prefix of `blocks` (see `plan_group`).
        let data = &mut blocks[..plan.stage_blocks(s) * dim];
        let fit = cluster(data, dim, spec.k, seed, opts, &phase, progress)?;
        if s + 1 < plan.n_stages {
            subtract_codewords(data, dim, &fit);
        }
        fits.push(fit);
    }
    Ok(fits)
}

/// Replaces each block of `data` (`n x dim`) by its residual: the block minus its codeword.
fn subtract_codewords(data: &mut [f32], dim: usize, fit: &StageFit) {
    crate::par::for_each_chunk_mut(data, dim * RESIDUAL_CHUNK_BLOCKS, |ci, chunk| {
        for (j, blk) in chunk.chunks_mut(dim).enumerate() {
            let a = fit.assignments[ci * RESIDUAL_CHUNK_BLOCKS + j] as usize;
            for (v, c) in blk.iter_mut().zip(&fit.centroids[a * dim..(a + 1) * dim]) {
                *v -= c;
            }
        }
    });
}

/// The distinct blocks (bit patterns) of `data` (`n x dim`), each numbered in order of first
/// appearance, or `None` as soon as there are more than `k`.
fn distinct_blocks(data: &[f32], dim: usize, k: usize) -> Option<HashMap<&[u32], u32>> {
    let mut distinct: HashMap<&[u32], u32> = HashMap::new();
    let bits: &[u32] = bytemuck::cast_slice(data);
    for key in bits.chunks_exact(dim) {
        let len = distinct.len() as u32;
        distinct.entry(key).or_insert(len);
        if distinct.len() > k {
            return None;
        }
    }
    Some(distinct)
}

/// Clusters `data` (`n x dim`) into at most `k` codewords. When the data has at most `k`
/// distinct blocks, the codebook is exactly those blocks (lossless).
pub(super) fn cluster(
    data: &[f32],
    dim: usize,
    k: usize,
    seed: u64,
    opts: &CompressOptions,
    phase: &str,
    progress: ProgressFn<'_>,
) -> Result<StageFit> {
    let n = data.len() / dim;
    if let Some(distinct) = distinct_blocks(data, dim, k) {
        let bits: &[u32] = bytemuck::cast_slice(data);
        let kk = distinct.len().max(2);
        let mut centroids = vec![0f32; kk * dim];
        for (key, &i) in &distinct {
            for (c, &v) in centroids[i as usize * dim..(i as usize + 1) * dim]
                .iter_mut()
                .zip(key.iter())
            {
                *c = f32::from_bits(v);
            }
        }
        let assignments = (0..n)
            .map(|b| distinct[&bits[b * dim..(b + 1) * dim]])
            .collect();
        return Ok(StageFit {
            centroids,
            k: kk,
            assignments,
        });
    }
    let mut p = KMeansParams::new(k);
    p.seed = seed;
    if let Some(b) = opts.batch_size {
        p.batch_size = b;
    }
    if let Some(m) = opts.max_iter {
        p.max_iter = m;
    }
    let valid = p.check(n, dim)?;
    let cb = |kp: &KProgress| {
        progress(&Event {
            phase: format!("{phase} {}", kp.stage.name()),
            done: kp.done,
            total: kp.total,
        })
    };
    let r = kmeans::fit(data, dim, &valid, &cb)?;
    Ok(StageFit {
        centroids: r.centroids,
        k,
        assignments: r.assignments,
    })
}
