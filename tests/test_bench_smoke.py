"""The benchmark matrix runs: its quick subset, each case once, timing off (CI smoke).

Speed is measured only in ``benchmarks/`` (``nox -s bench``); this only checks that
every case there still runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmarks_run(tmp_path: Path) -> None:
    """`pytest benchmarks --quick --benchmark-disable` collects cases for every impl and passes."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "--quick", "--benchmark-disable",
         "-q", "-p", "no:cacheprovider", "-x", f"--junitxml={tmp_path / 'junit.xml'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    junit = (tmp_path / "junit.xml").read_text()
    from pm_core import IMPLS

    for impl in IMPLS:
        assert f"test_patch_merge[{impl}-" in junit, f"no benchmark case for {impl}"
