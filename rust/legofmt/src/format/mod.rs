//! The `.lgn` file format: a safetensors envelope, a manifest in its metadata, a fused
//! decoder, a validating reader and an atomic writer. `spec/lgn.md` is the normative text.
//!
//! One concept per module: [`envelope`] (the safetensors container), [`manifest`] (the JSON
//! manifest as written), [`layout`] (the validated in-memory layout), `source` (the byte
//! source: mmap, bytes or a reader), `pieces` (stored pieces and their CRC-32s), `window`
//! (which bytes a range of rows needs), [`decode`] (the fused decoder), [`reader`]
//! ([`reader::LgnFile`]), [`writer`] (atomic writes) and `rewrite`
//! ([`reader::LgnFile::rewrite_with`]).

pub mod decode;
pub mod envelope;
mod json;
pub mod layout;
pub mod manifest;
mod pieces;
pub mod reader;
mod rewrite;
mod source;
mod window;
pub mod writer;
