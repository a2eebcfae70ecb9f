//! Reading `.lgn` files (and plain safetensors files, seen as all-raw).
//!
//! [`LgnFile::open`] memory-maps the file, validates the envelope, the manifest and the
//! codebooks (everything but the bulk data) and then decodes one tensor at a time on request,
//! checking each stored piece's CRC-32 and every index against its codebook as it goes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use super::decode::{decode_rows, OutElem, StageParts};
use super::envelope::{Envelope, StoredTensor};
use super::manifest::{self, Encoding, Manifest, MAX_STAGES};
use crate::bitpack;
use crate::blocks::{BlockShape, Grid};
use crate::dtype::Dtype;
use crate::error::{LgnError, Result};
use crate::scale::ScaleMode;

/// Largest accepted codebook size.
pub const MAX_K: usize = 65536;

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

enum Backing {
    Mmap(memmap2::Mmap),
    Bytes(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Bytes(b) => b,
        }
    }
}

/// An open `.lgn` (or plain safetensors) file.
pub struct LgnFile {
    path: Option<PathBuf>,
    backing: Backing,
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

    /// Validates a file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<LgnFile> {
        Self::from_backing(Backing::Bytes(bytes), None)
    }

    fn from_backing(backing: Backing, path: Option<PathBuf>) -> Result<LgnFile> {
        let buf = backing.bytes();
        let file_len = buf.len() as u64;
        let hl = Envelope::header_len_from_prefix(buf, file_len)?;
        let envelope = Envelope::parse(&buf[8..8 + hl], file_len)?;
        let mut f = LgnFile {
            path,
            backing,
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
        self.version = Some(manifest::check_version(version)?);
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
                Encoding::Clustered { stages, scale } => {
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
                    Layout::Clustered {
                        grid,
                        stages: st_out,
                        scale,
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
            let st = &self.envelope.tensors[self.codebooks[ci].stored];
            let bytes = self.stored_bytes(st)?;
            if let Some(&expected) = self.crc32.get(&st.name) {
                let actual = crc32fast::hash(bytes);
                if actual != expected {
                    return Err(LgnError::Checksum {
                        tensor: st.name.clone(),
                        expected,
                        actual,
                    });
                }
            }
            let mut values = vec![0f32; st.numel()];
            crate::dtype::float_bytes_to_f32(Dtype::F32, bytes, &mut values);
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
        self.backing.bytes().len() as u64
    }

    /// Bytes of one stored tensor (no checksum check).
    fn stored_bytes(&self, st: &StoredTensor) -> Result<&[u8]> {
        let start = self.envelope.data_start();
        Ok(&self.backing.bytes()[start + st.begin..start + st.end])
    }

    /// Bytes of one stored tensor, checking its CRC-32 if verification is on.
    fn checked_bytes(&self, stored: usize) -> Result<&[u8]> {
        let st = &self.envelope.tensors[stored];
        let b = self.stored_bytes(st)?;
        if self.verify_checksums {
            if let Some(&expected) = self.crc32.get(&st.name) {
                let actual = crc32fast::hash(b);
                if actual != expected {
                    return Err(LgnError::Checksum {
                        tensor: st.name.clone(),
                        expected,
                        actual,
                    });
                }
            }
        }
        Ok(b)
    }

    /// Decodes tensor `name` into `out`, which holds exactly `nbytes()` bytes in the original
    /// dtype (little endian).
    pub fn decode_into(&self, name: &str, out: &mut [u8]) -> Result<()> {
        let t = self.tensor_or_err(name)?;
        if out.len() != t.nbytes() {
            return Err(LgnError::invalid(
                "out",
                format!(
                    "tensor `{name}` needs {} bytes, buffer has {}",
                    t.nbytes(),
                    out.len()
                ),
            ));
        }
        match &t.layout {
            Layout::Raw { stored } => {
                out.copy_from_slice(self.checked_bytes(*stored)?);
                Ok(())
            }
            Layout::Clustered { grid, .. } => match t.dtype {
                Dtype::F32 => self.decode_typed::<f32>(t, 0, grid.rows, out),
                Dtype::F16 => self.decode_typed::<f16>(t, 0, grid.rows, out),
                Dtype::BF16 => self.decode_typed::<bf16>(t, 0, grid.rows, out),
                other => unreachable!("validated clusterable dtype, got {other}"),
            },
        }
    }

    /// Decodes tensor `name` into a new buffer.
    pub fn decode(&self, name: &str) -> Result<Vec<u8>> {
        let t = self.tensor_or_err(name)?;
        let mut out = vec![0u8; t.nbytes()];
        self.decode_into(name, &mut out)?;
        Ok(out)
    }

    /// Decodes a clustered or F32 tensor into f32 values.
    pub fn decode_f32(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor_or_err(name)?;
        if !t.dtype.is_clusterable() {
            return Err(LgnError::invalid(
                "name",
                format!("tensor `{name}` is {}, not a float", t.dtype),
            ));
        }
        let bytes = self.decode(name)?;
        let mut out = vec![0f32; t.numel()];
        crate::dtype::float_bytes_to_f32(t.dtype, &bytes, &mut out);
        Ok(out)
    }

    fn tensor_or_err(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name).ok_or_else(|| {
            LgnError::invalid("name", format!("no tensor named `{name}` in the file"))
        })
    }

    fn decode_typed<T: OutElem>(
        &self,
        t: &TensorInfo,
        rb: usize,
        re: usize,
        out: &mut [u8],
    ) -> Result<()> {
        match bytemuck::try_cast_slice_mut::<u8, T>(out) {
            Ok(typed) if cfg!(target_endian = "little") => self.decode_clustered(t, rb, re, typed),
            _ => {
                let mut tmp = vec![T::from_f32(0.0); out.len() / std::mem::size_of::<T>()];
                self.decode_clustered(t, rb, re, &mut tmp)?;
                for (o, v) in out.chunks_exact_mut(std::mem::size_of::<T>()).zip(&tmp) {
                    let mut b = bytemuck::bytes_of(v).to_vec();
                    if cfg!(target_endian = "big") {
                        b.reverse();
                    }
                    o.copy_from_slice(&b);
                }
                Ok(())
            }
        }
    }

    /// Decodes rows `rb..re` of the 2-D view of a clustered tensor into `out`.
    pub fn decode_clustered<T: OutElem>(
        &self,
        t: &TensorInfo,
        rb: usize,
        re: usize,
        out: &mut [T],
    ) -> Result<()> {
        let Layout::Clustered {
            grid,
            stages,
            scale,
        } = &t.layout
        else {
            return Err(LgnError::invalid(
                "name",
                format!("tensor `{}` is not clustered", t.name),
            ));
        };
        let mut parts = Vec::with_capacity(stages.len());
        for &(ci, si) in stages {
            let cb = &self.codebooks[ci];
            parts.push(StageParts {
                codebook: &cb.values,
                k: cb.k,
                bits: cb.bits,
                packed: self.checked_bytes(si)?,
            });
        }
        let scales = match scale {
            None => Vec::new(),
            Some((_, si)) => {
                let st = &self.envelope.tensors[*si];
                let b = self.checked_bytes(*si)?;
                let mut v = vec![0f32; st.numel()];
                crate::dtype::float_bytes_to_f32(st.dtype, b, &mut v);
                v
            }
        };
        decode_rows(&t.name, grid, &parts, &scales, rb, re, out)
    }

    /// Checks every checksum and every index of the file.
    pub fn verify(&self) -> Result<()> {
        for i in 0..self.envelope.tensors.len() {
            let st = &self.envelope.tensors[i];
            let b = self.stored_bytes(st)?;
            if let Some(&expected) = self.crc32.get(&st.name) {
                let actual = crc32fast::hash(b);
                if actual != expected {
                    return Err(LgnError::Checksum {
                        tensor: st.name.clone(),
                        expected,
                        actual,
                    });
                }
            }
        }
        for t in &self.tensors {
            if let Layout::Clustered { stages, grid, .. } = &t.layout {
                for (s, &(ci, si)) in stages.iter().enumerate() {
                    let cb = &self.codebooks[ci];
                    let packed = self.stored_bytes(&self.envelope.tensors[si])?;
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
