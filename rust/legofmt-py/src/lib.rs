//! Python bindings of legofmt: the module `legofmt._legofmt`.
//!
//! The Python package (`python/legofmt`) wraps these functions; users do not call them
//! directly. Arrays cross as NumPy `uint8` views of the tensors' bytes, without copies; the
//! GIL is released around all heavy work; every core error becomes an instance of a subclass
//! of `legofmt.LgnError` (defined in `legofmt/errors.py`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

use legofmt::blocks::BlockShape;
use legofmt::compress::{self, CompressOptions, Event, GroupSpec, Report, TensorInput};
use legofmt::dtype::Dtype;
use legofmt::format::reader::{Layout, LgnFile};
use legofmt::format::writer::{self, Piece};
use legofmt::LgnError;
use numpy::{PyArray1, PyReadonlyArray1, PyReadwriteArray1};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// Builds the Python exception for a core error, using the classes of `legofmt.errors`.
fn to_py(err: LgnError) -> PyErr {
    Python::attach(|py| {
        let class = match &err {
            LgnError::InvalidArgument { .. } => "InvalidArgumentError",
            LgnError::Format { .. } => "FormatError",
            LgnError::Checksum { .. } => "ChecksumError",
            LgnError::UnsupportedVersion { .. } => "UnsupportedVersionError",
            LgnError::Io { .. } => "LgnIOError",
            LgnError::Cancelled => "CancelledError",
            _ => "LgnError",
        };
        let msg = err.to_string();
        match py
            .import("legofmt.errors")
            .and_then(|m| m.getattr(class))
            .and_then(|c| c.call1((msg.clone(),)))
        {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        }
    })
}

/// Like [`to_py`], naming the file the error happened in.
fn to_py_in(path: &std::path::Path, err: LgnError) -> PyErr {
    let shown = path.display().to_string();
    let err = match err {
        e @ (LgnError::Io { .. } | LgnError::Cancelled) => e,
        e if e.to_string().contains(&shown) => e,
        e => {
            let class_err = to_py(e);
            return Python::attach(|py| {
                let msg = format!("{shown}: {}", class_err.value(py));
                match class_err.get_type(py).call1((msg,)) {
                    Ok(instance) => PyErr::from_value(instance),
                    Err(e) => e,
                }
            });
        }
    };
    to_py(err)
}

fn invalid(name: &'static str, message: impl Into<String>) -> PyErr {
    to_py(LgnError::invalid(name, message))
}

/// A Python progress callback plus the first exception it raised (re-raised afterwards).
struct Callback {
    func: Option<Py<PyAny>>,
    error: Mutex<Option<PyErr>>,
}

impl Callback {
    /// Calls the Python callback (and checks for Ctrl-C); false stops the work.
    fn call(&self, e: &Event) -> bool {
        Python::attach(|py| {
            let r = py.check_signals().and_then(|_| match &self.func {
                Some(f) => f.call1(py, (e.phase.as_str(), e.done, e.total)).map(|_| ()),
                None => Ok(()),
            });
            match r {
                Ok(()) => true,
                Err(err) => {
                    let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
                    slot.get_or_insert(err);
                    false
                }
            }
        })
    }

    fn finish<T>(&self, r: Result<T, LgnError>) -> PyResult<T> {
        match r {
            Ok(v) => Ok(v),
            Err(LgnError::Cancelled) => {
                let stored = self.error.lock().unwrap_or_else(|p| p.into_inner()).take();
                Err(stored.unwrap_or_else(|| to_py(LgnError::Cancelled)))
            }
            Err(e) => Err(to_py(e)),
        }
    }
}

