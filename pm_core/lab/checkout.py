"""Where the lab finds the test suite and the benchmarks, and how it runs pytest on them.

The evidence pm-core reports *is* its test suite and its benchmark matrix, which live in
the source checkout (``tests/``, ``benchmarks/``), not in the installed package. This
module is the one place that finds them:

1. ``$PM_CORE_CHECKOUT``, when set, names the checkout;
2. otherwise the checkout this package sits in (an editable install, or running from the
   repository), recognised by its ``pyproject.toml`` naming ``pm-core``.

Anything else (a wheel installed into site-packages) raises :class:`CheckoutNotFound`,
which says how to fix it. Every pytest command the lab runs is built here, and run by
:func:`stream`, so the benchmark command is written once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "PM_CORE_CHECKOUT"
LAYER_BENCH = "benchmarks/test_patch_merge_bench.py"
MODEL_BENCH = "benchmarks/test_models_bench.py"
FAMILY_BENCH = "benchmarks/test_family_bench.py"
#: pytest-benchmark's storage for ``pm-core bench`` / ``nox -s bench`` (``--benchmark-compare``).
BENCH_STORAGE = "profiles/bench"


class CheckoutNotFound(FileNotFoundError):
    """The lab needs a pm-core source checkout (tests/ and benchmarks/) and found none."""


def _is_checkout(d: Path) -> bool:
    pyproject = d / "pyproject.toml"
    return (
        pyproject.is_file()
        and 'name = "pm-core"' in pyproject.read_text()
        and (d / "tests").is_dir()
        and (d / "benchmarks").is_dir()
    )


def checkout_root() -> Path:
    """The pm-core source checkout whose tests and benchmarks the lab runs."""
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser().resolve()
        if not _is_checkout(root):
            raise CheckoutNotFound(
                f"${ENV_VAR}={env} is not a pm-core checkout (no pyproject.toml naming "
                "pm-core with tests/ and benchmarks/ beside it)"
            )
        return root
    root = Path(__file__).resolve().parents[2]  # <root>/pm_core/lab/checkout.py
    if _is_checkout(root):
        return root
    raise CheckoutNotFound(
        "pm-core's verify, bench and report run the test suite and benchmarks of a source "
        f"checkout, and this pm_core is installed from a wheel ({root}); clone the "
        f"repository and `pip install -e .` there, or set ${ENV_VAR} to the clone"
    )


@dataclass(frozen=True)
class Finished:
    """A finished :func:`stream` run: exit code and the last lines it printed."""

    returncode: int
    tail: tuple[str, ...]


def pytest_command(*args: str) -> list[str]:
    """``python -m pytest`` with this interpreter, no cache writes, and ``args``."""
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]


def benchmark_command(
    module: str = LAYER_BENCH,
    *,
    subset: str | None = None,
    json_path: Path | None = None,
    verbose: bool = False,
) -> list[str]:
    """The pytest-benchmark command for one benchmark module (relative to the checkout).

    ``subset`` is ``"--quick"`` or ``"--report"`` (see ``benchmarks/conftest.py``);
    ``json_path`` writes pytest-benchmark's JSON there, otherwise results are autosaved
    under :data:`BENCH_STORAGE` for ``--benchmark-compare``.
    """
    save = (
        [f"--benchmark-json={json_path}"]
        if json_path is not None
        else ["--benchmark-autosave", f"--benchmark-storage={BENCH_STORAGE}"]
    )
    return pytest_command(
        module,
        "--benchmark-only",
        "--benchmark-enable",
        "--benchmark-group-by=group",
        *save,
        *([subset] if subset else []),
        *(["-q", "-v", "--no-header"] if verbose else []),
    )


def stream(
    cmd: Sequence[str],
    *,
    on_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
    keep: int = 200,
) -> Finished:
    """Run ``cmd`` in the checkout, handing each output line to ``on_line`` as it comes.

    stdout and stderr are merged; the last ``keep`` lines come back for error messages.
    """
    proc = subprocess.Popen(
        list(cmd),
        cwd=checkout_root(),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None  # stdout=PIPE
    tail: list[str] = []
    with proc:  # closes the pipe and waits: an open pipe is a ResourceWarning
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            del tail[:-keep]
            if on_line is not None:
                on_line(line.strip())
    return Finished(proc.returncode, tuple(tail))


__all__ = [
    "BENCH_STORAGE",
    "ENV_VAR",
    "FAMILY_BENCH",
    "LAYER_BENCH",
    "MODEL_BENCH",
    "CheckoutNotFound",
    "Finished",
    "benchmark_command",
    "checkout_root",
    "pytest_command",
    "stream",
]
