//! # legofmt
//!
//! Block weight clustering for neural networks and the `.lgn` file format.
//!
//! Every weight tensor of a model is cut into small blocks (4x4 by default), all blocks of a
//! group of tensors (by default the whole network) are clustered with mini-batch k-means into
//! one shared codebook, and each block is stored as a bit-packed index into it. Files are valid
//! safetensors files; `spec/lgn.md` in the repository is the normative format description.
//!
//! This crate has no Python dependency and works on its own (including on aarch64):
//!
//! ```no_run
//! use legofmt::format::reader::LgnFile;
//! let f = LgnFile::open("model.lgn")?;
//! for t in f.tensors() {
//!     let bytes = f.decode(&t.name)?; // original dtype, little endian
//!     println!("{} {:?} {} -> {} bytes", t.name, t.shape, t.dtype, bytes.len());
//! }
//! # Ok::<(), legofmt::LgnError>(())
//! ```
//!
//! Parallelism uses rayon behind the default `parallel` feature; results are identical with
//! and without it and for any thread count.

pub mod bitpack;
pub mod blocks;
pub mod compress;
pub mod dtype;
pub mod error;
pub mod format;
pub mod kmeans;
pub(crate) mod par;
pub mod scale;

pub use error::{LgnError, Result};
