"""``pm-core report --merge``: runs from several machines in one table per question."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pm_core.lab.cli import main
from pm_core.lab.merge_runs import merge

ROOT = Path(__file__).resolve().parents[2]


def _summary(label: str, fastest: list[str], *, noisy: bool = False) -> dict[str, Any]:
    return {
        "command": "pm-core report",
        "machine": {"label": label, "summary": f"{label}; torch 2.14.1"},
        "noisy": noisy,
        "noise": {"reasons": ["other processes used 40% of the machine's CPU"] if noisy else []},
        "ok": True,
        "verdicts": [
            {
                "shape": [8, 56, 56, 96],
                "dtype": "float32",
                "mode": "fwd",
                "norm": "pre",
                "fastest": fastest,
                "vs_slice": {"slice": [1.0, 1.0, 1.0], "reshape": [1.05, 1.1, 1.2]},
            }
        ],
    }


def _write(folder: Path, data: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(data))
    return folder


def test_two_runs_make_one_table_with_two_machine_columns(tmp_path: Path) -> None:
    a = _write(tmp_path / "cpu", _summary("Xeon (2 cores)", ["reshape"]))
    b = _write(tmp_path / "gpu", _summary("NVIDIA H100", ["reshape", "slice"], noisy=True))
    out = tmp_path / "merged.md"
    assert main(["report", "--merge", str(a), str(b), "--merge-out", str(out)]) == 0
    text = out.read_text()
    assert "| dtype | mode | norm | Xeon (2 cores) | NVIDIA H100 (noisy) |" in text
    assert "| float32 | fwd | pre | **reshape** | tie: reshape, slice |" in text
    assert "| float32 | fwd | pre | reshape | 1.10 [1.05, 1.20] | 1.10 [1.05, 1.20] |" in text
    assert "| verification | passed | passed |" in text
    assert "flagged noisy: other processes used 40%" in text


def test_the_same_machine_twice_gets_two_columns(tmp_path: Path) -> None:
    runs = [_summary("Xeon (2 cores)", ["reshape"]), _summary("Xeon (2 cores)", ["slice"])]
    for i, r in enumerate(runs):
        r["_source"] = f"run{i}"
    text = merge(runs)
    assert "| Xeon (2 cores) | Xeon (2 cores) #2 |" in text


def test_a_folder_without_a_summary_is_named(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no summary\.json; pass a report folder"):
        main(["report", "--merge", str(tmp_path)])


def test_an_older_summary_is_named(tmp_path: Path) -> None:
    old = _write(tmp_path / "old", {"headline": [], "ok": True, "timings": {}})
    with pytest.raises(SystemExit, match=r"without 'verdicts'.*regenerate"):
        main(["report", "--merge", str(old)])


def test_merge_takes_no_measuring_flags(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="takes no --quick"):
        main(["report", "--merge", str(tmp_path), "--quick"])


def test_runs_as_a_script_without_torch(tmp_path: Path) -> None:
    """The GPU workflow's merge job runs the file on the artifacts with a bare Python."""
    a = _write(tmp_path / "a", _summary("Xeon (2 cores)", ["reshape"]))
    code = "\n".join(
        [
            "import runpy, sys",
            "sys.argv = ['merge_runs', sys.argv[1]]",
            "try:",
            "    runpy.run_path('pm_core/lab/merge_runs.py', run_name='__main__')",
            "except SystemExit as e:",
            "    assert e.code == 0, e.code",
            "assert 'torch' not in sys.modules, 'merge_runs imported torch'",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(a)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "| float32 | fwd | pre | **reshape** |" in done.stdout
