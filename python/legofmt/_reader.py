"""Reading files: :class:`LgnReader` (lazy, tensor by tensor), and ``open``/``load``/
``load_into``/``info`` built on it. ``legofmt.open`` is :func:`open_file` (named so that the
package does not shadow the builtin ``open``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Union

import numpy as np

from . import _legofmt
from ._dtypes import NP_DTYPES, np_name, require_torch, torch_dtypes
from ._report import FileInfo, TensorInfo
from .errors import InvalidArgumentError, LgnError

if TYPE_CHECKING:
    import torch

PathLike = Union[str, "os.PathLike[str]"]
Framework = Literal["pt", "np"]


class LgnReader:
    """A lazily decoding view of an ``.lgn`` (or plain safetensors) file.

    Use as a context manager (like ``safetensors.safe_open``)::

        with legofmt.open("model.lgn") as f:
            for name in f.keys():
                t = f.get_tensor(name)

    Only the header and the codebooks are read when opening; each :meth:`get_tensor` decodes
    one tensor, from a memory map of the file or, with ``mmap=False``, from plain reads of
    that tensor's stored bytes (nothing of the file stays mapped or cached by the process).
    """

    def __init__(
        self, path: PathLike, framework: Framework = "pt", *, verify_checksums: bool = True, mmap: bool = True
    ):
        if framework not in ("pt", "np", "numpy", "torch"):
            raise InvalidArgumentError(f"framework must be 'pt' or 'np', got {framework!r}")
        self.framework: Framework = "np" if framework in ("np", "numpy") else "pt"
        if self.framework == "pt":
            require_torch()
        self._torch_dtypes: dict[str, Any] = torch_dtypes() if self.framework == "pt" else {}
        self.path = os.fspath(path)
        self._r = _legofmt.Reader(self.path, verify_checksums, mmap)

    def __enter__(self) -> LgnReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Releases the file."""
        self._r.close()

    def keys(self) -> list[str]:
        """Tensor names in saved order."""
        return self._r.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, name: object) -> bool:
        return name in self.keys()

    def dtype_and_shape(self, name: str) -> tuple[str, tuple[int, ...]]:
        """The safetensors dtype name and shape of a tensor, without decoding it."""
        dtype, shape = self._r.tensor_info(name)
        return dtype, tuple(shape)

    def _representable(self, name: str, shape: tuple[int, ...]) -> None:
        """A valid file may hold an empty tensor with a dimension above what numpy and torch
        index with (``sys.maxsize``): say so instead of letting numpy's error escape."""
        if any(d > sys.maxsize for d in shape):
            raise LgnError(
                f"{self.path}: tensor {name!r} has shape {list(shape)}: a dimension above {sys.maxsize}, "
                "which numpy and torch cannot represent"
            )

    def get_tensor(self, name: str) -> Any:
        """Decodes one tensor (``torch.Tensor`` or ``numpy.ndarray``, per ``framework``)."""
        dtype, shape = self._r.tensor_info(name)
        self._representable(name, tuple(shape))
        if self.framework == "np":
            arr = np.empty(shape, dtype=NP_DTYPES[dtype])
            self._r.decode_into(name, arr.reshape(-1).view(np.uint8))
            return arr
        import torch

        t = torch.empty(shape, dtype=self._torch_dtypes[dtype])
        self._r.decode_into(name, t.reshape(-1).view(torch.uint8).numpy())
        return t

    def get_rows(self, name: str, start: int, stop: int) -> Any:
        """Decodes rows ``start:stop`` of a tensor (along its first dimension) without decoding
        the rest: shape ``(stop - start, *shape[1:])``. For a clustered tensor only the indices
        of the block rows involved are used (and, with ``verify_checksums=False``, read from
        the file): an embedding lookup on a memory-limited device touches a few rows' bytes.
        With ``verify_checksums=True`` (the default) each call checks the CRC-32 of the whole
        tensor: for many lookups, call :meth:`verify` once and open without checksums."""
        dtype, shape = self.dtype_and_shape(name)
        if not shape:
            raise InvalidArgumentError(f"tensor {name!r} is a scalar: it has no rows")
        for v in (start, stop):
            if isinstance(v, bool) or not isinstance(v, int):
                raise InvalidArgumentError(f"rows of {name!r}: start and stop must be ints, got {start!r}, {stop!r}")
        if not 0 <= start <= stop <= shape[0]:
            raise InvalidArgumentError(f"rows {start}:{stop} are outside tensor {name!r} of {shape[0]} rows")
        out_shape = (stop - start, *shape[1:])
        self._representable(name, out_shape)
        if self.framework == "np":
            arr = np.empty(out_shape, dtype=NP_DTYPES[dtype])
            self._r.decode_rows_into(name, start, stop, arr.reshape(-1).view(np.uint8))
            return arr
        import torch

        t = torch.empty(out_shape, dtype=self._torch_dtypes[dtype])
        self._r.decode_rows_into(name, start, stop, t.reshape(-1).view(torch.uint8).numpy())
        return t

    def decode_into(self, name: str, out: Any) -> None:
        """Decodes a tensor straight into ``out`` (a contiguous CPU tensor or array of the
        tensor's dtype and shape), without an intermediate copy."""
        dtype, shape = self.dtype_and_shape(name)
        if isinstance(out, np.ndarray):
            # BF16 has no NumPy dtype: get_tensor gives its bit patterns as uint16, accept those.
            ok_dtype = np_name(out) == dtype or (dtype == "BF16" and out.dtype == np.uint16)
            if tuple(out.shape) != shape or not ok_dtype or not out.flags.c_contiguous:
                raise InvalidArgumentError(f"output for {name!r} must be a contiguous {dtype} array of shape {shape}")
            self._r.decode_into(name, out.reshape(-1).view(np.uint8))
            return
        import torch

        if (
            tuple(out.shape) != shape
            or out.dtype != self._torch_dtypes[dtype]
            or out.device.type != "cpu"
            or not out.is_contiguous()
        ):
            raise InvalidArgumentError(f"output for {name!r} must be a contiguous CPU {dtype} tensor of shape {shape}")
        self._r.decode_into(name, out.reshape(-1).view(torch.uint8).numpy())

    def tensors(self) -> Iterator[tuple[str, Any]]:
        """Yields ``(name, tensor)`` one at a time, decoding lazily: a tensor dropped by the
        caller before the next is taken is freed, so streaming a model this way needs memory
        for one tensor at a time."""
        for name in self.keys():
            yield name, self.get_tensor(name)

    def metadata(self) -> dict[str, str]:
        """The user metadata stored with :func:`save` (``metadata=``)."""
        return self._r.metadata()

    def info(self) -> FileInfo:
        """See :func:`legofmt.info`."""
        d = self._r.info()
        return FileInfo(
            path=d["path"],
            file_bytes=d["file_bytes"],
            version=d["version"],
            tensors=[
                TensorInfo(
                    name=t["name"],
                    dtype=t["dtype"],
                    shape=tuple(t["shape"]),
                    encoding=t["encoding"],
                    stored_bytes=t["stored_bytes"],
                    index_bits=t["index_bits"],
                    block=tuple(t["block"]) if t["block"] else None,
                    scale=t["scale"],
                    codebooks=tuple(t["codebooks"]),
                    outliers=t["outliers"],
                )
                for t in d["tensors"]
            ],
            codebooks=d["codebooks"],
            metadata=self._r.metadata(),
        )

    def verify(self) -> None:
        """Checks every checksum and every index; raises a :class:`legofmt.FormatError` subclass."""
        self._r.verify()

    def decode_bytes(self, name: str) -> np.ndarray[Any, Any]:
        """Decodes one tensor into its little-endian bytes (a flat ``uint8`` array): what a plain
        safetensors file stores for it, whatever its dtype (BF16 included)."""
        return self._r.decode(name)

    def rewrite(
        self, dest: PathLike, replace: Mapping[str, np.ndarray[Any, Any]], metadata: Mapping[str, str] | None = None
    ) -> int:
        """Writes a copy of the file to ``dest`` (atomically; ``dest`` may be this file) in which
        the stored tensors named in ``replace`` hold new bytes (flat ``uint8`` arrays of the same
        length: codebooks, scales, raw tensors), their CRC-32s recomputed, and ``metadata`` is
        added to the user metadata; returns the new file's size. Everything else is copied."""
        return self._r.rewrite(os.fspath(dest), dict(replace), None if metadata is None else dict(metadata))