fn parse_group(g: &Bound<'_, PyDict>) -> PyResult<GroupSpec> {
    let get = |key: &str| -> PyResult<Bound<'_, PyAny>> {
        g.get_item(key)?
            .ok_or_else(|| invalid("groups", format!("group is missing `{key}`")))
    };
    let k: usize = get("k")?.extract()?;
    let (bh, bw): (usize, usize) = get("block")?.extract()?;
    let stages: usize = get("stages")?.extract()?;
    let scale: String = get("scale")?.extract()?;
    let (scale, scale_stat) = legofmt::scale::parse_option(&scale).map_err(to_py)?;
    let outliers: f64 = match g.get_item("outliers")? {
        Some(v) if !v.is_none() => v.extract()?,
        _ => 0.0,
    };
    Ok(GroupSpec {
        k,
        block: BlockShape::new(bh, bw).map_err(to_py)?,
        stages,
        scale,
        scale_stat,
        outliers,
    })
}

fn report_to_dict<'py>(py: Python<'py>, r: &Report) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("file_bytes", r.file_bytes)?;
    d.set_item("fp32_bytes", r.fp32_bytes)?;
    d.set_item("source_bytes", r.source_bytes)?;
    d.set_item("numel", r.numel)?;
    d.set_item("seconds", r.seconds)?;
    let tensors = PyList::empty(py);
    for t in &r.tensors {
        let e = PyDict::new(py);
        e.set_item("name", &t.name)?;
        e.set_item("dtype", t.dtype.name())?;
        e.set_item("shape", t.shape.clone())?;
        e.set_item("clustered", t.clustered)?;
        e.set_item("stored_bytes", t.stored_bytes)?;
        e.set_item("index_bits", t.index_bits)?;
        e.set_item("rel_mse", t.rel_mse)?;
        e.set_item("max_abs_err", t.max_abs_err)?;
        e.set_item("outliers", t.outliers)?;
        tensors.append(e)?;
    }
    d.set_item("tensors", tensors)?;
    let cbs = PyList::empty(py);
    for c in &r.codebooks {
        let e = PyDict::new(py);
        e.set_item("group", c.group)?;
        e.set_item("stage", c.stage)?;
        e.set_item("k", c.k)?;
        e.set_item("bits", c.bits)?;
        e.set_item("block", (c.block.bh, c.block.bw))?;
        cbs.append(e)?;
    }
    d.set_item("codebooks", cbs)?;
    Ok(d)
}

/// One tensor passed to `compress_to_file`: name, dtype, shape, bytes, group index.
type TensorArg<'py> = (
    String,
    String,
    Vec<usize>,
    PyReadonlyArray1<'py, u8>,
    Option<usize>,
);

/// Compresses tensors and writes `path` atomically. See `legofmt.save` for the meaning.
///
/// `tensors`: list of `(name, dtype, shape, data, group)` where `data` is a 1-D uint8 view of
/// the tensor's bytes and `group` an index into `groups` or None (stored raw). `stages`, when
/// given, has one entry per tensor: its residual stage count (at most its group's; nested
/// stages, see `TensorInput::stages`) or None for the group's.
#[pyfunction]
#[pyo3(signature = (path, tensors, groups, seed=0, batch_size=None, max_iter=None, metadata=None, progress=None, stages=None))]
#[allow(clippy::too_many_arguments)]
fn compress_to_file<'py>(
    py: Python<'py>,
    path: PathBuf,
    tensors: Vec<TensorArg<'py>>,
    groups: Vec<Bound<'py, PyDict>>,
    seed: u64,
    batch_size: Option<usize>,
    max_iter: Option<usize>,
    metadata: Option<BTreeMap<String, String>>,
    progress: Option<Py<PyAny>>,
    stages: Option<Vec<Option<usize>>>,
) -> PyResult<Bound<'py, PyDict>> {
    if let Some(st) = &stages {
        if st.len() != tensors.len() {
            return Err(invalid(
                "stages",
                format!("{} entries for {} tensors", st.len(), tensors.len()),
            ));
        }
    }
    let groups = groups
        .iter()
        .map(parse_group)
        .collect::<PyResult<Vec<_>>>()?;
    let mut inputs = Vec::with_capacity(tensors.len());
    for (i, (name, dtype, shape, data, group)) in tensors.iter().enumerate() {
        let dtype = Dtype::parse(dtype).map_err(to_py)?;
        let data = data
            .as_slice()
            .map_err(|_| invalid("tensors", format!("data of `{name}` is not contiguous")))?;
        inputs.push(TensorInput {
            name: name.clone(),
            dtype,
            shape: shape.clone(),
            data,
            group: *group,
            stages: stages.as_ref().and_then(|st| st[i]),
        });
    }
    let opts = CompressOptions {
        groups,
        seed,
        batch_size,
        max_iter,
        metadata: metadata.unwrap_or_default(),
    };
    let cb = Callback {
        func: progress,
        error: Mutex::new(None),
    };
    let result = py.detach(|| {
        let f = |e: &Event| cb.call(e);
        compress::compress_to_file(&inputs, &opts, &path, &f)
    });
    let report = cb.finish(result)?;
    report_to_dict(py, &report)
}

