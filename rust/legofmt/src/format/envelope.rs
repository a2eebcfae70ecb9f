//! The safetensors envelope: an 8-byte little-endian header length `N`, `N` bytes of JSON
//! (padded with spaces), then the data section.
//!
//! This is a strict, bounded parser of that envelope: it enforces every rule of the
//! safetensors format (no holes, no overlaps, sizes match dtypes and shapes, no duplicate
//! names) with checked arithmetic, and reports which tensor and field are wrong. It needs only
//! the header bytes and the file size, so it serves both memory-mapped and streaming readers.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use crate::dtype::Dtype;
use crate::error::{LgnError, Result};

/// Bytes of the header-length prefix.
pub const PREFIX_LEN: usize = 8;
pub use crate::limits::{MAX_HEADER_LEN, MAX_RANK, MAX_TENSORS};
/// The metadata key of the safetensors header.
pub const METADATA_KEY: &str = "__metadata__";

/// One stored tensor as the envelope describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTensor {
    /// Name in the safetensors header.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Byte range `[begin, end)` relative to the start of the data section.
    pub begin: usize,
    /// End of the byte range (exclusive).
    pub end: usize,
}

impl StoredTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The parsed envelope.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Length of the JSON header in bytes (`N`).
    pub header_len: usize,
    /// Stored tensors in data order (sorted by offset).
    pub tensors: Vec<StoredTensor>,
    /// `__metadata__` (string to string), empty if absent.
    pub metadata: BTreeMap<String, String>,
}

impl Envelope {
    /// Offset of the data section from the start of the file.
    pub fn data_start(&self) -> usize {
        PREFIX_LEN + self.header_len
    }

    /// Reads the header length from the first 8 bytes and checks it against the file size.
    pub fn header_len_from_prefix(prefix: &[u8], file_len: u64) -> Result<usize> {
        let p: [u8; PREFIX_LEN] = prefix
            .get(..PREFIX_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| {
                LgnError::format(format!(
                    "file is {file_len} bytes, too short for the 8-byte header length"
                ))
            })?;
        let n = u64::from_le_bytes(p);
        if n > MAX_HEADER_LEN as u64 {
            return Err(LgnError::Format {
                tensor: None,
                field: Some("header length".into()),
                message: format!("header length {n} exceeds the limit of {MAX_HEADER_LEN} bytes"),
            });
        }
        if n + PREFIX_LEN as u64 > file_len {
            return Err(LgnError::Format {
                tensor: None,
                field: Some("header length".into()),
                message: format!(
                    "header length {n} runs past the end of the file ({file_len} bytes)"
                ),
            });
        }
        Ok(n as usize)
    }

    /// Parses the JSON header `header` of a file of `file_len` bytes.
    pub fn parse(header: &[u8], file_len: u64) -> Result<Envelope> {
        let text = std::str::from_utf8(header).map_err(|e| LgnError::Format {
            tensor: None,
            field: Some("header".into()),
            message: format!("header is not UTF-8 ({e})"),
        })?;
        if !text.starts_with('{') {
            return Err(LgnError::Format {
                tensor: None,
                field: Some("header".into()),
                message: "header does not start with `{`".into(),
            });
        }
        let entries: HeaderEntries = serde_json::from_str(text).map_err(|e| LgnError::Format {
            tensor: None,
            field: Some("header".into()),
            message: format!("header is not valid safetensors JSON: {e}"),
        })?;
        let data_len = file_len - (PREFIX_LEN + header.len()) as u64;
        Self::from_entries(entries, header.len(), data_len)
    }

