"""Run the property suite and fold its per-check records into a verification table.

The evidence is the test suite itself: ``tests/assertions.py`` appends one JSON line per
checked comparison to ``$PM_CORE_RECORD``; this module runs pytest with that variable set
and aggregates the lines per impl x norm x dtype.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .impls import REGISTRY

# The property modules whose records make the table; the rest of the suite (models,
# traffic, tensorboard) is not part of the equivalence sweep.
PROPERTY_TESTS = (
    "test_forward_oracle.py",
    "test_impl_pairs.py",
    "test_gradients.py",
    "test_conv_channel_norm.py",
    "test_conditioning.py",
)


@dataclass(frozen=True)
class Row:
    """One impl x norm x dtype cell of the verification table."""

    impl: str
    norm: str
    dtype: str
    exact: bool
    forward_checks: int
    grad_checks: int
    max_ratio: float  # max error / bound over every check (<= 1 passes)
    worst_kappa: float
    failed: int
    gemm_precision: str = "ieee"  # the GEMM precision(s) the cell was bounded at

    @property
    def status(self) -> str:
        if not self.exact:
            return "differs (expected)" if self.failed == 0 else "FAIL: matched"
        return "pass" if self.failed == 0 and self.max_ratio <= 1 else "FAIL"


@dataclass
class Verification:
    rows: list[Row]
    records: list[dict[str, object]]
    returncode: int
    summary: str
    seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and all(not r.status.startswith("FAIL") for r in self.rows)


def find_tests_dir(start: Path | None = None) -> Path:
    """The repository's ``tests/`` folder (verify runs from a checkout, not an installed wheel)."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents, Path(__file__).resolve().parent.parent):
        if (d / "tests" / "assertions.py").is_file():
            return d / "tests"
    raise FileNotFoundError(
        "pm-core verify runs the property suite in tests/ and needs a source checkout; "
        "run it from the repository root"
    )


def aggregate(records: Sequence[dict[str, object]]) -> list[Row]:
    cells: dict[tuple[str, str, str], list[dict[str, object]]] = {}
    for r in records:
        if r.get("kind") == "pair":
            continue
        key = (str(r["impl"]), str(r["norm"]), str(r["dtype"]))
        cells.setdefault(key, []).append(r)
    order = {name: i for i, name in enumerate(REGISTRY)}
    rows = []
    for (impl, norm, dtype), rs in sorted(
        cells.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1], kv[0][2])
    ):
        spec = REGISTRY.get(impl)
        exact = spec is None or norm in spec.exact_for
        ratios = [float(r["bound_ratio"]) for r in rs if r.get("bound_ratio") is not None]  # type: ignore[arg-type]
        kappas = [float(r["kappa"]) for r in rs if r.get("kappa") is not None]  # type: ignore[arg-type]
        rows.append(
            Row(
                impl=impl,
                norm=norm,
                dtype=dtype,
                exact=exact,
                forward_checks=sum(r["kind"] == "forward" for r in rs),
                grad_checks=sum(str(r["kind"]).startswith("grad") for r in rs),
                max_ratio=max(ratios, default=float("nan")),
                worst_kappa=max(kappas, default=float("nan")),
                failed=sum(not r.get("passed", True) for r in rs),
                gemm_precision="/".join(
                    sorted({str(r["gemm_precision"]) for r in rs if r.get("gemm_precision")})
                )
                or "ieee",
            )
        )
    return rows


def run_verify(
    profile: str = "ci",
    *,
    tests_dir: Path | None = None,
    pytest_args: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> Verification:
    """Run the property tests under a Hypothesis ``profile`` and return the table.

    ``progress`` is called with each pytest result line (for a progress bar).
    """
    import time

    tests = tests_dir or find_tests_dir()
    files = [str(tests / f) for f in PROPERTY_TESTS if (tests / f).is_file()]
    if not files:
        raise FileNotFoundError(f"no property test modules in {tests}")
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "records.jsonl"
        env = {**os.environ, "PM_CORE_RECORD": str(record)}
        cmd = [
            sys.executable, "-m", "pytest", *files, f"--hypothesis-profile={profile}",
            "-v", "-p", "no:cacheprovider", "--no-header", "-o", "console_output_style=classic",
            *pytest_args,
        ]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=tests.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            tail = [*tail[-199:], line.rstrip("\n")]
            if progress is not None and "::" in line:
                progress(line.strip())
        returncode = proc.wait()
        seconds = time.perf_counter() - start
        records = (
            [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
            if record.exists()
            else []
        )
    summary = next((t for t in reversed(tail) if " passed" in t or " failed" in t), "").strip("= ")
    v = Verification(aggregate(records), records, returncode, summary, seconds)
    v.extra["log_tail"] = "\n".join(tail[-60:])
    return v


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table of the rows."""
    head = (
        "| impl | norm | dtype | GEMM precision | fwd checks | grad checks | max err / bound "
        "| worst kappa | status |"
    )
    out = [head, "|---|---|---|---|---:|---:|---:|---:|---|"]
    out += [
        f"| {r.impl} | {r.norm} | {r.dtype} | {r.gemm_precision} | {r.forward_checks} | "
        f"{r.grad_checks} | {r.max_ratio:.3g} | {r.worst_kappa:.3g} | {r.status} |"
        for r in rows
    ]
    return "\n".join(out)
