"""Which tensors are clustered and which are stored as they are.

The rules, in order (the first that applies decides):

1. a name matching one of the ``raw`` glob patterns stays raw;
2. non-float tensors (integers, bool, F64) stay raw;
3. tensors of rank < 2 (biases, norms, scalars) stay raw;
4. tensors whose 2-D view is smaller than one block row (``shape[0] < bh`` or
   ``prod(shape[1:]) < bw``) stay raw;
5. depthwise convolutions (rank 4 with one input channel per group, ``shape[1] == 1``) stay raw
   unless ``cluster_depthwise``: each of their rows is a whole 3x3/5x5 filter with nothing to
   share, and clustering them destroyed EfficientNet-Lite0 (0% agreement) at a cost of under 2%
   of its weights;
6. tensors with fewer than ``min_size`` elements (default 4096) stay raw: they cost little
   stored as they are, and tiny layers (first convolutions, small classifiers) are the
   sensitive ones;
7. everything else is clustered into the shared codebook.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ._dtypes import FLOAT_NAMES


@dataclass(frozen=True)
class Decision:
    """The policy's verdict for one tensor."""

    cluster: bool
    reason: str


def decide(
    name: str,
    dtype: str,
    shape: Sequence[int],
    *,
    block: tuple[int, int],
    raw: Sequence[str] = (),
    min_size: int = 0,
    cluster_depthwise: bool = False,
) -> Decision:
    """Applies the rules of this module to one tensor."""
    for pattern in raw:
        if fnmatch.fnmatchcase(name, pattern):
            return Decision(False, f"matches raw pattern {pattern!r}")
    if dtype not in FLOAT_NAMES:
        return Decision(False, f"{dtype} is not a clusterable float type")
    if len(shape) < 2:
        return Decision(False, f"rank {len(shape)} < 2")
    rows, cols = shape[0], math.prod(shape[1:])
    if rows < block[0] or cols < block[1]:
        return Decision(False, f"2-D view {rows}x{cols} is smaller than one {block[0]}x{block[1]} block")
    if len(shape) == 4 and shape[1] == 1 and not cluster_depthwise:
        return Decision(False, f"depthwise convolution {tuple(shape)}")
    if rows * cols < min_size:
        return Decision(False, f"{rows * cols} elements < min_size={min_size}")
    return Decision(True, "clustered")
