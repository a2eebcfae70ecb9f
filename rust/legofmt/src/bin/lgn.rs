//! `lgn`: inspect, verify and decode `.lgn` files from the command line.
//!
//! ```text
//! lgn info FILE                  tensors, dtypes, shapes, encodings, sizes, ratio vs fp32
//! lgn verify FILE                every checksum and every index; exit 1 on the first problem
//! lgn decode FILE -o OUT         write a plain safetensors file, every tensor in its source dtype
//! ```
//!
//! Exit status: 0 on success, 1 when the file is invalid or an I/O operation fails (one line
//! on stderr says what and where), 2 on a usage error. Arguments are parsed with `std` only,
//! to keep the crate's dependency tree small.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use legofmt::format::reader::{Layout, LgnFile, TensorInfo};
use legofmt::format::writer::{self, Piece};

const USAGE: &str = "\
usage: lgn <command> [arguments]

commands:
  info FILE               list the tensors of FILE (dtype, shape, encoding, bits, bytes)
                          and its compression ratio versus fp32
  verify FILE             check every checksum and every codebook index of FILE
  decode FILE -o OUT      decode every tensor of FILE in its source dtype (checking every
                          checksum and index) and write them to OUT as a plain safetensors
                          file (written atomically)
  help                    print this message

options:
  -h, --help              print this message
  -V, --version           print the version

exit status: 0 success, 1 invalid file or I/O error, 2 usage error";

/// Why the program stops.
enum Failure {
    /// Bad command line: print the message and a hint, exit 2.
    Usage(String),
    /// Bad file or I/O error: print the one-line message, exit 1.
    Error(String),
}

impl From<legofmt::LgnError> for Failure {
    fn from(e: legofmt::LgnError) -> Self {
        Failure::Error(e.to_string())
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect::<Result<_, _>>()
    {
        Ok(a) => a,
        Err(bad) => {
            return finish(Err(Failure::Usage(format!(
                "argument {bad:?} is not valid UTF-8"
            ))))
        }
    };
    finish(run(&args))
}

fn finish(r: Result<(), Failure>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("lgn: {}", one_line(&m));
            eprintln!("try `lgn --help` for usage");
            ExitCode::from(2)
        }
        Err(Failure::Error(m)) => {
            eprintln!("lgn: error: {}", one_line(&m));
            ExitCode::from(1)
        }
    }
}

/// Error messages are printed on a single line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn run(args: &[String]) -> Result<(), Failure> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(Failure::Usage(
            "missing command (info, verify or decode)".into(),
        ));
    };
    match cmd.as_str() {
        "-h" | "--help" | "help" => out(&format!("{USAGE}\n")),
        "-V" | "--version" => out(&format!("lgn {}\n", env!("CARGO_PKG_VERSION"))),
        "info" => {
            let file = single_file("info", rest)?;
            out(&info(&file)?)
        }
        "verify" => {
            let file = single_file("verify", rest)?;
            out(&verify(&file)?)
        }
        "decode" => {
            let (file, dest) = decode_args(rest)?;
            out(&decode(&file, &dest)?)
        }
        other if other.starts_with('-') => Err(Failure::Usage(format!(
            "unknown option `{other}` (expected a command: info, verify or decode)"
        ))),
        other => Err(Failure::Usage(format!(
            "unknown command `{other}` (expected info, verify or decode)"
        ))),
    }
}

/// Writes to stdout; a closed pipe (`lgn info f | head`) ends the program quietly.
fn out(s: &str) -> Result<(), Failure> {
    let mut o = std::io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|()| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Error(format!("writing to stdout: {e}"))),
    }
}

fn wants_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "-h" || a == "--help")
}

/// The arguments of `info` and `verify`: exactly one file.
fn single_file(cmd: &str, args: &[String]) -> Result<PathBuf, Failure> {
    if wants_help(args) {
        return Err(Failure::Usage(format!("usage: lgn {cmd} FILE")));
    }
    let mut file = None;
    let mut only_positional = false;
    for a in args {
        if !only_positional && a == "--" {
            only_positional = true;
        } else if !only_positional && a.starts_with('-') && a != "-" {
            return Err(Failure::Usage(format!("{cmd}: unknown option `{a}`")));
        } else if file.replace(PathBuf::from(a)).is_some() {
            return Err(Failure::Usage(format!(
                "{cmd}: expected one FILE, got more (`{a}`)"
            )));
        }
    }
    file.ok_or_else(|| Failure::Usage(format!("{cmd}: missing FILE (usage: lgn {cmd} FILE)")))
}