/// Asks Linux to back `buf` with transparent huge pages before it is written, as numpy does
/// for its own arrays. A fresh output (`torch.empty`) is then faulted in 2 MiB pages instead
/// of 4 KiB ones: most of the cost of decoding into new tensors (`benches/decode.py`) is the
/// first-touch page faults, not the decoding. Only the 2 MiB-aligned interior of buffers of
/// at least 4 MiB is advised; failures are ignored (it is a hint, and THP may be off).
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn advise_huge_pages(buf: &mut [u8]) {
    use std::os::raw::{c_int, c_void};
    const HUGE: usize = 2 << 20;
    const MADV_HUGEPAGE: c_int = 14;
    extern "C" {
        fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
    }
    if buf.len() < 2 * HUGE {
        return;
    }
    let start = buf.as_mut_ptr() as usize;
    let begin = start.next_multiple_of(HUGE);
    let end = (start + buf.len()) / HUGE * HUGE;
    if end > begin {
        // SAFETY: `begin..end` lies inside `buf`, which is borrowed mutably here, and
        // MADV_HUGEPAGE only changes how the kernel backs those pages, never their contents.
        unsafe {
            madvise(begin as *mut c_void, end - begin, MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn advise_huge_pages(_buf: &mut [u8]) {}

/// An open `.lgn` or safetensors file (memory-mapped, or read on demand with `mmap=False`).
#[pyclass(module = "legofmt._legofmt", frozen)]
struct Reader {
    file: RwLock<Option<LgnFile>>,
    path: PathBuf,
}

impl Reader {
    fn with<T>(&self, f: impl FnOnce(&LgnFile) -> PyResult<T>) -> PyResult<T> {
        let g = self.file.read().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some(file) => f(file),
            None => Err(invalid(
                "file",
                format!("{} is closed", self.path.display()),
            )),
        }
    }
}

#[pymethods]
impl Reader {
    #[new]
    #[pyo3(signature = (path, verify_checksums=true, mmap=true))]
    fn new(py: Python<'_>, path: PathBuf, verify_checksums: bool, mmap: bool) -> PyResult<Self> {
        let p = path.clone();
        let mut file = py
            .detach(|| match mmap {
                true => LgnFile::open(&p),
                false => LgnFile::open_unmapped(&p),
            })
            .map_err(to_py)?;
        file.set_verify_checksums(verify_checksums);
        Ok(Reader {
            file: RwLock::new(Some(file)),
            path,
        })
    }

    /// Names of the original tensors, in saved order.
    fn keys(&self) -> PyResult<Vec<String>> {
        self.with(|f| Ok(f.tensors().iter().map(|t| t.name.clone()).collect()))
    }

    /// `(dtype, shape)` of an original tensor.
    fn tensor_info(&self, name: &str) -> PyResult<(String, Vec<usize>)> {
        self.with(|f| {
            let t = f.tensor(name).ok_or_else(|| {
                invalid(
                    "name",
                    format!("no tensor named `{name}` in {}", self.path.display()),
                )
            })?;
            Ok((t.dtype.name().to_string(), t.shape.clone()))
        })
    }

    /// Decodes tensor `name` into `out`, a writable contiguous uint8 array of its byte size.
    fn decode_into(
        &self,
        py: Python<'_>,
        name: &str,
        mut out: PyReadwriteArray1<'_, u8>,
    ) -> PyResult<()> {
        let buf = out
            .as_slice_mut()
            .map_err(|_| invalid("out", "output array must be contiguous"))?;
        advise_huge_pages(buf);
        self.with(|f| {
            py.detach(|| f.decode_into(name, buf))
                .map_err(|e| to_py_in(&self.path, e))
        })
    }

    /// Decodes rows `start..stop` of tensor `name` (rows are `shape[0]`) into `out`, a
    /// writable contiguous uint8 array of exactly those rows' byte size. For a clustered
    /// tensor only the index bytes of the block rows involved are used.
    fn decode_rows_into(
        &self,
        py: Python<'_>,
        name: &str,
        start: usize,
        stop: usize,
        mut out: PyReadwriteArray1<'_, u8>,
    ) -> PyResult<()> {
        let buf = out
            .as_slice_mut()
            .map_err(|_| invalid("out", "output array must be contiguous"))?;
        self.with(|f| {
            py.detach(|| f.decode_rows_into(name, start..stop, buf))
                .map_err(|e| to_py_in(&self.path, e))
        })
    }

    /// Decodes tensor `name` into a new uint8 array.
    fn decode<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyArray1<u8>>> {
        let bytes = self.with(|f| {
            py.detach(|| f.decode(name))
                .map_err(|e| to_py_in(&self.path, e))
        })?;
        Ok(PyArray1::from_vec(py, bytes))
    }

    /// Checks every checksum and index of the file.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        self.with(|f| {
            py.detach(|| f.verify())
                .map_err(|e| to_py_in(&self.path, e))
        })
    }

    /// Writes a copy of the file to `dest` (atomically; `dest` may be the file itself) with
    /// the stored tensors named in `replace` given new bytes of the same length, CRC-32s
    /// recomputed and `metadata` added to the user metadata; returns the new file's size.
    #[pyo3(signature = (dest, replace, metadata=None))]
    fn rewrite(
        &self,
        py: Python<'_>,
        dest: PathBuf,
        replace: BTreeMap<String, PyReadonlyArray1<'_, u8>>,
        metadata: Option<BTreeMap<String, String>>,
    ) -> PyResult<u64> {
        let mut bytes = BTreeMap::new();
        for (name, a) in &replace {
            let b = a
                .as_slice()
                .map_err(|_| invalid("replace", format!("bytes of `{name}` are not contiguous")))?;
            bytes.insert(name.clone(), b.to_vec());
        }
        let md = metadata.unwrap_or_default();
        self.with(|f| {
            py.detach(|| f.rewrite_with(&dest, &bytes, &md))
                .map_err(|e| to_py_in(&self.path, e))
        })
    }

    /// User metadata.
    fn metadata(&self) -> PyResult<BTreeMap<String, String>> {
        self.with(|f| Ok(f.user_metadata()))
    }

    /// A description of the file (see `legofmt.info`).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.with(|f| {
            let d = PyDict::new(py);
            d.set_item("path", self.path.display().to_string())?;
            d.set_item("file_bytes", f.file_len())?;
            d.set_item("version", f.version().map(|(a, b)| format!("{a}.{b}")))?;
            let stored = f.stored();
            let tensors = PyList::empty(py);
            for t in f.tensors() {
                let e = PyDict::new(py);
                e.set_item("name", &t.name)?;
                e.set_item("dtype", t.dtype.name())?;
                e.set_item("shape", t.shape.clone())?;
                match &t.layout {
                    Layout::Raw { stored: i } => {
                        e.set_item("encoding", "raw")?;
                        e.set_item("outliers", 0)?;
                        e.set_item("stored_bytes", stored[*i].end - stored[*i].begin)?;
                        e.set_item("index_bits", 0)?;
                        e.set_item("block", py.None())?;
                        e.set_item("scale", py.None())?;
                        e.set_item("codebooks", PyList::empty(py))?;
                    }
                    Layout::Clustered {
                        grid,
                        stages,
                        scale,
                        outliers,
                    } => {
                        e.set_item("encoding", "clustered")?;
                        let mut bytes = 0usize;
                        let mut bits = 0u32;
                        for s in stages {
                            bytes += stored[s.indices].end - stored[s.indices].begin;
                            bits += f.codebooks()[s.codebook].bits;
                        }
                        if let Some(sc) = scale {
                            bytes += stored[sc.stored].end - stored[sc.stored].begin;
                        }
                        let mut n_outliers = 0;
                        if let Some(o) = outliers {
                            bytes += stored[o.indices].end - stored[o.indices].begin;
                            bytes += stored[o.values].end - stored[o.values].begin;
                            n_outliers = stored[o.indices].numel();
                        }
                        e.set_item("outliers", n_outliers)?;
                        e.set_item("stored_bytes", bytes)?;
                        e.set_item("index_bits", bits)?;
                        e.set_item("block", (grid.block.bh, grid.block.bw))?;
                        e.set_item("scale", scale.map(|sc| sc.mode.name()))?;
                        e.set_item(
                            "codebooks",
                            stages.iter().map(|s| s.codebook).collect::<Vec<_>>(),
                        )?;
                    }
                }
                tensors.append(e)?;
            }
            d.set_item("tensors", tensors)?;
            let cbs = PyList::empty(py);
            for c in f.codebooks() {
                let e = PyDict::new(py);
                e.set_item("k", c.k)?;
                e.set_item("bits", c.bits)?;
                e.set_item("block", (c.block.bh, c.block.bw))?;
                e.set_item(
                    "stored_bytes",
                    stored[c.stored].end - stored[c.stored].begin,
                )?;
                cbs.append(e)?;
            }
            d.set_item("codebooks", cbs)?;
            Ok(d)
        })
    }

    /// Releases the memory map (or the open file); later calls raise.
    fn close(&self) {
        self.file.write().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.file
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }
}

