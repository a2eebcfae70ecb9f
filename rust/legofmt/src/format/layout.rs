//! The validated in-memory layout of a file: its original tensors ([`TensorInfo`]), how each
//! is stored ([`Layout`], with named references to the stored tensors of its stages, scales
//! and outliers) and its codebooks ([`Codebook`]).
//!
//! `Contents::validate` builds it from the envelope and the manifest, with one small function
//! per manifest entry kind (codebook, raw tensor, clustered tensor, stage, scales, outliers,
//! CRC coverage). Every stored tensor must be referenced exactly once and carry a checksum; a
//! plain safetensors file (no `lgn.version`) is read as all-raw. Only the header is looked at
//! here: the codebook values are loaded by the reader once the layout is known.

use std::collections::{BTreeMap, HashMap};

use super::envelope::{Envelope, StoredTensor, MAX_RANK};
use super::manifest::{
    self, CodebookEntry, Encoding, Manifest, OutliersMember, ScaleEntry, StageEntry, TensorEntry,
    MAX_STAGES,
};
#[cfg(doc)]
use super::reader::LgnFile;
use crate::bitpack;
use crate::blocks::{BlockShape, Grid};
use crate::dtype::Dtype;
use crate::error::{LgnError, Result};
use crate::limits::{MAX_K, MIN_K};
use crate::scale::ScaleMode;

/// One residual stage of a clustered tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageRef {
    /// Index of the stage's codebook in [`LgnFile::codebooks`].
    pub codebook: usize,
    /// Index of the stored tensor of its packed indices in [`LgnFile::stored`].
    pub indices: usize,
}

/// The scales of a clustered tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleRef {
    /// [`ScaleMode::Row`] (one scale per row of the 2-D view) or [`ScaleMode::Tensor`] (one
    /// scale); a tensor without scales has no `ScaleRef`.
    pub mode: ScaleMode,
    /// Index of the stored tensor of the scales (F16 or F32).
    pub stored: usize,
}

/// The outliers of a clustered tensor (format 2.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutliersRef {
    /// Index of the stored tensor of the outlier positions (U32).
    pub indices: usize,
    /// Index of the stored tensor of the outlier values (F32).
    pub values: usize,
}

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
        /// The residual stages, in order.
        stages: Vec<StageRef>,
        /// The scales, if any.
        scale: Option<ScaleRef>,
        /// Format 2.0: the outliers, if any.
        outliers: Option<OutliersRef>,
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

/// Everything a file's header says, validated: the original tensors, the codebooks (their
/// values not yet loaded: `values` is empty) and the checksums.
#[derive(Debug)]
pub(crate) struct Contents {
    /// `(major, minor)` for an `.lgn` file, `None` for a plain safetensors file.
    pub(crate) version: Option<(u32, u32)>,
    /// The original tensors in saved order.
    pub(crate) tensors: Vec<TensorInfo>,
    /// Index in `tensors` by name.
    pub(crate) by_name: HashMap<String, usize>,
    /// The codebooks, in manifest order.
    pub(crate) codebooks: Vec<Codebook>,
    /// CRC-32 of each stored tensor (empty for a plain safetensors file).
    pub(crate) crc32: BTreeMap<String, u32>,
}

fn fmt_err(tensor: &str, field: &str, message: impl Into<String>) -> LgnError {
    LgnError::tensor_format(tensor, field, message)
}

/// The stored tensors of the envelope and which of them a manifest entry has claimed: each
/// may be claimed once.
struct Claims<'a> {
    stored: &'a [StoredTensor],
    by_name: HashMap<&'a str, usize>,
    used: Vec<bool>,
}

impl<'a> Claims<'a> {
    fn new(stored: &'a [StoredTensor]) -> Claims<'a> {
        Claims {
            stored,
            by_name: stored
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.as_str(), i))
                .collect(),
            used: vec![false; stored.len()],
        }
    }

    /// Claims stored tensor `name` for manifest entry `field` of `tensor`: its index and itself.
    fn take(&mut self, tensor: &str, field: &str, name: &str) -> Result<(usize, &'a StoredTensor)> {
        let i = *self.by_name.get(name).ok_or_else(|| {
            fmt_err(
                tensor,
                field,
                format!("stored tensor `{name}` does not exist"),
            )
        })?;
        if std::mem::replace(&mut self.used[i], true) {
            return Err(fmt_err(
                tensor,
                field,
                format!("stored tensor `{name}` is used twice"),
            ));
        }
        Ok((i, &self.stored[i]))
    }

    /// Every stored tensor must have been claimed.
    fn check_all_used(&self) -> Result<()> {
        match self.used.iter().position(|u| !u) {
            Some(i) => Err(fmt_err(
                &self.stored[i].name,
                manifest::MANIFEST_KEY,
                "stored tensor is not referenced by the manifest",
            )),
            None => Ok(()),
        }
    }
}

