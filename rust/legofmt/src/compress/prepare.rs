//! Step 2, prepare: each member's values as f32, its outliers taken out, its scales computed
//! and its blocks cut (scaled) into the group's block matrix.
//!
//! Outliers are taken only where clustering loses something: a group with at most `k`
//! distinct blocks is stored exactly without them (taking some out would only add blocks).
//! So a group that asks for outliers is first prepared without them, and prepared again with
//! them as soon as its blocks are seen to be more than `k` distinct ones.

use std::collections::HashSet;

use super::outliers::Outliers;
use super::plan::{GroupPlan, Member};
use super::{report_progress, to_f32, Event, GroupSpec, ProgressFn, TensorInput};
use crate::blocks::extract;
use crate::error::{LgnError, Result};
use crate::scale::{self, FittedScales};

/// What preparing gave one member.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PreparedMember {
    /// Its scales as computed before clustering (refit by [`super::finish`]), if any.
    pub scales: Option<FittedScales>,
    /// Its outliers (none when the group needs none).
    pub outliers: Outliers,
}

/// A prepared group: the block matrix to cluster and, per member of the plan (same order),
/// what preparing it gave.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PreparedGroup {
    /// `plan.n_blocks x dim` values: every member's scaled blocks, in plan order.
    pub blocks: Vec<f32>,
    /// Parallel to `plan.members`.
    pub members: Vec<PreparedMember>,
}

/// Prepares group `gi` (`spec`, planned as `plan`). Emits `prepare g{gi}` before each member.
pub(super) fn prepare_group(
    inputs: &[TensorInput<'_>],
    plan: &GroupPlan,
    spec: &GroupSpec,
    gi: usize,
    progress: ProgressFn<'_>,
) -> Result<PreparedGroup> {
    let group = Group {
        inputs,
        plan,
        spec,
        gi,
        progress,
    };
    let mut blocks = vec![0f32; plan.n_blocks * spec.block.dim()];
    if spec.outliers > 0.0 {
        if let Some(members) = group.prepare_if_exact(&mut blocks)? {
            return Ok(PreparedGroup { blocks, members });
        }
    }
    let members = (0..plan.members.len())
        .map(|mi| group.prepare(mi, spec.outliers, &mut blocks))
        .collect::<Result<Vec<_>>>()?;
    Ok(PreparedGroup { blocks, members })
}

/// What preparing one member of a group needs.
struct Group<'g, 'a> {
    inputs: &'g [TensorInput<'a>],
    plan: &'g GroupPlan,
    spec: &'g GroupSpec,
    gi: usize,
    progress: ProgressFn<'g>,
}

impl Group<'_, '_> {
    /// Prepares every member without outliers, or stops and returns `None` as soon as the
    /// blocks prepared so far are more than `k` distinct ones.
    fn prepare_if_exact(&self, blocks: &mut [f32]) -> Result<Option<Vec<PreparedMember>>> {
        let dim = self.spec.block.dim();
        let mut distinct = DistinctBlocks::new(self.spec.k, dim);
        let mut members = Vec::with_capacity(self.plan.members.len());
        for (mi, m) in self.plan.members.iter().enumerate() {
            members.push(self.prepare(mi, 0.0, blocks)?);
            let range = m.blocks();
            if !distinct.add(&blocks[range.start * dim..range.end * dim]) {
                return Ok(None);
            }
        }
        Ok(Some(members))
    }

    /// Prepares member `mi` with outliers of `fraction`, its blocks into `blocks` (the
    /// group's block matrix), after emitting its progress event.
    fn prepare(&self, mi: usize, fraction: f64, blocks: &mut [f32]) -> Result<PreparedMember> {
        report_progress(
            self.progress,
            &Event {
                phase: format!("prepare g{}", self.gi),
                done: mi,
                total: self.plan.members.len(),
            },
        )?;
        let m = &self.plan.members[mi];
        let dim = self.spec.block.dim();
        let range = m.blocks();
        let out = &mut blocks[range.start * dim..range.end * dim];
        prepare_member(&self.inputs[m.input], m, self.spec, fraction, out)
    }
}

/// Prepares member `m` (input `t`): its values checked finite, outliers of `fraction` taken
/// out, scales computed, blocks extracted into `out` (`m`'s blocks of the block matrix).
fn prepare_member(
    t: &TensorInput<'_>,
    m: &Member,
    spec: &GroupSpec,
    fraction: f64,
    out: &mut [f32],
) -> Result<PreparedMember> {
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
    let outliers = Outliers::take(&mut x, m.grid.rows, m.grid.cols, fraction);
    let scales = scale::compute(&x, m.grid.rows, m.grid.cols, spec.scale, spec.scale_stat);
    let mul = scales.as_ref().map(|s| s.row_multipliers(m.grid.rows));
    extract(&x, &m.grid, mul.as_deref(), out);
    Ok(PreparedMember { scales, outliers })
}

/// The distinct blocks (bit patterns) seen so far, counted up to a bound.
pub(super) struct DistinctBlocks {
    seen: HashSet<Box<[u32]>>,
    bound: usize,
    dim: usize,
}

impl DistinctBlocks {
    /// A count of `dim`-element blocks that fails past `bound` distinct ones.
    pub fn new(bound: usize, dim: usize) -> DistinctBlocks {
        DistinctBlocks {
            seen: HashSet::new(),
            bound,
            dim,
        }
    }

    /// Adds `blocks` (`n x dim`); `false` as soon as more than the bound are distinct.
    pub fn add(&mut self, blocks: &[f32]) -> bool {
        let bits: &[u32] = bytemuck::cast_slice(blocks);
        for key in bits.chunks_exact(self.dim) {
            if !self.seen.contains(key) {
                self.seen.insert(key.into());
                if self.seen.len() > self.bound {
                    return false;
                }
            }
        }
        true
    }
}