/// Writes a plain safetensors file atomically (used by `legofmt decompress`).
#[pyfunction]
#[pyo3(signature = (path, tensors, metadata=None))]
fn write_safetensors<'py>(
    py: Python<'py>,
    path: PathBuf,
    tensors: Vec<(String, String, Vec<usize>, PyReadonlyArray1<'py, u8>)>,
    metadata: Option<BTreeMap<String, String>>,
) -> PyResult<u64> {
    let mut pieces = Vec::with_capacity(tensors.len());
    for (name, dtype, shape, data) in &tensors {
        let dtype = Dtype::parse(dtype).map_err(to_py)?;
        let data = data
            .as_slice()
            .map_err(|_| invalid("tensors", format!("data of `{name}` is not contiguous")))?;
        pieces.push(Piece {
            name: name.clone(),
            dtype,
            shape: shape.clone(),
            data: Cow::Borrowed(data),
            pad_to_8: false,
        });
    }
    // Larger elements first keeps every tensor aligned to its element size.
    pieces.sort_by_key(|p| std::cmp::Reverse(p.dtype.size()));
    let md = metadata.unwrap_or_default();
    py.detach(|| writer::write_file(&path, pieces, None, &md))
        .map_err(to_py)
}

/// Bits needed for indices of a codebook of `k` entries.
#[pyfunction]
fn bits_for_k(k: usize) -> u32 {
    legofmt::bitpack::bits_for_k(k)
}

