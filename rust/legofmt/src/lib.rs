//! # legofmt
//!
//! Block weight clustering for neural networks and the `.lgn` file format.
//!
//! Every weight tensor of a model is cut into small blocks (any shape up to 8x8; the Python
//! layer's default is 2x2), all blocks of a group of tensors (by default the whole network) are
//! clustered with k-means (Lloyd iterations on nested samples, see [`kmeans`]) into one shared
//! codebook, optionally followed by residual stages, and each block is stored as a bit-packed
//! index into it. Files are valid safetensors files; `spec/lgn.md` in the repository is the
//! normative format description. The limits of both live in [`limits`].
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
pub mod limits;
pub(crate) mod par;
pub mod scale;

pub use error::{LgnError, Result};