/// The arguments of `decode`: `FILE -o OUT` in any order (`--output OUT`, `-oOUT`, `--output=OUT`).
fn decode_args(args: &[String]) -> Result<(PathBuf, PathBuf), Failure> {
    const USE: &str = "usage: lgn decode FILE -o OUT.safetensors";
    if wants_help(args) {
        return Err(Failure::Usage(USE.into()));
    }
    let mut file: Option<PathBuf> = None;
    let mut dest: Option<PathBuf> = None;
    let mut it = args.iter();
    let mut only_positional = false;
    while let Some(a) = it.next() {
        let value = if only_positional {
            None
        } else if a == "--" {
            only_positional = true;
            continue;
        } else if a == "-o" || a == "--output" {
            Some(
                it.next()
                    .ok_or_else(|| Failure::Usage(format!("decode: `{a}` needs a value ({USE})")))?
                    .clone(),
            )
        } else if let Some(v) = a.strip_prefix("--output=") {
            Some(v.to_string())
        } else if let Some(v) = a.strip_prefix("-o").filter(|_| !a.starts_with("--")) {
            Some(v.to_string())
        } else if a.starts_with('-') && a != "-" {
            return Err(Failure::Usage(format!("decode: unknown option `{a}`")));
        } else {
            if file.replace(PathBuf::from(a)).is_some() {
                return Err(Failure::Usage(format!(
                    "decode: expected one FILE, got more (`{a}`)"
                )));
            }
            continue;
        };
        match value {
            Some(v) if v.is_empty() => {
                return Err(Failure::Usage("decode: the output path is empty".into()))
            }
            Some(v) => {
                if dest.replace(PathBuf::from(v)).is_some() {
                    return Err(Failure::Usage("decode: `-o` given more than once".into()));
                }
            }
            None => {
                if file.replace(PathBuf::from(a)).is_some() {
                    return Err(Failure::Usage(format!(
                        "decode: expected one FILE, got more (`{a}`)"
                    )));
                }
            }
        }
    }
    let file = file.ok_or_else(|| Failure::Usage(format!("decode: missing FILE ({USE})")))?;
    let dest = dest.ok_or_else(|| Failure::Usage(format!("decode: missing `-o OUT` ({USE})")))?;
    Ok((file, dest))
}

/// Opens a file; errors that do not name the file get its path prepended.
fn open(path: &Path) -> Result<LgnFile, Failure> {
    if path.is_dir() {
        return Err(Failure::Error(format!(
            "{}: is a directory, not a file",
            path.display()
        )));
    }
    LgnFile::open(path).map_err(|e| with_file(path, e))
}

fn with_file(path: &Path, e: legofmt::LgnError) -> Failure {
    let m = e.to_string();
    let p = path.display().to_string();
    if m.contains(&p) {
        Failure::Error(m)
    } else {
        Failure::Error(format!("{p}: {m}"))
    }
}

/// Bytes stored for one original tensor (indices and scales, or the raw data; shared codebooks
/// are counted separately).
fn stored_bytes(f: &LgnFile, t: &TensorInfo) -> u64 {
    let st = f.stored();
    let len = |i: usize| (st[i].end - st[i].begin) as u64;
    match &t.layout {
        Layout::Raw { stored } => len(*stored),
        Layout::Clustered {
            stages,
            scale,
            outliers,
            ..
        } => {
            stages.iter().map(|s| len(s.indices)).sum::<u64>()
                + scale.map_or(0, |s| len(s.stored))
                + outliers.map_or(0, |o| len(o.indices) + len(o.values))
        }
    }
}

/// How a tensor is stored, in a few words.
fn encoding(f: &LgnFile, t: &TensorInfo) -> String {
    match &t.layout {
        Layout::Raw { .. } => "raw".into(),
        Layout::Clustered {
            grid,
            stages,
            scale,
            outliers,
        } => {
            let cbs: Vec<String> = stages
                .iter()
                .map(|s| {
                    let ci = s.codebook;
                    let cb = &f.codebooks()[ci];
                    format!("cb{ci}:k{}/{}b", cb.k, cb.bits)
                })
                .collect();
            let mut s = format!(
                "clustered {}x{} {}",
                grid.block.bh,
                grid.block.bw,
                cbs.join("+")
            );
            if let Some(sc) = scale {
                let _ = write!(
                    s,
                    " scale={}:{}",
                    sc.mode.name(),
                    f.stored()[sc.stored].dtype
                );
            }
            if let Some(o) = outliers {
                let _ = write!(s, " outliers={}", f.stored()[o.indices].numel());
            }
            s
        }
    }
}

