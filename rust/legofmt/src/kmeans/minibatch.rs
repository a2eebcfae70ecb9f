//! Mini-batch k-means updates (Sculley 2010, in scikit-learn's per-batch form).
//!
//! Each step draws `batch_size` points uniformly with replacement (a ChaCha8 stream of the
//! seed), assigns them to the nearest centroids with the parallel kernel, and moves every
//! centroid that received points to the running mean of all points it has received so far:
//! `c <- (count * c + batch_sum) / (count + batch_count)`, i.e. a per-centroid learning rate of
//! `1 / count`, in f64.
//!
//! Stopping: the steps are grouped into windows of about `max(32768, 16 k)` points. The mean
//! squared distance of a window's points (each measured before its own update, so an honest
//! estimate) is compared with the previous window's; the phase stops when it improved by less
//! than `tol` times itself plus the standard error of the difference (the improvement is lost
//! in sampling noise), or after `max_iter * n` points in all.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::assign::{assign_slots, Isa, Packed, Slot};
use super::params::{Progress, ProgressStage, ValidKMeansParams};
use super::report::Reporter;
use crate::error::Result;

/// RNG stream of the batches.
const STREAM_BATCHES: u64 = 2;
/// A convergence window holds at least this many points...
const WINDOW_MIN_POINTS: usize = 32768;
/// ... and at least this many per cluster.
const WINDOW_POINTS_PER_CLUSTER: usize = 16;

/// Running statistics of the distances seen in a window.
#[derive(Default)]
struct Window {
    sum: f64,
    sum_sq: f64,
    count: usize,
}

impl Window {
    fn add(&mut self, d: f32) {
        let d = f64::from(d);
        self.sum += d;
        self.sum_sq += d * d;
        self.count += 1;
    }

    /// Mean and squared standard error of the mean.
    fn mean_and_se2(&self) -> (f64, f64) {
        let w = self.count as f64;
        let mean = self.sum / w;
        let var = (self.sum_sq / w - mean * mean).max(0.0);
        (mean, var / w)
    }
}

/// Runs the mini-batch phase, updating `centroids` in place; returns the number of steps.
pub(crate) fn run(
    data: &[f32],
    params: &ValidKMeansParams,
    isa: Isa,
    centroids: &mut [f32],
    reporter: &mut Reporter<'_>,
) -> Result<usize> {
    let (n, dim, k) = (params.n_points(), params.dim(), params.k());
    let b = params.batch_size();
    if params.max_iter() == 0 {
        return Ok(0);
    }
    let max_steps = params.max_iter().saturating_mul(n).div_ceil(b).max(1);
    let window_steps = WINDOW_MIN_POINTS
        .max(WINDOW_POINTS_PER_CLUSTER * k)
        .div_ceil(b)
        .max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed());
    rng.set_stream(STREAM_BATCHES);

    let mut master: Vec<f64> = centroids.iter().map(|&v| f64::from(v)).collect();
    let mut counts = vec![0f64; k];
    let mut packed = Packed::new(centroids, dim);
    let mut batch = vec![0f32; b * dim];
    let mut slots = vec![Slot::default(); b];
    let mut sums = vec![0f64; k * dim];
    let mut batch_counts = vec![0u32; k];
    let mut touched: Vec<usize> = Vec::new();
    let mut row32 = vec![0f32; dim];
    let mut window = Window::default();
    let mut previous: Option<(f64, f64)> = None;

    let mut steps = 0;
    while steps < max_steps {
        for x in batch.chunks_exact_mut(dim) {
            let i = rng.random_range(0..n);
            x.copy_from_slice(&data[i * dim..(i + 1) * dim]);
        }
        assign_slots(isa, &batch, &packed, &mut slots);
        for (x, s) in batch.chunks_exact(dim).zip(&slots) {
            let c = s.idx as usize;
            if batch_counts[c] == 0 {
                touched.push(c);
            }
            batch_counts[c] += 1;
            for (acc, &v) in sums[c * dim..(c + 1) * dim].iter_mut().zip(x) {
                *acc += f64::from(v);
            }
            window.add(s.dist);
        }
        for &c in &touched {
            let old = counts[c];
            let new = old + f64::from(batch_counts[c]);
            let m = &mut master[c * dim..(c + 1) * dim];
            let s = &mut sums[c * dim..(c + 1) * dim];
            for ((mv, sv), r) in m.iter_mut().zip(s.iter_mut()).zip(row32.iter_mut()) {
                *mv = (*mv * old + *sv) / new;
                *sv = 0.0;
                *r = *mv as f32;
            }
            counts[c] = new;
            batch_counts[c] = 0;
            packed.set(c, &row32);
        }
        touched.clear();
        steps += 1;

        let mut estimate = None;
        let mut stop = false;
        if steps % window_steps == 0 {
            let (mean, se2) = window.mean_and_se2();
            window = Window::default();
            estimate = Some(mean * n as f64);
            if let Some((prev_mean, prev_se2)) = previous {
                let improvement = prev_mean - mean;
                stop = improvement <= params.tol() * prev_mean + (prev_se2 + se2).sqrt();
            }
            stop |= mean <= 0.0;
            previous = Some((mean, se2));
        }
        let p = Progress {
            stage: ProgressStage::MiniBatch,
            done: steps,
            total: max_steps,
            inertia: estimate,
        };
        if stop || steps == max_steps {
            reporter.force(p)?;
        } else {
            reporter.tick(p, (b * k * dim) as u64)?;
        }
        if stop {
            break;
        }
    }
    for (c, m) in centroids.iter_mut().zip(&master) {
        *c = *m as f32;
    }
    Ok(steps)
}
