"""Project-level promises: the README and CI agree, and the CLI's usage errors exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pm_core import IMPLS
from pm_core.lab.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    """.ci/run's last command is, verbatim, the README's test command."""
    lines = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines()]
    last = [ln for ln in lines if ln and not ln.startswith(("#", "set ", "cd "))][-1]
    assert last in (ROOT / "README.md").read_text()


def test_readme_lists_every_impl():
    """Adding an impl to the registry without documenting it fails here."""
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in IMPLS if f"| `{name}` |" not in readme]
    assert not missing, f"README's impl table lacks {missing}"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["verify", "--profile", "nightly"],
        ["traffic", "--shape", "8,56,56"],
        ["traffic", "--dtype", "int8"],
        ["report", "--quick", "--nope"],
    ],
)
def test_cli_usage_errors_exit_2(argv, capsys):
    """Bad arguments exit with code 2 and say what is wrong on stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: pm-core" in err
    assert "error:" in err


def test_cli_traffic_prints_a_table():
    """`python -m pm_core traffic` runs end to end and prints the conv path at ratio 1.00 for norm none."""
    out = subprocess.run(
        [sys.executable, "-m", "pm_core", "traffic", "--shape", "1,8,6,4"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    row = next(line for line in out.splitlines() if line.startswith("| none | conv |"))
    assert "| 1.00 |" in row


@pytest.mark.models
def test_readme_python_examples_run():
    """Every ```python block in the README runs as written (so the documented API cannot drift)."""
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    assert len(blocks) >= 2
    swapped = []
    for block in blocks:
        namespace: dict[str, object] = {}
        exec(compile(block, "README.md", "exec"), namespace)
        if "n" in namespace:
            swapped.append(namespace["n"])
    assert swapped == [3]  # the model example swapped all three merges
