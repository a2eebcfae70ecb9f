//! The portable copies of the kernels: plain Rust on arrays of [`VL`] (or [`SUM_LANES`])
//! lanes, which the compiler vectorises with the target's baseline instructions. They define
//! the results every other copy must reproduce bit for bit, and they run on every target.

use super::{pp_bounds, NearestBlock, CG, PB, PV, SUM_LANES, VL};

/// The portable nearest-centroid kernel: `D` is the dimension when known at compile time (0:
/// `b.dim`).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane loops read like the AVX2 copy
pub(super) fn nearest_block<const D: usize>(
    b: &NearestBlock<'_>,
    best: &mut [f32],
    bidx: &mut [u32],
) {
    b.check(best, bidx);
    let dim = if D > 0 { D } else { b.dim };
    assert_eq!(dim, b.dim);
    let mut bv = [[0f32; VL]; PV];
    let mut bi = [[0u32; VL]; PV];
    for v in 0..PV {
        bv[v].copy_from_slice(&best[v * VL..(v + 1) * VL]);
        bi[v].copy_from_slice(&bidx[v * VL..(v + 1) * VL]);
    }
    let mut c = b.c0;
    while c < b.c1 {
        let mut acc = [[[0f32; VL]; CG]; PV];
        for g in 0..CG {
            for a in acc.iter_mut() {
                a[g] = [b.nhn[c + g]; VL];
            }
        }
        for j in 0..dim {
            let xr = &b.xt[j * b.stride + b.p0..j * b.stride + b.p0 + PB];
            for g in 0..CG {
                let cv = b.cent[(c + g) * dim + j];
                for v in 0..PV {
                    for l in 0..VL {
                        acc[v][g][l] += xr[v * VL + l] * cv;
                    }
                }
            }
        }
        for (g, ci) in (c as u32..).take(CG).enumerate() {
            for v in 0..PV {
                for l in 0..VL {
                    let a = acc[v][g][l];
                    let gt = a > bv[v][l];
                    bv[v][l] = if gt { a } else { bv[v][l] };
                    bi[v][l] = if gt { ci } else { bi[v][l] };
                }
            }
        }
        c += CG;
    }
    for v in 0..PV {
        best[v * VL..(v + 1) * VL].copy_from_slice(&bv[v]);
        bidx[v * VL..(v + 1) * VL].copy_from_slice(&bi[v]);
    }
}

/// `a < b ? a : b`: the minimum as the x86 `minps` instruction defines it (so that both
/// kernel copies agree even on NaN).
#[inline(always)]
fn min_ps(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

/// Squared distance of block point `i` to `c`: an f32 sum of `(x_j - c_j)^2` in coordinate
/// order (what every kernel lane computes).
#[inline(always)]
fn point_dist(xt: &[f32], len: usize, i: usize, c: &[f32]) -> f32 {
    let mut a = 0f32;
    for (j, &cj) in c.iter().enumerate() {
        let t = xt[j * len + i] - cj;
        a += t * t;
    }
    a
}

/// The portable k-means++ kernel (see [`super::pp_pass`] for what it computes).
#[inline(always)]
pub(super) fn pp_pass<const G: usize>(
    xt: &[f32],
    dmin: &[f32],
    dim: usize,
    cands: &[f32],
    lanes: &mut [[f64; SUM_LANES]; G],
    mut store: Option<&mut [f32]>,
) {
    let (len, full) = pp_bounds::<G>(xt, dmin, dim, cands, store.as_deref());
    for i0 in (0..full).step_by(SUM_LANES) {
        let mut acc = [[0f32; SUM_LANES]; G];
        for j in 0..dim {
            let x = &xt[j * len + i0..j * len + i0 + SUM_LANES];
            for g in 0..G {
                let c = cands[g * dim + j];
                for l in 0..SUM_LANES {
                    let t = x[l] - c;
                    acc[g][l] += t * t;
                }
            }
        }
        for g in 0..G {
            for l in 0..SUM_LANES {
                lanes[g][l] += f64::from(min_ps(acc[g][l], dmin[i0 + l]));
            }
        }
        if let Some(out) = store.as_deref_mut() {
            for l in 0..SUM_LANES {
                out[i0 + l] = min_ps(acc[0][l], dmin[i0 + l]);
            }
        }
    }
    pp_tail::<G>(xt, dmin, dim, cands, lanes, store, full);
}

/// The points of a k-means++ block after the last full group of [`SUM_LANES`] (scalar, shared
/// by every kernel copy).
#[inline(always)]
pub(super) fn pp_tail<const G: usize>(
    xt: &[f32],
    dmin: &[f32],
    dim: usize,
    cands: &[f32],
    lanes: &mut [[f64; SUM_LANES]; G],
    mut store: Option<&mut [f32]>,
    full: usize,
) {
    let len = dmin.len();
    for i in full..len {
        let dm = dmin[i];
        for g in 0..G {
            let m = min_ps(point_dist(xt, len, i, &cands[g * dim..(g + 1) * dim]), dm);
            lanes[g][i - full] += f64::from(m);
            if g == 0 {
                if let Some(out) = store.as_deref_mut() {
                    out[i] = m;
                }
            }
        }
    }
}
