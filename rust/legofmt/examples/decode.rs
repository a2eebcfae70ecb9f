//! Open an `.lgn` (or plain safetensors) file, print what it holds, and decode every float
//! tensor into one `Vec<f32>` that is reused from tensor to tensor, printing min/max/mean.
//!
//! ```text
//! cargo run -p legofmt --release --example decode -- model.lgn
//! ```
//!
//! Two reused buffers keep allocations to the size of the largest tensor:
//! * F32 tensors that are clustered decode straight into the `f32` buffer with
//!   [`LgnFile::decode_clustered`] (no copy, no temporary);
//! * every other tensor is decoded with [`LgnFile::decode_into`] into a reused byte buffer, in
//!   its source dtype (so F16/BF16 values are exactly what [`LgnFile::decode`] returns), and
//!   widened to `f32` when it is a float tensor.

use std::process::ExitCode;

use half::{bf16, f16};
use legofmt::dtype::Dtype;
use legofmt::format::reader::{Layout, LgnFile};

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: decode FILE.lgn");
        return ExitCode::from(2);
    };
    match run(std::path::Path::new(&path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path) -> legofmt::Result<()> {
    let f = LgnFile::open(path)?;
    match f.version() {
        Some((major, minor)) => println!("{}: lgn {major}.{minor}", path.display()),
        None => println!("{}: plain safetensors", path.display()),
    }
    println!(
        "{} bytes, {} tensors, {} codebooks",
        f.file_len(),
        f.tensors().len(),
        f.codebooks().len()
    );
    for (i, cb) in f.codebooks().iter().enumerate() {
        println!(
            "  codebook {i}: k={} bits={} block={}x{}",
            cb.k, cb.bits, cb.block.bh, cb.block.bw
        );
    }

    // Reused across tensors: they only grow, to the size of the largest tensor.
    let mut values: Vec<f32> = Vec::new();
    let mut bytes: Vec<u8> = Vec::new();
    for t in f.tensors() {
        let kind = match t.layout {
            Layout::Raw { .. } => "raw",
            Layout::Clustered { .. } => "clustered",
        };
        if !t.dtype.is_clusterable() {
            bytes.resize(t.nbytes(), 0);
            f.decode_into(&t.name, &mut bytes)?;
            println!(
                "{:<40} {:>5} {:?} {kind}: {} bytes (not a float tensor)",
                t.name,
                t.dtype.to_string(),
                t.shape,
                bytes.len()
            );
            continue;
        }
        values.clear();
        values.resize(t.numel(), 0.0);
        match (&t.layout, t.dtype) {
            (Layout::Clustered { grid, .. }, Dtype::F32) => {
                // Every row of the 2-D view, decoded in place.
                f.decode_clustered(t, 0, grid.rows, &mut values[..])?;
            }
            _ => {
                bytes.resize(t.nbytes(), 0);
                f.decode_into(&t.name, &mut bytes)?;
                widen(t.dtype, &bytes, &mut values);
            }
        }
        let summary = match stats(&values) {
            Some((min, max, mean)) => format!("min={min:.5e} max={max:.5e} mean={mean:.5e}"),
            None => "empty".into(),
        };
        println!(
            "{:<40} {:>5} {:?} {kind}: {summary}",
            t.name,
            t.dtype.to_string(),
            t.shape
        );
    }
    Ok(())
}

/// Little-endian F32/F16/BF16 bytes to f32 (exact).
fn widen(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Dtype::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        _ => unreachable!("only float dtypes are widened"),
    }
}

/// (min, max, mean), or `None` for an empty tensor.
fn stats(v: &[f32]) -> Option<(f32, f32, f64)> {
    if v.is_empty() {
        return None;
    }
    let (mut min, mut max, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0f64);
    for &x in v {
        min = min.min(x);
        max = max.max(x);
        sum += f64::from(x);
    }
    Some((min, max, sum / v.len() as f64))
}
