//! Reading `.lgn` files (and plain safetensors files, seen as all-raw).
//!
//! An [`LgnFile`] reads and validates the envelope, the manifest and the codebooks (everything
//! but the bulk data) when it is opened, and then decodes one tensor at a time on request,
//! checking each stored piece's CRC-32 and every index against its codebook as it goes.
//!
//! The bytes come from one of three backings:
//! * [`LgnFile::open`]: a read-only memory map of the file;
//! * [`LgnFile::from_bytes`]: the whole file in memory;
//! * [`LgnFile::from_reader`] / [`LgnFile::open_unmapped`]: any `Read + Seek` source, read on
//!   demand. Only the header and the codebooks are read when opening; decoding a tensor reads
//!   that tensor's stored pieces (a raw tensor straight into the output), so peak memory is the
//!   header, the codebooks, the stored pieces of one tensor and the output buffer.
//!
//! All decoders write into a caller's buffer ([`LgnFile::decode_into`],
//! [`LgnFile::decode_f32_into`]) and can decode a range of rows of the tensor's 2-D view
//! ([`LgnFile::decode_rows_into`], [`LgnFile::decode_rows_f32_into`]); a row range of a
//! clustered tensor needs only the index bytes of its block rows.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use half::{bf16, f16};

use super::decode::{
    apply_outliers, check_outliers, decode_rows_window, Bf16Widened, F16Widened, OutElem, Scales,
    StageParts,
};
use super::envelope::{Envelope, StoredTensor, PREFIX_LEN};
use super::manifest::{self, Encoding, Manifest, OutliersMember, MAX_STAGES};
use crate::bitpack;
use crate::blocks::{BlockShape, Grid};
use crate::dtype::Dtype;
use crate::error::{LgnError, Result};
use crate::scale::ScaleMode;

/// Bytes read per call when a stored tensor is streamed from a reader through a bounded
/// buffer (a multiple of every element size).
const STREAM_CHUNK: usize = 1 << 20;

/// Elements decoded per step when the output buffer cannot be viewed as the output type
/// (misaligned or big endian) and goes through a bounded temporary.
const FALLBACK_CHUNK: usize = 1 << 16;

/// The name errors use for a file read through [`LgnFile::from_reader`].
const READER_NAME: &str = "<reader>";

pub use crate::limits::MAX_K;

/// How a logical tensor is stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// Stored unchanged.
    Raw {
        /// Index of the stored tensor in [`LgnFile::stored`].
        stored: usize,
    },
    /// Block-clustered.
    Clustered {
        /// Block grid over the 2-D view.
        grid: Grid,
        /// Per stage: (codebook index, stored tensor index of its packed indices).
        stages: Vec<(usize, usize)>,
        /// Scale mode and the stored tensor index of the scales.
        scale: Option<(ScaleMode, usize)>,
        /// Format 2.0: the stored tensor indices of the outlier positions (U32) and values (F32).
        outliers: Option<(usize, usize)>,
    },
}

/// One original tensor of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Original name.
    pub name: String,
    /// Original dtype.
    pub dtype: Dtype,
    /// Original shape.
    pub shape: Vec<usize>,
    /// Storage.
    pub layout: Layout,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Bytes of the decoded tensor.
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }
    /// Rows of the tensor's 2-D view: `shape[0]` (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }
    /// Elements per row of the 2-D view: the product of `shape[1..]` (1 for rank <= 1).
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
}

/// A validated codebook.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    /// Number of codewords.
    pub k: usize,
    /// Index width.
    pub bits: u32,
    /// Block shape.
    pub block: BlockShape,
    /// `k * bh * bw` values.
    pub values: Vec<f32>,
    /// Index of the stored tensor.
    pub stored: usize,
}

/// A `Read + Seek` source that [`LgnFile::from_reader`] reads on demand.
trait Source: Read + Seek + Send {}
impl<T: Read + Seek + Send> Source for T {}

/// Where the bytes of an [`LgnFile`] come from.
enum Backing {
    /// A read-only memory map of the file.
    Mmap(memmap2::Mmap),
    /// The whole file in memory.
    Bytes(Vec<u8>),
    /// A reader, read on demand by one caller at a time (decoding itself runs unlocked).
    Reader(Mutex<Box<dyn Source>>),
}

impl Backing {
    /// The whole file when it is mapped or in memory.
    fn as_slice(&self) -> Option<&[u8]> {
        match self {
            Backing::Mmap(m) => Some(m),
            Backing::Bytes(b) => Some(b),
            Backing::Reader(_) => None,
        }
    }

    fn len(&self) -> std::io::Result<u64> {
        match self {
            Backing::Reader(r) => {
                let mut r = r.lock().unwrap_or_else(|p| p.into_inner());
                r.seek(SeekFrom::End(0))
            }
            other => Ok(other.as_slice().map_or(0, |b| b.len() as u64)),
        }
    }

    /// Fills `out` with the bytes at `offset`.
    fn read_at(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        match self {
            Backing::Reader(r) => {
                let mut r = r.lock().unwrap_or_else(|p| p.into_inner());
                r.seek(SeekFrom::Start(offset))?;
                r.read_exact(out)
            }
            other => {
                let all = other.as_slice().unwrap_or_default();
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|o| all.get(o..o.checked_add(out.len())?))
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
                out.copy_from_slice(src);
                Ok(())
            }
        }
    }

    /// `len` bytes at `offset`: borrowed when in memory, else read into a new buffer.
    fn bytes_at(&self, offset: u64, len: usize) -> std::io::Result<Cow<'_, [u8]>> {
        if let Some(all) = self.as_slice() {
            let at = usize::try_from(offset).unwrap_or(usize::MAX);
            return at
                .checked_add(len)
                .and_then(|end| all.get(at..end))
                .map(Cow::Borrowed)
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        let mut v = vec![0u8; len];
        self.read_at(offset, &mut v)?;
        Ok(Cow::Owned(v))
    }
}

