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
//!
//! This module orchestrates: the validated layout is [`super::layout`]'s, the byte source and
//! the checksummed pieces are `source`'s and `pieces`', the row-window arithmetic is
//! `window`'s, the fused decoder is [`super::decode`]'s, and [`LgnFile::rewrite_with`] lives
//! with the writer side in `rewrite`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek};
use std::ops::Range;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use super::decode::{
    apply_outliers, check_outliers, decode_rows_window, Bf16Widened, F16Widened, OutElem,
    ScaleView, StageParts,
};
use super::envelope::{Envelope, StoredTensor, PREFIX_LEN};
use super::layout::Contents;
pub use super::layout::{Codebook, Layout, OutliersRef, ScaleRef, StageRef, TensorInfo};
use super::manifest;
use super::pieces::Pieces;
use super::source::{Backing, READER_NAME};
use super::window::{self, BlockWindow};
use crate::bitpack;
use crate::blocks::Grid;
use crate::dtype::Dtype;
use crate::error::{LgnError, Result};
use crate::scale::ScaleMode;

/// Elements decoded per step when the output buffer cannot be viewed as the output type
/// (misaligned or big endian) and goes through a bounded temporary.
const FALLBACK_CHUNK: usize = 1 << 16;

/// Indices unpacked per step by [`LgnFile::verify`]: the block count comes from the file, so
/// the buffer is bounded.
const VERIFY_CHUNK: usize = 1 << 16;

pub use crate::limits::MAX_K;

/// One stage of a clustered tensor, loaded for a range of rows.
struct LoadedStage<'a> {
    /// The stage's codebook.
    codebook: &'a Codebook,
    /// The index bytes from block `first_block` on start at `bytes[skip]`.
    bytes: Cow<'a, [u8]>,
    skip: usize,
}

/// The scales of a clustered tensor read for a range of rows, with their mode.
struct LoadedScales {
    mode: ScaleMode,
    /// With per-row scales, the view row of `values[0]` (the first row of the range).
    first_row: usize,
    values: Vec<f32>,
}

impl LoadedScales {
    /// The decoder's view of these scales.
    fn view(&self) -> ScaleView<'_> {
        ScaleView::new(self.mode, self.first_row, &self.values)
    }
}

/// The stored pieces of a clustered tensor needed for a range of its rows, read and checked.
struct Loaded<'a> {
    t: &'a TensorInfo,
    grid: &'a Grid,
    stages: Vec<LoadedStage<'a>>,
    first_block: usize,
    /// The scales of the rows loaded ([`LgnFile::load_clustered`]'s `rows`), if any.
    scale: Option<LoadedScales>,
    /// Outlier positions (checked: increasing, in range) and values: all of the tensor's.
    outliers: Option<(Vec<u32>, Vec<f32>)>,
}

impl Loaded<'_> {
    /// Decodes `rows` (inside the loaded range) into `out`.
    fn run<T: OutElem>(&self, rows: Range<usize>, out: &mut [T]) -> Result<()> {
        let parts: Vec<StageParts<'_>> = self
            .stages
            .iter()
            .map(|s| StageParts {
                codebook: &s.codebook.values,
                k: s.codebook.k,
                bits: s.codebook.bits,
                packed: &s.bytes[s.skip..],
            })
            .collect();
        let scales = self
            .scale
            .as_ref()
            .map_or(ScaleView::None, LoadedScales::view);
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
    pieces: Pieces,
    file_len: u64,
    envelope: Envelope,
    version: Option<(u32, u32)>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    codebooks: Vec<Codebook>,
    verify_checksums: bool,
}