impl Contents {
    /// Validates the manifest of `envelope` (or, without `lgn.version`, reads a plain
    /// safetensors file as all-raw).
    pub(crate) fn validate(envelope: &Envelope) -> Result<Contents> {
        let md = &envelope.metadata;
        let Some(version) = md.get(manifest::VERSION_KEY) else {
            if md.contains_key(manifest::MANIFEST_KEY) {
                return Err(LgnError::Format {
                    tensor: None,
                    field: Some(manifest::VERSION_KEY.into()),
                    message: "an lgn.manifest is present but lgn.version is missing".into(),
                });
            }
            return Contents::plain(&envelope.tensors);
        };
        let (major, minor) = manifest::check_version(version)?;
        let text = md
            .get(manifest::MANIFEST_KEY)
            .ok_or_else(|| LgnError::Format {
                tensor: None,
                field: Some(manifest::MANIFEST_KEY.into()),
                message: "lgn.version is set but lgn.manifest is missing".into(),
            })?;
        let m = Manifest::from_json(text)?;
        let mut claims = Claims::new(&envelope.tensors);
        let codebooks = m
            .codebooks
            .iter()
            .enumerate()
            .map(|(ci, cb)| codebook(&mut claims, ci, cb))
            .collect::<Result<Vec<_>>>()?;
        let tensors = m
            .tensors
            .iter()
            .enumerate()
            .map(|(ti, t)| tensor(&mut claims, &codebooks, major, ti, t))
            .collect::<Result<Vec<_>>>()?;
        claims.check_all_used()?;
        check_crc_coverage(&claims, &m.crc32)?;
        let mut c = Contents {
            version: Some((major, minor)),
            tensors: Vec::with_capacity(tensors.len()),
            by_name: HashMap::new(),
            codebooks,
            crc32: m.crc32,
        };
        for t in tensors {
            c.push_tensor(t)?;
        }
        Ok(c)
    }