/// Packs indices (for tests and tools).
#[pyfunction]
fn pack_indices<'py>(
    py: Python<'py>,
    indices: Vec<u32>,
    bits: u32,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let v = legofmt::bitpack::pack(&indices, bits).map_err(to_py)?;
    Ok(PyArray1::from_vec(py, v))
}

/// Unpacks `n` indices.
#[pyfunction]
fn unpack_indices<'py>(
    py: Python<'py>,
    packed: PyReadonlyArray1<'py, u8>,
    bits: u32,
    n: usize,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    if !(1..=16).contains(&bits) {
        return Err(invalid("bits", format!("must be in 1..=16, got {bits}")));
    }
    let p = packed
        .as_slice()
        .map_err(|_| invalid("packed", "must be contiguous"))?;
    let need = legofmt::bitpack::packed_len(n, bits).unwrap_or(usize::MAX);
    if p.len() < need {
        return Err(invalid(
            "packed",
            format!(
                "{n} indices of {bits} bits need {need} bytes, got {}",
                p.len()
            ),
        ));
    }
    Ok(PyArray1::from_vec(py, legofmt::bitpack::unpack(p, bits, n)))
}

/// Runs legofmt's k-means (`legofmt::kmeans::fit`, default parameters unless given) on `data`,
/// a C-contiguous float32 array of shape `(n, d)`, for benchmarks and tools. Returns
/// `(centroids (k, d) float32, assignments (n,) uint32, inertia, seconds)`; `seconds` is the
/// time of the fit alone (no copies). The GIL is released during the fit; Ctrl-C stops it.
#[pyfunction]
#[pyo3(signature = (data, k, seed=0, batch_size=None, max_iter=None))]
#[allow(clippy::type_complexity)]
fn kmeans_fit<'py>(
    py: Python<'py>,
    data: numpy::PyReadonlyArray2<'py, f32>,
    k: usize,
    seed: u64,
    batch_size: Option<usize>,
    max_iter: Option<usize>,
) -> PyResult<(
    Bound<'py, numpy::PyArray2<f32>>,
    Bound<'py, PyArray1<u32>>,
    f64,
    f64,
)> {
    use legofmt::kmeans::{self, KMeansParams};
    use numpy::{PyArrayMethods, PyUntypedArrayMethods};
    let (n, d) = (data.shape()[0], data.shape()[1]);
    let flat = data
        .as_slice()
        .map_err(|_| invalid("data", "must be a C-contiguous (n, d) array"))?;
    let mut p = KMeansParams::new(k).with_seed(seed);
    if let Some(b) = batch_size {
        p.batch_size = b;
    }
    if let Some(m) = max_iter {
        p.max_iter = m;
    }
    let valid = p.check(n, d).map_err(to_py)?;
    let cb = Callback {
        func: None,
        error: Mutex::new(None),
    };
    let result = py.detach(|| {
        let t0 = std::time::Instant::now();
        let r = kmeans::fit(flat, d, &valid, &|_: &kmeans::Progress| {
            cb.call(&Event {
                phase: String::new(),
                done: 0,
                total: 0,
            })
        });
        r.map(|r| (r, t0.elapsed().as_secs_f64()))
    });
    let (r, seconds) = cb.finish(result)?;
    let centroids = PyArray1::from_vec(py, r.centroids).reshape([k, d])?;
    Ok((
        centroids,
        PyArray1::from_vec(py, r.assignments),
        r.inertia,
        seconds,
    ))
}

