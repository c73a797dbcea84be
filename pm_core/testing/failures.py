"""What a failing check reports, and where every check's outcome goes.

A failure names what was checked and ends with a one-line repro (:func:`fail`). Every
comparison's outcome (its largest error against the bound) is handed to the functions
in :data:`RECORDERS`: pm-core's own suite installs the lab's JSON-lines writer there
(``tests/conftest.py``), which ``pm-core verify`` aggregates; a user's suite may install
its own, or none.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, NoReturn

import torch
from torch import Tensor

#: What was compared: the output, one gradient, or two impls against each other.
Kind = Literal["forward", "grad_x", "grad_weight", "grad_norm_weight", "grad_norm_bias", "pair"]

#: Called with every check's record: a dict with the keys :func:`record` takes, plus
#: ``test`` (the current pytest node id).
RECORDERS: list[Callable[[dict[str, Any]], None]] = []


def record(
    *,
    impl: str,
    norm: str,
    dtype: str,
    device: str,
    gemm_precision: str,
    kind: Kind,
    shape: list[int],
    kappa: float | None,
    max_abs_err: float | None,
    bound_ratio: float,
    passed: bool,
    expect: Literal["agree", "differ"] = "agree",
) -> None:
    """Hand one check's outcome to every function in :data:`RECORDERS` (none by default).

    The arguments are the record's keys but ``test``, the current pytest node.
    """
    if not RECORDERS:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    rec = {
        "test": test, "expect": expect, "impl": impl, "norm": norm, "dtype": dtype,
        "device": device, "gemm_precision": gemm_precision, "kind": kind, "shape": shape,
        "kappa": kappa, "max_abs_err": max_abs_err, "bound_ratio": bound_ratio, "passed": passed,
    }  # fmt: skip
    for fn in RECORDERS:
        fn(rec)


def describe(x: Tensor) -> str:
    return (
        f"shape {tuple(x.shape)}, strides {x.stride()}, storage offset {x.storage_offset()}, "
        f"{x.dtype}, {x.device}"
    )


def add_note_to_message(exc: BaseException, note: str) -> None:
    """:func:`add_note`'s fallback for Python < 3.11: ``note`` becomes the last line of the
    message (``exc.args[0]``), so ``str(exc)`` and pytest's report show it."""
    if len(exc.args) == 1 and isinstance(exc.args[0], str):
        exc.args = (f"{exc.args[0]}\n{note}",)
    elif exc.args:
        exc.args = (*exc.args, note)
    else:
        exc.args = (note,)


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)`` where it exists (Python >= 3.11), else
    :func:`add_note_to_message`: on 3.10 a failing check must still report, not die of an
    AttributeError."""
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:
        add_note_to_message(exc, note)


class Comparison(NamedTuple):
    """A subject's result against the oracle's, elementwise, in float64 on the host."""

    actual: Tensor
    expected: Tensor
    bound: Tensor
    err: Tensor  # |actual - expected|, inf where either is NaN
    ratio: Tensor  # err / bound; inf where the bound is 0 and the error is not

    @property
    def worst_at(self) -> int:
        """Flat index of the largest error / bound (call only on a non-empty comparison)."""
        return int(self.ratio.flatten().argmax())

    @property
    def max_err_at(self) -> int:
        """Flat index of the largest absolute error (non-empty comparisons only)."""
        return int(self.err.flatten().argmax())


def compare(actual: Tensor, expected: Tensor, bound: Tensor) -> Comparison:
    """``actual`` against ``expected`` within ``bound``: the errors and their ratios."""
    a, e, bd = (t.detach().to(torch.float64).cpu() for t in (actual, expected, bound))
    err = (a - e).abs().nan_to_num(nan=math.inf)
    inf = torch.full_like(err, math.inf)
    ratio = torch.where(bd > 0, err / bd, torch.where(err > 0, inf, torch.zeros_like(err)))
    return Comparison(a, e, bd, err, ratio)


def fail(message: str, repro: str) -> NoReturn:
    """Raise an ``AssertionError`` with ``message`` and a ``repro:`` note."""
    __tracebackhide__ = True
    exc = AssertionError(message)
    add_note(exc, f"repro: {repro}")
    raise exc


def index_of(flat: int, shape: torch.Size) -> tuple[int, ...]:
    """The multi-index of flat position ``flat`` in ``shape``."""
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), shape)) if shape else ()


__all__ = [
    "RECORDERS",
    "Comparison",
    "Kind",
    "add_note",
    "add_note_to_message",
    "compare",
    "describe",
    "fail",
    "index_of",
    "record",
]
