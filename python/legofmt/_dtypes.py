"""Mapping between safetensors dtype names and NumPy / PyTorch dtypes, and zero-copy byte views."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidArgumentError

if TYPE_CHECKING:
    import torch

# safetensors name -> numpy dtype (BF16 has no NumPy type: its bytes travel as uint16).
NP_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}
FLOAT_NAMES = frozenset({"F32", "F16", "BF16"})


def np_name(a: np.ndarray[Any, Any]) -> str:
    """The safetensors name of a NumPy array's dtype."""
    if a.dtype.name == "bfloat16":  # ml_dtypes.bfloat16
        return "BF16"
    for name, dt in NP_DTYPES.items():
        if name != "BF16" and a.dtype.kind == dt.kind and a.dtype.itemsize == dt.itemsize:
            return name
    raise InvalidArgumentError(f"unsupported NumPy dtype {a.dtype}")


def np_bytes(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A 1-D uint8 view of the array's little-endian bytes (copies only if needed)."""
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def torch_dtypes() -> dict[str, torch.dtype]:
    import torch

    return {
        "BOOL": torch.bool,
        "U8": torch.uint8,
        "I8": torch.int8,
        "U16": torch.uint16,
        "I16": torch.int16,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "U32": torch.uint32,
        "I32": torch.int32,
        "F32": torch.float32,
        "U64": torch.uint64,
        "I64": torch.int64,
        "F64": torch.float64,
    }


def torch_name(t: torch.Tensor) -> str:
    for name, dt in torch_dtypes().items():
        if t.dtype == dt:
            return name
    raise InvalidArgumentError(f"unsupported torch dtype {t.dtype}")


def torch_bytes(t: torch.Tensor) -> np.ndarray[Any, Any]:
    """A 1-D uint8 NumPy view of a CPU tensor's bytes (no copy for contiguous CPU tensors)."""
    import torch

    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    return t.view(torch.uint8).numpy()


def require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError(
            "this function returns PyTorch tensors; install torch (pip install 'legofmt[torch]') or use framework='np'"
        ) from e
