//! The compression pipeline: scale, tile, cluster (with residual stages), pack, lay out.
//!
//! Which tensors are clustered, and into which codebook group, is decided by the caller (the
//! Python policy layer or a Rust program): each [`TensorInput`] names its group or `None` to be
//! stored raw. Each group has its own codebooks (one per residual stage), block shape, k and
//! scale mode; all tensors of a group share them (one codebook for the whole network when
//! there is a single group, as in LegoNet).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use crate::bitpack;
use crate::blocks::{extract, BlockShape, Grid};
use crate::dtype::{float_bytes_to_f32, Dtype};
use crate::error::{LgnError, Result};
use crate::format::decode::{apply_outliers, decode_rows, StageParts};
use crate::format::manifest::{
    self, CodebookEntry, Encoding, Manifest, OutliersEntry, OutliersMember, ScaleEntry, StageEntry,
    TensorEntry, MAX_STAGES,
};
use crate::format::writer::{self, Piece};
use crate::kmeans::{self, KMeansParams, Progress as KProgress};
use crate::scale::{self, ScaleMode, ScaleStat, Scales};

pub use crate::limits::{MAX_K, MAX_OUTLIER_FRACTION};

/// The clustering settings of one codebook group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// Codewords per codebook, 2..=65536 (fewer are used when the group has fewer distinct blocks).
    pub k: usize,
    /// Block shape.
    pub block: BlockShape,
    /// Residual stages, 1..=16: stage `s` clusters what stages `0..s` left.
    pub stages: usize,
    /// Scaling before clustering.
    pub scale: ScaleMode,
    /// What rows (or the tensor) are divided by before clustering.
    pub scale_stat: ScaleStat,
    /// Fraction of each member's elements stored exactly as outliers (format 2.0), `0..=0.5`;
    /// 0 for none. See [`select_outliers`].
    pub outliers: f64,
}

impl GroupSpec {
    /// Checks the ranges.
    pub fn check(&self) -> Result<()> {
        if !(2..=MAX_K).contains(&self.k) {
            return Err(LgnError::invalid(
                "k",
                format!("must be in 2..={MAX_K}, got {}", self.k),
            ));
        }
        if !(1..=MAX_STAGES).contains(&self.stages) {
            return Err(LgnError::invalid(
                "stages",
                format!("must be in 1..={MAX_STAGES}, got {}", self.stages),
            ));
        }
        if !(0.0..=MAX_OUTLIER_FRACTION).contains(&self.outliers) {
            return Err(LgnError::invalid(
                "outliers",
                format!(
                    "must be a fraction in 0..={MAX_OUTLIER_FRACTION}, got {}",
                    self.outliers
                ),
            ));
        }
        Ok(())
    }
}

/// One tensor to save.
#[derive(Debug, Clone)]
pub struct TensorInput<'a> {
    /// Name (unique; must not start with `lgn.` nor contain `.lgn.`, which are reserved).
    pub name: String,
    /// Element type of `data`.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian, row-major bytes.
    pub data: &'a [u8],
    /// Codebook group to cluster into, or `None` to store raw.
    pub group: Option<usize>,
    /// Residual stages of this tensor, `1..=` its group's `stages` (`None`: the group's).
    /// Stages are nested: stage `s` of a group is one codebook, fitted to the residuals of
    /// exactly the members with more than `s` stages, so a tensor given fewer stages than its
    /// group adds no codebook of its own.
    pub stages: Option<usize>,
}

/// Options of a compression run.
#[derive(Debug, Clone, Default)]
pub struct CompressOptions {
    /// Codebook groups referenced by [`TensorInput::group`].
    pub groups: Vec<GroupSpec>,
    /// Seed of every random choice (sampling, initialisation).
    pub seed: u64,
    /// Overrides the k-means mini-batch size.
    pub batch_size: Option<usize>,
    /// Overrides the k-means iteration budget.
    pub max_iter: Option<usize>,
    /// Extra `__metadata__` entries (keys must not start with `lgn.`).
    pub metadata: BTreeMap<String, String>,
}