/// Bits per weight of what is stored for a tensor.
fn bits_per_weight(bytes: u64, numel: usize) -> String {
    if numel == 0 {
        "-".into()
    } else {
        format!("{:.3}", bytes as f64 * 8.0 / numel as f64)
    }
}

fn info(path: &Path) -> Result<String, Failure> {
    let f = open(path)?;
    let mut s = String::new();
    let numel: u64 = f.tensors().iter().map(|t| t.numel() as u64).sum();
    let fp32 = numel * 4;
    let source: u64 = f.tensors().iter().map(|t| t.nbytes() as u64).sum();
    let file_len = f.file_len();
    let _ = writeln!(s, "file:      {}", path.display());
    let _ = match f.version() {
        Some((ma, mi)) => writeln!(s, "format:    lgn {ma}.{mi}"),
        None => writeln!(s, "format:    plain safetensors (no lgn manifest)"),
    };
    let _ = writeln!(s, "size:      {file_len} bytes");
    let _ = writeln!(
        s,
        "weights:   {numel} in {} tensors ({fp32} bytes as fp32, {source} bytes in source dtypes)",
        f.tensors().len()
    );
    let ratio = |den: u64| fp32 as f64 / den.max(1) as f64;
    let _ = writeln!(
        s,
        "ratio:     {:.3}x vs fp32 ({:.3}x vs source dtypes, {} bits/weight)",
        ratio(file_len),
        source as f64 / file_len.max(1) as f64,
        bits_per_weight(file_len, numel as usize)
    );
    let _ = writeln!(s, "codebooks: {}", f.codebooks().len());
    for (i, cb) in f.codebooks().iter().enumerate() {
        let st = &f.stored()[cb.stored];
        let _ = writeln!(
            s,
            "  cb{i}: k={} bits={} block={}x{} ({} bytes, stored as `{}`)",
            cb.k,
            cb.bits,
            cb.block.bh,
            cb.block.bw,
            st.end - st.begin,
            st.name
        );
    }
    let md = f.user_metadata();
    if !md.is_empty() {
        let _ = writeln!(s, "metadata:  {} entries", md.len());
        for (k, v) in &md {
            let _ = writeln!(s, "  {k} = {}", one_line(v));
        }
    }
    let _ = writeln!(s, "tensors:   {}", f.tensors().len());
    let header = [
        "NAME", "DTYPE", "SHAPE", "ENCODING", "BITS/W", "BYTES", "RATIO",
    ];
    let rows: Vec<[String; 7]> = f
        .tensors()
        .iter()
        .map(|t| {
            let bytes = stored_bytes(&f, t);
            [
                t.name.clone(),
                t.dtype.to_string(),
                format!("{:?}", t.shape),
                encoding(&f, t),
                bits_per_weight(bytes, t.numel()),
                bytes.to_string(),
                format!("{:.2}x", (t.numel() as f64 * 4.0) / bytes.max(1) as f64),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            // Text columns are left-aligned, numbers right-aligned.
            if i >= 4 {
                let _ = write!(l, "  {c:>w$}");
            } else {
                let _ = write!(l, "  {c:<w$}");
            }
        }
        let _ = writeln!(s, "{}", l.trim_end());
    };
    line(&header);
    for r in &rows {
        line(&r.each_ref().map(String::as_str));
    }
    Ok(s)
}

fn verify(path: &Path) -> Result<String, Failure> {
    let f = open(path)?;
    f.verify().map_err(|e| with_file(path, e))?;
    Ok(format!(
        "ok: {} ({} tensors, {} stored tensors, {} bytes; checksums and indices verified)\n",
        path.display(),
        f.tensors().len(),
        f.stored().len(),
        f.file_len()
    ))
}

fn decode(path: &Path, dest: &Path) -> Result<String, Failure> {
    let f = open(path)?;
    // Opening checked the codebooks' CRC-32s; decoding checks those of each tensor's pieces
    // and its indices. Nothing is written unless every tensor decodes.
    let mut pieces = Vec::with_capacity(f.tensors().len());
    for t in f.tensors() {
        let data = f.decode(&t.name).map_err(|e| with_file(path, e))?;
        pieces.push(Piece {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            data: Cow::Owned(data),
            pad_to_8: false,
        });
    }
    let n = pieces.len();
    let bytes = writer::write_file(dest, pieces, None, &f.user_metadata())?;
    Ok(format!(
        "decoded {n} tensors from {} into {} ({bytes} bytes)\n",
        path.display(),
        dest.display()
    ))
}
