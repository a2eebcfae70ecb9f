//! The stored pieces of the data section: where each stored tensor's bytes lie in the file,
//! reading a window of them, and checking their CRC-32s.
//!
//! Every read of bulk data goes through [`Pieces`]. A checksum covers a whole stored tensor,
//! so with verification on the whole piece is read (hashed while it streams through a bounded
//! buffer from a reader); with it off, only the bytes asked for are read.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use super::envelope::StoredTensor;
use super::source::Backing;
use crate::error::{LgnError, Result};

/// Bytes read per call when a stored tensor is streamed from a reader through a bounded
/// buffer (a multiple of every element size).
const STREAM_CHUNK: usize = 1 << 20;

/// The data section of an open file and the checksums of its stored tensors.
pub(crate) struct Pieces {
    /// Where the bytes come from.
    backing: Backing,
    /// The name I/O errors give the file: its path, or `<reader>`.
    io_path: PathBuf,
    /// File offset of the data section.
    data_start: usize,
    /// CRC-32 of each stored tensor, by name (empty for a plain safetensors file).
    crc32: BTreeMap<String, u32>,
}

impl Pieces {
    /// The pieces of a file whose data section starts at `data_start`.
    pub(crate) fn new(
        backing: Backing,
        io_path: PathBuf,
        data_start: usize,
        crc32: BTreeMap<String, u32>,
    ) -> Pieces {
        Pieces {
            backing,
            io_path,
            data_start,
            crc32,
        }
    }

    /// The byte source.
    pub(crate) fn backing(&self) -> &Backing {
        &self.backing
    }

    fn io_err(&self, e: std::io::Error) -> LgnError {
        LgnError::io(self.io_path.clone(), e)
    }

    /// File offset of byte `at` of stored tensor `st`.
    fn offset(&self, st: &StoredTensor, at: usize) -> u64 {
        (self.data_start + st.begin + at) as u64
    }

    /// Checks `actual`, the CRC-32 of the whole of `st`, against the manifest's.
    fn check_crc(&self, st: &StoredTensor, actual: u32) -> Result<()> {
        match self.crc32.get(&st.name) {
            Some(&expected) if expected != actual => Err(LgnError::Checksum {
                tensor: st.name.clone(),
                expected,
                actual,
            }),
            _ => Ok(()),
        }
    }

    /// Bytes `range` of stored tensor `st`, as `(bytes, skip)`: the range starts at
    /// `bytes[skip]`. With `verify` the CRC-32 of the whole stored tensor is checked first (from
    /// a reader, the whole tensor is then read and `skip` is `range.start`).
    pub(crate) fn window(
        &self,
        st: &StoredTensor,
        range: Range<usize>,
        verify: bool,
    ) -> Result<(Cow<'_, [u8]>, usize)> {
        let len = st.end - st.begin;
        debug_assert!(range.start <= range.end && range.end <= len);
        if verify || self.backing.as_slice().is_some() {
            let whole = if verify || range.len() == len {
                0..len
            } else {
                range.clone()
            };
            let b = self
                .backing
                .bytes_at(self.offset(st, whole.start), whole.len())
                .map_err(|e| self.io_err(e))?;
            if verify {
                self.check_crc(st, crc32fast::hash(&b))?;
            }
            return Ok(match b {
                Cow::Borrowed(b) => (Cow::Borrowed(&b[range.start - whole.start..]), 0),
                owned => (owned, range.start - whole.start),
            });
        }
        let b = self
            .backing
            .bytes_at(self.offset(st, range.start), range.len())
            .map_err(|e| self.io_err(e))?;
        Ok((b, 0))
    }

