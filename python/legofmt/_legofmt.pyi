# Type stubs of the native module (rust/legofmt-py/src/lib.rs). `mypy.stubtest` checks them against
# the compiled module in scripts/test.sh (names, parameters, defaults, classes); the types of
# parameters and results it cannot see, so keep them in step with the Rust signatures by hand.
from collections.abc import Callable
from os import PathLike
from typing import Any, final

import numpy as np
import numpy.typing as npt
from typing_extensions import Self

# PyO3 fills the module's `__all__` with every name it adds, in the order of `_legofmt()`.
__all__ = [
    "compress_to_file",
    "bits_for_k",
    "write_safetensors",
    "pack_indices",
    "unpack_indices",
    "kmeans_fit",
    "Reader",
    "FORMAT_VERSION",
    "MIN_K",
    "MAX_K",
    "MAX_STAGES",
    "MAX_BLOCK_SIDE",
    "MAX_OUTLIER_FRACTION",
    "MAX_RANK",
    "__version__",
]

FORMAT_VERSION: str
MIN_K: int
MAX_K: int
MAX_STAGES: int
MAX_BLOCK_SIDE: int
MAX_OUTLIER_FRACTION: float
MAX_RANK: int
__version__: str

def compress_to_file(
    path: str | PathLike[str],
    tensors: list[tuple[str, str, list[int], npt.NDArray[np.uint8], int | None]],
    groups: list[dict[str, Any]],
    seed: int = 0,
    batch_size: int | None = None,
    max_iter: int | None = None,
    metadata: dict[str, str] | None = None,
    progress: Callable[[str, int, int], object] | None = None,
    stages: list[int | None] | None = None,
) -> dict[str, Any]: ...
def write_safetensors(
    path: str | PathLike[str],
    tensors: list[tuple[str, str, list[int], npt.NDArray[np.uint8]]],
    metadata: dict[str, str] | None = None,
) -> int: ...
def bits_for_k(k: int) -> int: ...
def pack_indices(indices: list[int], bits: int) -> npt.NDArray[np.uint8]: ...
def unpack_indices(packed: npt.NDArray[np.uint8], bits: int, n: int) -> npt.NDArray[np.uint32]: ...
def kmeans_fit(
    data: npt.NDArray[np.float32],
    k: int,
    seed: int = 0,
    batch_size: int | None = None,
    max_iter: int | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint32], float, float]: ...

# A `#[pyclass]` without `subclass` cannot be subclassed (hence `@final`); its constructor is
# `__new__` (`#[new]`): there is no `__init__`.
@final
class Reader:
    def __new__(cls, path: str | PathLike[str], verify_checksums: bool = True, mmap: bool = True) -> Self: ...
    def keys(self) -> list[str]: ...
    def tensor_info(self, name: str) -> tuple[str, list[int]]: ...
    def decode_into(self, name: str, out: npt.NDArray[np.uint8]) -> None: ...
    def decode_rows_into(self, name: str, start: int, stop: int, out: npt.NDArray[np.uint8]) -> None: ...
    def decode(self, name: str) -> npt.NDArray[np.uint8]: ...
    def verify(self) -> None: ...
    def rewrite(
        self,
        dest: str | PathLike[str],
        replace: dict[str, npt.NDArray[np.uint8]],
        metadata: dict[str, str] | None = None,
    ) -> int: ...
    def metadata(self) -> dict[str, str]: ...
    def info(self) -> dict[str, Any]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
