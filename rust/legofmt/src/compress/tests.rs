//! Unit tests of the pipeline's steps, each on tensors small enough to check by hand.

use std::sync::Mutex;

use super::cluster::{cluster, cluster_group, stage_seed, StageFit};
use super::finish::{finish, measure, stage_parts};
use super::outliers::Outliers;
use super::pack::pack_group;
use super::plan::{plan_group, validate_inputs, GroupPlan};
use super::prepare::{prepare_group, PreparedGroup, PreparedMember};
use super::*;
use crate::bitpack;
use crate::format::reader::{Layout, LgnFile, ScaleRef};
use crate::scale::FittedScales;

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn spec(k: usize, bh: usize, bw: usize, stages: usize) -> GroupSpec {
    GroupSpec {
        k,
        block: BlockShape::new(bh, bw).unwrap(),
        stages,
        scale: ScaleMode::Row,
        scale_stat: ScaleStat::AbsMax,
        outliers: 0.0,
    }
}

fn input<'a>(name: &str, shape: &[usize], data: &'a [u8], group: Option<usize>) -> TensorInput<'a> {
    TensorInput {
        name: name.into(),
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        data,
        group,
        stages: None,
    }
}

fn opts(groups: Vec<GroupSpec>) -> CompressOptions {
    CompressOptions {
        groups,
        seed: 3,
        ..Default::default()
    }
}

fn go_on(_: &Event) -> bool {
    true
}

