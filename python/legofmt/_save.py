"""The public :func:`save`: options checked once, then one file written or a target search."""

from __future__ import annotations

import os
from typing import Any, Union

from ._compress import compress_file
from ._options import DEFAULT_K, SaveOptions
from ._progress import ProgressLine, enabled
from ._report import SaveReport
from ._target import search

PathLike = Union[str, "os.PathLike[str]"]


def save(
    obj: Any,
    path: PathLike,
    *,
    k: int = DEFAULT_K,
    block: tuple[int, int] | None = None,
    seed: int = 0,
    **options: Any,
) -> SaveReport:
    """Compresses ``obj`` (a ``torch.nn.Module``, a dict of torch tensors or of numpy arrays)
    into the ``.lgn`` file ``path`` and returns a :class:`SaveReport`.

    Every float tensor of rank >= 2 that covers at least one block is cut into ``block``-shaped
    blocks, all blocks are clustered into one shared codebook of ``k`` codewords (2..65536),
    and each block is stored as a ``ceil(log2 k)``-bit index. Other tensors are stored as they
    are (see :mod:`legofmt._policy`). Options: see :data:`SAVE_OPTIONS`. The file is written
    to a temporary file and renamed, so a failure never leaves a partial file.

    ``block=None`` means the default, 2x2 (see the docs/accuracy.md, "Defaults"). With ``target_ratio=``
    and/or ``max_error=`` the block shape and stage count are searched instead (see
    :mod:`legofmt._target`); the report's ``search`` lists every configuration tried.

    Progress is shown on stderr (one line for the whole job) when stderr is a terminal, or
    always with ``progress=True``; never with ``progress=False``.
    """
    opts = SaveOptions.from_kwargs(k=k, block=block, seed=seed, **options)
    if opts.target_mode:
        return search(obj, os.fspath(path), opts)
    line = ProgressLine() if enabled(opts.progress) else None
    try:
        return compress_file(obj, path, opts, line=line)
    finally:
        if line is not None:
            line.close()
