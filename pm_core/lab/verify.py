"""Run the property suite and fold its per-check records into a verification table.

The evidence is the test suite itself: every oracle comparison in :mod:`pm_core.testing`
appends a :class:`~pm_core.lab.records.CheckRecord` to ``$PM_CORE_RECORD``. This module
runs the equivalence properties (``tests/properties/`` of the checkout
:mod:`pm_core.lab.checkout` finds) with that variable set, and aggregates the records per
impl x norm x dtype.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pm_core import NORMS, REGISTRY

from . import records
from .checkout import checkout_root, pytest_command, stream
from .records import CheckRecord

#: The folder of the property modules whose checks make the table, in the checkout.
PROPERTIES = "tests/properties"
#: The modules there that record comparisons with the oracle (or of two impls): their
#: records make the table's cells and decide its pass or fail. The folder's other modules
#: (the gather alone, gradcheck, output metadata, the state_dict round trip) make no such
#: comparison: the test suite runs them, and running them here would lengthen the report
#: without adding a cell or a check to its table.
ORACLE_MODULES = (
    "test_forward_oracle.py",
    "test_gradients.py",
    "test_finite_range.py",
    "test_conditioning.py",
    "test_impl_pairs.py",
    "test_conv_channel_norm.py",
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


@dataclass(frozen=True)
class Verification:
    """A verify run: the table, every record it was built from, and how pytest ended."""

    rows: list[Row]
    records: list[CheckRecord]
    returncode: int
    summary: str
    seconds: float
    log_tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and all(not r.status.startswith("FAIL") for r in self.rows)


def aggregate(recs: Sequence[CheckRecord]) -> list[Row]:
    """One :class:`Row` per impl x norm x dtype, in registry order."""
    cells: dict[tuple[str, str, str], list[CheckRecord]] = {}
    for r in records.oracle_checks(recs):
        cells.setdefault((r["impl"], r["norm"], r["dtype"]), []).append(r)
    order = {name: i for i, name in enumerate(REGISTRY)}
    norm_order: dict[str, int] = {n: i for i, n in enumerate(NORMS)}
    rows = []
    for (impl, norm, dtype), rs in sorted(
        cells.items(),
        key=lambda kv: (order.get(kv[0][0], 99), norm_order.get(kv[0][1], 9), kv[0][2]),
    ):
        spec = REGISTRY.get(impl)
        kappas = [r["kappa"] for r in rs if r["kappa"] is not None]
        rows.append(
            Row(
                impl=impl,
                norm=norm,
                dtype=dtype,
                exact=spec is None or norm in spec.exact_for,
                forward_checks=sum(r["kind"] == "forward" for r in rs),
                grad_checks=sum(r["kind"].startswith("grad") for r in rs),
                max_ratio=max((r["bound_ratio"] for r in rs), default=float("nan")),
                worst_kappa=max(kappas, default=float("nan")),
                failed=sum(not r["passed"] for r in rs),
                gemm_precision="/".join(sorted({r["gemm_precision"] for r in rs})) or "ieee",
            )
        )
    return rows


def run_verify(
    profile: str = "ci",
    *,
    pytest_args: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> Verification:
    """Run the :data:`ORACLE_MODULES` under a Hypothesis ``profile`` and return the table.

    ``progress`` is called with each pytest output line (for a progress display).
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.jsonl"
        cmd = pytest_command(
            *(str(checkout_root() / PROPERTIES / m) for m in ORACLE_MODULES),
            f"--hypothesis-profile={profile}",
            "-n", "auto", "--maxprocesses=2", "-v", "--no-header", "-o", "console_output_style=classic", *pytest_args,
        )  # fmt: skip
        start = time.perf_counter()
        done = stream(cmd, on_line=progress, env={**os.environ, records.ENV_VAR: str(path)})
        seconds = time.perf_counter() - start
        recs = records.read(path)
    tail = done.tail
    summary = next((t for t in reversed(tail) if " passed" in t or " failed" in t), "").strip("= ")
    return Verification(
        aggregate(recs), recs, done.returncode, summary, seconds, "\n".join(tail[-60:])
    )


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


__all__ = [
    "ORACLE_MODULES",
    "PROPERTIES",
    "Row",
    "Verification",
    "aggregate",
    "format_table",
    "run_verify",
]