    fn from_entries(entries: HeaderEntries, header_len: usize, data_len: u64) -> Result<Envelope> {
        let mut tensors = Vec::with_capacity(entries.tensors.len());
        for (name, raw) in entries.tensors {
            let err = |field: &str, message: String| LgnError::tensor_format(&name, field, message);
            let dtype = Dtype::parse(&raw.dtype)
                .map_err(|_| err("dtype", format!("unknown dtype `{}`", raw.dtype)))?;
            if raw.shape.len() > MAX_RANK {
                return Err(err(
                    "shape",
                    format!("rank {} exceeds the limit {MAX_RANK}", raw.shape.len()),
                ));
            }
            let shape = raw
                .shape
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<std::result::Result<Vec<usize>, _>>()
                .map_err(|_| err("shape", "dimension does not fit in usize".into()))?;
            let nbytes = shape
                .iter()
                .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
                .ok_or_else(|| err("shape", format!("byte size of shape {shape:?} overflows")))?;
            let [b, e] = raw.data_offsets;
            if e < b || e > data_len {
                return Err(err(
                    "data_offsets",
                    format!(
                        "[{b}, {e}] is not a range inside the data section of {data_len} bytes"
                    ),
                ));
            }
            if (e - b) != nbytes as u64 {
                return Err(err(
                    "data_offsets",
                    format!(
                        "range holds {} bytes but {dtype} {shape:?} needs {nbytes}",
                        e - b
                    ),
                ));
            }
            tensors.push(StoredTensor {
                name,
                dtype,
                shape,
                begin: b as usize,
                end: e as usize,
            });
        }
        tensors.sort_by_key(|t| (t.begin, t.end));
        let mut at = 0usize;
        for t in &tensors {
            if t.begin != at {
                let what = if t.begin < at {
                    "overlaps the previous tensor"
                } else {
                    "leaves a hole before it"
                };
                return Err(LgnError::tensor_format(
                    &t.name,
                    "data_offsets",
                    format!("begins at {} and {what} (expected {at})", t.begin),
                ));
            }
            at = t.end;
        }
        if at as u64 != data_len {
            return Err(LgnError::Format {
                tensor: None,
                field: Some("data_offsets".into()),
                message: format!(
                    "tensors cover {at} bytes but the data section has {data_len} (trailing bytes)"
                ),
            });
        }
        Ok(Envelope {
            header_len,
            tensors,
            metadata: entries.metadata.unwrap_or_default(),
        })
    }

    /// Serialises a header for `tensors` (in data order, contiguous from 0) and `metadata`,
    /// padded with spaces to a multiple of 8 bytes. Returns the full prefix + header bytes.
    pub fn serialize(tensors: &[StoredTensor], metadata: &BTreeMap<String, String>) -> Vec<u8> {
        let mut map = serde_json::Map::new();
        if !metadata.is_empty() {
            map.insert(
                METADATA_KEY.into(),
                serde_json::to_value(metadata).expect("string map serialises"),
            );
        }
        for t in tensors {
            map.insert(
                t.name.clone(),
                serde_json::json!({
                    "dtype": t.dtype.name(),
                    "shape": t.shape,
                    "data_offsets": [t.begin, t.end],
                }),
            );
        }
        let mut json = serde_json::to_vec(&map).expect("header serialises");
        let padded = json.len().div_ceil(8) * 8;
        json.resize(padded, b' ');
        let mut out = Vec::with_capacity(PREFIX_LEN + json.len());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// Header entries in file order, with duplicates detected (serde maps silently keep the last).
struct HeaderEntries {
    tensors: Vec<(String, RawEntry)>,
    metadata: Option<BTreeMap<String, String>>,
}

impl<'de> Deserialize<'de> for HeaderEntries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderEntries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<HeaderEntries, A::Error> {
                let mut seen = std::collections::HashSet::new();
                let mut tensors = Vec::new();
                let mut metadata = None;
                while let Some(key) = m.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format!("duplicate name `{key}`")));
                    }
                    if key == METADATA_KEY {
                        metadata = Some(m.next_value::<UniqueStringMap>()?.0);
                    } else {
                        if tensors.len() >= MAX_TENSORS {
                            let _ = m.next_value::<IgnoredAny>()?;
                            return Err(de::Error::custom(format!(
                                "more than {MAX_TENSORS} tensors"
                            )));
                        }
                        let entry = m
                            .next_value::<RawEntry>()
                            .map_err(|e| de::Error::custom(format!("entry `{key}`: {e}")))?;
                        tensors.push((key, entry));
                    }
                }
                Ok(HeaderEntries { tensors, metadata })
            }
        }
        d.deserialize_map(V)
    }
}