/// A deterministic pseudo-random sequence in `[-0.5, 0.5)`.
fn noise(n: usize, mut state: u32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

/// Plans, prepares and clusters group `gi`, keeping what each step gave.
fn run_to_cluster(
    inputs: &[TensorInput<'_>],
    o: &CompressOptions,
    gi: usize,
) -> (GroupPlan, PreparedGroup, Vec<StageFit>) {
    let spec = &o.groups[gi];
    let plan = plan_group(inputs, gi, spec).unwrap().unwrap();
    let prepared = prepare_group(inputs, &plan, spec, gi, &go_on).unwrap();
    let fits = cluster_group(prepared.blocks.clone(), &plan, gi, spec, o, &go_on).unwrap();
    (plan, prepared, fits)
}

#[test]
fn plan_orders_members_by_stages_and_places_their_blocks() {
    let z = bytes(&[0.0; 16]);
    let mut inputs = vec![
        input("a", &[4, 4], &z, Some(0)),
        input("bias", &[4], &z[..16], None),
        input("c", &[2, 6], &z[..48], Some(0)),
        input("d", &[4, 4], &z, Some(1)),
        input("e", &[2, 2], &z[..16], Some(0)),
    ];
    inputs[0].stages = Some(1);
    inputs[4].stages = Some(2);
    let o = opts(vec![spec(4, 2, 2, 2), spec(4, 2, 2, 1), spec(4, 2, 2, 1)]);
    validate_inputs(&inputs, &o).unwrap();
    let plan = plan_group(&inputs, 0, &o.groups[0]).unwrap().unwrap();
    // Two stages (c: the group's, e: its own) before one (a); input order among equals.
    let order: Vec<(usize, usize, usize)> = plan
        .members
        .iter()
        .map(|m| (m.input, m.stages, m.first_block))
        .collect();
    assert_eq!(order, vec![(2, 2, 0), (4, 2, 3), (0, 1, 4)]);
    assert_eq!(plan.members[0].grid.n_blocks(), 3);
    assert_eq!(plan.members[2].blocks(), 4..8);
    assert_eq!((plan.n_stages, plan.n_blocks), (2, 8));
    assert_eq!((plan.stage_blocks(0), plan.stage_blocks(1)), (8, 4));
    let one = plan_group(&inputs, 1, &o.groups[1]).unwrap().unwrap();
    assert_eq!((one.members.len(), one.members[0].input), (1, 3));
    assert!(plan_group(&inputs, 2, &o.groups[2]).unwrap().is_none());
}

#[test]
fn validation_rejects_bad_specs_and_inputs_by_name() {
    let z = bytes(&[0.0; 16]);
    let reject = |inputs: &[TensorInput<'_>], groups: Vec<GroupSpec>, field: &str, says: &str| {
        match validate_inputs(inputs, &opts(groups)) {
            Err(LgnError::InvalidArgument { name, message }) => {
                assert_eq!(name, field, "{message}");
                assert!(message.contains(says), "{message:?} lacks {says:?}");
            }
            other => panic!("expected an invalid `{field}`, got {other:?}"),
        }
    };
    let ok = [input("w", &[4, 4], &z, Some(0))];
    validate_inputs(&ok, &opts(vec![spec(4, 2, 2, 1)])).unwrap();
    reject(&ok, vec![spec(1, 2, 2, 1)], "k", "got 1");
    reject(&ok, vec![spec(MAX_K + 1, 2, 2, 1)], "k", "65537");
    reject(&ok, vec![spec(4, 2, 2, 0)], "stages", "got 0");
    reject(&ok, vec![spec(4, 2, 2, MAX_STAGES + 1)], "stages", "17");
    let mut many = spec(4, 2, 2, 1);
    many.outliers = 0.6;
    reject(&ok, vec![many], "outliers", "0.6");
    let g = || vec![spec(4, 2, 2, 2)];
    for bad in ["", "lgn.w", "a.lgn.b"] {
        reject(&[input(bad, &[4, 4], &z, None)], g(), "name", "reserved");
    }
    let twice = [input("w", &[4, 4], &z, None), input("w", &[4, 4], &z, None)];
    reject(&twice, g(), "name", "`w` appears twice");
    reject(
        &[input("w", &[4, 3], &z, None)],
        g(),
        "data",
        "`w`: 64 bytes",
    );
    reject(&[input("w", &[4, 4], &z, Some(1))], g(), "group", "group 1");
    let mut ints = input("i", &[4, 4], &z, Some(0));
    ints.dtype = Dtype::I32;
    reject(&[ints], g(), "group", "`i` is I32");
    reject(&[input("v", &[16], &z, Some(0))], g(), "group", "`v`: ");
    let mut deep = input("w", &[4, 4], &z, Some(0));
    deep.stages = Some(3);
    reject(&[deep], g(), "stages", "asks for 3 stages");
    let mut raw = input("w", &[4, 4], &z, None);
    raw.stages = Some(1);
    reject(&[raw], g(), "stages", "stored raw");
}

/// The events a run reports, as `phase done`.
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn new() -> Recorder {
        Recorder(Mutex::new(Vec::new()))
    }
    fn record(&self, e: &Event) -> bool {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", e.phase, e.done));
        true
    }
    fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[test]
fn prepare_takes_outliers_only_from_an_inexact_group() {
    // With 1x2 blocks and row scales, `w` has 3 distinct blocks; `z` (all zero) one more.
    let w = bytes(&[1.0, 2.0, -4.0, 0.5, 8.0, 8.0, 8.0, 8.0]);
    let z = bytes(&[0.0; 8]);
    let inputs = [
        input("w", &[2, 4], &w, Some(0)),
        input("z", &[2, 4], &z, Some(0)),
    ];
    let mut s = spec(2, 1, 2, 1);
    s.outliers = 0.125;
    let plan = plan_group(&inputs, 0, &s).unwrap().unwrap();
    let rec = Recorder::new();
    let inexact = prepare_group(&inputs, &plan, &s, 0, &|e| rec.record(e)).unwrap();
    // The pass without outliers stops after `w`; the pass with them prepares both.
    assert_eq!(
        rec.events(),
        ["prepare g0 0", "prepare g0 0", "prepare g0 1"]
    );
    // `w`'s outlier is -4 (largest relative to its row); row 0 is then scaled by 2, not 4.
    let row = |values: Vec<f32>| Some(FittedScales::from_raw(ScaleMode::Row, values));
    let expect = PreparedGroup {
        blocks: vec![
            0.5, 1.0, 0.0, 0.25, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ],
        members: vec![
            PreparedMember {
                scales: row(vec![2.0, 8.0]),
                outliers: Outliers {
                    positions: vec![2],
                    values: vec![-4.0],
                },
            },
            PreparedMember {
                scales: row(vec![0.0, 0.0]),
                outliers: Outliers {
                    positions: vec![0],
                    values: vec![0.0],
                },
            },
        ],
    };
    assert_eq!(inexact, expect);
    assert_eq!(expect.members[0].scales.as_ref().unwrap().dtype, Dtype::F16);

    // With k = 4 the group is exact without outliers: one pass, none taken.
    s.k = 4;
    let rec = Recorder::new();
    let exact = prepare_group(&inputs, &plan, &s, 0, &|e| rec.record(e)).unwrap();
    assert_eq!(rec.events(), ["prepare g0 0", "prepare g0 1"]);
    assert_eq!(
        exact.blocks[..8],
        [0.25, 0.5, -1.0, 0.125, 1.0, 1.0, 1.0, 1.0]
    );
    assert_eq!(exact.members[0].scales, row(vec![4.0, 8.0]));
    assert!(exact.members.iter().all(|m| m.outliers.is_empty()));
}

#[test]
fn prepare_names_a_non_finite_element_and_stops_when_cancelled() {
    let w = bytes(&[1.0, 2.0, 3.0, f32::NAN]);
    let inputs = [input("w", &[2, 2], &w, Some(0))];
    let s = spec(2, 1, 1, 1);
    let plan = plan_group(&inputs, 0, &s).unwrap().unwrap();
    let e = prepare_group(&inputs, &plan, &s, 0, &go_on).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("`w`") && text.contains("element 3"), "{text}");
    let stop = prepare_group(&inputs, &plan, &s, 0, &|_| false).unwrap_err();
    assert!(matches!(stop, LgnError::Cancelled), "{stop:?}");
}

#[test]
fn cluster_is_exact_when_distinct_blocks_fit_k() {
    let o = opts(vec![]);
    let data = [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 5.0, 6.0];
    for k in [3, 4, 100] {
        let fit = cluster(&data, 2, k, 0, &o, "cluster g0 s0", &go_on).unwrap();
        assert_eq!(fit.k, 3);
        assert_eq!(fit.centroids, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(fit.assignments, vec![0, 1, 0, 2]);
    }
    // A single distinct block still makes a codebook of two (a 1-bit index).
    let fit = cluster(&[7.0, -7.0, 7.0, -7.0], 2, 4, 0, &o, "p", &go_on).unwrap();
    assert_eq!((fit.k, fit.centroids), (2, vec![7.0, -7.0, 0.0, 0.0]));
    assert_eq!(fit.assignments, vec![0, 0]);
}

#[test]
fn cluster_is_deterministic_for_a_seed() {
    let data = noise(4 * 600, 11);
    let o = opts(vec![]);
    let a = cluster(&data, 4, 8, 42, &o, "p", &go_on).unwrap();
    let b = cluster(&data, 4, 8, 42, &o, "p", &go_on).unwrap();
    assert_eq!(a, b);
    assert_eq!((a.k, a.centroids.len(), a.assignments.len()), (8, 32, 600));
    assert!(a.assignments.iter().all(|&i| i < 8));
}

#[test]
fn stage_seeds_are_distinct_and_keep_the_mix() {
    assert_eq!(stage_seed(7, 0, 0), 7);
    assert_eq!(stage_seed(0, 0, 1), 0x9E37_79B9_7F4A_7C15);
    assert_eq!(
        stage_seed(5, 1, 0),
        5 ^ (1u64 << 32).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    );
    let mut seen = std::collections::HashSet::new();
    for g in 0..8 {
        for s in 0..MAX_STAGES {
            assert!(seen.insert(stage_seed(99, g, s)), "g{g} s{s}");
        }
    }
}

#[test]
fn cluster_group_stages_fit_residuals_of_their_members() {
    // `w` (2 stages) is exact in stage 0, so its residuals are zero; `v` (1 stage) is not
    // clustered by stage 1 at all.
    let w = bytes(&[1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0]);
    let v = bytes(&[1.0, 2.0, 1.0, 2.0]);
    let mut inputs = [
        input("v", &[2, 2], &v, Some(0)),
        input("w", &[2, 4], &w, Some(0)),
    ];
    inputs[0].stages = Some(1);
    let mut s = spec(4, 1, 2, 2);
    s.scale = ScaleMode::None;
    let o = opts(vec![s]);
    let rec = Recorder::new();
    let plan = plan_group(&inputs, 0, &o.groups[0]).unwrap().unwrap();
    let prepared = prepare_group(&inputs, &plan, &o.groups[0], 0, &go_on).unwrap();
    let fits = cluster_group(prepared.blocks, &plan, 0, &o.groups[0], &o, &|e| {
        rec.record(e)
    })
    .unwrap();
    assert_eq!(fits.len(), 2);
    assert_eq!(fits[0].centroids, vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(fits[0].assignments, vec![0, 0, 1, 1, 0, 0]);
    assert_eq!(fits[1].centroids, vec![0.0; 4]);
    assert_eq!(fits[1].assignments, vec![0; 4]);
    // The exact path runs no k-means: no cluster events.
    assert!(rec.events().is_empty(), "{:?}", rec.events());

    // A lossy group reports k-means progress under its stage's phase.
    let noisy = bytes(&noise(64 * 8, 5));
    let inputs = [input("n", &[64, 8], &noisy, Some(0))];
    let o = opts(vec![spec(4, 2, 2, 2)]);
    let plan = plan_group(&inputs, 0, &o.groups[0]).unwrap().unwrap();
    let prepared = prepare_group(&inputs, &plan, &o.groups[0], 0, &go_on).unwrap();
    let rec = Recorder::new();
    cluster_group(prepared.blocks, &plan, 0, &o.groups[0], &o, &|e| {
        rec.record(e)
    })
    .unwrap();
    let events = rec.events();
    for s in 0..2 {
        let phase = format!("cluster g0 s{s} ");
        assert!(events.iter().any(|e| e.starts_with(&phase)), "{events:?}");
    }
}

#[test]
fn pack_round_trips_through_bitpack() {
    let a = bytes(&noise(16 * 12, 1));
    let b = bytes(&noise(8 * 6, 2));
    let mut inputs = [
        input("a", &[16, 12], &a, Some(0)),
        input("b", &[8, 6], &b, Some(0)),
    ];
    inputs[1].stages = Some(1);
    let o = opts(vec![spec(8, 2, 2, 2)]);
    let (plan, prepared, fits) = run_to_cluster(&inputs, &o, 0);
    let mut codebooks = Vec::new();
    let rec = Recorder::new();
    let packed = pack_group(
        plan.clone(),
        prepared.members.clone(),
        fits.clone(),
        0,
        &o.groups[0],
        &mut codebooks,
        &|e| rec.record(e),
    )
    .unwrap();
    assert_eq!(rec.events(), ["pack g0 0"]);
    let reports: Vec<CodebookReport> = codebooks.iter().map(|c| c.report()).collect();
    let block = o.groups[0].block;
    assert_eq!(
        reports,
        [0, 1].map(|stage| CodebookReport {
            group: 0,
            stage,
            k: 8,
            bits: 3,
            block
        })
    );
    assert_eq!(packed.len(), 2);
    for (p, m) in packed.iter().zip(&plan.members) {
        assert_eq!((p.input, p.grid), (m.input, m.grid));
        assert_eq!(p.codebooks, (0..m.stages).collect::<Vec<_>>());
        for (s, idx) in p.indices.iter().enumerate() {
            assert_eq!(
                idx.len(),
                bitpack::packed_len(m.grid.n_blocks(), 3).unwrap()
            );
            let back = bitpack::unpack(idx, 3, m.grid.n_blocks());
            assert_eq!(back, fits[s].assignments[m.blocks()], "{} s{s}", p.input);
        }
    }
    assert_eq!(packed[0].scales, prepared.members[0].scales);
}

#[test]
fn finish_refit_never_increases_the_error() {
    for (i, stat) in [ScaleStat::AbsMax, ScaleStat::Rms].into_iter().enumerate() {
        let mut x = noise(32 * 16, 9 + i as u32);
        // Rows of very different magnitudes, as row scales are for.
        for (r, row) in x.chunks_mut(16).enumerate() {
            row.iter_mut().for_each(|v| *v *= 1.0 + r as f32);
        }
        let w = bytes(&x);
        let inputs = [input("w", &[32, 16], &w, Some(0))];
        let mut s = spec(16, 2, 2, 1);
        s.scale_stat = stat;
        s.outliers = 0.01;
        let o = opts(vec![s]);
        let (plan, prepared, fits) = run_to_cluster(&inputs, &o, 0);
        let mut codebooks = Vec::new();
        let packed = pack_group(
            plan,
            prepared.members,
            fits,
            0,
            &o.groups[0],
            &mut codebooks,
            &go_on,
        )
        .unwrap()
        .remove(0);
        assert_eq!(packed.outliers.len(), 5);
        let before = {
            let parts = stage_parts(&codebooks, &packed.codebooks, &packed.indices);
            let scales = packed.scales.as_ref().unwrap().view();
            measure(
                &inputs[0],
                &x,
                &packed.grid,
                &parts,
                scales,
                &packed.outliers,
            )
            .unwrap()
        };
        let old_scales = packed.scales.clone().unwrap();
        let done = finish(&inputs[0], &codebooks, packed).unwrap();
        let new_scales = done.packed.scales.as_ref().unwrap();
        assert_eq!(new_scales.mode, ScaleMode::Row);
        assert_ne!(new_scales.values, old_scales.values, "{stat:?}");
        assert!(
            done.rel_mse <= before.0,
            "{stat:?}: {} > {}",
            done.rel_mse,
            before.0
        );
        assert!(done.rel_mse > 0.0 && done.max_abs_err > 0.0);
    }
}

#[test]
fn lay_out_gives_offsets_a_reader_accepts() {
    let w = noise(16 * 8, 3);
    let one_row = noise(12, 4);
    let bias = noise(7, 5);
    let wb = bytes(&w);
    let rb = bytes(&one_row);
    let bb = bytes(&bias);
    let h: Vec<u8> = bias
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let flags = [1u8, 0, 1];
    let mut inputs = vec![
        input("flags", &[3], &flags, None),
        input("w", &[16, 8], &wb, Some(0)),
        input("h", &[7], &h, None),
        input("row", &[1, 12], &rb, Some(0)),
        input("bias", &[7], &bb, None),
    ];
    inputs[0].dtype = Dtype::U8;
    inputs[2].dtype = Dtype::F16;
    inputs[3].stages = Some(1);
    let mut s = spec(8, 1, 4, 2);
    s.outliers = 0.05;
    let (bytes, report) = compress(&inputs, &opts(vec![s]), &go_on)
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(report.file_bytes, bytes.len() as u64);
    assert_eq!(report.codebooks.len(), 2);
    let f = LgnFile::from_bytes(bytes).unwrap();
    f.verify().unwrap();
    let stored: Vec<&str> = f.stored().iter().map(|t| t.name.as_str()).collect();
    let cb = |i| crate::format::manifest::codebook_name(i);
    let (c0, c1) = (cb(0), cb(1));
    let m = crate::format::manifest::outlier_index_name("w");
    let v = crate::format::manifest::outlier_value_name("w");
    let ws = crate::format::manifest::scale_name("w");
    let w0 = crate::format::manifest::indices_name("w", 0);
    let w1 = crate::format::manifest::indices_name("w", 1);
    let rs = crate::format::manifest::scale_name("row");
    let r0 = crate::format::manifest::indices_name("row", 0);
    // Codebooks, then each clustered tensor (input order), then raw ones by element size.
    assert_eq!(
        stored,
        [&c0, &c1, &m, &v, &ws, &w0, &w1, &rs, &r0, "bias", "h", "flags"]
    );
    for t in f.stored() {
        assert_eq!(t.begin % t.dtype.size(), 0, "{} is aligned", t.name);
    }
    // The one-row tensor's row scale is a tensor scale; `w` keeps one per row.
    for (name, mode) in [("w", ScaleMode::Row), ("row", ScaleMode::Tensor)] {
        match &f.tensor(name).unwrap().layout {
            Layout::Clustered {
                scale: Some(ScaleRef { mode: m, .. }),
                ..
            } => assert_eq!(*m, mode, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    // Raw tensors come back as given; clustered ones with the error the report gives.
    assert_eq!(f.decode("flags").unwrap(), flags);
    assert_eq!(f.decode("h").unwrap(), h);
    assert_eq!(f.decode("bias").unwrap(), bb);
    for (t, x) in [(&report.tensors[1], &w), (&report.tensors[3], &one_row)] {
        let y = f.decode_f32(&t.name).unwrap();
        let num: f64 = x
            .iter()
            .zip(&y)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        let den: f64 = x.iter().map(|&a| f64::from(a).powi(2)).sum();
        assert_eq!(t.rel_mse, num / den, "{}", t.name);
        assert!(t.clustered && t.stored_bytes > 0);
    }
    assert_eq!(report.tensors[1].outliers, 6);
    assert_eq!(report.tensors[1].index_bits, 6);
    assert_eq!(report.tensors[3].index_bits, 3);
}
