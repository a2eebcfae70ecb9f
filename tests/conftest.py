"""Shared test setup: the examples' fixture loaders are importable, and hypothesis has a CI
profile with bounded, deterministic runs. (The reference decoder, ``spec/lgn_decoder.py``, is
imported by the tests that use it.)"""

from __future__ import annotations

import os
import sys

from hypothesis import HealthCheck, settings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (HERE, os.path.join(ROOT, "examples")):
    if path not in sys.path:
        sys.path.insert(0, path)

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