/// The stored pieces of a clustered tensor needed for a range of its rows, read and checked.
struct Loaded<'a> {
    t: &'a TensorInfo,
    grid: &'a Grid,
    /// Per stage: codebook, and the index bytes from block `first_block` on.
    stages: Vec<(&'a Codebook, Cow<'a, [u8]>, usize)>,
    first_block: usize,
    /// The rows the scales cover (`rows` of [`LgnFile::load_clustered`]) and the scales.
    scale_rows: Range<usize>,
    scale: Option<(ScaleMode, Vec<f32>)>,
    /// Outlier positions (checked: increasing, in range) and values: all of the tensor's.
    outliers: Option<(Vec<u32>, Vec<f32>)>,
}

impl Loaded<'_> {
    /// Decodes `rows` (inside the loaded range) into `out`.
    fn run<T: OutElem>(&self, rows: Range<usize>, out: &mut [T]) -> Result<()> {
        let parts: Vec<StageParts<'_>> = self
            .stages
            .iter()
            .map(|(cb, bytes, skip)| StageParts {
                codebook: &cb.values,
                k: cb.k,
                bits: cb.bits,
                packed: &bytes[*skip..],
            })
            .collect();
        let scales = match &self.scale {
            None => Scales::None,
            Some((ScaleMode::Row, v)) => Scales::Rows {
                first_row: self.scale_rows.start,
                values: v,
            },
            Some((_, v)) => Scales::Tensor(v[0]),
        };
        decode_rows_window(
            &self.t.name,
            self.grid,
            &parts,
            self.first_block,
            scales,
            rows.clone(),
            out,
        )?;
        if let Some((idx, val)) = &self.outliers {
            apply_outliers(idx, val, self.grid.cols, rows, out);
        }
        Ok(())
    }

    /// Decodes `rows` into little-endian bytes of `T`: in place when `out` can be viewed as
    /// `[T]`, else through a bounded temporary.
    fn run_bytes<T: OutElem>(&self, rows: Range<usize>, out: &mut [u8]) -> Result<()> {
        if cfg!(target_endian = "little") {
            if let Ok(typed) = bytemuck::try_cast_slice_mut::<u8, T>(out) {
                return self.run(rows, typed);
            }
        }
        let size = std::mem::size_of::<T>();
        let cols = self.grid.cols.max(1);
        let step = (FALLBACK_CHUNK / cols).max(1);
        let mut tmp = vec![T::from_f32(0.0); step.min(rows.len()) * cols];
        let mut at = rows.start;
        for dst in out.chunks_mut(step * cols * size) {
            let n = dst.len() / (cols * size);
            let part = &mut tmp[..n * cols];
            self.run(at..at + n, part)?;
            for (o, v) in dst.chunks_exact_mut(size).zip(part.iter()) {
                o.copy_from_slice(bytemuck::bytes_of(v));
                if cfg!(target_endian = "big") {
                    o.reverse();
                }
            }
            at += n;
        }
        Ok(())
    }
}

/// An open `.lgn` (or plain safetensors) file.
pub struct LgnFile {
    path: Option<PathBuf>,
    backing: Backing,
    file_len: u64,
    envelope: Envelope,
    version: Option<(u32, u32)>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    codebooks: Vec<Codebook>,
    crc32: BTreeMap<String, u32>,
    verify_checksums: bool,
}

impl std::fmt::Debug for LgnFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LgnFile")
            .field("path", &self.path)
            .field(
                "backing",
                &match self.backing {
                    Backing::Mmap(_) => "mmap",
                    Backing::Bytes(_) => "bytes",
                    Backing::Reader(_) => "reader",
                },
            )
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn fmt_err(tensor: &str, field: &str, message: impl Into<String>) -> LgnError {
    LgnError::tensor_format(tensor, field, message)
}