impl std::fmt::Debug for LgnFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LgnFile")
            .field("path", &self.path)
            .field("backing", &self.pieces.backing().kind())
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
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
        Self::from_backing(Backing::reader(file), Some(path.to_path_buf()))
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
        Self::from_backing(Backing::reader(reader), None)
    }

    /// Reads the envelope, validates the layout and loads the codebooks.
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
        let Contents {
            version,
            tensors,
            by_name,
            mut codebooks,
            crc32,
        } = Contents::validate(&envelope)?;
        let pieces = Pieces::new(backing, io_path, envelope.data_start(), crc32);
        load_codebooks(&pieces, &envelope.tensors, &mut codebooks)?;
        Ok(LgnFile {
            path,
            pieces,
            file_len,
            envelope,
            version,
            tensors,
            by_name,
            codebooks,
            verify_checksums: true,
        })
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

    /// The stored pieces (for the rewriter).
    pub(super) fn pieces(&self) -> &Pieces {
        &self.pieces
    }

    /// The whole `__metadata__` of the envelope, reserved entries included.
    pub(super) fn metadata(&self) -> &BTreeMap<String, String> {
        &self.envelope.metadata
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
            Layout::Raw { stored } => self.pieces.read_into(
                &self.envelope.tensors[*stored],
                window::raw_bytes(&rows, row_bytes),
                self.verify_checksums,
                out,
            ),
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
                let st = &self.envelope.tensors[*stored];
                let range = window::raw_bytes(&rows, row_bytes);
                let verify = self.verify_checksums;
                self.pieces
                    .read_into(st, range, verify, bytemuck::cast_slice_mut(out))?;
                if cfg!(target_endian = "big") {
                    for v in out.iter_mut() {
                        *v = f32::from_le_bytes(v.to_ne_bytes());
                    }
                }
                Ok(())
            }
            (Layout::Raw { stored }, dtype) => {
                let st = &self.envelope.tensors[*stored];
                let range = window::raw_bytes(&rows, row_bytes);
                self.pieces.visit(st, range, self.verify_checksums, |o, b| {
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
        let stored = &self.envelope.tensors;
        let blocks = BlockWindow::of_rows(grid, &rows);
        let mut parts = Vec::with_capacity(stages.len());
        for s in stages {
            let codebook = &self.codebooks[s.codebook];
            let st = &stored[s.indices];
            let range = blocks.index_bytes(codebook.bits, st.end - st.begin);
            let (bytes, skip) = self.pieces.window(st, range, verify)?;
            parts.push(LoadedStage {
                codebook,
                bytes,
                skip,
            });
        }
        let scale = match scale {
            None => None,
            Some(sc) => {
                let values = window::scale_values(sc.mode, &rows);
                Some(LoadedScales {
                    mode: sc.mode,
                    first_row: rows.start,
                    values: self.pieces.read_f32s(&stored[sc.stored], values, verify)?,
                })
            }
        };
        let outliers = match outliers {
            None => None,
            Some(o) => Some(self.load_outliers(&t.name, grid.numel(), o, verify)?),
        };
        Ok(Loaded {
            t,
            grid,
            stages: parts,
            first_block: blocks.first_block,
            scale,
            outliers,
        })
    }

    /// Reads the outliers `o` of a clustered tensor of `numel` elements (U32 positions and F32
    /// values), checking their CRC-32s if `verify` and always their order and range: a decoder
    /// applies them with a binary search.
    fn load_outliers(
        &self,
        tensor: &str,
        numel: usize,
        o: &OutliersRef,
        verify: bool,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        let positions = &self.envelope.tensors[o.indices];
        let n = positions.numel();
        let idx = self.pieces.read_u32s(positions, n, verify)?;
        let val = self
            .pieces
            .read_f32s(&self.envelope.tensors[o.values], 0..n, verify)?;
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

    /// Checks every checksum and every index of the file (from a reader, one stored tensor
    /// at a time).
    pub fn verify(&self) -> Result<()> {
        for st in &self.envelope.tensors {
            self.pieces.visit(st, 0..0, true, |_, _| {})?;
        }
        for t in &self.tensors {
            if let Layout::Clustered {
                stages,
                grid,
                outliers,
                ..
            } = &t.layout
            {
                if let Some(o) = outliers {
                    self.load_outliers(&t.name, grid.numel(), o, false)?;
                }
                for (s, stage) in stages.iter().enumerate() {
                    self.verify_stage_indices(t, s, stage, grid.n_blocks())?;
                }
            }
        }
        Ok(())
    }

    /// Checks that the `n_blocks` indices of stage `s` of tensor `t` are all below its
    /// codebook's `k`.
    fn verify_stage_indices(
        &self,
        t: &TensorInfo,
        s: usize,
        stage: &StageRef,
        n_blocks: usize,
    ) -> Result<()> {
        let cb = &self.codebooks[stage.codebook];
        let st = &self.envelope.tensors[stage.indices];
        let (packed, skip) = self.pieces.window(st, 0..st.end - st.begin, false)?;
        let packed = &packed[skip..];
        let n = n_blocks;
        let mut idx = vec![0u32; n.min(VERIFY_CHUNK)];
        let mut start = 0;
        while start < n {
            let len = (n - start).min(VERIFY_CHUNK);
            let chunk = &mut idx[..len];
            bitpack::unpack_range(packed, cb.bits, start, chunk);
            if let Some(p) = chunk.iter().position(|&v| v as usize >= cb.k) {
                return Err(LgnError::tensor_format(
                    &t.name,
                    format!("stages[{s}].indices"),
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
        Ok(())
    }
}

/// Reads the values of every codebook (they are small and used by every tensor), always
/// checking their CRC-32s (a corrupt codebook corrupts every tensor) and that they are finite.
fn load_codebooks(
    pieces: &Pieces,
    stored: &[StoredTensor],
    codebooks: &mut [Codebook],
) -> Result<()> {
    for cb in codebooks {
        let st = &stored[cb.stored];
        let values = pieces.read_f32s(st, 0..st.numel(), true)?;
        if let Some(p) = values.iter().position(|v| !v.is_finite()) {
            return Err(LgnError::tensor_format(
                &st.name,
                "data",
                format!("codebook value {p} is not finite"),
            ));
        }
        cb.values = values;
    }
    Ok(())
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

#[cfg(test)]
mod tests;
