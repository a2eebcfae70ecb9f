//! The `.lgn` file format: a safetensors envelope, a manifest in its metadata, a fused
//! decoder, a validating reader and an atomic writer. `spec/lgn.md` is the normative text.

pub mod decode;
pub mod envelope;
pub mod manifest;
pub mod reader;
pub mod writer;