impl LgnFile {
    /// Memory-maps and validates the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<LgnFile> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| LgnError::io(path, e))?;
        // SAFETY: the map is read-only; as with every memory-mapped reader (safetensors
        // included), the file must not be truncated by another process while it is open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| LgnError::io(path, e))?;
        Self::from_backing(Backing::Mmap(map), Some(path.to_path_buf()))
            .map_err(|e| with_path(e, path))
    }

    /// Opens the file at `path` with plain reads instead of a memory map: like
    /// [`LgnFile::from_reader`] on the open file, naming `path` in errors.
    pub fn open_unmapped(path: impl AsRef<Path>) -> Result<LgnFile> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| LgnError::io(path, e))?;
        Self::from_backing(
            Backing::Reader(Mutex::new(Box::new(file))),
            Some(path.to_path_buf()),
        )
        .map_err(|e| with_path(e, path))
    }

    /// Validates a file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<LgnFile> {
        Self::from_backing(Backing::Bytes(bytes), None)
    }

    /// Opens a file from any `Read + Seek` source (a file, a flash partition, a
    /// `Cursor<&'static [u8]>` ...), reading it on demand.
    ///
    /// Only the 8-byte prefix, the header and the codebooks are read here. Each decode reads
    /// the stored pieces of the tensor it decodes (for a row range, and with checksum
    /// verification off, only the bytes of those rows): peak memory is the header, the
    /// codebooks, the pieces of one tensor and the caller's output buffer. Reads are
    /// serialised by a mutex; the decoding itself runs in parallel and unlocked. The source's
    /// length is taken from `seek(SeekFrom::End(0))`; I/O errors name the file `<reader>`.
    pub fn from_reader<R: Read + Seek + Send + 'static>(reader: R) -> Result<LgnFile> {
        Self::from_backing(Backing::Reader(Mutex::new(Box::new(reader))), None)
    }

    fn from_backing(backing: Backing, path: Option<PathBuf>) -> Result<LgnFile> {
        let io_path = path.clone().unwrap_or_else(|| PathBuf::from(READER_NAME));
        let io = |e| LgnError::io(io_path.clone(), e);
        let file_len = backing.len().map_err(io)?;
        let envelope = {
            let prefix = backing
                .bytes_at(0, file_len.min(PREFIX_LEN as u64) as usize)
                .map_err(io)?;
            let hl = Envelope::header_len_from_prefix(&prefix, file_len)?;
            let header = backing.bytes_at(PREFIX_LEN as u64, hl).map_err(io)?;
            Envelope::parse(&header, file_len)?
        };
        let mut f = LgnFile {
            path,
            backing,
            file_len,
            envelope,
            version: None,
            tensors: Vec::new(),
            by_name: HashMap::new(),
            codebooks: Vec::new(),
            crc32: BTreeMap::new(),
            verify_checksums: true,
        };
        f.load_manifest()?;
        Ok(f)
    }

    fn load_manifest(&mut self) -> Result<()> {
        let stored_ix: HashMap<&str, usize> = self
            .envelope
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let md = &self.envelope.metadata;
        let Some(version) = md.get(manifest::VERSION_KEY) else {
            if md.contains_key(manifest::MANIFEST_KEY) {
                return Err(LgnError::Format {
                    tensor: None,
                    field: Some(manifest::VERSION_KEY.into()),
                    message: "an lgn.manifest is present but lgn.version is missing".into(),
                });
            }
            // A plain safetensors file: every stored tensor is a raw tensor.
            let mut order: Vec<usize> = (0..self.envelope.tensors.len()).collect();
            order.sort_by(|&a, &b| {
                self.envelope.tensors[a]
                    .name
                    .cmp(&self.envelope.tensors[b].name)
            });
            for i in order {
                let t = &self.envelope.tensors[i];
                self.push_tensor(TensorInfo {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    layout: Layout::Raw { stored: i },
                })?;
            }
            return Ok(());
        };
        let (major, minor) = manifest::check_version(version)?;
        self.version = Some((major, minor));
        let text = md
            .get(manifest::MANIFEST_KEY)
            .ok_or_else(|| LgnError::Format {
                tensor: None,
                field: Some(manifest::MANIFEST_KEY.into()),
                message: "lgn.version is set but lgn.manifest is missing".into(),
            })?;
        let m = Manifest::from_json(text)?;
        let mut used = vec![false; self.envelope.tensors.len()];
        let mut take = |tensor: &str, field: &str, stored: &str| -> Result<usize> {
            let i = *stored_ix.get(stored).ok_or_else(|| {
                fmt_err(
                    tensor,
                    field,
                    format!("stored tensor `{stored}` does not exist"),
                )
            })?;
            if std::mem::replace(&mut used[i], true) {
                return Err(fmt_err(
                    tensor,
                    field,
                    format!("stored tensor `{stored}` is used twice"),
                ));
            }
            Ok(i)
        };
        // Codebooks.
        for (ci, cb) in m.codebooks.iter().enumerate() {
            let field = format!("codebooks[{ci}]");
            let i = take(&cb.tensor, &field, &cb.tensor)?;
            let st = &self.envelope.tensors[i];
            if !(2..=MAX_K).contains(&cb.k) {
                return Err(fmt_err(
                    &cb.tensor,
                    &field,
                    format!("k={} is outside 2..={MAX_K}", cb.k),
                ));
            }
            if cb.bits != bitpack::bits_for_k(cb.k) {
                return Err(fmt_err(
                    &cb.tensor,
                    &field,
                    format!(
                        "bits={} but k={} needs {}",
                        cb.bits,
                        cb.k,
                        bitpack::bits_for_k(cb.k)
                    ),
                ));
            }
            let block = BlockShape::new(cb.block[0], cb.block[1])
                .map_err(|e| fmt_err(&cb.tensor, &field, e.to_string()))?;
            if st.dtype != Dtype::F32 || st.shape != [cb.k, block.bh, block.bw] {
                return Err(fmt_err(
                    &cb.tensor,
                    &field,
                    format!(
                        "codebook must be F32 [{}, {}, {}], found {} {:?}",
                        cb.k, block.bh, block.bw, st.dtype, st.shape
                    ),
                ));
            }
            self.codebooks.push(Codebook {
                k: cb.k,
                bits: cb.bits,
                block,
                values: Vec::new(),
                stored: i,
            });
        }
        // Tensors.
        let mut tensors = Vec::with_capacity(m.tensors.len());
        for (ti, t) in m.tensors.iter().enumerate() {
            let field = |f: &str| format!("tensors[{ti}].{f}");
            let dtype = Dtype::parse(&t.dtype).map_err(|_| {
                fmt_err(
                    &t.name,
                    &field("dtype"),
                    format!("unknown dtype `{}`", t.dtype),
                )
            })?;
            if t.shape.len() > super::envelope::MAX_RANK {
                return Err(fmt_err(&t.name, &field("shape"), "rank exceeds the limit"));
            }
            t.shape
                .iter()
                .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
                .ok_or_else(|| {
                    fmt_err(
                        &t.name,
                        &field("shape"),
                        format!("shape {:?} overflows", t.shape),
                    )
                })?;
            let layout = match &t.encoding {
                Encoding::Raw => {
                    let i = take(&t.name, &field("encoding"), &t.name)?;
                    let st = &self.envelope.tensors[i];
                    if st.dtype != dtype || st.shape != t.shape {
                        return Err(fmt_err(
                            &t.name,
                            &field("shape"),
                            format!(
                                "manifest says {dtype} {:?} but the stored tensor is {} {:?}",
                                t.shape, st.dtype, st.shape
                            ),
                        ));
                    }
                    Layout::Raw { stored: i }
                }
                Encoding::Clustered {
                    stages,
                    scale,
                    outliers,
                } => {
                    if !dtype.is_clusterable() {
                        return Err(fmt_err(
                            &t.name,
                            &field("dtype"),
                            format!("{dtype} cannot be clustered"),
                        ));
                    }
                    if stages.is_empty() || stages.len() > MAX_STAGES {
                        return Err(fmt_err(
                            &t.name,
                            &field("stages"),
                            format!("{} stages; must be 1..={MAX_STAGES}", stages.len()),
                        ));
                    }
                    let cb0 = self.codebooks.get(stages[0].codebook).ok_or_else(|| {
                        fmt_err(
                            &t.name,
                            &field("stages[0].codebook"),
                            "codebook index out of range",
                        )
                    })?;
                    let grid = Grid::new(&t.shape, cb0.block)
                        .map_err(|e| fmt_err(&t.name, &field("shape"), e.to_string()))?;
                    let mut st_out = Vec::with_capacity(stages.len());
                    for (si, s) in stages.iter().enumerate() {
                        let f = field(&format!("stages[{si}]"));
                        let cb = self.codebooks.get(s.codebook).ok_or_else(|| {
                            fmt_err(
                                &t.name,
                                &f,
                                format!("codebook {} does not exist", s.codebook),
                            )
                        })?;
                        if cb.block != cb0.block {
                            return Err(fmt_err(
                                &t.name,
                                &f,
                                "stages use codebooks of different block shapes",
                            ));
                        }
                        let i = take(&t.name, &f, &s.indices)?;
                        let st = &self.envelope.tensors[i];
                        let need = bitpack::packed_len(grid.n_blocks(), cb.bits)
                            .ok_or_else(|| fmt_err(&t.name, &f, "packed length overflows"))?;
                        let len = st.end - st.begin;
                        if st.dtype != Dtype::U8
                            || st.shape.len() != 1
                            || len < need
                            || len - need >= 8
                        {
                            return Err(fmt_err(
                                &t.name,
                                &f,
                                format!(
                                    "indices must be U8 [n] with {need} <= n < {} bytes ({} blocks of {} bits), found {} {:?}",
                                    need + 8, grid.n_blocks(), cb.bits, st.dtype, st.shape
                                ),
                            ));
                        }
                        st_out.push((s.codebook, i));
                    }
                    let scale = match scale {
                        None => None,
                        Some(sc) => {
                            let f = field("scale");
                            let mode = ScaleMode::parse(&sc.mode)
                                .map_err(|e| fmt_err(&t.name, &f, e.to_string()))?;
                            let n = match mode {
                                ScaleMode::Row => grid.rows,
                                ScaleMode::Tensor => 1,
                                ScaleMode::None => {
                                    return Err(fmt_err(
                                        &t.name,
                                        &f,
                                        "mode `none` must be written as no scale",
                                    ))
                                }
                            };
                            let i = take(&t.name, &f, &sc.tensor)?;
                            let st = &self.envelope.tensors[i];
                            if !matches!(st.dtype, Dtype::F16 | Dtype::F32) || st.shape != [n] {
                                return Err(fmt_err(
                                    &t.name,
                                    &f,
                                    format!(
                                        "scales must be F16 or F32 [{n}], found {} {:?}",
                                        st.dtype, st.shape
                                    ),
                                ));
                            }
                            Some((mode, i))
                        }
                    };
                    // Outliers exist from major 2 on; before, the member is unknown and ignored.
                    let outliers = match outliers {
                        Some(member) if major >= manifest::OUTLIERS_MAJOR => {
                            let f = field("outliers");
                            let OutliersMember::Entry(o) = member else {
                                return Err(fmt_err(
                                    &t.name,
                                    &f,
                                    "must be an object with string members `indices` and `values`",
                                ));
                            };
                            let ii = take(&t.name, &field("outliers.indices"), &o.indices)?;
                            let vi = take(&t.name, &field("outliers.values"), &o.values)?;
                            let (si, sv) = (&self.envelope.tensors[ii], &self.envelope.tensors[vi]);
                            if si.dtype != Dtype::U32 || si.shape.len() != 1 {
                                return Err(fmt_err(
                                    &t.name,
                                    &field("outliers.indices"),
                                    format!("must be U32 [n], found {} {:?}", si.dtype, si.shape),
                                ));
                            }
                            let n = si.shape[0];
                            if sv.dtype != Dtype::F32 || sv.shape != [n] {
                                return Err(fmt_err(
                                    &t.name,
                                    &field("outliers.values"),
                                    format!(
                                        "must be F32 [{n}] like the indices, found {} {:?}",
                                        sv.dtype, sv.shape
                                    ),
                                ));
                            }
                            if n > grid.numel() {
                                return Err(fmt_err(
                                    &t.name,
                                    &field("outliers.indices"),
                                    format!("{n} outliers for {} elements", grid.numel()),
                                ));
                            }
                            Some((ii, vi))
                        }
                        _ => None,
                    };
                    Layout::Clustered {
                        grid,
                        stages: st_out,
                        scale,
                        outliers,
                    }
                }
            };
            tensors.push(TensorInfo {
                name: t.name.clone(),
                dtype,
                shape: t.shape.clone(),
                layout,
            });
        }
        if let Some(i) = used.iter().position(|u| !u) {
            return Err(fmt_err(
                &self.envelope.tensors[i].name,
                manifest::MANIFEST_KEY,
                "stored tensor is not referenced by the manifest",
            ));
        }
        for name in m.crc32.keys() {
            if !stored_ix.contains_key(name.as_str()) {
                return Err(fmt_err(
                    name,
                    "crc32",
                    "checksum given for a tensor that does not exist",
                ));
            }
        }
        if let Some(t) = self
            .envelope
            .tensors
            .iter()
            .find(|t| !m.crc32.contains_key(&t.name))
        {
            return Err(fmt_err(&t.name, "crc32", "stored tensor has no checksum"));
        }
        self.crc32 = m.crc32;
        for t in tensors {
            self.push_tensor(t)?;
        }
        // Codebooks are small and used by every tensor: check and load them now.
        for ci in 0..self.codebooks.len() {
            // Always checked (they are small, and a corrupt codebook corrupts every tensor).
            let si = self.codebooks[ci].stored;
            let st = &self.envelope.tensors[si];
            let (bytes, _) = self.piece_window(si, 0..st.end - st.begin, true)?;
            let mut values = vec![0f32; st.numel()];
            crate::dtype::float_bytes_to_f32(Dtype::F32, &bytes, &mut values);
            if let Some(p) = values.iter().position(|v| !v.is_finite()) {
                return Err(fmt_err(
                    &st.name,
                    "data",
                    format!("codebook value {p} is not finite"),
                ));
            }
            self.codebooks[ci].values = values;
        }
        Ok(())
    }

    fn push_tensor(&mut self, t: TensorInfo) -> Result<()> {
        if self
            .by_name
            .insert(t.name.clone(), self.tensors.len())
            .is_some()
        {
            return Err(fmt_err(
                &t.name,
                "name",
                "duplicate tensor name in the manifest",
            ));
        }
        self.tensors.push(t);
        Ok(())
    }

    /// Turns checksum verification on decode on or off (on by default).
    pub fn set_verify_checksums(&mut self, on: bool) {
        self.verify_checksums = on;
    }

    /// The path the file was opened from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// `(major, minor)` for an `.lgn` file, `None` for a plain safetensors file.
    pub fn version(&self) -> Option<(u32, u32)> {
        self.version
    }

    /// The original tensors in saved order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// One original tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The codebooks.
    pub fn codebooks(&self) -> &[Codebook] {
        &self.codebooks
    }

    /// The stored (safetensors) tensors in data order.
    pub fn stored(&self) -> &[StoredTensor] {
        &self.envelope.tensors
    }

    /// User metadata (the `__metadata__` entries not reserved by legofmt).
    pub fn user_metadata(&self) -> BTreeMap<String, String> {
        self.envelope
            .metadata
            .iter()
            .filter(|(k, _)| !k.starts_with(manifest::RESERVED_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Total file size in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    fn io_err(&self, e: std::io::Error) -> LgnError {
        let path = self
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from(READER_NAME));
        LgnError::io(path, e)
    }

    /// File offset of byte `at` of stored tensor `st`.
    fn piece_offset(&self, st: &StoredTensor, at: usize) -> u64 {
        (self.envelope.data_start() + st.begin + at) as u64
    }

    fn check_crc(&self, st: &StoredTensor, actual: u32) -> Result<()> {
        match self.crc32.get(&st.name) {
            Some(&expected) if expected != actual => Err(LgnError::Checksum {
                tensor: st.name.clone(),
                expected,
                actual,
            }),
            _ => Ok(()),
        }
    }

    /// Bytes `range` of stored tensor `stored`, as `(bytes, skip)`: the range starts at
    /// `bytes[skip]`. With `verify` the CRC-32 of the whole stored tensor is checked first (from
    /// a reader, the whole tensor is then read and `skip` is `range.start`).
    fn piece_window(
        &self,
        stored: usize,
        range: Range<usize>,
        verify: bool,
    ) -> Result<(Cow<'_, [u8]>, usize)> {
        let st = &self.envelope.tensors[stored];
        let len = st.end - st.begin;
        debug_assert!(range.start <= range.end && range.end <= len);
        if verify || self.backing.as_slice().is_some() {
            let whole = if verify || range.len() == len {
                0..len
            } else {
                range.clone()
            };
            let b = self
                .backing
                .bytes_at(self.piece_offset(st, whole.start), whole.len())
                .map_err(|e| self.io_err(e))?;
            if verify {
                self.check_crc(st, crc32fast::hash(&b))?;
            }
            return Ok(match b {
                Cow::Borrowed(b) => (Cow::Borrowed(&b[range.start - whole.start..]), 0),
                owned => (owned, range.start - whole.start),
            });
        }
        let b = self
            .backing
            .bytes_at(self.piece_offset(st, range.start), range.len())
            .map_err(|e| self.io_err(e))?;
        Ok((b, 0))
    }

    /// Calls `f(offset, bytes)` over bytes `range` of stored tensor `stored`, in order; from a
    /// reader in pieces of at most [`STREAM_CHUNK`] bytes (each a whole number of elements).
    /// With `verify`, the CRC-32 of the whole stored tensor is checked (from a reader, after the
    /// calls: the caller's output is then unspecified when an error is returned).
    fn visit_piece(
        &self,
        stored: usize,
        range: Range<usize>,
        verify: bool,
        mut f: impl FnMut(usize, &[u8]),
    ) -> Result<()> {
        let st = &self.envelope.tensors[stored];
        let len = st.end - st.begin;
        debug_assert!(range.start <= range.end && range.end <= len);
        if let Some(all) = self.backing.as_slice() {
            let start = self.envelope.data_start() + st.begin;
            let b = &all[start..start + len];
            if verify {
                self.check_crc(st, crc32fast::hash(b))?;
            }
            f(0, &b[range]);
            return Ok(());
        }
        let scan = if verify { 0..len } else { range.clone() };
        let mut buf = vec![0u8; scan.len().min(STREAM_CHUNK)];
        let mut hasher = crc32fast::Hasher::new();
        let mut at = scan.start;
        while at < scan.end {
            let n = (scan.end - at).min(STREAM_CHUNK);
            let chunk = &mut buf[..n];
            self.backing
                .read_at(self.piece_offset(st, at), chunk)
                .map_err(|e| self.io_err(e))?;
            if verify {
                hasher.update(chunk);
            }
            let (lo, hi) = (at.max(range.start), (at + n).min(range.end));
            if lo < hi {
                f(lo - range.start, &chunk[lo - at..hi - at]);
            }
            at += n;
        }
        if verify {
            self.check_crc(st, hasher.finalize())?;
        }
        Ok(())
    }

    /// Copies bytes `range` of stored tensor `stored` into `out` (`range.len()` bytes),
    /// checking the CRC-32 if verification is on. From a reader the bytes are read straight
    /// into `out` unless only part of a verified tensor is wanted.
    fn read_piece_into(&self, stored: usize, range: Range<usize>, out: &mut [u8]) -> Result<()> {
        let st = &self.envelope.tensors[stored];
        let verify = self.verify_checksums;
        if self.backing.as_slice().is_none() && (!verify || range.len() == st.end - st.begin) {
            self.backing
                .read_at(self.piece_offset(st, range.start), out)
                .map_err(|e| self.io_err(e))?;
            if verify {
                self.check_crc(st, crc32fast::hash(out))?;
            }
            return Ok(());
        }
        self.visit_piece(stored, range, verify, |o, b| {
            out[o..o + b.len()].copy_from_slice(b)
        })
    }

    /// Decodes tensor `name` into `out`, which holds exactly `nbytes()` bytes in the original
    /// dtype (little endian). On error the contents of `out` are unspecified.
    pub fn decode_into(&self, name: &str, out: &mut [u8]) -> Result<()> {
        let t = self.tensor_or_err(name)?;
        self.rows_into(t, 0..t.rows(), out)
    }

    /// Decodes rows `rows` of tensor `name`'s 2-D view (rows are `shape[0]`, each of
    /// [`TensorInfo::row_len`] elements) into `out`, `rows.len() * row_len()` elements in the
    /// original dtype (little endian). Works for clustered and raw tensors; for a clustered
    /// tensor only the index bytes of the block rows involved are used (and, with checksum
    /// verification off, read). With verification on, every call checks the CRC-32 of the
    /// tensor's whole stored pieces: for many small lookups (embedding rows), run
    /// [`LgnFile::verify`] once and turn verification off with
    /// [`LgnFile::set_verify_checksums`].
    pub fn decode_rows_into(&self, name: &str, rows: Range<usize>, out: &mut [u8]) -> Result<()> {
        let t = self.tensor_or_err(name)?;
        self.rows_into(t, rows, out)
    }

    /// Decodes float tensor `name` (F32, F16 or BF16) into `out` as f32, `numel()` values: the
    /// tensor's own values, widened exactly (what [`LgnFile::decode`] gives, converted).
    pub fn decode_f32_into(&self, name: &str, out: &mut [f32]) -> Result<()> {
        let t = self.tensor_or_err(name)?;
        self.rows_f32_into(t, 0..t.rows(), out)
    }

    /// [`LgnFile::decode_rows_into`] for a float tensor, as f32 values (see
    /// [`LgnFile::decode_f32_into`]).
    pub fn decode_rows_f32_into(
        &self,
        name: &str,
        rows: Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        let t = self.tensor_or_err(name)?;
        self.rows_f32_into(t, rows, out)
    }

    /// Decodes tensor `name` into a new buffer.
    pub fn decode(&self, name: &str) -> Result<Vec<u8>> {
        let t = self.tensor_or_err(name)?;
        let mut out = vec![0u8; t.nbytes()];
        self.rows_into(t, 0..t.rows(), &mut out)?;
        Ok(out)
    }

    /// Decodes a float tensor into new f32 values (see [`LgnFile::decode_f32_into`]).
    pub fn decode_f32(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor_or_err(name)?;
        check_float(t)?;
        let mut out = vec![0f32; t.numel()];
        self.rows_f32_into(t, 0..t.rows(), &mut out)?;
        Ok(out)
    }

    fn tensor_or_err(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name).ok_or_else(|| {
            LgnError::invalid("name", format!("no tensor named `{name}` in the file"))
        })
    }

    fn rows_into(&self, t: &TensorInfo, rows: Range<usize>, out: &mut [u8]) -> Result<()> {
        check_rows(t, &rows, out.len(), true)?;
        let row_bytes = t.row_len() * t.dtype.size();
        match &t.layout {
            Layout::Raw { stored } => {
                self.read_piece_into(*stored, rows.start * row_bytes..rows.end * row_bytes, out)
            }
            Layout::Clustered { .. } => {
                let loaded = self.load_clustered(t, rows.clone())?;
                match t.dtype {
                    Dtype::F32 => loaded.run_bytes::<f32>(rows, out),
                    Dtype::F16 => loaded.run_bytes::<f16>(rows, out),
                    Dtype::BF16 => loaded.run_bytes::<bf16>(rows, out),
                    other => unreachable!("validated clusterable dtype, got {other}"),
                }
            }
        }
    }

    fn rows_f32_into(&self, t: &TensorInfo, rows: Range<usize>, out: &mut [f32]) -> Result<()> {
        check_float(t)?;
        check_rows(t, &rows, out.len(), false)?;
        let es = t.dtype.size();
        let row_bytes = t.row_len() * es;
        match (&t.layout, t.dtype) {
            (Layout::Raw { stored }, Dtype::F32) => {
                let range = rows.start * row_bytes..rows.end * row_bytes;
                self.read_piece_into(*stored, range, bytemuck::cast_slice_mut(out))?;
                if cfg!(target_endian = "big") {
                    for v in out.iter_mut() {
                        *v = f32::from_le_bytes(v.to_ne_bytes());
                    }
                }
                Ok(())
            }
            (Layout::Raw { stored }, dtype) => {
                let range = rows.start * row_bytes..rows.end * row_bytes;
                self.visit_piece(*stored, range, self.verify_checksums, |o, b| {
                    let dst = &mut out[o / es..(o + b.len()) / es];
                    crate::dtype::float_bytes_to_f32(dtype, b, dst);
                })
            }
            (Layout::Clustered { .. }, dtype) => {
                let loaded = self.load_clustered(t, rows.clone())?;
                match dtype {
                    Dtype::F32 => loaded.run(rows, out),
                    Dtype::F16 => loaded.run::<F16Widened>(rows, bytemuck::cast_slice_mut(out)),
                    Dtype::BF16 => loaded.run::<Bf16Widened>(rows, bytemuck::cast_slice_mut(out)),
                    other => unreachable!("validated clusterable dtype, got {other}"),
                }
            }
        }
    }

    /// Reads (and checks, if verification is on) what decoding `rows` of clustered tensor `t`
    /// needs: the index bytes of the block rows involved, and the scales of those rows.
    fn load_clustered<'a>(&'a self, t: &'a TensorInfo, rows: Range<usize>) -> Result<Loaded<'a>> {
        let Layout::Clustered {
            grid,
            stages,
            scale,
            outliers,
        } = &t.layout
        else {
            return Err(LgnError::invalid(
                "name",
                format!("tensor `{}` is not clustered", t.name),
            ));
        };
        let verify = self.verify_checksums;
        let gc = grid.grid_cols;
        // Blocks `b0..b1` hold the rows; the window starts 8-aligned so it starts on a byte.
        let b0 = rows.start / grid.block.bh * gc;
        let b1 = (rows.end.div_ceil(grid.block.bh) * gc).min(grid.n_blocks());
        let first_block = if rows.is_empty() { 0 } else { b0 / 8 * 8 };
        let mut parts = Vec::with_capacity(stages.len());
        for &(ci, si) in stages {
            let cb = &self.codebooks[ci];
            let st = &self.envelope.tensors[si];
            let bits = cb.bits as usize;
            let begin = first_block * bits / 8;
            let end = (b1 * bits).div_ceil(8).clamp(begin, st.end - st.begin);
            let (bytes, skip) = self.piece_window(si, begin..end, verify)?;
            parts.push((cb, bytes, skip));
        }
        let scale = match scale {
            None => None,
            Some((mode, si)) => {
                let dtype = self.envelope.tensors[*si].dtype;
                let es = dtype.size();
                let r = match mode {
                    ScaleMode::Row => rows.clone(),
                    _ => 0..1,
                };
                let mut v = vec![0f32; r.len()];
                self.visit_piece(*si, r.start * es..r.end * es, verify, |o, b| {
                    crate::dtype::float_bytes_to_f32(dtype, b, &mut v[o / es..(o + b.len()) / es]);
                })?;
                Some((*mode, v))
            }
        };
        let outliers = match outliers {
            None => None,
            Some((ii, vi)) => Some(self.load_outliers(&t.name, grid.numel(), *ii, *vi, verify)?),
        };
        Ok(Loaded {
            t,
            grid,
            stages: parts,
            first_block,
            scale_rows: rows,
            scale,
            outliers,
        })
    }

    /// Reads the outliers of a clustered tensor of `numel` elements (stored tensors `ii`, U32
    /// positions, and `vi`, F32 values), checking their CRC-32s if `verify` and always their
    /// order and range: a decoder applies them with a binary search.
    fn load_outliers(
        &self,
        tensor: &str,
        numel: usize,
        ii: usize,
        vi: usize,
        verify: bool,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        let n = self.envelope.tensors[ii].numel();
        let mut idx = vec![0u32; n];
        let mut val = vec![0f32; n];
        self.visit_piece(ii, 0..4 * n, verify, |o, b| {
            for (d, c) in idx[o / 4..(o + b.len()) / 4]
                .iter_mut()
                .zip(b.chunks_exact(4))
            {
                *d = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        })?;
        self.visit_piece(vi, 0..4 * n, verify, |o, b| {
            crate::dtype::float_bytes_to_f32(Dtype::F32, b, &mut val[o / 4..(o + b.len()) / 4]);
        })?;
        check_outliers(tensor, numel, &idx)?;
        Ok((idx, val))
    }

    /// Decodes rows `rb..re` of the 2-D view of a clustered tensor into `out`
    /// (`(re - rb) * cols` values of type `T`: `f32`, `f16` or `bf16`).
    pub fn decode_clustered<T: OutElem>(
        &self,
        t: &TensorInfo,
        rb: usize,
        re: usize,
        out: &mut [T],
    ) -> Result<()> {
        let rows = rb..re;
        if !matches!(t.layout, Layout::Clustered { .. }) {
            return Err(LgnError::invalid(
                "name",
                format!("tensor `{}` is not clustered", t.name),
            ));
        }
        check_rows(t, &rows, out.len(), false)?;
        self.load_clustered(t, rows.clone())?.run(rows, out)
    }

    /// Writes a copy of this `.lgn` file to `dest`, atomically, in which the stored tensors
    /// named in `replace` hold new bytes of the same length: fine-tuned codebooks or scales
    /// (see legofmt's data-aware mode). Everything else is kept as it is: the manifest, the
    /// data order (so the canonical layout of section 11 of the spec survives) and the other
    /// stored tensors, whose CRC-32s are checked as they are copied. The CRC-32s of the
    /// replaced tensors are recomputed, and `metadata` entries are added to (or replace) the
    /// user metadata. Replaced codebooks and scales must hold finite values. `dest` may be
    /// the file itself. Returns the size of the new file.
    pub fn rewrite_with(
        &self,
        dest: &Path,
        replace: &BTreeMap<String, Vec<u8>>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<u64> {
        if self.version.is_none() {
            return Err(LgnError::invalid(
                "path",
                "not an .lgn file (a plain safetensors file has nothing to rewrite)",
            ));
        }
        let stored = &self.envelope.tensors;
        let finite_only: Vec<usize> = self
            .codebooks
            .iter()
            .map(|c| c.stored)
            .chain(self.tensors.iter().filter_map(|t| match &t.layout {
                Layout::Clustered {
                    scale: Some((_, s)),
                    ..
                } => Some(*s),
                _ => None,
            }))
            .collect();
        for (name, bytes) in replace {
            let Some(i) = stored.iter().position(|st| &st.name == name) else {
                return Err(LgnError::invalid(
                    "replace",
                    format!("the file has no stored tensor `{name}`"),
                ));
            };
            let st = &stored[i];
            if bytes.len() != st.end - st.begin {
                return Err(LgnError::invalid(
                    "replace",
                    format!(
                        "`{name}` is {} bytes in the file, the replacement {} bytes",
                        st.end - st.begin,
                        bytes.len()
                    ),
                ));
            }
            if finite_only.contains(&i) && !all_finite(st.dtype, bytes) {
                return Err(LgnError::invalid(
                    "replace",
                    format!("`{name}` (a codebook or scales) must hold finite values"),
                ));
            }
        }
        let mut pieces = Vec::with_capacity(stored.len());
        for (i, st) in stored.iter().enumerate() {
            // Borrowed where possible: a memory-mapped file is copied straight to the new one.
            let data = match replace.get(&st.name) {
                Some(b) => Cow::Borrowed(b.as_slice()),
                None => {
                    // The whole stored tensor, checksum verified: the window starts at 0.
                    let (b, skip) = self.piece_window(i, 0..st.end - st.begin, true)?;
                    debug_assert_eq!(skip, 0);
                    b
                }
            };
            pieces.push(super::writer::Piece {
                name: st.name.clone(),
                dtype: st.dtype,
                shape: st.shape.clone(),
                data,
                pad_to_8: false,
            });
        }
        let text = self
            .envelope
            .metadata
            .get(manifest::MANIFEST_KEY)
            .ok_or_else(|| LgnError::invalid("path", "the file has no lgn.manifest"))?;
        let mut m = Manifest::from_json(text)?;
        let mut md = self.user_metadata();
        md.extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        super::writer::write_file(dest, pieces, Some(&mut m), &md)
    }

    /// Checks every checksum and every index of the file (from a reader, one stored tensor
    /// at a time).
    pub fn verify(&self) -> Result<()> {
        for i in 0..self.envelope.tensors.len() {
            self.visit_piece(i, 0..0, true, |_, _| {})?;
        }
        for t in &self.tensors {
            if let Layout::Clustered {
                stages,
                grid,
                outliers,
                ..
            } = &t.layout
            {
                if let Some((ii, vi)) = outliers {
                    self.load_outliers(&t.name, grid.numel(), *ii, *vi, false)?;
                }
                for (s, &(ci, si)) in stages.iter().enumerate() {
                    let cb = &self.codebooks[ci];
                    let st = &self.envelope.tensors[si];
                    let (packed, skip) = self.piece_window(si, 0..st.end - st.begin, false)?;
                    let packed = &packed[skip..];
                    // In bounded chunks: the block count comes from the file.
                    const CHUNK: usize = 1 << 16;
                    let n = grid.n_blocks();
                    let mut idx = vec![0u32; n.min(CHUNK)];
                    let mut start = 0;
                    while start < n {
                        let len = (n - start).min(CHUNK);
                        let chunk = &mut idx[..len];
                        bitpack::unpack_range(packed, cb.bits, start, chunk);
                        if let Some(p) = chunk.iter().position(|&v| v as usize >= cb.k) {
                            return Err(fmt_err(
                                &t.name,
                                &format!("stages[{s}].indices"),
                                format!(
                                    "index {} at block {} is out of range for codebook of k={}",
                                    chunk[p],
                                    start + p,
                                    cb.k
                                ),
                            ));
                        }
                        start += len;
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_float(t: &TensorInfo) -> Result<()> {
    if t.dtype.is_clusterable() {
        Ok(())
    } else {
        Err(LgnError::invalid(
            "name",
            format!("tensor `{}` is {}, not a float", t.name, t.dtype),
        ))
    }
}

/// Checks a row range of `t` and the length of an output buffer: of bytes in the source dtype
/// when `bytes`, else of one item per element.
fn check_rows(t: &TensorInfo, rows: &Range<usize>, out_len: usize, bytes: bool) -> Result<()> {
    if rows.start > rows.end || rows.end > t.rows() {
        return Err(LgnError::invalid(
            "rows",
            format!(
                "{}..{} is not a range of the {} rows of tensor `{}`",
                rows.start,
                rows.end,
                t.rows(),
                t.name
            ),
        ));
    }
    let (need, unit) = match bytes {
        true => (rows.len() * t.row_len() * t.dtype.size(), "bytes"),
        false => (rows.len() * t.row_len(), "elements"),
    };
    if out_len != need {
        return Err(LgnError::invalid(
            "out",
            format!(
                "rows {}..{} of tensor `{}` need {need} {unit}, the buffer has {out_len}",
                rows.start, rows.end, t.name
            ),
        ));
    }
    Ok(())
}

fn with_path(e: LgnError, path: &Path) -> LgnError {
    match e {
        LgnError::Format {
            tensor,
            field,
            message,
        } => LgnError::Format {
            tensor,
            field,
            message: format!("{}: {message}", path.display()),
        },
        other => other,
    }
}

/// Whether the little-endian values of `bytes` (F32, F16 or BF16; other dtypes pass) are all
/// finite.
fn all_finite(dtype: Dtype, bytes: &[u8]) -> bool {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .all(|b| f16::from_le_bytes([b[0], b[1]]).is_finite()),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .all(|b| bf16::from_le_bytes([b[0], b[1]]).is_finite()),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;
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
                    stages.iter().map(|&(_, si)| piece_len(si)).sum::<u64>()
                        + scale.map_or(0, |(_, si)| piece_len(si))
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
        let indices: u64 = stages.iter().map(|&(_, si)| piece_len(si)).sum();
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
                Layout::Clustered { stages, .. } => stages[0].1,
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
                    if stages.len() == 1 && stages[0].0 == 0 && t.dtype == Dtype::F32 =>
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
}
