//! The conformance vectors of `spec/vectors/` (see its README.md) against [`LgnFile`]:
//! every valid vector decodes bit for bit to its expected tensors (whole and by row ranges),
//! and every invalid vector is rejected with the listed [`LgnError`] variant.
//!
//! The expected files are plain safetensors files, parsed here with the `safetensors` crate so
//! the comparison does not rest on legofmt's own parser. "Bit for bit" has one exception, which
//! the spec makes (section 9): in the tensors a vector lists under `nan_bits_unspecified`, a NaN
//! matches any NaN.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use legofmt::dtype::Dtype;
use legofmt::format::decode::OutElem;
use legofmt::format::reader::{Layout, LgnFile, TensorInfo};
use legofmt::LgnError;
use serde_json::Value;

/// Whether two decoded tensors are equal bit for bit, except that with `nan_any` (the spec
/// leaves those NaN bits unspecified) a NaN matches any NaN.
fn same_bits(got: &[u8], want: &[u8], dtype: Dtype, nan_any: bool) -> bool {
    if !nan_any || got == want {
        return got == want;
    }
    if got.len() != want.len() {
        return false;
    }
    match dtype {
        Dtype::F32 => got.chunks_exact(4).zip(want.chunks_exact(4)).all(|(g, w)| {
            let nan = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_nan();
            g == w || (nan(g) && nan(w))
        }),
        Dtype::F16 | Dtype::BF16 => {
            let inf: u16 = if dtype == Dtype::F16 { 0x7C00 } else { 0x7F80 };
            got.chunks_exact(2).zip(want.chunks_exact(2)).all(|(g, w)| {
                let nan = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]) & 0x7FFF > inf;
                g == w || (nan(g) && nan(w))
            })
        }
        _ => false,
    }
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors")
}

fn vectors() -> Vec<Value> {
    let path = vectors_dir().join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let m: Value = serde_json::from_str(&text).expect("manifest.json is JSON");
    m["vectors"].as_array().expect("a vectors array").clone()
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector {v} lacks `{key}`"))
}

/// The Python class name of an error (`legofmt.<name>`), as manifest.json lists them.
fn class_of(e: &LgnError) -> &'static str {
    match e {
        LgnError::Format { .. } => "FormatError",
        LgnError::Checksum { .. } => "ChecksumError",
        LgnError::UnsupportedVersion { .. } => "UnsupportedVersionError",
        LgnError::InvalidArgument { .. } => "InvalidArgumentError",
        LgnError::Io { .. } => "LgnIOError",
        LgnError::Cancelled => "CancelledError",
        _ => "LgnError",
    }
}

/// Decodes rows `rb..re` of a clustered tensor into little-endian bytes.
fn decode_rows_bytes<T: OutElem>(f: &LgnFile, t: &TensorInfo, rb: usize, re: usize) -> Vec<u8> {
    let cols = t.numel().checked_div(t.shape[0]).unwrap_or(0);
    let mut out = vec![T::from_f32(0.0); (re - rb) * cols];
    f.decode_clustered(t, rb, re, &mut out)
        .unwrap_or_else(|e| panic!("{}: rows {rb}..{re}: {e}", t.name));
    bytemuck::cast_slice(&out).to_vec()
}