/// The native module.
#[pymodule]
fn _legofmt(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(compress_to_file, m)?)?;
    m.add_function(wrap_pyfunction!(bits_for_k, m)?)?;
    m.add_function(wrap_pyfunction!(write_safetensors, m)?)?;
    m.add_function(wrap_pyfunction!(pack_indices, m)?)?;
    m.add_function(wrap_pyfunction!(unpack_indices, m)?)?;
    m.add_function(wrap_pyfunction!(kmeans_fit, m)?)?;
    m.add_class::<Reader>()?;
    m.add(
        "FORMAT_VERSION",
        format!(
            "{}.{}",
            legofmt::format::manifest::FORMAT_MAJOR,
            legofmt::format::manifest::FORMAT_MINOR
        ),
    )?;
    // The limits, from their one definition in the core crate.
    m.add("MIN_K", legofmt::limits::MIN_K)?;
    m.add("MAX_K", legofmt::limits::MAX_K)?;
    m.add("MAX_STAGES", legofmt::limits::MAX_STAGES)?;
    m.add("MAX_BLOCK_SIDE", legofmt::limits::MAX_BLOCK_SIDE)?;
    m.add(
        "MAX_OUTLIER_FRACTION",
        legofmt::limits::MAX_OUTLIER_FRACTION,
    )?;
    m.add("MAX_RANK", legofmt::limits::MAX_RANK)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