/// `__metadata__`: a string-to-string map whose keys are unique (a serde map would keep the
/// last of two equal keys silently).
struct UniqueStringMap(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for UniqueStringMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueStringMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<UniqueStringMap, A::Error> {
                let mut map = BTreeMap::new();
                while let Some(key) = m.next_key::<String>()? {
                    let value = m.next_value::<String>()?;
                    if map.contains_key(&key) {
                        return Err(de::Error::custom(format!(
                            "duplicate key `{key}` in `{METADATA_KEY}`"
                        )));
                    }
                    map.insert(key, value);
                }
                Ok(UniqueStringMap(map))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data_len: usize) -> (Vec<u8>, u64) {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend(std::iter::repeat(0u8).take(data_len));
        let n = v.len() as u64;
        (v, n)
    }

    fn parse(header: &str, data_len: usize) -> Result<Envelope> {
        let (v, n) = file(header, data_len);
        let hl = Envelope::header_len_from_prefix(&v, n)?;
        Envelope::parse(&v[8..8 + hl], n)
    }

    #[test]
    fn serialize_then_parse() {
        let ts = vec![
            StoredTensor {
                name: "a".into(),
                dtype: Dtype::F32,
                shape: vec![2, 2],
                begin: 0,
                end: 16,
            },
            StoredTensor {
                name: "b".into(),
                dtype: Dtype::U8,
                shape: vec![3],
                begin: 16,
                end: 19,
            },
        ];
        let mut md = BTreeMap::new();
        md.insert("k".to_string(), "v".to_string());
        let mut bytes = Envelope::serialize(&ts, &md);
        assert_eq!(bytes.len() % 8, 0);
        bytes.extend(std::iter::repeat(0u8).take(19));
        let n = bytes.len() as u64;
        let hl = Envelope::header_len_from_prefix(&bytes, n).unwrap();
        let env = Envelope::parse(&bytes[8..8 + hl], n).unwrap();
        assert_eq!(env.tensors, ts);
        assert_eq!(env.metadata, md);
    }

    #[test]
    fn rejects_hostile_headers() {
        let ok = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#;
        assert!(parse(ok, 4).is_ok());
        let cases = [
            (
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#,
                4,
                "duplicate name",
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#,
                5,
                "trailing",
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,5]}}"#,
                5,
                "needs 4",
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#,
                4,
                "hole",
            ),
            (
                r#"{"a":{"dtype":"X9","shape":[4],"data_offsets":[0,4]}}"#,
                4,
                "unknown dtype",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,4]}}"#,
                4,
                "overflows",
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,400]}}"#,
                4,
                "not a range",
            ),
            (r#"[1,2]"#, 0, "does not start"),
            (
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4],"x":1}}"#,
                4,
                "unknown field",
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#,
                3,
                "overlaps",
            ),
        ];
        for (h, dl, needle) in cases {
            let e = parse(h, dl).unwrap_err().to_string();
            assert!(e.contains(needle), "{h}: expected `{needle}` in `{e}`");
        }
    }

    #[test]
    fn rejects_bad_prefix() {
        assert!(Envelope::header_len_from_prefix(&[1, 2, 3], 3).is_err());
        let huge = (MAX_HEADER_LEN as u64 + 1).to_le_bytes();
        assert!(Envelope::header_len_from_prefix(&huge, u64::MAX)
            .unwrap_err()
            .to_string()
            .contains("limit"));
        let past = 100u64.to_le_bytes();
        assert!(Envelope::header_len_from_prefix(&past, 50)
            .unwrap_err()
            .to_string()
            .contains("past the end"));
    }
}
