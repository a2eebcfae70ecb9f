//! Hostile input: mutated copies of valid conformance vectors (truncated, bytes flipped, header
//! lengths and JSON rewritten) must give `Ok` or a typed `LgnError` from every reader entry
//! point, never a panic, an abort or an allocation sized from untrusted fields.
//!
//! The number of cases is bounded (`PROPTEST_CASES`, default 2000 here) so CI runs it in
//! seconds; raise it for a longer fuzz session.

use std::io::Cursor;
use std::path::PathBuf;

use legofmt::format::reader::LgnFile;
use proptest::prelude::*;

fn valid_files() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors/valid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("spec/vectors/valid exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "lgn"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .filter(|b| b.len() < 64 * 1024)
        .collect()
}

/// Every entry point a user can reach with the bytes: in memory, and through `from_reader`
/// (reads on demand) with checksums on and off, whole tensors and a row range of each.
fn exercise(bytes: Vec<u8>) {
    if let Ok(f) = LgnFile::from_bytes(bytes.clone()) {
        decode_all(&f);
    }
    for verify in [true, false] {
        if let Ok(mut f) = LgnFile::from_reader(Cursor::new(bytes.clone())) {
            f.set_verify_checksums(verify);
            decode_all(&f);
        }
    }
}

fn decode_all(f: &LgnFile) {
    let _ = f.verify();
    let infos: Vec<(String, usize, usize)> = f
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.rows(), t.row_len()))
        .collect();
    for (name, rows, row_len) in infos {
        let _ = f.decode(&name);
        let _ = f.decode_f32(&name);
        // A middle row range (inside block rows when rows > 2), if its output is small: the
        // output is the caller's buffer, sized here from the (untrusted) shape.
        let (a, b) = (rows / 3, rows - rows / 3);
        if b > a && (b - a).saturating_mul(row_len) <= 1 << 20 {
            let mut out = vec![0f32; (b - a) * row_len];
            let _ = f.decode_rows_f32_into(&name, a..b, &mut out);
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Flip {
        at: usize,
        xor: u8,
    },
    HeaderLen(u64),
    /// Replace a digit inside the JSON header by another digit (shapes, offsets, k, bits...).
    Digit {
        nth: usize,
        to: u8,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1u8..=255).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        any::<u64>().prop_map(Mutation::HeaderLen),
        (any::<usize>(), b'0'..=b'9').prop_map(|(nth, to)| Mutation::Digit { nth, to }),
    ]
}

fn apply(mut b: Vec<u8>, m: &Mutation) -> Vec<u8> {
    match *m {
        Mutation::Truncate(n) => {
            let keep = n % b.len();
            b.truncate(keep);
        }
        Mutation::Flip { at, xor } => {
            let i = at % b.len();
            b[i] ^= xor;
        }
        Mutation::HeaderLen(v) => b[..8].copy_from_slice(&v.to_le_bytes()),
        Mutation::Digit { nth, to } => {
            let header_len = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            let end = (8 + header_len).min(b.len());
            let digits: Vec<usize> = (8..end).filter(|&i| b[i].is_ascii_digit()).collect();
            if !digits.is_empty() {
                b[digits[nth % digits.len()]] = to;
            }
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_vectors_never_panic(file in any::<prop::sample::Index>(), muts in prop::collection::vec(mutation(), 1..4)) {
        let files = valid_files();
        let mut bytes = files[file.index(files.len())].clone();
        for m in &muts {
            if bytes.len() < 8 {
                break;
            }
            bytes = apply(bytes, m);
        }
        exercise(bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(bytes);
    }
}
