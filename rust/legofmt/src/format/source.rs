//! The byte source of an open file: a read-only memory map, the whole file in memory, or any
//! `Read + Seek` source read on demand.
//!
//! [`Backing`] knows nothing of the format: it hands out bytes at file offsets, borrowed when
//! the file is mapped or in memory and read into a new buffer otherwise. The pieces of the
//! data section and their checksums are [`super::pieces`]' concern.

use std::borrow::Cow;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Mutex;

/// The name errors use for a file read through a reader (no path is known).
pub(crate) const READER_NAME: &str = "<reader>";

/// A `Read + Seek` source that a [`Backing::Reader`] reads on demand.
pub(crate) trait Source: Read + Seek + Send {}
impl<T: Read + Seek + Send> Source for T {}

/// Where the bytes of an open file come from.
pub(crate) enum Backing {
    /// A read-only memory map of the file.
    Mmap(memmap2::Mmap),
    /// The whole file in memory.
    Bytes(Vec<u8>),
    /// A reader, read on demand by one caller at a time (decoding itself runs unlocked).
    Reader(Mutex<Box<dyn Source>>),
}

impl Backing {
    /// A backing that reads `reader` on demand.
    pub(crate) fn reader(reader: impl Source + 'static) -> Backing {
        Backing::Reader(Mutex::new(Box::new(reader)))
    }

    /// What kind of backing this is, in one word (for `Debug`).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Backing::Mmap(_) => "mmap",
            Backing::Bytes(_) => "bytes",
            Backing::Reader(_) => "reader",
        }
    }

    /// The whole file when it is mapped or in memory.
    pub(crate) fn as_slice(&self) -> Option<&[u8]> {
        match self {
            Backing::Mmap(m) => Some(m),
            Backing::Bytes(b) => Some(b),
            Backing::Reader(_) => None,
        }
    }

    /// The length of the file: of a reader, from `seek(SeekFrom::End(0))`.
    pub(crate) fn len(&self) -> std::io::Result<u64> {
        match self {
            Backing::Reader(r) => {
                let mut r = r.lock().unwrap_or_else(|p| p.into_inner());
                r.seek(SeekFrom::End(0))
            }
            other => Ok(other.as_slice().map_or(0, |b| b.len() as u64)),
        }
    }

    /// Fills `out` with the bytes at `offset`.
    pub(crate) fn read_at(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        match self {
            Backing::Reader(r) => {
                let mut r = r.lock().unwrap_or_else(|p| p.into_inner());
                r.seek(SeekFrom::Start(offset))?;
                r.read_exact(out)
            }
            other => {
                let all = other.as_slice().unwrap_or_default();
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|o| all.get(o..o.checked_add(out.len())?))
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
                out.copy_from_slice(src);
                Ok(())
            }
        }
    }

    /// `len` bytes at `offset`: borrowed when in memory, else read into a new buffer.
    pub(crate) fn bytes_at(&self, offset: u64, len: usize) -> std::io::Result<Cow<'_, [u8]>> {
        if let Some(all) = self.as_slice() {
            let at = usize::try_from(offset).unwrap_or(usize::MAX);
            return at
                .checked_add(len)
                .and_then(|end| all.get(at..end))
                .map(Cow::Borrowed)
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        let mut v = vec![0u8; len];
        self.read_at(offset, &mut v)?;
        Ok(Cow::Owned(v))
    }
}
