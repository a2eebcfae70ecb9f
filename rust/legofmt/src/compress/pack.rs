//! Step 4, pack: a group's stage codebooks join the file's codebooks, and each member's
//! codeword indices are bit-packed per stage.

use std::borrow::Cow;

use super::cluster::StageFit;
use super::outliers::Outliers;
use super::plan::GroupPlan;
use super::prepare::PreparedMember;
use super::{report_progress, CodebookReport, Event, GroupSpec, ProgressFn};
use crate::bitpack;
use crate::blocks::{BlockShape, Grid};
use crate::dtype::Dtype;
use crate::error::Result;
use crate::format::manifest::{self, CodebookEntry};
use crate::format::writer::Piece;
use crate::scale::FittedScales;

/// One codebook of the file (its id is its position among the file's codebooks).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Codebook {
    /// The group it belongs to.
    pub group: usize,
    /// Its residual stage in that group.
    pub stage: usize,
    /// Codewords.
    pub k: usize,
    /// Index width: `ceil(log2 k)`.
    pub bits: u32,
    /// Block shape of its codewords.
    pub block: BlockShape,
    /// `k x dim` codeword values.
    pub centroids: Vec<f32>,
}

impl Codebook {
    /// Its manifest entry, as codebook `id`.
    pub fn entry(&self, id: usize) -> CodebookEntry {
        CodebookEntry {
            tensor: manifest::codebook_name(id),
            k: self.k,
            bits: self.bits,
            block: [self.block.bh, self.block.bw],
        }
    }

    /// Its stored tensor, as codebook `id`: F32, shape `[k, bh, bw]`.
    pub fn piece(&self, id: usize) -> Piece<'static> {
        Piece {
            name: manifest::codebook_name(id),
            dtype: Dtype::F32,
            shape: vec![self.k, self.block.bh, self.block.bw],
            data: Cow::Owned(bytemuck::cast_slice(&self.centroids).to_vec()),
            pad_to_8: false,
        }
    }

    /// What the report says of it.
    pub fn report(&self) -> CodebookReport {
        CodebookReport {
            group: self.group,
            stage: self.stage,
            k: self.k,
            bits: self.bits,
            block: self.block,
        }
    }
}

/// A clustered tensor once packed.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PackedTensor {
    /// Its index in the inputs.
    pub input: usize,
    /// Its block grid.
    pub grid: Grid,
    /// The file codebook of each of its stages.
    pub codebooks: Vec<usize>,
    /// Its bit-packed indices, per stage.
    pub indices: Vec<Vec<u8>>,
    /// Its scales (as prepared; [`super::finish`] refits them).
    pub scales: Option<FittedScales>,
    /// Its outliers.
    pub outliers: Outliers,
}

/// Adds group `gi`'s stage codebooks (`fits`, stage order) to `codebooks` and packs each
/// member's indices. Emits `pack g{gi}` first. Returns the members in plan order.
pub(super) fn pack_group(
    plan: GroupPlan,
    prepared: Vec<PreparedMember>,
    fits: Vec<StageFit>,
    gi: usize,
    spec: &GroupSpec,
    codebooks: &mut Vec<Codebook>,
    progress: ProgressFn<'_>,
) -> Result<Vec<PackedTensor>> {
    let mut stage_ids = Vec::with_capacity(fits.len());
    let mut assignments = Vec::with_capacity(fits.len());
    for (stage, fit) in fits.into_iter().enumerate() {
        stage_ids.push(codebooks.len());
        codebooks.push(Codebook {
            group: gi,
            stage,
            k: fit.k,
            bits: bitpack::bits_for_k(fit.k),
            block: spec.block,
            centroids: fit.centroids,
        });
        assignments.push(fit.assignments);
    }
    report_progress(
        progress,
        &Event {
            phase: format!("pack g{gi}"),
            done: 0,
            total: plan.members.len(),
        },
    )?;
    plan.members
        .into_iter()
        .zip(prepared)
        .map(|(m, p)| {
            let range = m.blocks();
            let ids = stage_ids[..m.stages].to_vec();
            let indices = ids
                .iter()
                .zip(&assignments)
                .map(|(&id, a)| bitpack::pack(&a[range.clone()], codebooks[id].bits))
                .collect::<Result<Vec<_>>>()?;
            Ok(PackedTensor {
                input: m.input,
                grid: m.grid,
                codebooks: ids,
                indices,
                scales: p.scales,
                outliers: p.outliers,
            })
        })
        .collect()
}
