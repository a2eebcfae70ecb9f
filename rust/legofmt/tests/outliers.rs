//! Outliers (format 2.0): elements stored exactly beside the clustered blocks.

use std::io::Cursor;

use half::{bf16, f16};
use legofmt::blocks::BlockShape;
use legofmt::compress::{compress, select_outliers, CompressOptions, GroupSpec, TensorInput};
use legofmt::dtype::Dtype;
use legofmt::format::reader::{Layout, LgnFile, OutliersRef};
use legofmt::scale::{ScaleMode, ScaleStat};

const ROWS: usize = 48;
const COLS: usize = 40;

/// Small uniform values with a few spikes 50 to 200 times larger (the weights a shared
/// codebook serves worst).
fn spiky(seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..ROWS * COLS)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    for (i, p) in [7usize, 130, 131, 999, 1500, ROWS * COLS - 1]
        .iter()
        .enumerate()
    {
        v[*p] = (50 + 30 * i) as f32 * if i % 2 == 0 { 1.0 } else { -1.0 };
    }
    v
}

fn options(outliers: f64, stages: usize) -> CompressOptions {
    CompressOptions {
        groups: vec![GroupSpec {
            k: 16,
            block: BlockShape::new(2, 4).unwrap(),
            stages,
            scale: ScaleMode::Row,
            scale_stat: ScaleStat::AbsMax,
            outliers,
        }],
        ..Default::default()
    }
}

