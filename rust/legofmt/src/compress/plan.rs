//! Step 1, plan groups: the inputs are checked once, then each group's members are put in
//! clustering order and given their place in the group's block matrix.

use std::collections::HashSet;
use std::ops::Range;

use super::{CompressOptions, GroupSpec, TensorInput};
use crate::blocks::Grid;
use crate::error::{LgnError, Result};
use crate::format::manifest;

/// One clustered tensor of a group.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Member {
    /// Its index in the inputs.
    pub input: usize,
    /// Its residual stages.
    pub stages: usize,
    /// Its block grid.
    pub grid: Grid,
    /// Where its blocks start in the group's block matrix.
    pub first_block: usize,
}

impl Member {
    /// Its blocks in the group's block matrix.
    pub fn blocks(&self) -> Range<usize> {
        self.first_block..self.first_block + self.grid.n_blocks()
    }
}

/// The members of one group, most stages first, and the size of their block matrix.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct GroupPlan {
    /// Members by decreasing stage count (stable: input order among equals), their blocks in
    /// that order. The blocks stage `s` clusters are then a prefix of the block matrix.
    pub members: Vec<Member>,
    /// Stages of the group's codebooks: the most any member has.
    pub n_stages: usize,
    /// Blocks of all members.
    pub n_blocks: usize,
}

impl GroupPlan {
    /// Blocks of the members with more than `s` stages (a prefix of the block matrix).
    pub fn stage_blocks(&self, s: usize) -> usize {
        self.members
            .iter()
            .filter(|m| m.stages > s)
            .map(|m| m.grid.n_blocks())
            .sum()
    }
}

/// Plans group `gi` (`spec`) over validated `inputs`, or `None` when no input names it.
pub(super) fn plan_group(
    inputs: &[TensorInput<'_>],
    gi: usize,
    spec: &GroupSpec,
) -> Result<Option<GroupPlan>> {
    let stages_of = |i: usize| inputs[i].stages.unwrap_or(spec.stages);
    let mut member_inputs: Vec<usize> = (0..inputs.len())
        .filter(|&i| inputs[i].group == Some(gi))
        .collect();
    if member_inputs.is_empty() {
        return Ok(None);
    }
    // Most stages first (stable): the blocks stage `s` clusters are then a prefix.
    member_inputs.sort_by_key(|&i| std::cmp::Reverse(stages_of(i)));
    let n_stages = stages_of(member_inputs[0]);
    let mut members = Vec::with_capacity(member_inputs.len());
    let mut n_blocks = 0usize;
    for i in member_inputs {
        let grid = Grid::new(&inputs[i].shape, spec.block)?;
        members.push(Member {
            input: i,
            stages: stages_of(i),
            grid,
            first_block: n_blocks,
        });
        n_blocks += grid.n_blocks();
    }
    Ok(Some(GroupPlan {
        members,
        n_stages,
        n_blocks,
    }))
}

/// Whether a tensor name is reserved by the format.
fn reserved(name: &str) -> bool {
    name.starts_with(manifest::RESERVED_PREFIX) || name.contains(".lgn.")
}

/// Checks the groups and every input (name, byte count, group, dtype, shape, stages) before
/// any work starts.
pub(super) fn validate_inputs(inputs: &[TensorInput<'_>], opts: &CompressOptions) -> Result<()> {
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
        match t.group {
            Some(g) => validate_member(t, g, opts)?,
            None if t.stages.is_some() => {
                return Err(LgnError::invalid(
                    "stages",
                    format!("tensor `{}` is stored raw: it has no stages", t.name),
                ));
            }
            None => {}
        }
    }
    Ok(())
}

/// Checks what clustering `t` into group `g` needs: the group, a clusterable dtype, a shape
/// that tiles, a stage count the group has.
fn validate_member(t: &TensorInput<'_>, g: usize, opts: &CompressOptions) -> Result<()> {
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
    Ok(())
}
