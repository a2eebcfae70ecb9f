"""legofmt: block weight clustering for neural networks, and the ``.lgn`` file format.

>>> import legofmt
>>> report = legofmt.save(model, "model.lgn", k=256)          # doctest: +SKIP
>>> state = legofmt.load("model.lgn")                           # doctest: +SKIP

See the README and docs/ for the method, its accuracy trade-offs and the format.
"""

from __future__ import annotations

from ._finetune import FinetuneReport, finetune
from ._legofmt import FORMAT_VERSION, __version__
from ._options import SAVE_OPTIONS
from ._reader import LgnReader, LoadResult, info, load, load_into
from ._reader import open_file as open
from ._report import FileInfo, SaveReport, TensorInfo, TensorReport
from ._save import save
from .errors import (
    CancelledError,
    ChecksumError,
    FormatError,
    InvalidArgumentError,
    LgnError,
    LgnIOError,
    UnsupportedVersionError,
)

__all__ = [
    "FORMAT_VERSION",
    "SAVE_OPTIONS",
    "CancelledError",
    "ChecksumError",
    "FileInfo",
    "FinetuneReport",
    "FormatError",
    "InvalidArgumentError",
    "LgnError",
    "LgnIOError",
    "LgnReader",
    "LoadResult",
    "SaveReport",
    "TensorInfo",
    "TensorReport",
    "UnsupportedVersionError",
    "__version__",
    "finetune",
    "info",
    "load",
    "load_into",
    "open",
    "save",
]
