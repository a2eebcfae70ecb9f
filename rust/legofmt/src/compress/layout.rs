//! Step 6, lay out: the manifest, the report of each tensor and the stored pieces in file
//! order: codebooks, then each clustered tensor's outliers, scales and indices (input order),
//! then raw tensors by decreasing element size (keeps every tensor naturally aligned; see
//! spec/lgn.md).

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::finish::FinishedTensor;
use super::pack::Codebook;
use super::{TensorInput, TensorReport};
use crate::dtype::Dtype;
use crate::format::manifest::{
    self, Encoding, Manifest, OutliersEntry, OutliersMember, ScaleEntry, StageEntry, TensorEntry,
};
use crate::format::writer::Piece;

/// The file to write, before the writer lays out the bytes.
pub(super) struct Layout<'a> {
    /// Stored pieces, in file order.
    pub pieces: Vec<Piece<'a>>,
    /// The manifest (checksums are filled in by the writer).
    pub manifest: Manifest,
    /// Per tensor, in input order.
    pub tensors: Vec<TensorReport>,
}

/// Lays out `inputs`: `finished[i]` is input `i` clustered, `None` for a raw one.
pub(super) fn lay_out<'a>(
    inputs: &[TensorInput<'a>],
    codebooks: &[Codebook],
    finished: Vec<Option<FinishedTensor>>,
) -> Layout<'a> {
    let mut manifest = Manifest {
        codebooks: codebooks
            .iter()
            .enumerate()
            .map(|(id, c)| c.entry(id))
            .collect(),
        tensors: Vec::with_capacity(inputs.len()),
        crc32: BTreeMap::new(),
    };
    let mut pieces: Vec<Piece<'a>> = codebooks
        .iter()
        .enumerate()
        .map(|(id, c)| c.piece(id))
        .collect();
    let mut tensors = Vec::with_capacity(inputs.len());
    for (t, f) in inputs.iter().zip(finished) {
        let (entry, report) = match f {
            Some(f) => lay_out_clustered(t, codebooks, f, &mut pieces),
            None => raw_entry(t),
        };
        manifest.tensors.push(entry);
        tensors.push(report);
    }
    let mut raw: Vec<&TensorInput<'a>> = inputs.iter().filter(|t| t.group.is_none()).collect();
    raw.sort_by_key(|t| std::cmp::Reverse(t.dtype.size()));
    pieces.extend(raw.into_iter().map(|t| Piece {
        name: t.name.clone(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        data: Cow::Borrowed(t.data),
        pad_to_8: false,
    }));
    Layout {
        pieces,
        manifest,
        tensors,
    }
}

/// The manifest entry and report of raw tensor `t` (its piece is laid out at the end).
fn raw_entry(t: &TensorInput<'_>) -> (TensorEntry, TensorReport) {
    let entry = TensorEntry {
        name: t.name.clone(),
        dtype: t.dtype.name().into(),
        shape: t.shape.clone(),
        encoding: Encoding::Raw,
    };
    let report = TensorReport {
        name: t.name.clone(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        clustered: false,
        stored_bytes: t.data.len() as u64,
        index_bits: 0,
        rel_mse: 0.0,
        max_abs_err: 0.0,
        outliers: 0,
    };
    (entry, report)
}

/// Appends clustered tensor `t`'s pieces (outlier positions and values, scales, indices per
/// stage) and returns its manifest entry and report.
fn lay_out_clustered(
    t: &TensorInput<'_>,
    codebooks: &[Codebook],
    f: FinishedTensor,
    pieces: &mut Vec<Piece<'_>>,
) -> (TensorEntry, TensorReport) {
    let p = f.packed;
    let mut stored_bytes = 0u64;
    let n_outliers = p.outliers.len();
    let outliers = if p.outliers.is_empty() {
        None
    } else {
        let (iname, vname) = (
            manifest::outlier_index_name(&t.name),
            manifest::outlier_value_name(&t.name),
        );
        let (ib, vb) = p.outliers.to_bytes();
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
    let scale = p.scales.map(|s| {
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
            mode: s.mode.name().into(),
            tensor: name,
        }
    });
    let n_stages = p.indices.len();
    let mut stages = Vec::with_capacity(n_stages);
    let mut index_bits = 0;
    for (s, (&id, packed)) in p.codebooks.iter().zip(p.indices).enumerate() {
        let name = manifest::indices_name(&t.name, s);
        stored_bytes += packed.len() as u64;
        index_bits += codebooks[id].bits;
        pieces.push(Piece {
            name: name.clone(),
            dtype: Dtype::U8,
            shape: vec![packed.len()],
            data: Cow::Owned(packed),
            // The next piece starts on 8 bytes (see spec/lgn.md).
            pad_to_8: s + 1 == n_stages,
        });
        stages.push(StageEntry {
            codebook: id,
            indices: name,
        });
    }
    let entry = TensorEntry {
        name: t.name.clone(),
        dtype: t.dtype.name().into(),
        shape: t.shape.clone(),
        encoding: Encoding::Clustered {
            stages,
            scale,
            outliers,
        },
    };
    let report = TensorReport {
        name: t.name.clone(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        clustered: true,
        stored_bytes,
        index_bits,
        rel_mse: f.rel_mse,
        max_abs_err: f.max_abs_err,
        outliers: n_outliers,
    };
    (entry, report)
}