    /// A plain safetensors file: every stored tensor is a raw tensor, in name order.
    fn plain(stored: &[StoredTensor]) -> Result<Contents> {
        let mut c = Contents {
            version: None,
            tensors: Vec::with_capacity(stored.len()),
            by_name: HashMap::new(),
            codebooks: Vec::new(),
            crc32: BTreeMap::new(),
        };
        let mut order: Vec<usize> = (0..stored.len()).collect();
        order.sort_by(|&a, &b| stored[a].name.cmp(&stored[b].name));
        for i in order {
            let t = &stored[i];
            c.push_tensor(TensorInfo {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                layout: Layout::Raw { stored: i },
            })?;
        }
        Ok(c)
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
}

/// Codebook entry `ci`: `k` and `bits` agree, the block shape is valid and the stored tensor
/// is F32 `[k, bh, bw]`.
fn codebook(claims: &mut Claims<'_>, ci: usize, cb: &CodebookEntry) -> Result<Codebook> {
    let field = format!("codebooks[{ci}]");
    let (i, st) = claims.take(&cb.tensor, &field, &cb.tensor)?;
    if !(MIN_K..=MAX_K).contains(&cb.k) {
        return Err(fmt_err(
            &cb.tensor,
            &field,
            format!("k={} is outside {MIN_K}..={MAX_K}", cb.k),
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
    Ok(Codebook {
        k: cb.k,
        bits: cb.bits,
        block,
        values: Vec::new(),
        stored: i,
    })
}

/// Tensor entry `ti` of a file of format `major`: a known dtype, a bounded shape whose byte
/// size does not overflow, and a valid encoding.
fn tensor(
    claims: &mut Claims<'_>,
    codebooks: &[Codebook],
    major: u32,
    ti: usize,
    t: &TensorEntry,
) -> Result<TensorInfo> {
    let field = |f: &str| format!("tensors[{ti}].{f}");
    let dtype = Dtype::parse(&t.dtype).map_err(|_| {
        fmt_err(
            &t.name,
            &field("dtype"),
            format!("unknown dtype `{}`", t.dtype),
        )
    })?;
    if t.shape.len() > MAX_RANK {
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
        Encoding::Raw => raw(claims, t, dtype, &field)?,
        Encoding::Clustered {
            stages,
            scale,
            outliers,
        } => {
            let outliers = match outliers {
                // Outliers exist from major 2 on; before, the member is unknown and ignored.
                Some(member) if major >= manifest::OUTLIERS_MAJOR => Some(member),
                _ => None,
            };
            let entry = ClusteredEntry {
                t,
                dtype,
                stages,
                scale: scale.as_ref(),
                outliers,
            };
            clustered(claims, codebooks, &entry, &field)?
        }
    };
    Ok(TensorInfo {
        name: t.name.clone(),
        dtype,
        shape: t.shape.clone(),
        layout,
    })
}

/// A raw tensor: the stored tensor of the same name has the manifest's dtype and shape.
fn raw(
    claims: &mut Claims<'_>,
    t: &TensorEntry,
    dtype: Dtype,
    field: &dyn Fn(&str) -> String,
) -> Result<Layout> {
    let (i, st) = claims.take(&t.name, &field("encoding"), &t.name)?;
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
    Ok(Layout::Raw { stored: i })
}

/// The parts of a clustered tensor entry (`outliers` only where the format version has them).
struct ClusteredEntry<'m> {
    t: &'m TensorEntry,
    dtype: Dtype,
    stages: &'m [StageEntry],
    scale: Option<&'m ScaleEntry>,
    outliers: Option<&'m OutliersMember>,
}

/// A clustered tensor: a float dtype, 1..=MAX_STAGES stages whose codebooks share one block
/// shape, and valid scales and outliers.
fn clustered(
    claims: &mut Claims<'_>,
    codebooks: &[Codebook],
    e: &ClusteredEntry<'_>,
    field: &dyn Fn(&str) -> String,
) -> Result<Layout> {
    let name = e.t.name.as_str();
    if !e.dtype.is_clusterable() {
        return Err(fmt_err(
            name,
            &field("dtype"),
            format!("{} cannot be clustered", e.dtype),
        ));
    }
    if e.stages.is_empty() || e.stages.len() > MAX_STAGES {
        return Err(fmt_err(
            name,
            &field("stages"),
            format!("{} stages; must be 1..={MAX_STAGES}", e.stages.len()),
        ));
    }
    let cb0 = codebooks.get(e.stages[0].codebook).ok_or_else(|| {
        fmt_err(
            name,
            &field("stages[0].codebook"),
            "codebook index out of range",
        )
    })?;
    let grid = Grid::new(&e.t.shape, cb0.block)
        .map_err(|err| fmt_err(name, &field("shape"), err.to_string()))?;
    let mut stages = Vec::with_capacity(e.stages.len());
    for (si, s) in e.stages.iter().enumerate() {
        let f = field(&format!("stages[{si}]"));
        stages.push(stage(claims, codebooks, name, &f, s, &grid, cb0.block)?);
    }
    let scale = match e.scale {
        None => None,
        Some(sc) => Some(scales(claims, name, &field("scale"), sc, &grid)?),
    };
    let outliers = match e.outliers {
        None => None,
        Some(member) => Some(outliers(claims, name, field, member, &grid)?),
    };
    Ok(Layout::Clustered {
        grid,
        stages,
        scale,
        outliers,
    })
}

/// A stage (manifest field `f` of tensor `name`): its codebook exists and has the block shape
/// of the first stage's, and its indices are U8 `[n]` holding `grid.n_blocks()` indices, with
/// less than 8 bytes of padding.
fn stage(
    claims: &mut Claims<'_>,
    codebooks: &[Codebook],
    name: &str,
    f: &str,
    s: &StageEntry,
    grid: &Grid,
    block: BlockShape,
) -> Result<StageRef> {
    let cb = codebooks
        .get(s.codebook)
        .ok_or_else(|| fmt_err(name, f, format!("codebook {} does not exist", s.codebook)))?;
    if cb.block != block {
        return Err(fmt_err(
            name,
            f,
            "stages use codebooks of different block shapes",
        ));
    }
    let (i, st) = claims.take(name, f, &s.indices)?;
    let need = bitpack::packed_len(grid.n_blocks(), cb.bits)
        .ok_or_else(|| fmt_err(name, f, "packed length overflows"))?;
    let len = st.end - st.begin;
    if st.dtype != Dtype::U8 || st.shape.len() != 1 || len < need || len - need >= 8 {
        return Err(fmt_err(
            name,
            f,
            format!(
                "indices must be U8 [n] with {need} <= n < {} bytes ({} blocks of {} bits), found {} {:?}",
                need + 8,
                grid.n_blocks(),
                cb.bits,
                st.dtype,
                st.shape
            ),
        ));
    }
    Ok(StageRef {
        codebook: s.codebook,
        indices: i,
    })
}

/// Scales (manifest field `f` of tensor `name`): mode `row` or `tensor`, stored as F16 or F32
/// with one value per row or one value.
fn scales(
    claims: &mut Claims<'_>,
    name: &str,
    f: &str,
    sc: &ScaleEntry,
    grid: &Grid,
) -> Result<ScaleRef> {
    let mode = ScaleMode::parse(&sc.mode).map_err(|e| fmt_err(name, f, e.to_string()))?;
    let n = match mode {
        ScaleMode::Row => grid.rows,
        ScaleMode::Tensor => 1,
        ScaleMode::None => return Err(fmt_err(name, f, "mode `none` must be written as no scale")),
    };
    let (i, st) = claims.take(name, f, &sc.tensor)?;
    if !matches!(st.dtype, Dtype::F16 | Dtype::F32) || st.shape != [n] {
        return Err(fmt_err(
            name,
            f,
            format!(
                "scales must be F16 or F32 [{n}], found {} {:?}",
                st.dtype, st.shape
            ),
        ));
    }
    Ok(ScaleRef { mode, stored: i })
}

/// Outliers of tensor `name` (format 2.0): an object naming U32 `[n]` positions and F32 `[n]`
/// values, with no more outliers than elements.
fn outliers(
    claims: &mut Claims<'_>,
    name: &str,
    field: &dyn Fn(&str) -> String,
    member: &OutliersMember,
    grid: &Grid,
) -> Result<OutliersRef> {
    let OutliersMember::Entry(o) = member else {
        return Err(fmt_err(
            name,
            &field("outliers"),
            "must be an object with string members `indices` and `values`",
        ));
    };
    let (ii, si) = claims.take(name, &field("outliers.indices"), &o.indices)?;
    let (vi, sv) = claims.take(name, &field("outliers.values"), &o.values)?;
    if si.dtype != Dtype::U32 || si.shape.len() != 1 {
        return Err(fmt_err(
            name,
            &field("outliers.indices"),
            format!("must be U32 [n], found {} {:?}", si.dtype, si.shape),
        ));
    }
    let n = si.shape[0];
    if sv.dtype != Dtype::F32 || sv.shape != [n] {
        return Err(fmt_err(
            name,
            &field("outliers.values"),
            format!(
                "must be F32 [{n}] like the indices, found {} {:?}",
                sv.dtype, sv.shape
            ),
        ));
    }
    if n > grid.numel() {
        return Err(fmt_err(
            name,
            &field("outliers.indices"),
            format!("{n} outliers for {} elements", grid.numel()),
        ));
    }
    Ok(OutliersRef {
        indices: ii,
        values: vi,
    })
}

/// CRC coverage: every checksum names a stored tensor, and every stored tensor has one.
fn check_crc_coverage(claims: &Claims<'_>, crc32: &BTreeMap<String, u32>) -> Result<()> {
    for name in crc32.keys() {
        if !claims.by_name.contains_key(name.as_str()) {
            return Err(fmt_err(
                name,
                "crc32",
                "checksum given for a tensor that does not exist",
            ));
        }
    }
    if let Some(t) = claims.stored.iter().find(|t| !crc32.contains_key(&t.name)) {
        return Err(fmt_err(&t.name, "crc32", "stored tensor has no checksum"));
    }
    Ok(())
}
