//! The limits of the format and of the compressor, defined once.
//!
//! Readers check every value taken from a file against these before using it; the compressor
//! checks its parameters against the same numbers. The Python binding exports them
//! (`legofmt._legofmt.MAX_K`, ...) so that the Python layer never repeats a literal.

/// Smallest codebook size (a 1-bit index).
pub const MIN_K: usize = 2;
/// Largest codebook size (a 16-bit index).
pub const MAX_K: usize = 65536;
/// Most residual stages per clustered tensor.
pub const MAX_STAGES: usize = 16;
/// Largest side of a block, in rows or columns.
pub const MAX_BLOCK_SIDE: usize = 8;
/// Largest block (and k-means vector) dimension: `MAX_BLOCK_SIDE * MAX_BLOCK_SIDE`.
pub const MAX_BLOCK_DIM: usize = MAX_BLOCK_SIDE * MAX_BLOCK_SIDE;
/// Narrowest index width in bits.
pub const MIN_BITS: u32 = 1;
/// Widest index width in bits (`ceil(log2 MAX_K)`).
pub const MAX_BITS: u32 = 16;
/// Largest fraction of a tensor's elements the compressor stores exactly as outliers.
pub const MAX_OUTLIER_FRACTION: f64 = 0.5;
/// Largest accepted safetensors header, in bytes (the bound safetensors itself uses).
pub const MAX_HEADER_LEN: usize = 100 * 1024 * 1024;
/// Most stored tensors in one file.
pub const MAX_TENSORS: usize = 10_000_000;
/// Highest tensor rank.
pub const MAX_RANK: usize = 32;

const _: () = assert!(1usize << MAX_BITS == MAX_K);
const _: () = assert!(1usize << MIN_BITS == MIN_K);
