//! The `.lgn` manifest: the JSON document stored as the string `__metadata__["lgn.manifest"]`
//! that tells a reader how to rebuild every original tensor from the stored ones.
//! `spec/lgn.md` is the normative description; these types mirror it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{LgnError, Result};

/// Newest major version read and written by this crate: 2 (version 1.0 plus outliers). A
/// reader accepts majors [`MIN_MAJOR`]`..=FORMAT_MAJOR` and rejects the others.
pub const FORMAT_MAJOR: u32 = 2;
/// Oldest major version read (and written, for files without outliers) by this crate.
pub const MIN_MAJOR: u32 = 1;
/// Minor version written by this crate. A reader accepts any minor of a major it reads
/// (unknown fields added by later minors are ignored).
pub const FORMAT_MINOR: u32 = 0;
/// First major version with outliers: in older files the `outliers` member is ignored.
pub const OUTLIERS_MAJOR: u32 = 2;
/// Metadata key holding `"MAJOR.MINOR"`.
pub const VERSION_KEY: &str = "lgn.version";
/// Metadata key holding the manifest JSON.
pub const MANIFEST_KEY: &str = "lgn.manifest";
/// Prefix reserved for legofmt's metadata keys.
pub const RESERVED_PREFIX: &str = "lgn.";
pub use crate::limits::MAX_STAGES;

/// Name of the stored tensor holding codebook `i`.
pub fn codebook_name(i: usize) -> String {
    format!("lgn.codebook.{i}")
}
/// Name of the stored tensor holding the packed indices of stage `s` of tensor `name`.
pub fn indices_name(name: &str, s: usize) -> String {
    format!("{name}.lgn.idx{s}")
}
/// Name of the stored tensor holding the scales of tensor `name`.
pub fn scale_name(name: &str) -> String {
    format!("{name}.lgn.scale")
}
/// Name of the stored U32 tensor holding the outlier positions of tensor `name`.
pub fn outlier_index_name(name: &str) -> String {
    format!("{name}.lgn.outlier_index")
}
/// Name of the stored F32 tensor holding the outlier values of tensor `name`.
pub fn outlier_value_name(name: &str) -> String {
    format!("{name}.lgn.outlier_value")
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Shared codebooks, referenced by index.
    pub codebooks: Vec<CodebookEntry>,
    /// Every original tensor, in the order it was saved.
    pub tensors: Vec<TensorEntry>,
    /// CRC-32 (IEEE 802.3 / zlib polynomial) of the bytes of each stored tensor, by stored name.
    pub crc32: BTreeMap<String, u32>,
}

/// One codebook: `k` codewords of `bh x bw` values, stored as F32 `[k, bh, bw]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodebookEntry {
    /// Stored tensor name (`lgn.codebook.N`).
    pub tensor: String,
    /// Number of codewords, 2..=65536.
    pub k: usize,
    /// Index width: `ceil(log2 k)`.
    pub bits: u32,
    /// Block shape `[bh, bw]`.
    pub block: [usize; 2],
}

/// One original tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorEntry {
    /// Original name.
    pub name: String,
    /// Original dtype (safetensors name).
    pub dtype: String,
    /// Original shape.
    pub shape: Vec<usize>,
    /// How it is stored.
    #[serde(flatten)]
    pub encoding: Encoding,
}

/// How an original tensor is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "encoding", rename_all = "lowercase")]
pub enum Encoding {
    /// Stored unchanged as the safetensors tensor of the same name.
    Raw,
    /// Block-clustered.
    Clustered {
        /// Residual stages; the decoded value is the sum of one codeword per stage.
        stages: Vec<StageEntry>,
        /// Scales applied after summing, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scale: Option<ScaleEntry>,
        /// Elements stored exactly (format 2.0; ignored in files of major 1, where it is an
        /// unknown member and may hold anything). A member present as `null` is
        /// [`OutliersMember::Malformed`], not absent.
        #[serde(
            default,
            deserialize_with = "present_outliers",
            skip_serializing_if = "Option::is_none"
        )]
        outliers: Option<OutliersMember>,
    },
}

/// The `outliers` member as found: well formed, or anything else (an error in a file of major
/// 2, an ignored unknown member in a file of major 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum OutliersMember {
    /// An object with string members `indices` and `values`.
    Entry(OutliersEntry),
    /// Any other JSON value.
    Malformed(serde_json::Value),
}

impl<'de> Deserialize<'de> for OutliersMember {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // Only a JSON object with string members `indices` and `values` (others ignored) is
        // an entry: serde's derived struct parsing would also take an array.
        let v = serde_json::Value::deserialize(d)?;
        let entry = v.as_object().and_then(|o| {
            Some(OutliersEntry {
                indices: o.get("indices")?.as_str()?.to_owned(),
                values: o.get("values")?.as_str()?.to_owned(),
            })
        });
        Ok(entry.map_or(OutliersMember::Malformed(v), OutliersMember::Entry))
    }
}

/// A present `outliers` member, whatever it holds (`null` included: the spec's `null` never
/// means absent); an absent one is `None` through `#[serde(default)]`.
fn present_outliers<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<OutliersMember>, D::Error> {
    OutliersMember::deserialize(d).map(Some)
}

/// The outliers of a clustered tensor (format 2.0): elements whose decoded value is stored
/// exactly, replacing the reconstruction at their positions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutliersEntry {
    /// Stored U32 tensor `[n]`: flat (row-major) positions, strictly increasing.
    pub indices: String,
    /// Stored F32 tensor `[n]`: the values, in the same order.
    pub values: String,
}

