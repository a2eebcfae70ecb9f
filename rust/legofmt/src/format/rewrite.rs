//! Rewriting an open `.lgn` file with some stored tensors replaced ([`LgnFile::rewrite_with`]):
//! the writer's side of a read-modify-write. The pieces are copied from the open file (checked
//! as they go) and written through [`super::writer::write_file`], atomically.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};

use super::manifest::{self, Manifest};
use super::reader::{Layout, LgnFile, ScaleRef};
use super::writer::{self, Piece};
use crate::dtype::Dtype;
use crate::error::{LgnError, Result};

impl LgnFile {
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
        if self.version().is_none() {
            return Err(LgnError::invalid(
                "path",
                "not an .lgn file (a plain safetensors file has nothing to rewrite)",
            ));
        }
        self.check_replacements(replace)?;
        let stored = self.stored();
        let mut pieces = Vec::with_capacity(stored.len());
        for st in stored {
            // Borrowed where possible: a memory-mapped file is copied straight to the new one.
            let data = match replace.get(&st.name) {
                Some(b) => Cow::Borrowed(b.as_slice()),
                None => self.pieces().whole_checked(st)?,
            };
            pieces.push(Piece {
                name: st.name.clone(),
                dtype: st.dtype,
                shape: st.shape.clone(),
                data,
                pad_to_8: false,
            });
        }
        let text = self
            .metadata()
            .get(manifest::MANIFEST_KEY)
            .ok_or_else(|| LgnError::invalid("path", "the file has no lgn.manifest"))?;
        let mut m = Manifest::from_json(text)?;
        let mut md = self.user_metadata();
        md.extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        writer::write_file(dest, pieces, Some(&mut m), &md)
    }

    /// Every replacement names a stored tensor, has its length, and (for a codebook or
    /// scales) holds finite values.
    fn check_replacements(&self, replace: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        let stored = self.stored();
        let finite_only: Vec<usize> = self
            .codebooks()
            .iter()
            .map(|c| c.stored)
            .chain(self.tensors().iter().filter_map(|t| match &t.layout {
                Layout::Clustered {
                    scale: Some(ScaleRef { stored, .. }),
                    ..
                } => Some(*stored),
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
        Ok(())
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
