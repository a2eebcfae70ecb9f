//! Nested residual stages: tensors of one group with different stage counts share the group's
//! stage codebooks (stage `s` fitted to the members with more than `s` stages).

use legofmt::blocks::BlockShape;
use legofmt::compress::{compress, CompressOptions, GroupSpec, TensorInput};
use legofmt::dtype::Dtype;
use legofmt::format::reader::{Layout, LgnFile};
use legofmt::scale::{ScaleMode, ScaleStat};

fn values(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .flat_map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5).to_le_bytes()
        })
        .collect()
}

fn group(stages: usize) -> CompressOptions {
    CompressOptions {
        groups: vec![GroupSpec {
            k: 16,
            block: BlockShape::new(2, 2).unwrap(),
            stages,
            scale: ScaleMode::Row,
            scale_stat: ScaleStat::AbsMax,
            outliers: 0.0,
        }],
        ..Default::default()
    }
}

fn input<'a>(name: &str, data: &'a [u8], stages: Option<usize>) -> TensorInput<'a> {
    TensorInput {
        name: name.into(),
        dtype: Dtype::F32,
        shape: vec![32, 24],
        data,
        group: Some(0),
        stages,
    }
}

#[test]
fn fewer_stages_reuse_the_first_codebooks_and_add_none() {
    let (a, b, c) = (values(768, 1), values(768, 2), values(768, 3));
    let inputs = [
        input("one", &a, Some(1)),
        input("three", &b, None),
        input("two", &c, Some(2)),
    ];
    let (bytes, report) = compress(&inputs, &group(3), &|_| true)
        .unwrap()
        .to_bytes()
        .unwrap();
    let f = LgnFile::from_bytes(bytes).unwrap();
    assert_eq!(
        f.codebooks().len(),
        3,
        "one codebook per stage of the group"
    );
    let stages = |name: &str| match &f.tensor(name).unwrap().layout {
        Layout::Clustered { stages, .. } => stages.iter().map(|s| s.codebook).collect::<Vec<_>>(),
        Layout::Raw { .. } => panic!("{name} is raw"),
    };
    // Saved order is kept; each tensor uses the first n codebooks.
    assert_eq!(stages("one"), vec![0]);
    assert_eq!(stages("two"), vec![0, 1]);
    assert_eq!(stages("three"), vec![0, 1, 2]);
    let names: Vec<_> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["one", "three", "two"]);
    // More stages, less error; every tensor decodes to what the report measured.
    let err: Vec<f64> = report.tensors.iter().map(|t| t.rel_mse).collect();
    assert!(err[1] < err[2] && err[2] < err[0], "{err:?}");
    for (t, raw) in report.tensors.iter().zip([&a, &b, &c]) {
        let x: Vec<f32> = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let y = f.decode_f32(&t.name).unwrap();
        let num: f64 = x
            .iter()
            .zip(&y)
            .map(|(p, q)| ((p - q) as f64).powi(2))
            .sum();
        let den: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum();
        assert!((num / den - t.rel_mse).abs() < 1e-9, "{}", t.name);
    }
}

#[test]
fn stage_counts_outside_the_group_are_rejected() {
    let a = values(768, 1);
    for bad in [0, 3] {
        let err = compress(&[input("t", &a, Some(bad))], &group(2), &|_| true)
            .err()
            .expect("out of range");
        let msg = err.to_string();
        assert!(msg.contains("`t`") && msg.contains("stages"), "{msg}");
    }
    let raw = TensorInput {
        group: None,
        ..input("r", &a, Some(1))
    };
    let msg = compress(&[raw], &group(2), &|_| true)
        .err()
        .expect("raw with stages")
        .to_string();
    assert!(msg.contains("raw"), "{msg}");
}