/// A progress event.
#[derive(Debug, Clone)]
pub struct Event {
    /// What is happening (`"prepare"`, `"cluster g0 s1"`, `"pack"`, ...).
    pub phase: String,
    /// Units done.
    pub done: usize,
    /// Units in this phase.
    pub total: usize,
}

/// A progress callback: return `false` to cancel.
pub type ProgressFn<'a> = &'a (dyn Fn(&Event) -> bool + Sync);

/// What happened to one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorReport {
    /// Name.
    pub name: String,
    /// Original dtype.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Whether the tensor was clustered (else raw).
    pub clustered: bool,
    /// Bytes stored for this tensor (indices, scales or raw data; shared codebooks excluded).
    pub stored_bytes: u64,
    /// Index bits per block summed over stages (0 for raw).
    pub index_bits: u32,
    /// `sum((x - x')^2) / sum(x^2)` of the decoded tensor (0 for raw; 0 for an all-zero tensor decoded exactly).
    pub rel_mse: f64,
    /// Largest absolute error.
    pub max_abs_err: f64,
    /// Elements stored exactly as outliers.
    pub outliers: usize,
}

/// The outcome of a compression run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Per tensor, in input order.
    pub tensors: Vec<TensorReport>,
    /// Per codebook: (group, stage, k used, bits, block).
    pub codebooks: Vec<(usize, usize, usize, u32, BlockShape)>,
    /// Size of the whole file in bytes.
    pub file_bytes: u64,
    /// Bytes of all tensors as fp32.
    pub fp32_bytes: u64,
    /// Bytes of all tensors in their source dtypes.
    pub source_bytes: u64,
    /// Number of weights (elements of all tensors).
    pub numel: u64,
    /// Seconds spent compressing (excluding writing).
    pub seconds: f64,
}

impl Report {
    /// `fp32_bytes / file_bytes`.
    pub fn ratio_fp32(&self) -> f64 {
        self.fp32_bytes as f64 / self.file_bytes.max(1) as f64
    }
    /// `source_bytes / file_bytes`.
    pub fn ratio_source(&self) -> f64 {
        self.source_bytes as f64 / self.file_bytes.max(1) as f64
    }
    /// File bits per weight.
    pub fn bits_per_weight(&self) -> f64 {
        self.file_bytes as f64 * 8.0 / self.numel.max(1) as f64
    }
}

/// A compressed model, ready to be written.
pub struct Compressed<'a> {
    pieces: Vec<Piece<'a>>,
    manifest: Manifest,
    metadata: BTreeMap<String, String>,
    report: Report,
}

impl<'a> Compressed<'a> {
    /// Writes the file atomically and returns the report.
    pub fn write(mut self, path: &Path) -> Result<Report> {
        let n = writer::write_file(path, self.pieces, Some(&mut self.manifest), &self.metadata)?;
        self.report.file_bytes = n;
        Ok(self.report)
    }

    /// Serialises into memory.
    pub fn to_bytes(mut self) -> Result<(Vec<u8>, Report)> {
        let b = writer::to_bytes(self.pieces, Some(&mut self.manifest), &self.metadata)?;
        self.report.file_bytes = b.len() as u64;
        Ok((b, self.report))
    }
}

fn reserved(name: &str) -> bool {
    name.starts_with(manifest::RESERVED_PREFIX) || name.contains(".lgn.")
}