fn check_valid(v: &Value) -> Result<(), String> {
    let dir = vectors_dir();
    let file = field(v, "file");
    let f = LgnFile::open(dir.join(file)).map_err(|e| format!("open: {e}"))?;
    let expected_bytes =
        std::fs::read(dir.join(field(v, "expected"))).map_err(|e| e.to_string())?;
    let expected = safetensors::SafeTensors::deserialize(&expected_bytes)
        .map_err(|e| format!("expected file: {e:?}"))?;

    let nan_any: BTreeSet<&str> = v["nan_bits_unspecified"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let got_names: BTreeSet<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    let want_names: BTreeSet<&str> = expected.names().into_iter().collect();
    if got_names != want_names {
        return Err(format!("tensors {got_names:?}, expected {want_names:?}"));
    }
    for (name, view) in expected.tensors() {
        let t = f.tensor(&name).expect("listed above");
        let want_dtype = format!("{:?}", view.dtype());
        if t.dtype.name() != want_dtype || t.shape != view.shape() {
            return Err(format!(
                "{name}: {} {:?}, expected {want_dtype} {:?}",
                t.dtype,
                t.shape,
                view.shape()
            ));
        }
        let got = f.decode(&name).map_err(|e| format!("decode {name}: {e}"))?;
        if !same_bits(&got, view.data(), t.dtype, nan_any.contains(name.as_str())) {
            return Err(format!(
                "{name}: decoded bytes differ from the expected file"
            ));
        }
        // Row-range (streaming) decoding gives the same bytes as the corresponding slice.
        if let Layout::Clustered { .. } = t.layout {
            let rows = t.shape[0];
            let row_bytes = got.len().checked_div(rows).unwrap_or(0);
            for (rb, re) in [
                (0, rows),
                (1.min(rows), rows),
                (rows / 2, rows.saturating_sub(1).max(rows / 2)),
            ] {
                let part = match t.dtype {
                    Dtype::F32 => decode_rows_bytes::<f32>(&f, t, rb, re),
                    Dtype::F16 => decode_rows_bytes::<f16>(&f, t, rb, re),
                    Dtype::BF16 => decode_rows_bytes::<bf16>(&f, t, rb, re),
                    other => return Err(format!("{name}: clustered {other}")),
                };
                let whole = &got[rb * row_bytes..re * row_bytes];
                if !same_bits(&part, whole, t.dtype, nan_any.contains(name.as_str())) {
                    return Err(format!(
                        "{name}: rows {rb}..{re} differ from the whole decode"
                    ));
                }
            }
        }
    }
    f.verify().map_err(|e| format!("verify: {e}"))?;
    // A plain safetensors reader opens the file and sees every stored tensor.
    let bytes = std::fs::read(dir.join(file)).map_err(|e| e.to_string())?;
    let plain = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("safetensors cannot read it: {e:?}"))?;
    let stored: BTreeSet<&str> = f.stored().iter().map(|s| s.name.as_str()).collect();
    let seen: BTreeSet<&str> = plain.names().into_iter().collect();
    if seen != stored {
        return Err(format!(
            "safetensors lists {seen:?}, stored tensors are {stored:?}"
        ));
    }
    Ok(())
}

#[test]
fn valid_vectors_decode_bit_for_bit() {
    let all = vectors();
    let valid: Vec<&Value> = all.iter().filter(|v| v["valid"] == true).collect();
    assert!(valid.len() >= 30, "only {} valid vectors", valid.len());
    let failures: Vec<String> = valid
        .iter()
        .filter_map(|v| {
            check_valid(v)
                .err()
                .map(|e| format!("{}: {e}", field(v, "file")))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn check_error(e: &LgnError, v: &Value, what: &str) -> Result<(), String> {
    let want = field(v, "error");
    if class_of(e) != want {
        return Err(format!(
            "{what} gave {} ({e}), expected {want}",
            class_of(e)
        ));
    }
    let msg = e.to_string();
    for word in v["message_contains"].as_array().expect("message_contains") {
        let word = word.as_str().expect("a string");
        if !msg.contains(word) {
            return Err(format!("{what}: message `{msg}` does not contain `{word}`"));
        }
    }
    Ok(())
}

fn check_invalid(v: &Value) -> Result<(), String> {
    let opened = LgnFile::open(vectors_dir().join(field(v, "file")));
    match field(v, "detected_at") {
        "open" => match opened {
            Ok(_) => Err("open succeeded".into()),
            Err(e) => check_error(&e, v, "open"),
        },
        "decode" => {
            let f = opened.map_err(|e| format!("open failed early: {e}"))?;
            let first = f.tensors().iter().find_map(|t| f.decode(&t.name).err());
            match first {
                Some(e) => check_error(&e, v, "decode")?,
                None => return Err("decoding every tensor succeeded".into()),
            }
            match f.verify() {
                Ok(()) => Err("verify succeeded".into()),
                Err(e) => check_error(&e, v, "verify"),
            }
        }
        other => Err(format!("unknown detected_at `{other}`")),
    }
}

#[test]
fn invalid_vectors_are_rejected_with_the_listed_error() {
    let all = vectors();
    let invalid: Vec<&Value> = all.iter().filter(|v| v["valid"] == false).collect();
    assert!(
        invalid.len() >= 50,
        "only {} invalid vectors",
        invalid.len()
    );
    let failures: Vec<String> = invalid
        .iter()
        .filter_map(|v| {
            check_invalid(v)
                .err()
                .map(|e| format!("{}: {e}", field(v, "file")))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bytes_in_memory_behave_like_files() {
    // LgnFile::from_bytes (no mmap) reaches the same verdicts on a sample of vectors.
    for v in vectors() {
        let bytes = std::fs::read(vectors_dir().join(field(&v, "file"))).expect("readable");
        let r = LgnFile::from_bytes(bytes);
        if v["valid"] == true {
            let f = r.unwrap_or_else(|e| panic!("{}: {e}", field(&v, "file")));
            for t in f.tensors() {
                f.decode(&t.name).expect("decodes");
            }
        } else if field(&v, "detected_at") == "open" {
            let e = r
                .err()
                .unwrap_or_else(|| panic!("{}: opened", field(&v, "file")));
            assert_eq!(class_of(&e), field(&v, "error"), "{}", field(&v, "file"));
        }
    }
}
