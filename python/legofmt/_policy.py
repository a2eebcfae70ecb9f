"""Which tensors are clustered, into which codebook, and which are stored as they are.

The rules, in order (the first that applies decides):

1. a name matching one of the ``raw`` glob patterns stays raw;
2. non-float tensors (integers, bool, F64) stay raw;
3. tensors of rank < 2 (biases, norms, scalars) stay raw: the format clusters rank >= 2 only;
4. depthwise convolutions (rank 4 with one input channel per group, ``shape[1] == 1``) are
   *sensitive*, unless ``cluster_depthwise`` puts them into the shared codebook: each of their
   rows is a whole 3x3/5x5 filter with nothing to share, and clustering them with the other
   layers' blocks, or into 4-bit scalar codebooks, breaks networks built on them (see the
   docs/accuracy.md, "Defaults");
5. tensors with fewer than ``min_size`` elements (default 4096) are *sensitive*: tiny layers
   (first convolutions, small classifiers) are the ones a shared codebook hurts most;
6. tensors whose 2-D view is smaller than one block of the shared codebook (``shape[0] < bh``
   or ``prod(shape[1:]) < bw``) are *sensitive*;
7. everything else is clustered into the shared codebook(s).

Sensitive tensors are clustered into a codebook group of their own (by default 1x1 blocks,
k=256, row scales: an 8-bit non-uniform scalar code per row, a quarter of their fp32 bytes and
close to lossless; see the docs/accuracy.md, "Defaults"), or stay raw with ``sensitive="raw"``. A
sensitive tensor with fewer than :data:`MIN_CLUSTERED` elements stays raw: the header entries of
its indices and scales would cost more than clustering saves; so does one smaller than one
block of that codebook.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ._dtypes import FLOAT_NAMES

#: Tensors with fewer elements stay raw whatever the options: a clustered tensor's two extra
#: header entries (indices and scales, about 300 bytes) would outweigh what clustering saves.
MIN_CLUSTERED = 256

#: Where a tensor goes.
RAW, SHARED, SENSITIVE = "raw", "shared", "sensitive"


@dataclass(frozen=True)
class Decision:
    """The policy's verdict for one tensor: ``target`` is :data:`RAW`, :data:`SHARED` (the
    shared codebooks) or :data:`SENSITIVE` (the sensitive tensors' own codebook)."""

    target: str
    reason: str

    @property
    def cluster(self) -> bool:
        """Whether the tensor is clustered at all."""
        return self.target != RAW


def decide(
    name: str,
    dtype: str,
    shape: Sequence[int],
    *,
    block: tuple[int, int],
    raw: Sequence[str] = (),
    min_size: int = 0,
    cluster_depthwise: bool = False,
    sensitive: tuple[int, int] | None = (1, 1),
) -> Decision:
    """Applies the rules of this module to one tensor; ``sensitive`` is the block shape of
    the sensitive tensors' codebook, or ``None`` to store them raw."""
    for pattern in raw:
        if fnmatch.fnmatchcase(name, pattern):
            return Decision(RAW, f"matches raw pattern {pattern!r}")
    if dtype not in FLOAT_NAMES:
        return Decision(RAW, f"{dtype} is not a clusterable float type")
    if len(shape) < 2:
        return Decision(RAW, f"rank {len(shape)} < 2")
    rows, cols = shape[0], math.prod(shape[1:])
    why = None
    if len(shape) == 4 and shape[1] == 1 and not cluster_depthwise:
        why = f"depthwise convolution {tuple(shape)}"
    elif rows * cols < min_size:
        why = f"{rows * cols} elements < min_size={min_size}"
    elif rows < block[0] or cols < block[1]:
        why = f"2-D view {rows}x{cols} is smaller than one {block[0]}x{block[1]} block"
    if why is None:
        return Decision(SHARED, "clustered")
    if sensitive is None:
        return Decision(RAW, why)
    if rows * cols < MIN_CLUSTERED:
        return Decision(RAW, f"{why}; too small for a codebook (< {MIN_CLUSTERED} elements)")
    if rows < sensitive[0] or cols < sensitive[1]:
        return Decision(RAW, f"{why}; smaller than one {sensitive[0]}x{sensitive[1]} block")
    return Decision(SENSITIVE, f"{why}: own codebook")