fn validate_inputs(inputs: &[TensorInput<'_>], opts: &CompressOptions) -> Result<()> {
    for g in &opts.groups {
        g.check()?;
    }
    let mut seen = HashSet::new();
    for t in inputs {
        if t.name.is_empty() || reserved(&t.name) {
            return Err(LgnError::invalid(
                "name",
                format!("tensor name `{}` is empty or reserved (names starting with `lgn.` or containing `.lgn.` are used by the format)", t.name),
            ));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(LgnError::invalid(
                "name",
                format!("tensor `{}` appears twice", t.name),
            ));
        }
        let nbytes = t
            .shape
            .iter()
            .try_fold(t.dtype.size(), |a, &d| a.checked_mul(d));
        if nbytes != Some(t.data.len()) {
            return Err(LgnError::invalid(
                "data",
                format!(
                    "tensor `{}`: {} bytes given for {} {:?}",
                    t.name,
                    t.data.len(),
                    t.dtype,
                    t.shape
                ),
            ));
        }
        if let Some(g) = t.group {
            let spec = opts.groups.get(g).ok_or_else(|| {
                LgnError::invalid(
                    "group",
                    format!("tensor `{}` names group {g}, which does not exist", t.name),
                )
            })?;
            if !t.dtype.is_clusterable() {
                return Err(LgnError::invalid(
                    "group",
                    format!(
                        "tensor `{}` is {}; only F32/F16/BF16 can be clustered",
                        t.name, t.dtype
                    ),
                ));
            }
            Grid::new(&t.shape, spec.block)
                .map_err(|e| LgnError::invalid("group", format!("tensor `{}`: {e}", t.name)))?;
            if let Some(st) = t.stages {
                if !(1..=spec.stages).contains(&st) {
                    return Err(LgnError::invalid(
                        "stages",
                        format!(
                            "tensor `{}` asks for {st} stages; its group {g} has 1..={}",
                            t.name, spec.stages
                        ),
                    ));
                }
            }
        } else if t.stages.is_some() {
            return Err(LgnError::invalid(
                "stages",
                format!("tensor `{}` is stored raw: it has no stages", t.name),
            ));
        }
    }
    Ok(())
}

fn to_f32(t: &TensorInput<'_>) -> Vec<f32> {
    let mut v = vec![0f32; t.data.len() / t.dtype.size()];
    float_bytes_to_f32(t.dtype, t.data, &mut v);
    v
}

/// One clustered tensor while it is being built.
struct Member {
    input: usize,
    stages: usize,
    grid: Grid,
    scales: Option<Scales>,
    first_block: usize,
    outliers: Outliers,
}

/// Outlier positions (increasing) and their exact values.
type Outliers = (Vec<u32>, Vec<f32>);

/// The `floor(fraction * numel)` elements of the row-major `rows x cols` matrix `x` that are
/// largest relative to their row: by `|x| / rms(row)`, ties broken by the lower position;
/// returned in increasing order. Those are the weights a shared codebook serves worst (a
/// codebook fitted by squared error spends no codeword on a handful of extreme values, and
/// with row scales an extreme value also squeezes the rest of its row). None for tensors of
/// more than `2^32` elements (positions are stored as U32).
pub fn select_outliers(x: &[f32], rows: usize, cols: usize, fraction: f64) -> Vec<u32> {
    let numel = x.len();
    debug_assert_eq!(numel, rows * cols);
    let n = ((fraction * numel as f64).floor() as usize).min(numel);
    if n == 0 || numel > u32::MAX as usize + 1 {
        return Vec::new();
    }
    let mut score = vec![0f32; numel];
    for (r, row) in x.chunks_exact(cols.max(1)).enumerate().take(rows) {
        let ms = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            / cols as f64;
        let inv = if ms > 0.0 { 1.0 / ms.sqrt() } else { 0.0 };
        for (o, &v) in score[r * cols..(r + 1) * cols].iter_mut().zip(row) {
            *o = (f64::from(v.abs()) * inv) as f32;
        }
    }
    // The n-th largest score; then everything above it, and ties at it by position.
    let mut tmp = score.clone();
    let (_, &mut thr, _) = tmp.select_nth_unstable_by(numel - n, |a, b| a.total_cmp(b));
    drop(tmp);
    let above = score.iter().filter(|&&v| v > thr).count();
    let mut ties = n - above;
    let mut out = Vec::with_capacity(n);
    for (p, &v) in score.iter().enumerate() {
        if v > thr || (v == thr && ties > 0) {
            if v == thr {
                ties -= 1;
            }
            out.push(p as u32);
        }
    }
    debug_assert_eq!(out.len(), n);
    out
}

/// Result of clustering one stage of one group.
struct StageResult {
    centroids: Vec<f32>,
    k: usize,
    assignments: Vec<u32>,
}

/// The distinct blocks (bit patterns) of `data` (`n x dim`), each numbered in order of first
/// appearance, or `None` as soon as there are more than `k`.
fn distinct_blocks(data: &[f32], dim: usize, k: usize) -> Option<HashMap<&[u32], u32>> {
    let mut distinct: HashMap<&[u32], u32> = HashMap::new();
    let bits: &[u32] = bytemuck::cast_slice(data);
    for key in bits.chunks_exact(dim) {
        let len = distinct.len() as u32;
        distinct.entry(key).or_insert(len);
        if distinct.len() > k {
            return None;
        }
    }
    Some(distinct)
}

/// Clusters `data` (`n x dim`) into at most `k` codewords. When the data has at most `k`
/// distinct blocks, the codebook is exactly those blocks (lossless).
fn cluster(
    data: &[f32],
    dim: usize,
    k: usize,
    seed: u64,
    opts: &CompressOptions,
    phase: &str,
    progress: ProgressFn<'_>,
) -> Result<StageResult> {
    let n = data.len() / dim;
    if let Some(distinct) = distinct_blocks(data, dim, k) {
        let bits: &[u32] = bytemuck::cast_slice(data);
        let kk = distinct.len().max(2);
        let mut centroids = vec![0f32; kk * dim];
        for (key, &i) in &distinct {
            for (c, &v) in centroids[i as usize * dim..(i as usize + 1) * dim]
                .iter_mut()
                .zip(key.iter())
            {
                *c = f32::from_bits(v);
            }
        }
        let assignments = (0..n)
            .map(|b| distinct[&bits[b * dim..(b + 1) * dim]])
            .collect();
        return Ok(StageResult {
            centroids,
            k: kk,
            assignments,
        });
    }
    let mut p = KMeansParams::new(k);
    p.seed = seed;
    if let Some(b) = opts.batch_size {
        p.batch_size = b;
    }
    if let Some(m) = opts.max_iter {
        p.max_iter = m;
    }
    let valid = p.check(n, dim)?;
    let cb = |kp: &KProgress| {
        progress(&Event {
            phase: format!("{phase} {:?}", kp.stage).to_lowercase(),
            done: kp.done,
            total: kp.total,
        })
    };
    let r = kmeans::fit(data, dim, &valid, &cb)?;
    Ok(StageResult {
        centroids: r.centroids,
        k,
        assignments: r.assignments,
    })
}

/// A clustered tensor before layout: stage codebook ids, packed indices per stage, scales,
/// grid, outliers.
type Encoded = (Vec<usize>, Vec<Vec<u8>>, Option<Scales>, Grid, Outliers);

/// Runs the pipeline over `inputs` (borrowed; raw tensors are written from them without copies).
pub fn compress<'a>(
    inputs: &[TensorInput<'a>],
    opts: &CompressOptions,
    progress: ProgressFn<'_>,
) -> Result<Compressed<'a>> {
    let t0 = Instant::now();
    validate_inputs(inputs, opts)?;
    let cancelled = |e: &Event| {
        if progress(e) {
            Ok(())
        } else {
            Err(LgnError::Cancelled)
        }
    };

    let mut manifest = Manifest {
        codebooks: Vec::new(),
        tensors: Vec::new(),
        crc32: BTreeMap::new(),
    };
    let mut codebook_pieces: Vec<Piece<'a>> = Vec::new();
    let mut clustered: HashMap<usize, Encoded> = HashMap::new();
    let mut report_cb = Vec::new();

    for (gi, spec) in opts.groups.iter().enumerate() {
        let mut member_inputs: Vec<usize> = (0..inputs.len())
            .filter(|&i| inputs[i].group == Some(gi))
            .collect();
        if member_inputs.is_empty() {
            continue;
        }
        let stages_of = |i: usize| inputs[i].stages.unwrap_or(spec.stages);
        // Most stages first (stable): the blocks stage `s` clusters are then a prefix of `data`.
        member_inputs.sort_by_key(|&i| std::cmp::Reverse(stages_of(i)));
        let n_stages = stages_of(member_inputs[0]);
        let dim = spec.block.dim();
        let mut members = Vec::with_capacity(member_inputs.len());
        let mut n_blocks = 0usize;
        for &i in &member_inputs {
            let grid = Grid::new(&inputs[i].shape, spec.block)?;
            members.push(Member {
                input: i,
                stages: stages_of(i),
                grid,
                scales: None,
                first_block: n_blocks,
                outliers: (Vec::new(), Vec::new()),
            });
            n_blocks += grid.n_blocks();
        }
        let mut data = vec![0f32; n_blocks * dim];
        // Outliers only where clustering loses something: a group with at most k distinct
        // blocks is stored exactly without them (taking some out would only add blocks).
        let mut fraction = 0.0;
        loop {
            for (mi, m) in members.iter_mut().enumerate() {
                let t = &inputs[m.input];
                cancelled(&Event {
                    phase: format!("prepare g{gi}"),
                    done: mi,
                    total: member_inputs.len(),
                })?;
                let mut x = to_f32(t);
                if let Some(p) = x.iter().position(|v| !v.is_finite()) {
                    return Err(LgnError::invalid(
                        "data",
                        format!(
                            "tensor `{}` has a non-finite value at element {p}; store it raw",
                            t.name
                        ),
                    ));
                }
                // Outliers are stored exactly: they are zero for scaling and clustering.
                let pos = select_outliers(&x, m.grid.rows, m.grid.cols, fraction);
                let vals = pos.iter().map(|&p| x[p as usize]).collect();
                for &p in &pos {
                    x[p as usize] = 0.0;
                }
                m.outliers = (pos, vals);
                m.scales =
                    scale::compute(&x, m.grid.rows, m.grid.cols, spec.scale, spec.scale_stat);
                let mul = m.scales.as_ref().map(|s| s.row_multipliers(m.grid.rows));
                let out = &mut data[m.first_block * dim..(m.first_block + m.grid.n_blocks()) * dim];
                extract(&x, &m.grid, mul.as_deref(), out);
            }
            if fraction > 0.0
                || spec.outliers == 0.0
                || distinct_blocks(&data, dim, spec.k).is_some()
            {
                break;
            }
            fraction = spec.outliers;
        }
        let mut stage_ids = Vec::with_capacity(n_stages);
        let mut assignments = Vec::with_capacity(n_stages);
        for s in 0..n_stages {
            let phase = format!("cluster g{gi} s{s}");
            let seed =
                opts.seed ^ ((gi as u64) << 32 | s as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            // The members with more than `s` stages: a prefix of `data` (sorted above).
            let blocks: usize = members
                .iter()
                .filter(|m| m.stages > s)
                .map(|m| m.grid.n_blocks())
                .sum();
            let data = &mut data[..blocks * dim];
            let r = cluster(data, dim, spec.k, seed, opts, &phase, progress)?;
            if s + 1 < n_stages {
                crate::par::for_each_chunk_mut(data, dim * 4096, |ci, chunk| {
                    for (j, blk) in chunk.chunks_mut(dim).enumerate() {
                        let a = r.assignments[ci * 4096 + j] as usize;
                        for (v, c) in blk.iter_mut().zip(&r.centroids[a * dim..(a + 1) * dim]) {
                            *v -= c;
                        }
                    }
                });
            }
            let id = manifest.codebooks.len();
            let bits = bitpack::bits_for_k(r.k);
            manifest.codebooks.push(CodebookEntry {
                tensor: manifest::codebook_name(id),
                k: r.k,
                bits,
                block: [spec.block.bh, spec.block.bw],
            });
            report_cb.push((gi, s, r.k, bits, spec.block));
            codebook_pieces.push(Piece {
                name: manifest::codebook_name(id),
                dtype: Dtype::F32,
                shape: vec![r.k, spec.block.bh, spec.block.bw],
                data: Cow::Owned(bytemuck::cast_slice(&r.centroids).to_vec()),
                pad_to_8: false,
            });
            stage_ids.push(id);
            assignments.push(r.assignments);
        }
        drop(data);
        cancelled(&Event {
            phase: format!("pack g{gi}"),
            done: 0,
            total: members.len(),
        })?;
        for m in members {
            let range = m.first_block..m.first_block + m.grid.n_blocks();
            let packed = stage_ids[..m.stages]
                .iter()
                .zip(&assignments)
                .map(|(&id, a)| bitpack::pack(&a[range.clone()], manifest.codebooks[id].bits))
                .collect::<Result<Vec<_>>>()?;
            let ids = stage_ids[..m.stages].to_vec();
            clustered.insert(m.input, (ids, packed, m.scales, m.grid, m.outliers));
        }
    }

    // Lay out: codebooks, then each clustered tensor's scale and indices, then raw tensors by
    // decreasing element size (keeps every tensor naturally aligned; see spec/lgn.md).
    let mut pieces = codebook_pieces;
    let mut reports = Vec::with_capacity(inputs.len());
    let codebook_values: Vec<Vec<f32>> = pieces
        .iter()
        .map(|p| {
            p.data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
        .collect();
    for (i, t) in inputs.iter().enumerate() {
        let Some((ids, packed, scales, grid, (opos, oval))) = clustered.remove(&i) else {
            manifest.tensors.push(TensorEntry {
                name: t.name.clone(),
                dtype: t.dtype.name().into(),
                shape: t.shape.clone(),
                encoding: Encoding::Raw,
            });
            reports.push(TensorReport {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                clustered: false,
                stored_bytes: t.data.len() as u64,
                index_bits: 0,
                rel_mse: 0.0,
                max_abs_err: 0.0,
                outliers: 0,
            });
            continue;
        };
        cancelled(&Event {
            phase: "measure".into(),
            done: i,
            total: inputs.len(),
        })?;
        let parts: Vec<StageParts<'_>> = ids
            .iter()
            .zip(&packed)
            .map(|(&id, p)| StageParts {
                codebook: &codebook_values[id],
                k: manifest.codebooks[id].k,
                bits: manifest.codebooks[id].bits,
                packed: p,
            })
            .collect();
        let x = to_f32(t);
        let scales = match scales {
            Some(s) => {
                let mut q = vec![0f32; x.len()];
                decode_rows(&t.name, &grid, &parts, &[], 0, grid.rows, &mut q)?;
                // Outliers are overwritten when decoding: they take no part in the fit.
                let mut xz = Cow::Borrowed(&x[..]);
                for &p in &opos {
                    xz.to_mut()[p as usize] = 0.0;
                    q[p as usize] = 0.0;
                }
                Some(s.refit(&xz, &q, grid.rows))
            }
            None => None,
        };
        let (rel_mse, max_abs_err) = measure(
            t,
            &x,
            &grid,
            &parts,
            scales.as_ref().map_or(&[][..], |s| &s.values),
            (&opos, &oval),
        )?;
        let mut stored_bytes = 0u64;
        let n_outliers = opos.len();
        let outliers = if opos.is_empty() {
            None
        } else {
            let (iname, vname) = (
                manifest::outlier_index_name(&t.name),
                manifest::outlier_value_name(&t.name),
            );
            let ib: Vec<u8> = opos.iter().flat_map(|p| p.to_le_bytes()).collect();
            let vb: Vec<u8> = oval.iter().flat_map(|v| v.to_le_bytes()).collect();
            stored_bytes += (ib.len() + vb.len()) as u64;
            for (name, dtype, data) in [(&iname, Dtype::U32, ib), (&vname, Dtype::F32, vb)] {
                pieces.push(Piece {
                    name: name.clone(),
                    dtype,
                    shape: vec![n_outliers],
                    data: Cow::Owned(data),
                    pad_to_8: false,
                });
            }
            Some(OutliersMember::Entry(OutliersEntry {
                indices: iname,
                values: vname,
            }))
        };
        let scale_entry = scales.map(|s| {
            let name = manifest::scale_name(&t.name);
            let bytes = s.to_bytes();
            stored_bytes += bytes.len() as u64;
            pieces.push(Piece {
                name: name.clone(),
                dtype: s.dtype,
                shape: vec![s.values.len()],
                data: Cow::Owned(bytes),
                pad_to_8: false,
            });
            ScaleEntry {
                mode: if s.values.len() == 1 {
                    "tensor".into()
                } else {
                    "row".into()
                },
                tensor: name,
            }
        });
        let n_stages = packed.len();
        let mut stages = Vec::with_capacity(n_stages);
        let mut index_bits = 0;
        for (s, (id, p)) in ids.iter().zip(packed).enumerate() {
            let name = manifest::indices_name(&t.name, s);
            stored_bytes += p.len() as u64;
            index_bits += manifest.codebooks[*id].bits;
            pieces.push(Piece {
                name: name.clone(),
                dtype: Dtype::U8,
                shape: vec![p.len()],
                data: Cow::Owned(p),
                pad_to_8: s + 1 == n_stages,
            });
            stages.push(StageEntry {
                codebook: *id,
                indices: name,
            });
        }
        manifest.tensors.push(TensorEntry {
            name: t.name.clone(),
            dtype: t.dtype.name().into(),
            shape: t.shape.clone(),
            encoding: Encoding::Clustered {
                stages,
                scale: scale_entry,
                outliers,
            },
        });
        reports.push(TensorReport {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            clustered: true,
            stored_bytes,
            index_bits,
            rel_mse,
            max_abs_err,
            outliers: n_outliers,
        });
    }
    let mut raw: Vec<usize> = (0..inputs.len())
        .filter(|&i| inputs[i].group.is_none())
        .collect();
    raw.sort_by_key(|&i| std::cmp::Reverse(inputs[i].dtype.size()));
    for i in raw {
        let t = &inputs[i];
        pieces.push(Piece {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            data: Cow::Borrowed(t.data),
            pad_to_8: false,
        });
    }
    let numel: u64 = inputs
        .iter()
        .map(|t| t.shape.iter().product::<usize>() as u64)
        .sum();
    let report = Report {
        tensors: reports,
        codebooks: report_cb,
        file_bytes: 0,
        fp32_bytes: numel * 4,
        source_bytes: inputs.iter().map(|t| t.data.len() as u64).sum(),
        numel,
        seconds: t0.elapsed().as_secs_f64(),
    };
    Ok(Compressed {
        pieces,
        manifest,
        metadata: opts.metadata.clone(),
        report,
    })
}

/// Decodes a tensor exactly as a reader will and compares it with the original (`x`, the
/// tensor's values as f32).
fn measure(
    t: &TensorInput<'_>,
    x: &[f32],
    grid: &Grid,
    parts: &[StageParts<'_>],
    scales: &[f32],
    (opos, oval): (&[u32], &[f32]),
) -> Result<(f64, f64)> {
    let mut y = vec![0f32; x.len()];
    match t.dtype {
        Dtype::F32 => {
            decode_rows(&t.name, grid, parts, scales, 0, grid.rows, &mut y)?;
            apply_outliers(opos, oval, grid.cols, 0..grid.rows, &mut y);
        }
        Dtype::F16 => {
            let mut h = vec![half::f16::ZERO; x.len()];
            decode_rows(&t.name, grid, parts, scales, 0, grid.rows, &mut h)?;
            apply_outliers(opos, oval, grid.cols, 0..grid.rows, &mut h);
            y.iter_mut().zip(&h).for_each(|(o, v)| *o = v.to_f32());
        }
        Dtype::BF16 => {
            let mut h = vec![half::bf16::ZERO; x.len()];
            decode_rows(&t.name, grid, parts, scales, 0, grid.rows, &mut h)?;
            apply_outliers(opos, oval, grid.cols, 0..grid.rows, &mut h);
            y.iter_mut().zip(&h).for_each(|(o, v)| *o = v.to_f32());
        }
        other => unreachable!("validated clusterable dtype, got {other}"),
    }
    let (mut num, mut den, mut max) = (0f64, 0f64, 0f64);
    for (&a, &b) in x.iter().zip(&y) {
        let e = f64::from(a) - f64::from(b);
        num += e * e;
        den += f64::from(a) * f64::from(a);
        max = max.max(e.abs());
    }
    Ok((
        if den > 0.0 {
            num / den
        } else if num > 0.0 {
            f64::INFINITY
        } else {
            0.0
        },
        max,
    ))
}

/// Compresses and writes in one call.
pub fn compress_to_file(
    inputs: &[TensorInput<'_>],
    opts: &CompressOptions,
    path: &Path,
    progress: ProgressFn<'_>,
) -> Result<Report> {
    compress(inputs, opts, progress)?.write(path)
}
