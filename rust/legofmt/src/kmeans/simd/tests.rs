//! The kernel copies against each other (bit for bit) and against the oracle.

use super::super::testutil::{assert_near_oracle, run, uniform};
use super::*;

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
fn kernel_copies_agree_for_every_specialisation() {
    // The unrolled dimensions (4, 8, 16) and generic ones, k not a multiple of the
    // centroid group, point counts not a multiple of the point block, several tiles.
    for &(dim, k, n) in &[
        (4usize, 1027usize, 1001usize),
        (8, 300, 77),
        (16, 5, 33),
        (3, 2, 45),
        (64, 70, 19),
    ] {
        let data = uniform(n * dim, dim as u64, -2.0, 2.0);
        let centroids = uniform(k * dim, k as u64, -2.0, 2.0);
        let all: Vec<Vec<Slot>> = Isa::all()
            .into_iter()
            .map(|isa| run(isa, &data, dim, &centroids))
            .collect();
        for s in &all[1..] {
            assert_eq!(s, &all[0], "dim {dim} k {k}");
        }
        assert_near_oracle(&data, dim, &centroids, &all[0]);
    }
}

/// One k-means++ pass with the kernel copy of `isa`: the lanes and the stored minima.
fn pp_run<const G: usize>(
    isa: Isa,
    xt: &[f32],
    dmin: &[f32],
    dim: usize,
    cands: &[f32],
    store: bool,
) -> ([[u64; SUM_LANES]; G], Vec<u32>) {
    let mut lanes = [[0.5f64; SUM_LANES]; G];
    let mut out = vec![0f32; if store { dmin.len() } else { 0 }];
    pp_pass::<G>(
        isa,
        xt,
        dmin,
        dim,
        cands,
        &mut lanes,
        store.then_some(&mut out[..]),
    );
    (
        lanes.map(|l| l.map(f64::to_bits)),
        out.iter().map(|v| v.to_bits()).collect(),
    )
}

#[test]
fn kmeans_pp_kernel_copies_are_bit_identical() {
    // Full lane groups and a partial tail, every candidate count, infinite and finite `dmin`.
    for &(dim, len) in &[(1usize, 8usize), (3, 13), (4, 1029), (16, 64), (64, 7)] {
        let xt = uniform(len * dim, (dim * len) as u64, -2.0, 2.0);
        let mut dmin = uniform(len, 9, 0.0, 4.0);
        dmin[0] = f32::INFINITY;
        let cands = uniform(4 * dim, 5, -2.0, 2.0);
        let all: Vec<_> = Isa::all()
            .into_iter()
            .map(|isa| {
                (
                    pp_run::<1>(isa, &xt, &dmin, dim, &cands[..dim], true),
                    pp_run::<2>(isa, &xt, &dmin, dim, &cands[..2 * dim], false),
                    pp_run::<3>(isa, &xt, &dmin, dim, &cands[..3 * dim], false),
                    pp_run::<4>(isa, &xt, &dmin, dim, &cands, false),
                )
            })
            .collect();
        for a in &all[1..] {
            assert_eq!(a, &all[0], "dim {dim} len {len}");
        }
    }
}
