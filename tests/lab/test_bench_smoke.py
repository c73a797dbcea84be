"""The benchmark matrix runs: its quick subset, each case once, timing off (CI smoke).

Speed is measured only in ``benchmarks/`` (``nox -s bench``); this only checks that
every case there still runs. ``-o addopts=`` drops pyproject's ``--benchmark-skip``,
which would otherwise skip every case and leave nothing checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmarks_run(tmp_path: Path) -> None:
    """`pytest benchmarks --quick --benchmark-disable` (no addopts) runs a case for every
    impl, ``auto`` and a compile peer, each once, and none is skipped (a peer only where
    inductor has no C++ compiler, which the skip reason then says)."""
    env = {**os.environ, "PM_CORE_AUTO_CACHE": str(tmp_path / "auto.json")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "--quick", "-o", "addopts=",
         "--benchmark-disable", "-q", "-p", "no:cacheprovider", "-x", "-rs",
         f"--junitxml={tmp_path / 'junit.xml'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=400, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    junit = ElementTree.parse(tmp_path / "junit.xml").getroot()
    cases = {c.get("name", ""): c for c in junit.iter("testcase")}
    from pm_core import IMPLS

    for impl in (*IMPLS, "auto", "inductor:conv"):
        assert any(n.startswith(f"test_patch_merge[{impl}-") for n in cases), f"no case for {impl}"
    skipped = {n: s for n, c in cases.items() if (s := c.find("skipped")) is not None}
    for name, skip in skipped.items():
        assert name.startswith("test_patch_merge[inductor"), f"{name} was skipped"
        assert "C++ compiler" in (skip.get("message") or ""), skip.get("message")