def open_file(
    path: PathLike, framework: Framework = "pt", *, verify_checksums: bool = True, mmap: bool = True
) -> LgnReader:
    """Opens a file for lazy, tensor-by-tensor decoding. See :class:`LgnReader`.

    ``mmap=False`` reads each tensor's stored bytes with plain reads instead of mapping the
    file (for file systems without mmap, or to keep the page cache out of the process's RSS)."""
    return LgnReader(path, framework, verify_checksums=verify_checksums, mmap=mmap)


def load(path: PathLike, *, framework: Framework = "pt") -> dict[str, Any]:
    """Decodes every tensor: ``dict[str, torch.Tensor]`` with the original names, shapes and
    dtypes (``framework="np"`` gives NumPy arrays; BF16 then comes as raw uint16 bits)."""
    with open_file(path, framework) as f:
        return dict(f.tensors())


class LoadResult(NamedTuple):
    """Keys that did not match, like ``torch.nn.Module.load_state_dict`` returns."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def load_into(model: torch.nn.Module, path: PathLike, strict: bool = True) -> LoadResult:
    """Loads a file into ``model``'s parameters and buffers, tensor by tensor, decoding
    straight into their memory where dtype, device and layout allow (no second copy of the
    model: at most one tensor is decoded aside, when a dtype or device differs). With
    ``strict`` every key must match, as in ``load_state_dict``.

    A model built on the ``meta`` device (``with torch.device("meta"): model = Net()``) is
    materialized on the CPU: each tensor is decoded into new memory (in the model's dtype)
    and assigned to its module, keeping ``requires_grad`` and tied parameters."""
    import torch

    state = model.state_dict(keep_vars=True)
    dtypes = torch_dtypes()
    with open_file(path, "pt") as f:
        names = f.keys()
        in_file = set(names)
        missing = [k for k in state if k not in in_file]
        unexpected = [k for k in names if k not in state]
        if strict and (missing or unexpected):
            raise InvalidArgumentError(
                f"{os.fspath(path)} does not match the model: missing keys {missing}, unexpected keys {unexpected}"
            )
        materialized: dict[int, Any] = {}
        with torch.no_grad():
            for name in names:
                if name not in state:
                    continue
                current = state[name]
                target = current.data if isinstance(current, torch.nn.Parameter) else current
                dtype, shape = f.dtype_and_shape(name)
                if tuple(target.shape) != shape:
                    raise InvalidArgumentError(
                        f"tensor {name!r} has shape {shape} in the file but {tuple(target.shape)} in the model"
                    )
                if target.device.type == "meta":
                    new = materialized.get(id(current))
                    if new is None:
                        t = f.get_tensor(name)
                        if t.dtype != target.dtype:
                            t = t.to(target.dtype)
                        new = torch.nn.Parameter(t, current.requires_grad) if current is not target else t
                        materialized[id(current)] = new
                    _assign(model, name, new)
                elif target.dtype == dtypes[dtype] and target.device.type == "cpu" and target.is_contiguous():
                    f.decode_into(name, target)
                else:
                    target.copy_(f.get_tensor(name))
    return LoadResult(missing, unexpected)


def _assign(model: torch.nn.Module, name: str, value: Any) -> None:
    """Replaces the parameter or buffer ``name`` of ``model`` by ``value``."""
    prefix, _, leaf = name.rpartition(".")
    module = model.get_submodule(prefix)
    if leaf in module._parameters:
        module._parameters[leaf] = value
    else:
        module._buffers[leaf] = value


def info(path: PathLike) -> FileInfo:
    """Describes a file: per tensor raw or clustered, bits and bytes, and the file's ratio
    against fp32 and against the source dtypes (every byte of the file counted)."""
    with open_file(path, "np") as f:
        return f.info()