/// One residual stage of a clustered tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageEntry {
    /// Index into [`Manifest::codebooks`].
    pub codebook: usize,
    /// Stored U8 tensor of packed indices.
    pub indices: String,
}

/// The scales of a clustered tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleEntry {
    /// `"row"` (one per row of the 2-D view) or `"tensor"` (one value).
    pub mode: String,
    /// Stored F16 or F32 tensor of scales.
    pub tensor: String,
}

/// Parses `"MAJOR.MINOR"` and checks the major is supported.
pub fn check_version(v: &str) -> Result<(u32, u32)> {
    let bad = || LgnError::Format {
        tensor: None,
        field: Some(VERSION_KEY.into()),
        message: format!("`{v}` is not a MAJOR.MINOR version"),
    };
    let (a, b) = v.split_once('.').ok_or_else(bad)?;
    let major: u32 = a.parse().map_err(|_| bad())?;
    let minor: u32 = b.parse().map_err(|_| bad())?;
    if !(MIN_MAJOR..=FORMAT_MAJOR).contains(&major) {
        return Err(LgnError::UnsupportedVersion {
            found: v.to_string(),
            supported: FORMAT_MAJOR,
        });
    }
    Ok((major, minor))
}

impl Manifest {
    /// Parses the manifest JSON.
    pub fn from_json(s: &str) -> Result<Manifest> {
        let err = |message: String| LgnError::Format {
            tensor: None,
            field: Some(MANIFEST_KEY.into()),
            message,
        };
        let m: Manifest =
            serde_json::from_str(s).map_err(|e| err(format!("manifest is not valid: {e}")))?;
        // serde's derived parsing also takes a JSON array for a struct: the spec's objects
        // must be objects.
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|e| err(format!("manifest is not valid: {e}")))?;
        let object = |v: Option<&serde_json::Value>, at: &str| match v {
            Some(x) if !x.is_object() => Err(err(format!("`{at}` must be a JSON object"))),
            _ => Ok(()),
        };
        object(Some(&v), "manifest")?;
        // No object repeats a member name, unknown members and map keys (`crc32`) included.
        super::json::check_unique_members(s)
            .map_err(|e| err(format!("manifest is not valid: {e}")))?;
        let items = |key: &str| v[key].as_array().cloned().unwrap_or_default();
        for (i, c) in items("codebooks").iter().enumerate() {
            object(Some(c), &format!("codebooks[{i}]"))?;
        }
        for (i, t) in items("tensors").iter().enumerate() {
            object(Some(t), &format!("tensors[{i}]"))?;
            // `scale` and `stages` are members of clustered tensors only: on a raw tensor they
            // are unknown members, ignored whatever they hold.
            if t.get("encoding").and_then(|e| e.as_str()) != Some("clustered") {
                continue;
            }
            object(t.get("scale"), &format!("tensors[{i}].scale"))?;
            if let Some(stages) = t.get("stages").and_then(|s| s.as_array()) {
                for (j, st) in stages.iter().enumerate() {
                    object(Some(st), &format!("tensors[{i}].stages[{j}]"))?;
                }
            }
        }
        Ok(m)
    }

    /// Whether any clustered tensor has outliers (which needs format 2.0).
    pub fn has_outliers(&self) -> bool {
        self.tensors.iter().any(|t| {
            matches!(
                t.encoding,
                Encoding::Clustered {
                    outliers: Some(_),
                    ..
                }
            )
        })
    }

    /// Serialises the manifest to compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("manifest serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_as_specified() {
        let m = Manifest {
            codebooks: vec![CodebookEntry {
                tensor: codebook_name(0),
                k: 256,
                bits: 8,
                block: [4, 4],
            }],
            tensors: vec![
                TensorEntry {
                    name: "b".into(),
                    dtype: "F32".into(),
                    shape: vec![3],
                    encoding: Encoding::Raw,
                },
                TensorEntry {
                    name: "w".into(),
                    dtype: "F16".into(),
                    shape: vec![8, 8],
                    encoding: Encoding::Clustered {
                        stages: vec![StageEntry {
                            codebook: 0,
                            indices: indices_name("w", 0),
                        }],
                        scale: Some(ScaleEntry {
                            mode: "row".into(),
                            tensor: scale_name("w"),
                        }),
                        outliers: None,
                    },
                },
            ],
            crc32: BTreeMap::new(),
        };
        let j = m.to_json();
        assert!(
            j.contains(r#"{"name":"b","dtype":"F32","shape":[3],"encoding":"raw"}"#),
            "{j}"
        );
        assert!(
            j.contains(
                r#""encoding":"clustered","stages":[{"codebook":0,"indices":"w.lgn.idx0"}]"#
            ),
            "{j}"
        );
        assert_eq!(Manifest::from_json(&j).unwrap(), m);
    }

    #[test]
    fn versions() {
        assert_eq!(check_version("1.0").unwrap(), (1, 0));
        assert_eq!(check_version("1.7").unwrap(), (1, 7));
        assert_eq!(check_version("2.0").unwrap(), (2, 0));
        assert_eq!(check_version("2.9").unwrap(), (2, 9));
        for v in ["0.9", "3.0"] {
            assert!(matches!(
                check_version(v),
                Err(LgnError::UnsupportedVersion { .. })
            ));
        }
        assert!(check_version("1").is_err());
        assert!(check_version("x.y").is_err());
    }
}