fn save(dtype: Dtype, bytes: &[u8], outliers: f64) -> (Vec<u8>, legofmt::compress::Report) {
    let input = TensorInput {
        name: "w".into(),
        dtype,
        shape: vec![ROWS, COLS],
        data: bytes,
        group: Some(0),
        stages: None,
    };
    compress(&[input], &options(outliers, 2), &|_| true)
        .unwrap()
        .to_bytes()
        .unwrap()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn selection_takes_the_largest_relative_to_their_row_in_order() {
    // Row 0 has RMS 1 and a 3; row 1 is ten times larger with a 20 (2 of its RMS-ish).
    let x = [1.0, -1.0, 3.0, 1.0, 10.0, -10.0, 10.0, 20.0];
    let rms0 = (12.0f64 / 4.0).sqrt();
    let rms1 = (700.0f64 / 4.0).sqrt();
    assert!(3.0 / rms0 > 20.0 / rms1);
    assert_eq!(select_outliers(&x, 2, 4, 0.125), vec![2]);
    assert_eq!(select_outliers(&x, 2, 4, 0.25), vec![2, 7]);
    assert_eq!(select_outliers(&x, 2, 4, 0.0), Vec::<u32>::new());
    // Ties go to the lower positions; the count is floor(fraction * numel).
    let flat = [1.0f32; 10];
    assert_eq!(select_outliers(&flat, 2, 5, 0.35), vec![0, 1, 2]);
}

#[test]
fn outliers_decode_exactly_and_need_format_2() {
    let x = spiky(1);
    let (with, r1) = save(Dtype::F32, &f32_bytes(&x), 0.01);
    let (without, r0) = save(Dtype::F32, &f32_bytes(&x), 0.0);
    assert_eq!(r1.tensors[0].outliers, ROWS * COLS / 100);
    assert_eq!(r0.tensors[0].outliers, 0);
    let f = LgnFile::from_bytes(with.clone()).unwrap();
    let g = LgnFile::from_bytes(without).unwrap();
    assert_eq!(f.version(), Some((2, 0)));
    assert_eq!(g.version(), Some((1, 0)), "files without outliers stay 1.0");
    let Layout::Clustered {
        outliers: Some(OutliersRef { indices: ii, .. }),
        ..
    } = f.tensor("w").unwrap().layout
    else {
        panic!("no outliers in the layout")
    };
    assert_eq!(f.stored()[ii].name, "w.lgn.outlier_index");
    let y = f.decode_f32("w").unwrap();
    // The six spikes are among the outliers and come back exactly.
    for p in [7usize, 130, 131, 999, 1500, ROWS * COLS - 1] {
        assert_eq!(y[p].to_bits(), x[p].to_bits(), "element {p}");
    }
    // Taking the spikes out of the clustering lowers the error of everything else too.
    assert!(r1.tensors[0].rel_mse < 0.2 * r0.tensors[0].rel_mse);
    let num: f64 = x
        .iter()
        .zip(&y)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    let den: f64 = x.iter().map(|a| f64::from(*a).powi(2)).sum();
    assert!((num / den - r1.tensors[0].rel_mse).abs() < 1e-12);
    f.verify().unwrap();

    // Row ranges (outliers found by binary search) and a Read+Seek backing give the same bytes.
    let whole = f.decode("w").unwrap();
    for (a, b) in [(0, 1), (3, 4), (2, 37), (47, 48), (0, ROWS), (20, 20)] {
        let mut part = vec![0u8; (b - a) * COLS * 4];
        f.decode_rows_into("w", a..b, &mut part).unwrap();
        assert_eq!(part, whole[a * COLS * 4..b * COLS * 4], "rows {a}..{b}");
    }
    let r = LgnFile::from_reader(Cursor::new(with)).unwrap();
    assert_eq!(r.decode("w").unwrap(), whole);
    let mut part = vec![0u8; 5 * COLS * 4];
    r.decode_rows_into("w", 1..6, &mut part).unwrap();
    assert_eq!(part, whole[COLS * 4..6 * COLS * 4]);
}

#[test]
fn half_precision_outliers_keep_their_bits() {
    let x = spiky(2);
    let h: Vec<u8> = x
        .iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect();
    let b: Vec<u8> = x
        .iter()
        .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
        .collect();
    for (dtype, src) in [(Dtype::F16, h), (Dtype::BF16, b)] {
        let (bytes, report) = save(dtype, &src, 0.005);
        assert_eq!(report.tensors[0].outliers, ROWS * COLS / 200);
        let f = LgnFile::from_bytes(bytes).unwrap();
        let out = f.decode("w").unwrap();
        for p in [7usize, 130, 131, 999, 1500, ROWS * COLS - 1] {
            assert_eq!(
                out[2 * p..2 * p + 2],
                src[2 * p..2 * p + 2],
                "{dtype} element {p}"
            );
        }
    }
}

#[test]
fn outlier_fraction_is_checked() {
    for bad in [-0.1, 0.6, f64::NAN] {
        let x = f32_bytes(&spiky(3));
        let input = TensorInput {
            name: "w".into(),
            dtype: Dtype::F32,
            shape: vec![ROWS, COLS],
            data: &x,
            group: Some(0),
            stages: None,
        };
        let err = compress(&[input], &options(bad, 1), &|_| true)
            .err()
            .expect("rejected");
        assert!(err.to_string().contains("outliers"), "{err}");
    }
}

#[test]
fn exact_groups_take_no_outliers() {
    // Four distinct 2x4 blocks (k = 16 >= 4), no scaling: stored exactly, so no element needs
    // keeping aside.
    let x: Vec<f32> = (0..ROWS * COLS)
        .map(|i| [0.5f32, -2.0, 7.0, 0.25][(i / COLS / 2 + i % COLS / 4) % 4] * 100.0)
        .collect();
    let data = f32_bytes(&x);
    let input = TensorInput {
        name: "w".into(),
        dtype: Dtype::F32,
        shape: vec![ROWS, COLS],
        data: &data,
        group: Some(0),
        stages: None,
    };
    let mut opts = options(0.05, 1);
    opts.groups[0].scale = ScaleMode::None;
    let (bytes, report) = compress(&[input], &opts, &|_| true)
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(report.tensors[0].outliers, 0);
    let f = LgnFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version(), Some((1, 0)));
    assert!(f.decode_f32("w").unwrap() == x, "decoded exactly");
}
