//! Open an `.lgn` (or plain safetensors) file, print what it holds, and decode every float
//! tensor into one `Vec<f32>` that is reused from tensor to tensor, printing min/max/mean.
//!
//! ```text
//! cargo run -p legofmt --release --example decode -- model.lgn [--no-mmap]
//! ```
//!
//! [`LgnFile::decode_f32_into`] decodes any float tensor (clustered or raw, F32/F16/BF16) into
//! a caller's `f32` buffer, so the only allocation that grows with the model is that buffer:
//! it grows to the largest tensor. With `--no-mmap` the file is read with plain reads
//! ([`LgnFile::open_unmapped`], the same as [`LgnFile::from_reader`] on a `File`): only the
//! header and the codebooks are read up front, then each tensor's own stored bytes.

use std::process::ExitCode;

use legofmt::format::reader::{Layout, LgnFile};

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let mmap = !args.iter().any(|a| a == "--no-mmap");
    let Some(path) = args.iter().find(|a| *a != "--no-mmap") else {
        eprintln!("usage: decode FILE.lgn [--no-mmap]");
        return ExitCode::from(2);
    };
    match run(std::path::Path::new(path), mmap) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path, mmap: bool) -> legofmt::Result<()> {
    let f = if mmap {
        LgnFile::open(path)?
    } else {
        LgnFile::open_unmapped(path)?
    };
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

    // Reused across tensors: it only grows, to the size of the largest float tensor.
    let mut values: Vec<f32> = Vec::new();
    for t in f.tensors() {
        let kind = match t.layout {
            Layout::Raw { .. } => "raw",
            Layout::Clustered { .. } => "clustered",
        };
        if !t.dtype.is_clusterable() {
            println!(
                "{:<40} {:>5} {:?} {kind}: {} bytes (not a float tensor)",
                t.name,
                t.dtype.to_string(),
                t.shape,
                t.nbytes()
            );
            continue;
        }
        values.resize(t.numel(), 0.0);
        f.decode_f32_into(&t.name, &mut values)?;
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
