use std::io::{Cursor, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;
use crate::blocks::BlockShape;
use crate::compress::{compress, CompressOptions, GroupSpec, TensorInput};

/// A reader that counts the bytes it hands out.
struct Counting {
    inner: Cursor<Vec<u8>>,
    read: Arc<AtomicU64>,
}
impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
impl Seek for Counting {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

fn counting(bytes: &[u8]) -> (LgnFile, Arc<AtomicU64>) {
    let read = Arc::new(AtomicU64::new(0));
    let f = LgnFile::from_reader(Counting {
        inner: Cursor::new(bytes.to_vec()),
        read: read.clone(),
    })
    .unwrap();
    (f, read)
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 20_001) as f32 / 10_000.0 - 1.0
        })
        .collect()
}

/// A file with clustered F32/F16/BF16 tensors (two block shapes, residual stages, row and
/// tensor scales, partial edge blocks) and raw F32/F16/BF16/I64/scalar tensors.
fn sample_file() -> Vec<u8> {
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let f16s = |v: &[f32]| {
        v.iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let bf16s = |v: &[f32]| {
        v.iter()
            .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
            .collect::<Vec<u8>>()
    };
    type Sample = (&'static str, Dtype, Vec<usize>, Vec<u8>, Option<usize>);
    let data: Vec<Sample> = vec![
        (
            "a.f32",
            Dtype::F32,
            vec![121, 66],
            f32s(&values(121 * 66, 1)),
            Some(0),
        ),
        (
            "b.f16",
            Dtype::F16,
            vec![19, 3, 5],
            f16s(&values(19 * 15, 2)),
            Some(0),
        ),
        (
            "c.bf16",
            Dtype::BF16,
            vec![64, 8],
            bf16s(&values(512, 3)),
            Some(1),
        ),
        (
            "d.f32",
            Dtype::F32,
            vec![11, 9],
            f32s(&values(99, 4)),
            Some(1),
        ),
        (
            "e.raw",
            Dtype::F32,
            vec![60, 7],
            f32s(&values(420, 5)),
            None,
        ),
        ("f.raw16", Dtype::F16, vec![13], f16s(&values(13, 6)), None),
        (
            "g.rawbf",
            Dtype::BF16,
            vec![5, 2, 2],
            bf16s(&values(20, 7)),
            None,
        ),
        ("h.i64", Dtype::I64, vec![4], (0..32).collect(), None),
        ("i.scalar", Dtype::F32, vec![], f32s(&[2.5]), None),
    ];
    let inputs: Vec<TensorInput<'_>> = data
        .iter()
        .map(|(n, d, s, b, g)| TensorInput {
            name: n.to_string(),
            dtype: *d,
            shape: s.clone(),
            data: b,
            group: *g,
            stages: None,
        })
        .collect();
    let opts = CompressOptions {
        groups: vec![
            GroupSpec {
                k: 16,
                block: BlockShape::new(3, 4).unwrap(),
                stages: 2,
                scale: ScaleMode::Row,
                scale_stat: crate::scale::ScaleStat::AbsMax,
                outliers: 0.0,
            },
            GroupSpec {
                k: 5,
                block: BlockShape::new(2, 2).unwrap(),
                stages: 1,
                scale: ScaleMode::Tensor,
                scale_stat: crate::scale::ScaleStat::AbsMax,
                outliers: 0.0,
            },
        ],
        seed: 0,
        batch_size: None,
        max_iter: Some(5),
        metadata: BTreeMap::new(),
    };
    compress(&inputs, &opts, &|_| true)
        .unwrap()
        .to_bytes()
        .unwrap()
        .0
}

fn widen(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    let mut v = vec![0f32; bytes.len() / dtype.size()];
    crate::dtype::float_bytes_to_f32(dtype, bytes, &mut v);
    v
}

fn row_ranges(rows: usize) -> Vec<Range<usize>> {
    let mut r = vec![0..rows, 0..0, rows..rows, 0..rows.min(1)];
    for (b, e) in [
        (1, 4),
        (3, 7),
        (5, 6),
        (2, 17),
        (8, 40),
        (33, 37),
        (57, 121),
        (119, 121),
    ] {
        if e <= rows {
            r.push(b..e);
        }
    }
    r
}

/// Every decoder of `f` gives what the reference (whole-file, in-memory) decoder gives.
fn check_against(f: &LgnFile, reference: &LgnFile) {
    for t in reference.tensors() {
        let full = reference.decode(&t.name).unwrap();
        let mut out = vec![0u8; t.nbytes()];
        f.decode_into(&t.name, &mut out).unwrap();
        assert_eq!(out, full, "{}", t.name);
        let row_bytes = t.row_len() * t.dtype.size();
        for rows in row_ranges(t.rows()) {
            let mut part = vec![0u8; rows.len() * row_bytes];
            f.decode_rows_into(&t.name, rows.clone(), &mut part)
                .unwrap();
            assert_eq!(
                part,
                &full[rows.start * row_bytes..rows.end * row_bytes],
                "{} rows {rows:?}",
                t.name
            );
        }
        if !t.dtype.is_clusterable() {
            let mut v = vec![0f32; t.numel()];
            let e = f.decode_f32_into(&t.name, &mut v).unwrap_err();
            assert!(matches!(e, LgnError::InvalidArgument { .. }), "{e}");
            continue;
        }
        let want = widen(t.dtype, &full);
        let mut v = vec![f32::NAN; t.numel()];
        f.decode_f32_into(&t.name, &mut v).unwrap();
        assert_eq!(v, want, "{}", t.name);
        assert_eq!(f.decode_f32(&t.name).unwrap(), want);
        for rows in row_ranges(t.rows()) {
            let n = t.row_len();
            let mut part = vec![f32::NAN; rows.len() * n];
            f.decode_rows_f32_into(&t.name, rows.clone(), &mut part)
                .unwrap();
            assert_eq!(part, &want[rows.start * n..rows.end * n], "{}", t.name);
        }
    }
}

#[test]
fn every_backing_and_decoder_agrees_with_the_full_decode() {
    let bytes = sample_file();
    let reference = LgnFile::from_bytes(bytes.clone()).unwrap();
    assert!(reference
        .tensors()
        .iter()
        .any(|t| matches!(t.layout, Layout::Clustered { .. })));
    let path = std::env::temp_dir().join(format!("legofmt-reader-{}.lgn", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let files = [
        LgnFile::open(&path).unwrap(),
        LgnFile::open_unmapped(&path).unwrap(),
        LgnFile::from_bytes(bytes.clone()).unwrap(),
        LgnFile::from_reader(Cursor::new(bytes.clone())).unwrap(),
    ];
    std::fs::remove_file(&path).unwrap();
    for mut f in files {
        assert_eq!(f.file_len(), bytes.len() as u64);
        assert_eq!(f.tensors(), reference.tensors());
        assert_eq!(f.codebooks(), reference.codebooks());
        f.verify().unwrap();
        check_against(&f, &reference);
        f.set_verify_checksums(false);
        check_against(&f, &reference);
    }
}

#[test]
fn clustered_rows_of_the_reference_decoder_match() {
    // decode_clustered (the kernel over a window) against the kernel over the whole tensor.
    let f = LgnFile::from_bytes(sample_file()).unwrap();
    let t = f.tensor("a.f32").unwrap().clone();
    let Layout::Clustered { grid, .. } = &t.layout else {
        panic!("a.f32 is clustered")
    };
    let mut all = vec![0f32; t.numel()];
    f.decode_clustered(&t, 0, grid.rows, &mut all).unwrap();
    for rows in row_ranges(grid.rows) {
        let mut part = vec![0f32; rows.len() * grid.cols];
        f.decode_clustered(&t, rows.start, rows.end, &mut part)
            .unwrap();
        assert_eq!(part, &all[rows.start * grid.cols..rows.end * grid.cols]);
    }
    let e = f.decode_clustered(&t, 3, 99, &mut all).unwrap_err();
    assert!(matches!(e, LgnError::InvalidArgument { .. }), "{e}");
    let raw = f.tensor("e.raw").unwrap().clone();
    assert!(f.decode_clustered(&raw, 0, 1, &mut all[..7]).is_err());
}

#[test]
fn misaligned_output_goes_through_the_bounded_fallback() {
    let f = LgnFile::from_bytes(sample_file()).unwrap();
    for name in ["a.f32", "b.f16", "c.bf16"] {
        let t = f.tensor(name).unwrap();
        let full = f.decode(name).unwrap();
        let mut buf = vec![0u8; t.nbytes() + 1];
        f.decode_into(name, &mut buf[1..]).unwrap();
        assert_eq!(&buf[1..], &full[..]);
    }
}

#[test]
fn a_reader_is_read_lazily() {
    let bytes = sample_file();
    let (f, read) = counting(&bytes);
    let piece_len = |i: usize| (f.stored()[i].end - f.stored()[i].begin) as u64;
    // Opening reads the prefix, the header and the codebooks: nothing else.
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let codebooks: u64 = f.codebooks().iter().map(|c| piece_len(c.stored)).sum();
    assert_eq!(read.load(Ordering::Relaxed), header + codebooks);
    let data: u64 = (0..f.stored().len()).map(piece_len).sum();
    assert_eq!(header + data, bytes.len() as u64);
    assert!(data > 2 * codebooks, "the sample has bulk data");

    // A full decode reads exactly the tensor's own pieces.
    for t in f.tensors() {
        let pieces: u64 = match &t.layout {
            Layout::Raw { stored } => piece_len(*stored),
            Layout::Clustered { stages, scale, .. } => {
                stages.iter().map(|s| piece_len(s.indices)).sum::<u64>()
                    + scale.map_or(0, |s| piece_len(s.stored))
            }
        };
        let before = read.load(Ordering::Relaxed);
        let mut out = vec![0u8; t.nbytes()];
        f.decode_into(&t.name, &mut out).unwrap();
        assert_eq!(read.load(Ordering::Relaxed) - before, pieces, "{}", t.name);
    }

    // Without checksum verification a row range reads only its rows' bytes.
    let (mut f, read) = counting(&bytes);
    f.set_verify_checksums(false);
    let t = f.tensor("a.f32").unwrap().clone();
    let Layout::Clustered { stages, grid, .. } = &t.layout else {
        panic!("a.f32 is clustered")
    };
    let indices: u64 = stages.iter().map(|s| piece_len(s.indices)).sum();
    let before = read.load(Ordering::Relaxed);
    let mut out = vec![0f32; 3 * t.row_len()];
    f.decode_rows_f32_into("a.f32", 30..33, &mut out).unwrap();
    let got = read.load(Ordering::Relaxed) - before;
    // Two stages of 4-bit indices over one block row (3 rows), plus 8-block alignment,
    // plus three 4-byte scales.
    let per_stage = (grid.grid_cols + 8) as u64 * 4 / 8 + 1;
    assert!(got <= 2 * per_stage + 12, "read {got} bytes");
    assert!(got < indices / 4, "read {got} of {indices} index bytes");
    let raw = f.tensor("e.raw").unwrap().clone();
    let before = read.load(Ordering::Relaxed);
    let mut out = vec![0f32; 2 * raw.row_len()];
    f.decode_rows_f32_into("e.raw", 2..4, &mut out).unwrap();
    assert_eq!(read.load(Ordering::Relaxed) - before, 2 * 7 * 4);
    assert!(raw.nbytes() > 2 * 7 * 4 * 10);
}

#[test]
fn corrupt_pieces_are_caught_from_a_reader() {
    let mut bytes = sample_file();
    let clean = LgnFile::from_bytes(bytes.clone()).unwrap();
    let data_start = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for name in ["a.f32", "e.raw", "f.raw16"] {
        let t = clean.tensor(name).unwrap();
        let si = match &t.layout {
            Layout::Raw { stored } => *stored,
            Layout::Clustered { stages, .. } => stages[0].indices,
        };
        let st = &clean.stored()[si];
        let mut b = bytes.clone();
        b[data_start + st.end - 1] ^= 0x40;
        let mut f = LgnFile::from_reader(Cursor::new(b)).unwrap();
        let mut out = vec![0f32; t.numel()];
        let e = f.decode_f32_into(name, &mut out).unwrap_err();
        assert!(matches!(e, LgnError::Checksum { .. }), "{e}");
        let mut part = vec![0f32; t.row_len()];
        let e = f.decode_rows_f32_into(name, 0..1, &mut part).unwrap_err();
        assert!(matches!(e, LgnError::Checksum { .. }), "{e}");
        assert!(f.verify().is_err());
        f.set_verify_checksums(false);
        f.decode_rows_f32_into(name, 0..1, &mut part).unwrap();
    }
    // A source that ends early is an I/O error naming the reader.
    bytes.truncate(bytes.len() - 1);
    let short = Cursor::new(bytes);
    assert!(LgnFile::from_reader(short).is_err());
}

/// What a reader makes of a file: the error, or every tensor's bytes (or decode error).
fn verdict(f: Result<LgnFile>) -> std::result::Result<Vec<Result<Vec<u8>, String>>, String> {
    let f = f.map_err(|e| e.to_string())?;
    let mut out: Vec<Result<Vec<u8>, String>> = f
        .tensors()
        .iter()
        .map(|t| f.decode(&t.name).map_err(|e| e.to_string()))
        .collect();
    out.push(f.verify().map(|_| Vec::new()).map_err(|e| e.to_string()));
    Ok(out)
}

#[test]
fn the_reader_backing_reaches_the_same_verdicts_on_the_spec_vectors() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors");
    let mut n = 0;
    for dir in ["valid", "invalid"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("lgn") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let in_memory = verdict(LgnFile::from_bytes(bytes.clone()));
            let read = verdict(LgnFile::from_reader(Cursor::new(bytes)));
            assert_eq!(read, in_memory, "{}", path.display());
            n += 1;
        }
    }
    assert!(n > 100, "found {n} vectors");
}

#[test]
fn bad_arguments_are_typed_errors() {
    let f = LgnFile::from_bytes(sample_file()).unwrap();
    let t = f.tensor("a.f32").unwrap();
    let mut out = vec![0f32; t.row_len()];
    for (rows, len) in [(120..122, t.row_len() * 2), (1..2, t.row_len() + 1)] {
        let mut v = vec![0f32; len];
        let e = f.decode_rows_f32_into("a.f32", rows, &mut v).unwrap_err();
        assert!(matches!(e, LgnError::InvalidArgument { .. }), "{e}");
    }
    let e = f.decode_rows_f32_into("zz", 0..1, &mut out).unwrap_err();
    assert!(matches!(e, LgnError::InvalidArgument { .. }), "{e}");
    let mut b = vec![0u8; 3];
    let e = f.decode_into("h.i64", &mut b).unwrap_err();
    assert!(e.to_string().contains("32 bytes"), "{e}");
    let s = f.tensor("i.scalar").unwrap();
    assert_eq!((s.rows(), s.row_len()), (1, 1));
    let mut one = [0f32; 1];
    f.decode_rows_f32_into("i.scalar", 0..1, &mut one).unwrap();
    assert_eq!(one, [2.5]);
}

#[test]
fn rewrite_with_replaces_codebooks_and_keeps_the_rest() {
    let dir = std::env::temp_dir().join(format!("lgn-rewrite-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dest = dir.join("tuned.lgn");
    let f = LgnFile::from_bytes(sample_file()).unwrap();
    let cb = &f.stored()[f.codebooks()[0].stored];
    let doubled: Vec<u8> = f.codebooks()[0]
        .values
        .iter()
        .flat_map(|v| (2.0 * v).to_le_bytes())
        .collect();
    let replace = BTreeMap::from([(cb.name.clone(), doubled)]);
    let md = BTreeMap::from([("tuned".to_string(), "yes".to_string())]);
    f.rewrite_with(&dest, &replace, &md).unwrap();
    let g = LgnFile::open(&dest).unwrap();
    g.verify().unwrap();
    assert_eq!(
        g.user_metadata().get("tuned").map(String::as_str),
        Some("yes")
    );
    let layout = |f: &LgnFile| {
        f.stored()
            .iter()
            .map(|s| (s.name.clone(), s.begin, s.end))
            .collect::<Vec<_>>()
    };
    assert_eq!(layout(&f), layout(&g));
    let mut checked = 0;
    for t in f.tensors() {
        match &t.layout {
            Layout::Clustered { stages, .. }
                if stages.len() == 1 && stages[0].codebook == 0 && t.dtype == Dtype::F32 =>
            {
                let (a, b) = (
                    f.decode_f32(&t.name).unwrap(),
                    g.decode_f32(&t.name).unwrap(),
                );
                assert!(a.iter().zip(&b).all(|(x, y)| *y == 2.0 * x), "{}", t.name);
                checked += 1;
            }
            Layout::Raw { .. } => {
                assert_eq!(f.decode(&t.name).unwrap(), g.decode(&t.name).unwrap());
                checked += 1;
            }
            _ => {}
        }
    }
    assert!(checked >= 2, "{checked}");
    // Wrong length, unknown name, non-finite codeword: typed errors, nothing written.
    std::fs::remove_file(&dest).unwrap();
    let n = f.codebooks()[0].values.len();
    let bad = [
        (cb.name.clone(), vec![0u8; 3]),
        ("nope".to_string(), vec![]),
        (cb.name.clone(), f32::NAN.to_le_bytes().repeat(n)),
    ];
    for (name, bytes) in bad {
        let e = f
            .rewrite_with(&dest, &BTreeMap::from([(name, bytes)]), &BTreeMap::new())
            .unwrap_err();
        assert!(matches!(e, LgnError::InvalidArgument { .. }), "{e}");
        assert!(!dest.exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
