"""The guard of scripts/test.sh (tests/_no_skips.py): a skipped test or module fails the run,
passing and xfailed tests do not. Each case runs pytest in a subprocess on a small test file.
(A module skipped whole leaves no test: pytest then exits 5, "no tests collected", itself.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CASES = {
    "passes": ("def test_ok():\n    pass\n", 0),
    "skip_call": ("import pytest\n\ndef test_ok():\n    pass\n\ndef test_s():\n    pytest.skip('why')\n", 1),
    "skip_mark": ("import pytest\n\n@pytest.mark.skip(reason='why')\ndef test_s():\n    pass\n", 1),
    "skipif_mark": ("import pytest\n\n@pytest.mark.skipif(True, reason='why')\ndef test_s():\n    pass\n", 1),
    "importorskip": (
        "import pytest\n\nnope = pytest.importorskip('no_such_module_xyz')\n\ndef test_s():\n    pass\n",
        5,
    ),
    "importorskip_beside_a_passing_module": (
        "import pytest\n\nnope = pytest.importorskip('no_such_module_xyz')\n\ndef test_s():\n    pass\n",
        1,
    ),
    "fixture_skip": (
        "import pytest\n\n@pytest.fixture\ndef f():\n    pytest.skip('why')\n\ndef test_s(f):\n    pass\n",
        1,
    ),
    "xfail": ("import pytest\n\n@pytest.mark.xfail(strict=True)\ndef test_x():\n    assert False\n", 0),
    "failure_stays_a_failure": ("def test_f():\n    assert False\n", 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_guard(case: str, tmp_path: Path) -> None:
    source, want = CASES[case]
    (tmp_path / "test_case.py").write_text(source)
    if case.endswith("_beside_a_passing_module"):
        (tmp_path / "test_other.py").write_text("def test_ok():\n    pass\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    r = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "tests._no_skips", "-p", "no:cacheprovider"),
            *("-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path)),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = r.stdout + r.stderr
    assert r.returncode == want, out
    if want and case != "failure_stays_a_failure":
        assert "skipped (not allowed: every test must run)" in out, out
        assert "test_case.py" in out, out
