//! Writing `.lgn` files: lay out the stored tensors, checksum them, and write the file
//! atomically (temporary file in the same folder, fsync, rename), so a failure never leaves a
//! partial file nor replaces an existing file with a broken one.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::envelope::{Envelope, StoredTensor};
use super::manifest::{self, Manifest};
use crate::dtype::Dtype;
use crate::error::{LgnError, Result};

/// One stored tensor to write.
#[derive(Debug, Clone)]
pub struct Piece<'a> {
    /// Stored name.
    pub name: String,
    /// Stored dtype.
    pub dtype: Dtype,
    /// Stored shape.
    pub shape: Vec<usize>,
    /// Little-endian bytes.
    pub data: Cow<'a, [u8]>,
    /// For U8 index tensors: zero bytes may be appended so the next piece starts at a multiple
    /// of 8 bytes (the reader accepts up to 7 extra bytes).
    pub pad_to_8: bool,
}

/// Lays out `pieces` in the given order and returns the complete file as
/// (header bytes, pieces' final bytes). `manifest.crc32` is filled in here.
fn layout<'a>(
    mut pieces: Vec<Piece<'a>>,
    manifest: Option<&mut Manifest>,
    user_metadata: &BTreeMap<String, String>,
) -> Result<(Vec<u8>, Vec<Piece<'a>>)> {
    if let Some(k) = user_metadata
        .keys()
        .find(|k| k.starts_with(manifest::RESERVED_PREFIX))
    {
        return Err(LgnError::invalid(
            "metadata",
            format!("key `{k}` uses the reserved prefix `lgn.`"),
        ));
    }
    let mut stored = Vec::with_capacity(pieces.len());
    let mut at = 0usize;
    let mut crc = BTreeMap::new();
    for p in pieces.iter_mut() {
        if p.pad_to_8 {
            let end = at + p.data.len();
            let pad = (8 - end % 8) % 8;
            if pad > 0 {
                let data = p.data.to_mut();
                data.resize(data.len() + pad, 0);
                p.shape = vec![p.data.len()];
            }
        }
        let expect = p.shape.iter().product::<usize>() * p.dtype.size();
        if expect != p.data.len() {
            return Err(LgnError::invalid(
                "tensor",
                format!(
                    "`{}`: {} bytes for {} {:?} (needs {expect})",
                    p.name,
                    p.data.len(),
                    p.dtype,
                    p.shape
                ),
            ));
        }
        crc.insert(p.name.clone(), crc32fast::hash(&p.data));
        stored.push(StoredTensor {
            name: p.name.clone(),
            dtype: p.dtype,
            shape: p.shape.clone(),
            begin: at,
            end: at + p.data.len(),
        });
        at += p.data.len();
    }
    let mut names = std::collections::HashSet::new();
    if let Some(dup) = stored.iter().find(|s| !names.insert(s.name.as_str())) {
        return Err(LgnError::invalid(
            "tensor",
            format!("two stored tensors are named `{}`", dup.name),
        ));
    }
    let mut md = user_metadata.clone();
    if let Some(m) = manifest {
        m.crc32 = crc;
        // The oldest major that can express the file: 1.0 readers read files without outliers.
        let major = if m.has_outliers() {
            manifest::OUTLIERS_MAJOR
        } else {
            manifest::MIN_MAJOR
        };
        md.insert(
            manifest::VERSION_KEY.into(),
            format!("{major}.{}", manifest::FORMAT_MINOR),
        );
        md.insert(manifest::MANIFEST_KEY.into(), m.to_json());
    }
    Ok((Envelope::serialize(&stored, &md), pieces))
}

/// Serialises a file into memory (a manifest makes it an `.lgn` file; without, plain safetensors).
pub fn to_bytes(
    pieces: Vec<Piece<'_>>,
    manifest: Option<&mut Manifest>,
    user_metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let (header, pieces) = layout(pieces, manifest, user_metadata)?;
    let mut out = header;
    for p in &pieces {
        out.extend_from_slice(&p.data);
    }
    Ok(out)
}

/// Writes a file atomically to `path`; returns its size in bytes.
pub fn write_file(
    path: &Path,
    pieces: Vec<Piece<'_>>,
    manifest: Option<&mut Manifest>,
    user_metadata: &BTreeMap<String, String>,
) -> Result<u64> {
    let (header, pieces) = layout(pieces, manifest, user_metadata)?;
    let mut tmp = TempFile::new(path)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut tmp.file);
    let io = |e| LgnError::io(path, e);
    w.write_all(&header).map_err(io)?;
    let mut total = header.len() as u64;
    for p in &pieces {
        w.write_all(&p.data).map_err(io)?;
        total += p.data.len() as u64;
    }
    w.flush().map_err(io)?;
    drop(w);
    tmp.commit()?;
    Ok(total)
}

/// A temporary file beside the destination, removed on drop unless committed.
struct TempFile {
    file: std::fs::File,
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl TempFile {
    fn new(dest: &Path) -> Result<TempFile> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if dest.is_dir() {
            return Err(LgnError::io(
                dest,
                std::io::Error::other("destination is a directory"),
            ));
        }
        let base = dest
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = dir.join(format!(".{base}.tmp.{}.{nanos}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| LgnError::io(dest, e))?;
        Ok(TempFile {
            file,
            tmp,
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    fn commit(mut self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| LgnError::io(&self.dest, e))?;
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| LgnError::io(&self.dest, e))?;
        self.committed = true;
        if let Some(dir) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Persist the rename; not every platform can open a directory, so ignore failures.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_nothing_and_keeps_the_old_file() {
        let dir = std::env::temp_dir().join(format!("lgn-writer-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("m.lgn");
        std::fs::write(&dest, b"old").unwrap();
        let bad = vec![Piece {
            name: "a".into(),
            dtype: Dtype::F32,
            shape: vec![3],
            data: Cow::Owned(vec![0; 4]),
            pad_to_8: false,
        }];
        assert!(write_file(&dest, bad, None, &BTreeMap::new()).is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        let good = vec![Piece {
            name: "a".into(),
            dtype: Dtype::F32,
            shape: vec![1],
            data: Cow::Owned(vec![0; 4]),
            pad_to_8: false,
        }];
        let n = write_file(&dest, good, None, &BTreeMap::new()).unwrap();
        assert_eq!(std::fs::metadata(&dest).unwrap().len(), n);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
