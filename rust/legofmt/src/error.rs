//! The one error type of the crate.
//!
//! Every failure names what went wrong and where: the file, the tensor and the field (or byte
//! offset) involved. The Python bindings map each variant onto a subclass of `legofmt.LgnError`,
//! so the variants are grouped by what a caller can do about them:
//! bad arguments ([`LgnError::InvalidArgument`]), a bad or hostile file ([`LgnError::Format`],
//! [`LgnError::Checksum`], [`LgnError::UnsupportedVersion`]), I/O ([`LgnError::Io`]) and a
//! cancelled operation ([`LgnError::Cancelled`]).

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = LgnError> = std::result::Result<T, E>;

/// Everything that can go wrong in legofmt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LgnError {
    /// A caller passed an argument outside its documented range (k, block shape, dtype, ...).
    #[error("invalid argument `{name}`: {message}")]
    InvalidArgument {
        /// The argument's name as the caller spelled it.
        name: &'static str,
        /// What is wrong and what is accepted.
        message: String,
    },

    /// A file is not a valid `.lgn` / safetensors file. `tensor` and `field` locate the problem.
    #[error("invalid .lgn file{}: {message}", location(.tensor, .field))]
    Format {
        /// The stored or logical tensor the problem is in, if any.
        tensor: Option<String>,
        /// The header field or byte range at fault, if any.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },

    /// The CRC-32 stored for a tensor's bytes does not match the bytes.
    #[error("checksum mismatch in tensor `{tensor}`: stored {expected:#010x}, computed {actual:#010x} (the file is corrupt)")]
    Checksum {
        /// The stored (safetensors) tensor whose bytes are corrupt.
        tensor: String,
        /// CRC-32 recorded in the manifest.
        expected: u32,
        /// CRC-32 of the bytes found.
        actual: u32,
    },

    /// The file was written by a newer, incompatible version of the format.
    #[error("unsupported .lgn format version {found} (this reader supports major versions 1 to {supported}); upgrade legofmt")]
    UnsupportedVersion {
        /// The version string found in the file.
        found: String,
        /// The newest major version this reader implements (it reads majors 1 to this).
        supported: u32,
    },

    /// An operating-system I/O error, with the path involved.
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A progress callback asked to stop.
    #[error("operation cancelled")]
    Cancelled,
}

fn location(tensor: &Option<String>, field: &Option<String>) -> String {
    match (tensor, field) {
        (Some(t), Some(f)) => format!(" (tensor `{t}`, field `{f}`)"),
        (Some(t), None) => format!(" (tensor `{t}`)"),
        (None, Some(f)) => format!(" (field `{f}`)"),
        (None, None) => String::new(),
    }
}

impl LgnError {
    /// A format error not tied to one tensor.
    pub fn format(message: impl Into<String>) -> Self {
        LgnError::Format {
            tensor: None,
            field: None,
            message: message.into(),
        }
    }

    /// A format error located at a tensor and one of its fields.
    pub fn tensor_format(
        tensor: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        LgnError::Format {
            tensor: Some(tensor.into()),
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// An invalid argument.
    pub fn invalid(name: &'static str, message: impl Into<String>) -> Self {
        LgnError::InvalidArgument {
            name,
            message: message.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LgnError::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_location() {
        let e = LgnError::tensor_format("fc.weight", "shape", "product overflows");
        assert_eq!(
            e.to_string(),
            "invalid .lgn file (tensor `fc.weight`, field `shape`): product overflows"
        );
        let e = LgnError::invalid("k", "must be in 2..=65536, got 1");
        assert_eq!(
            e.to_string(),
            "invalid argument `k`: must be in 2..=65536, got 1"
        );
    }

    #[test]
    fn error_is_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<LgnError>();
    }
}
