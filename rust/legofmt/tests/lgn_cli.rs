//! The `lgn` command-line tool: `info`, `verify` (on good and corrupted files) and `decode`,
//! run as a separate process on files written with the crate's own compression API.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use half::{bf16, f16};
use legofmt::blocks::BlockShape;
use legofmt::compress::{compress, CompressOptions, GroupSpec, TensorInput};
use legofmt::dtype::Dtype;
use legofmt::format::envelope::Envelope;
use legofmt::format::manifest::{Manifest, MANIFEST_KEY};
use legofmt::format::reader::{Layout, LgnFile};
use legofmt::format::writer::{self, Piece};
use legofmt::scale::ScaleMode;

/// Runs the `lgn` binary built with this test. When `LGN_CLI_RUNNER` is set (for example to
/// `qemu-aarch64` by `scripts/aarch64.sh`, where no binfmt handler runs foreign binaries), the
/// binary is started through it: the runner's words, then the binary, then the arguments.
fn lgn(args: &[&str]) -> Output {
    let bin = env!("CARGO_BIN_EXE_lgn");
    let runner = std::env::var("LGN_CLI_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut cmd = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(args).output().expect("the lgn binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh, empty folder for one test.
fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lgn-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn le_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a small model with clustered F32/F16/BF16 tensors (two groups, one with residual
/// stages and row scales) and raw F32/I64 tensors, plus user metadata.
fn write_model(path: &Path) {
    let w = le_f32(&values(64 * 48, 1));
    let h: Vec<u8> = values(32 * 16, 2)
        .iter()
        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
        .collect();
    let conv: Vec<u8> = values(8 * 4 * 2 * 2, 3)
        .iter()
        .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
        .collect();
    let b = le_f32(&[0.5, -1.0, 2.0]);
    let ids: Vec<u8> = [3i64, -7, 11, 0, 42]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let inputs = vec![
        TensorInput {
            name: "layer.w".into(),
            dtype: Dtype::F32,
            shape: vec![64, 48],
            data: &w,
            group: Some(0),
            stages: None,
        },
        TensorInput {
            name: "layer.h".into(),
            dtype: Dtype::F16,
            shape: vec![32, 16],
            data: &h,
            group: Some(1),
            stages: None,
        },
        TensorInput {
            name: "conv".into(),
            dtype: Dtype::BF16,
            shape: vec![8, 4, 2, 2],
            data: &conv,
            group: Some(0),
            stages: None,
        },
        TensorInput {
            name: "layer.b".into(),
            dtype: Dtype::F32,
            shape: vec![3],
            data: &b,
            group: None,
            stages: None,
        },
        TensorInput {
            name: "ids".into(),
            dtype: Dtype::I64,
            shape: vec![5],
            data: &ids,
            group: None,
            stages: None,
        },
    ];
    let opts = CompressOptions {
        groups: vec![
            GroupSpec {
                k: 16,
                block: BlockShape::new(4, 4).unwrap(),
                stages: 1,
                scale: ScaleMode::Row,
                scale_stat: legofmt::scale::ScaleStat::AbsMax,
                outliers: 0.0,
            },
            GroupSpec {
                k: 8,
                block: BlockShape::new(2, 4).unwrap(),
                stages: 2,
                scale: ScaleMode::Tensor,
                scale_stat: legofmt::scale::ScaleStat::AbsMax,
                outliers: 0.0,
            },
        ],
        seed: 7,
        metadata: BTreeMap::from([("note".to_string(), "cli test".to_string())]),
        ..Default::default()
    };
    compress(&inputs, &opts, &|_| true)
        .unwrap()
        .write(path)
        .unwrap();
}

#[test]
fn info_lists_every_tensor_and_the_ratio() {
    let dir = scratch("info");
    let file = dir.join("m.lgn");
    write_model(&file);
    let o = lgn(&["info", s(&file)]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    assert!(out.contains("format:    lgn 1.0"), "{out}");
    assert!(out.contains("vs fp32"), "{out}");
    assert!(out.contains("note = cli test"), "{out}");
    let f = LgnFile::open(&file).unwrap();
    assert!(out.contains(&format!("size:      {} bytes", f.file_len())));
    assert!(out.contains(&format!("codebooks: {}", f.codebooks().len())));
    for t in f.tensors() {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(t.name.as_str()))
            .unwrap_or_else(|| panic!("no line for {} in\n{out}", t.name));
        assert!(line.contains(t.dtype.name()), "{line}");
        assert!(line.contains(&format!("{:?}", t.shape)), "{line}");
        match t.layout {
            Layout::Raw { .. } => assert!(line.contains("raw"), "{line}"),
            Layout::Clustered { .. } => assert!(line.contains("clustered"), "{line}"),
        }
    }
    // The F16 tensor uses two residual stages of k=8 (3-bit) codebooks and tensor scales.
    let h = out.lines().find(|l| l.starts_with("  layer.h ")).unwrap();
    assert!(
        h.contains("2x4") && h.contains("/3b+") && h.contains("scale=tensor"),
        "{h}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn verify_accepts_a_good_file() {
    let dir = scratch("verify-ok");
    let file = dir.join("m.lgn");
    write_model(&file);
    let o = lgn(&["verify", s(&file)]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("ok: "), "{}", text(&o.stdout));
    assert!(o.stderr.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Parses the envelope and manifest of an `.lgn` file held in memory.
fn split(bytes: &[u8]) -> (Envelope, Manifest) {
    let hl = Envelope::header_len_from_prefix(bytes, bytes.len() as u64).unwrap();
    let env = Envelope::parse(&bytes[8..8 + hl], bytes.len() as u64).unwrap();
    let m = Manifest::from_json(&env.metadata[MANIFEST_KEY]).unwrap();
    (env, m)
}

#[test]
fn verify_rejects_a_flipped_data_byte() {
    let dir = scratch("verify-crc");
    let file = dir.join("m.lgn");
    write_model(&file);
    let mut bytes = std::fs::read(&file).unwrap();
    let (env, _) = split(&bytes);
    let victim = env
        .tensors
        .iter()
        .find(|t| t.name.starts_with("layer.w") && t.dtype == Dtype::U8)
        .expect("packed indices of layer.w")
        .clone();
    bytes[env.data_start() + victim.begin + 1] ^= 0x10;
    let bad = dir.join("bad.lgn");
    std::fs::write(&bad, &bytes).unwrap();
    let o = lgn(&["verify", s(&bad)]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stdout: {}", text(&o.stdout));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("lgn: error: "), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains(&victim.name), "{err}");
    assert!(err.contains(s(&bad)), "{err}");
    assert!(o.stdout.is_empty());
    // Decoding the corrupted tensor fails the same way, and leaves no output behind.
    let dest = dir.join("out.safetensors");
    let o = lgn(&["decode", s(&bad), "-o", s(&dest)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("checksum mismatch"));
    assert!(!dest.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn decode_rejects_a_corrupt_codebook() {
    // Codebooks are loaded once, at open; `decode` must still refuse a file whose codebook
    // bytes no longer match their checksum, and write nothing.
    let dir = scratch("decode-codebook");
    let file = dir.join("m.lgn");
    write_model(&file);
    let mut bytes = std::fs::read(&file).unwrap();
    let (env, manifest) = split(&bytes);
    let cb = &manifest.codebooks[0].tensor;
    let st = env.tensors.iter().find(|t| &t.name == cb).unwrap();
    bytes[env.data_start() + st.begin + 2] ^= 0x01; // a low mantissa bit: still finite
    let bad = dir.join("bad.lgn");
    std::fs::write(&bad, &bytes).unwrap();
    let dest = dir.join("out.safetensors");
    let o = lgn(&["decode", s(&bad), "-o", s(&dest)]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("checksum mismatch") && err.contains(&format!("`{cb}`")),
        "{err}"
    );
    assert!(!dest.exists());
    let o = lgn(&["verify", s(&bad)]);
    assert_eq!(o.status.code(), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn verify_rejects_a_truncated_file() {
    let dir = scratch("verify-trunc");
    let file = dir.join("m.lgn");
    write_model(&file);
    let bytes = std::fs::read(&file).unwrap();
    let bad = dir.join("short.lgn");
    std::fs::write(&bad, &bytes[..bytes.len() - 5]).unwrap();
    let o = lgn(&["verify", s(&bad)]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("invalid .lgn file"), "{err}");
    std::fs::write(&bad, b"not a safetensors file at all").unwrap();
    let o = lgn(&["verify", s(&bad)]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stderr).lines().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn verify_rejects_an_index_out_of_range_with_a_valid_checksum() {
    let dir = scratch("verify-index");
    // Three distinct 4x4 blocks: the codebook is exactly those blocks, k=3, 2-bit indices,
    // so the index value 3 can be stored but is out of range.
    let mut x = vec![0f32; 8 * 8];
    for (i, v) in x.iter_mut().enumerate() {
        let (r, c) = (i / 8, i % 8);
        *v = match (r / 4, c / 4) {
            (0, 0) | (1, 1) => 1.0,
            (0, 1) => 2.0,
            _ => 3.0,
        };
    }
    let data = le_f32(&x);
    let inputs = [TensorInput {
        name: "t".into(),
        dtype: Dtype::F32,
        shape: vec![8, 8],
        data: &data,
        group: Some(0),
        stages: None,
    }];
    let opts = CompressOptions {
        groups: vec![GroupSpec {
            k: 16,
            block: BlockShape::new(4, 4).unwrap(),
            stages: 1,
            scale: ScaleMode::None,
            scale_stat: legofmt::scale::ScaleStat::AbsMax,
            outliers: 0.0,
        }],
        ..Default::default()
    };
    let (bytes, _) = compress(&inputs, &opts, &|_| true)
        .unwrap()
        .to_bytes()
        .unwrap();
    let (env, mut manifest) = split(&bytes);
    assert_eq!(manifest.codebooks[0].k, 3);
    // Rewrite the file with every index set to 3 and fresh checksums.
    let pieces: Vec<Piece<'_>> = env
        .tensors
        .iter()
        .map(|st| {
            let mut data = bytes[env.data_start() + st.begin..env.data_start() + st.end].to_vec();
            if st.dtype == Dtype::U8 {
                data[0] = 0xff;
            }
            Piece {
                name: st.name.clone(),
                dtype: st.dtype,
                shape: st.shape.clone(),
                data: Cow::Owned(data),
                pad_to_8: false,
            }
        })
        .collect();
    let bad = writer::to_bytes(pieces, Some(&mut manifest), &BTreeMap::new()).unwrap();
    let file = dir.join("idx.lgn");
    std::fs::write(&file, bad).unwrap();
    let o = lgn(&["verify", s(&file)]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("out of range") && err.contains("`t`"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn decode_writes_every_tensor_as_the_library_decodes_it() {
    let dir = scratch("decode");
    let file = dir.join("m.lgn");
    write_model(&file);
    let dest = dir.join("out.safetensors");
    let o = lgn(&["decode", s(&file), "-o", s(&dest)]);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let src = LgnFile::open(&file).unwrap();
    let out = LgnFile::open(&dest).unwrap();
    assert_eq!(out.version(), None, "the output is plain safetensors");
    assert_eq!(out.tensors().len(), src.tensors().len());
    assert_eq!(out.user_metadata(), src.user_metadata());
    for t in src.tensors() {
        let d = out.tensor(&t.name).expect("every tensor is written");
        assert_eq!((d.dtype, &d.shape), (t.dtype, &t.shape), "{}", t.name);
        assert!(matches!(d.layout, Layout::Raw { .. }));
        assert_eq!(out.decode(&t.name).unwrap(), src.decode(&t.name).unwrap());
    }
    // An independent safetensors reader sees the same tensors.
    let raw = std::fs::read(&dest).unwrap();
    let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
    assert_eq!(st.len(), src.tensors().len());
    for t in src.tensors() {
        let view = st.tensor(&t.name).unwrap();
        assert_eq!(view.shape(), &t.shape[..]);
        assert_eq!(view.data(), &src.decode(&t.name).unwrap()[..]);
    }
    // Option spellings, and no temporary files left beside the output.
    let dest2 = dir.join("out2.safetensors");
    let o = lgn(&["decode", &format!("--output={}", s(&dest2)), s(&file)]);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    assert_eq!(std::fs::read(&dest2).unwrap(), raw);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp.")), "{names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn usage_errors_exit_2_and_missing_files_exit_1() {
    for args in [
        &[][..],
        &["frobnicate"][..],
        &["--bogus"][..],
        &["info"][..],
        &["info", "a", "b"][..],
        &["verify", "--strict", "a"][..],
        &["decode", "a.lgn"][..],
        &["decode", "a.lgn", "-o"][..],
        &["decode", "-o", "x", "-o", "y", "a.lgn"][..],
    ] {
        let o = lgn(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(text(&o.stderr).starts_with("lgn: "), "{args:?}");
    }
    let o = lgn(&["--help"]);
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("usage: lgn"));
    let missing = std::env::temp_dir().join("lgn-cli-no-such-file.lgn");
    for cmd in ["info", "verify"] {
        let o = lgn(&[cmd, s(&missing)]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(s(&missing)), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
