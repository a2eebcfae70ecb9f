//! The compression pipeline: scale, tile, cluster (with residual stages), pack, lay out.
//!
//! Which tensors are clustered, and into which codebook group, is decided by the caller (the
//! Python policy layer or a Rust program): each [`TensorInput`] names its group or `None` to be
//! stored raw. Each group has its own codebooks (one per residual stage), block shape, k and
//! scale mode; all tensors of a group share them (one codebook for the whole network when
//! there is a single group, as in LegoNet).
//!
//! [`compress`] runs six steps, one module each:
//! 1. plan groups (`plan`): check the inputs, order each group's members (most stages first)
//!    and place their blocks in the group's block matrix;
//! 2. prepare (`prepare`): per member, take the outliers out, compute the scales and cut the
//!    scaled blocks (again with outliers when the group turns out not to be exact without);
//! 3. cluster (`cluster`): one codebook per residual stage of each group;
//! 4. pack (`pack`): the group's codebooks join the file's, each member's indices are
//!    bit-packed per stage;
//! 5. finish (`finish`): each clustered tensor's scales are refit to its codewords and its
//!    error is measured as a reader will decode it;
//! 6. lay out (`layout`): the manifest, the report and the stored pieces in file order.
//!
//! Outliers (format 2.0) are chosen by [`select_outliers`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::blocks::BlockShape;
use crate::dtype::{float_bytes_to_f32, Dtype};
use crate::error::{LgnError, Result};
use crate::format::manifest::Manifest;
use crate::format::writer::{self, Piece};
use crate::limits::{MAX_STAGES, MIN_K};
use crate::scale::{ScaleMode, ScaleStat};

pub use crate::limits::{MAX_K, MAX_OUTLIER_FRACTION};
pub use outliers::select_outliers;

mod cluster;
mod finish;
mod layout;
mod outliers;
mod pack;
mod plan;
mod prepare;
#[cfg(test)]
mod tests;

/// The clustering settings of one codebook group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// Codewords per codebook, [`MIN_K`]`..=`[`MAX_K`] (fewer are used when the group has
    /// fewer distinct blocks).
    pub k: usize,
    /// Block shape.
    pub block: BlockShape,
    /// Residual stages, `1..=`[`MAX_STAGES`]: stage `s` clusters what stages `0..s` left.
    pub stages: usize,
    /// Scaling before clustering.
    pub scale: ScaleMode,
    /// What rows (or the tensor) are divided by before clustering.
    pub scale_stat: ScaleStat,
    /// Fraction of each member's elements stored exactly as outliers (format 2.0),
    /// `0..=`[`MAX_OUTLIER_FRACTION`]; 0 for none. See [`select_outliers`].
    pub outliers: f64,
}

impl GroupSpec {
    /// Checks the ranges.
    pub fn check(&self) -> Result<()> {
        if !(MIN_K..=MAX_K).contains(&self.k) {
            return Err(LgnError::invalid(
                "k",
                format!("must be in {MIN_K}..={MAX_K}, got {}", self.k),
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
    /// Overrides the smallest sample size of the k-means sample phase
    /// ([`KMeansParams::batch_size`](crate::kmeans::KMeansParams::batch_size)).
    pub batch_size: Option<usize>,
    /// Overrides the k-means iteration budget.
    pub max_iter: Option<usize>,
    /// Extra `__metadata__` entries (keys must not start with `lgn.`).
    pub metadata: BTreeMap<String, String>,
}

/// A progress event.
#[derive(Debug, Clone)]
pub struct Event {
    /// What is happening: `"prepare g{G}"` (done: members of group G prepared),
    /// `"cluster g{G} s{S} {k-means stage}"` (from k-means, for stage S of group G),
    /// `"pack g{G}"`, `"measure"` (done: index of the input measured).
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

/// What happened to one codebook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodebookReport {
    /// The group it serves.
    pub group: usize,
    /// Its residual stage in that group.
    pub stage: usize,
    /// Codewords used (the group's k, or fewer when the group has fewer distinct blocks).
    pub k: usize,
    /// Index width in bits.
    pub bits: u32,
    /// Block shape.
    pub block: BlockShape,
}

/// The outcome of a compression run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Per tensor, in input order.
    pub tensors: Vec<TensorReport>,
    /// Per codebook, in file order (the manifest's codebook ids).
    pub codebooks: Vec<CodebookReport>,
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

/// Runs the pipeline over `inputs` (borrowed; raw tensors are written from them without copies).
pub fn compress<'a>(
    inputs: &[TensorInput<'a>],
    opts: &CompressOptions,
    progress: ProgressFn<'_>,
) -> Result<Compressed<'a>> {
    let t0 = Instant::now();
    plan::validate_inputs(inputs, opts)?;
    let mut codebooks = Vec::new();
    let mut packed: Vec<Option<pack::PackedTensor>> = vec![None; inputs.len()];
    for (gi, spec) in opts.groups.iter().enumerate() {
        let Some(plan) = plan::plan_group(inputs, gi, spec)? else {
            continue;
        };
        let prepared = prepare::prepare_group(inputs, &plan, spec, gi, progress)?;
        let fits = cluster::cluster_group(prepared.blocks, &plan, gi, spec, opts, progress)?;
        let group = pack::pack_group(
            plan,
            prepared.members,
            fits,
            gi,
            spec,
            &mut codebooks,
            progress,
        )?;
        for t in group {
            let i = t.input;
            packed[i] = Some(t);
        }
    }
    let finished = finish::finish_all(inputs, &codebooks, packed, progress)?;
    let layout = layout::lay_out(inputs, &codebooks, finished);
    let numel: u64 = inputs
        .iter()
        .map(|t| t.shape.iter().product::<usize>() as u64)
        .sum();
    let report = Report {
        tensors: layout.tensors,
        codebooks: codebooks.iter().map(pack::Codebook::report).collect(),
        file_bytes: 0,
        fp32_bytes: numel * 4,
        source_bytes: inputs.iter().map(|t| t.data.len() as u64).sum(),
        numel,
        seconds: t0.elapsed().as_secs_f64(),
    };
    Ok(Compressed {
        pieces: layout.pieces,
        manifest: layout.manifest,
        metadata: opts.metadata.clone(),
        report,
    })
}

/// Reports `event`: `Err(Cancelled)` when the callback asks to stop.
fn report_progress(progress: ProgressFn<'_>, event: &Event) -> Result<()> {
    if progress(event) {
        Ok(())
    } else {
        Err(LgnError::Cancelled)
    }
}

/// The values of `t` (a clusterable dtype) as f32.
fn to_f32(t: &TensorInput<'_>) -> Vec<f32> {
    let mut v = vec![0f32; t.data.len() / t.dtype.size()];
    float_bytes_to_f32(t.dtype, t.data, &mut v);
    v
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