    /// The whole of stored tensor `st`, its CRC-32 checked.
    pub(crate) fn whole_checked(&self, st: &StoredTensor) -> Result<Cow<'_, [u8]>> {
        // The window of the whole tensor starts at 0.
        let (b, skip) = self.window(st, 0..st.end - st.begin, true)?;
        debug_assert_eq!(skip, 0);
        Ok(b)
    }

    /// Calls `f(offset, bytes)` over bytes `range` of stored tensor `st`, in order; from a
    /// reader in pieces of at most [`STREAM_CHUNK`] bytes (each a whole number of elements).
    /// With `verify`, the CRC-32 of the whole stored tensor is checked (from a reader, after the
    /// calls: the caller's output is then unspecified when an error is returned).
    pub(crate) fn visit(
        &self,
        st: &StoredTensor,
        range: Range<usize>,
        verify: bool,
        mut f: impl FnMut(usize, &[u8]),
    ) -> Result<()> {
        let len = st.end - st.begin;
        debug_assert!(range.start <= range.end && range.end <= len);
        if let Some(all) = self.backing.as_slice() {
            let start = self.data_start + st.begin;
            let b = &all[start..start + len];
            if verify {
                self.check_crc(st, crc32fast::hash(b))?;
            }
            f(0, &b[range]);
            return Ok(());
        }
        let scan = if verify { 0..len } else { range.clone() };
        let mut buf = vec![0u8; scan.len().min(STREAM_CHUNK)];
        let mut hasher = crc32fast::Hasher::new();
        let mut at = scan.start;
        while at < scan.end {
            let n = (scan.end - at).min(STREAM_CHUNK);
            let chunk = &mut buf[..n];
            self.backing
                .read_at(self.offset(st, at), chunk)
                .map_err(|e| self.io_err(e))?;
            if verify {
                hasher.update(chunk);
            }
            let (lo, hi) = (at.max(range.start), (at + n).min(range.end));
            if lo < hi {
                f(lo - range.start, &chunk[lo - at..hi - at]);
            }
            at += n;
        }
        if verify {
            self.check_crc(st, hasher.finalize())?;
        }
        Ok(())
    }

    /// Copies bytes `range` of stored tensor `st` into `out` (`range.len()` bytes), checking
    /// the CRC-32 if `verify`. From a reader the bytes are read straight into `out` unless only
    /// part of a verified tensor is wanted.
    pub(crate) fn read_into(
        &self,
        st: &StoredTensor,
        range: Range<usize>,
        verify: bool,
        out: &mut [u8],
    ) -> Result<()> {
        if self.backing.as_slice().is_none() && (!verify || range.len() == st.end - st.begin) {
            self.backing
                .read_at(self.offset(st, range.start), out)
                .map_err(|e| self.io_err(e))?;
            if verify {
                self.check_crc(st, crc32fast::hash(out))?;
            }
            return Ok(());
        }
        self.visit(st, range, verify, |o, b| {
            out[o..o + b.len()].copy_from_slice(b)
        })
    }

    /// Reads `n` little-endian U32 values from the start of stored tensor `st` (checking its
    /// CRC-32 if `verify`).
    pub(crate) fn read_u32s(&self, st: &StoredTensor, n: usize, verify: bool) -> Result<Vec<u32>> {
        let mut v = vec![0u32; n];
        self.visit(st, 0..4 * n, verify, |o, b| {
            for (d, c) in v[o / 4..(o + b.len()) / 4]
                .iter_mut()
                .zip(b.chunks_exact(4))
            {
                *d = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        })?;
        Ok(v)
    }

    /// Reads elements `elems` of float stored tensor `st` (F32, F16 or BF16) as f32 (checking
    /// its CRC-32 if `verify`).
    pub(crate) fn read_f32s(
        &self,
        st: &StoredTensor,
        elems: Range<usize>,
        verify: bool,
    ) -> Result<Vec<f32>> {
        let dtype = st.dtype;
        let es = dtype.size();
        let mut v = vec![0f32; elems.len()];
        self.visit(st, elems.start * es..elems.end * es, verify, |o, b| {
            crate::dtype::float_bytes_to_f32(dtype, b, &mut v[o / es..(o + b.len()) / es]);
        })?;
        Ok(v)
    }
}
