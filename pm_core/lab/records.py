"""The verification records: one JSON line per checked comparison, with a typed schema.

The property checks (:mod:`pm_core.testing`, wired up by ``tests/conftest.py``) write a :class:`CheckRecord` for every
output or gradient they compare with the float64 oracle, to the file named by
``$PM_CORE_RECORD``; ``pm-core verify`` aggregates them into the verification table, and
the report's conditioning plot draws them. This module is the contract between the two:
:func:`append` is the only writer and :func:`read` the only reader, and :func:`read`
rejects a line that does not follow the schema, naming the field.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypedDict, get_args

ENV_VAR = "PM_CORE_RECORD"

#: What was compared: the output, one gradient, or two impls against each other.
Kind = Literal["forward", "grad_x", "grad_weight", "grad_norm_weight", "grad_norm_bias", "pair"]
KINDS: tuple[Kind, ...] = get_args(Kind)
#: JSON has no inf: an infinite error or ratio is written as the largest finite float.
_HUGE = 1.7976931348623157e308


class CheckRecord(TypedDict):
    """One comparison of a merge against the oracle (or, for ``"pair"``, two impls)."""

    test: str  # pytest node id of the test that made it
    impl: str  # registry name, or the planted bug's / pair's name
    norm: str
    dtype: str
    device: str
    gemm_precision: str  # what the bound was derived for: "ieee", "tf32", "bf16", ...
    kind: Kind
    shape: list[int]  # (B, H, W, C) of the input
    max_abs_err: float | None  # None: not measured (a case found to differ)
    bound_ratio: float  # max |err| / bound over the elements; <= 1 passes
    kappa: float | None  # worst window |mean| / std of the input
    passed: bool
    expect: Literal["agree", "differ"]  # "differ": an impl checked to be a different function


def _finite(v: float | None) -> float | None:
    return _HUGE if v is not None and not math.isfinite(v) else v


def append(rec: CheckRecord, path: str | os.PathLike[str] | None = None) -> None:
    """Append ``rec`` to ``path`` (default ``$PM_CORE_RECORD``; nothing when unset)."""
    target = path if path is not None else os.environ.get(ENV_VAR)
    if not target:
        return
    line: CheckRecord = {
        **rec,
        "max_abs_err": _finite(rec["max_abs_err"]),
        "bound_ratio": _HUGE if not math.isfinite(rec["bound_ratio"]) else rec["bound_ratio"],
        "kappa": _finite(rec["kappa"]),
    }
    with open(target, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def _check(obj: object, where: str) -> CheckRecord:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: a record is a JSON object, got {type(obj).__name__}")
    missing = sorted(set(CheckRecord.__annotations__) - set(obj))
    if missing:
        raise ValueError(f"{where}: record lacks {missing}")
    if obj["kind"] not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}, got {obj['kind']!r}")
    for key in ("max_abs_err", "kappa"):
        if obj[key] is not None and not isinstance(obj[key], (int, float)):
            raise ValueError(f"{where}: {key} must be a number or null, got {obj[key]!r}")
    if not isinstance(obj["bound_ratio"], (int, float)) or not isinstance(obj["passed"], bool):
        raise ValueError(f"{where}: bound_ratio must be a number and passed a bool")
    return CheckRecord(
        test=str(obj["test"]),
        impl=str(obj["impl"]),
        norm=str(obj["norm"]),
        dtype=str(obj["dtype"]),
        device=str(obj["device"]),
        gemm_precision=str(obj["gemm_precision"]),
        kind=obj["kind"],
        shape=[int(s) for s in obj["shape"]],
        max_abs_err=None if obj["max_abs_err"] is None else float(obj["max_abs_err"]),
        bound_ratio=float(obj["bound_ratio"]),
        kappa=None if obj["kappa"] is None else float(obj["kappa"]),
        passed=obj["passed"],
        expect="differ" if obj["expect"] == "differ" else "agree",
    )


def read(path: Path) -> list[CheckRecord]:
    """Every record in ``path`` (none when it does not exist); raises on a malformed line."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [_check(json.loads(s), f"{path}:{i}") for i, s in enumerate(lines, 1) if s.strip()]


def oracle_checks(records: Sequence[CheckRecord]) -> list[CheckRecord]:
    """The records that compare an impl with the oracle (not two impls with each other)."""
    return [r for r in records if r["kind"] != "pair"]


__all__ = ["ENV_VAR", "KINDS", "CheckRecord", "Kind", "append", "oracle_checks", "read"]
