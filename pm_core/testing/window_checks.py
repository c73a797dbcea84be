"""The property checks of the general merge (:func:`pm_core.window_merge`) and their reports.

The counterpart of :mod:`pm_core.testing.assertions` for :class:`~pm_core.testing.window_strategies.WindowCase`:
each ``check_*`` takes a :class:`WindowSubject` (a merge with ``window_merge``'s
signature minus ``impl``) and a drawn case, so the properties and the planted bugs of
``tests/selftest/planted.py`` run the same code. Tolerances come only from
:func:`pm_core.window_error_bounds`; failures are reported, recorded and given a repro
note through :mod:`pm_core.testing.assertions`' helpers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

import pm_core
from pm_core import (
    Norm,
    depth_to_space,
    reference_window_merge,
    space_to_depth,
    window_error_bounds,
)
from pm_core.oracle import reference_depth_to_space, reference_space_to_depth

from .failures import Kind, compare, describe, fail, index_of, record
from .finite import assert_finite, differentiate
from .strategies import EPS
from .window_strategies import WindowCase, WindowInputs

F64 = torch.float64
WindowMerge = Callable[..., Tensor]


@dataclass(frozen=True)
class WindowSubject:
    """A general merge under test: a report name, the function, and code that rebuilds it."""

    name: str
    merge: WindowMerge
    expr: str


def window_merge_for(impl: str) -> WindowSubject:
    """:func:`pm_core.window_merge` with ``impl`` (a registered name)."""
    assert impl in pm_core.REGISTRY, impl
    merge = partial(pm_core.window_merge, impl=impl)
    return WindowSubject(f"window-{impl}", merge, f"window_merge_for({impl!r})")


def _repro(check: str, subject: WindowSubject | None, case: WindowCase, **kw: object) -> str:
    args = "".join(f", {k}={v!r}" for k, v in kw.items())
    head = "" if subject is None else f"{subject.expr}, "
    return (
        'python -c "from pm_core import Window; from pm_core.testing import *; '
        f'{check}({head}{case!r}{args})"'
    )


def _kappa(x: Tensor, case: WindowCase) -> float:
    v = reference_space_to_depth(x.detach().to(F64), case.window, case.window_layout())
    if v.numel() == 0:
        return 0.0
    mu = v.mean(-1, keepdim=True)
    sigma = torch.sqrt(((v - mu) ** 2).mean(-1, keepdim=True) + EPS)
    return float((mu.abs() / sigma).max())


def assert_within_window_bound(
    actual: Tensor | None,
    expected: Tensor,
    bound: Tensor,
    *,
    kind: Kind,
    subject: WindowSubject,
    norm: str,
    case: WindowCase,
    x: Tensor,
    repro: str,
) -> float:
    """``|actual - expected| <= bound`` elementwise, or a report naming the window, the
    layout, the worst element and its bound. Returns the largest error / bound ratio."""
    __tracebackhide__ = True
    kappa = _kappa(x, case)
    what = f"{kind} of {subject.name!r} (norm={norm!r}, dtype={case.dtype})"
    where = (
        f"  x: {describe(x)}; memory {case.memory}; {case.window}; layout {case.layout!r}"
        f"{' (channel major)' if case.channel_major else ''}; values {case.values}"
    )

    def rec(max_abs_err: float, bound_ratio: float, passed: bool) -> None:
        record(
            impl=subject.name, norm=norm, dtype=case.dtype, device=str(x.device.type),
            gemm_precision="ieee", kind=kind, shape=list(case.shape), kappa=kappa,
            max_abs_err=max_abs_err, bound_ratio=bound_ratio, passed=passed,
        )  # fmt: skip

    if actual is None or tuple(actual.shape) != tuple(expected.shape):
        rec(math.inf, math.inf, False)
        got = None if actual is None else tuple(actual.shape)
        fail(f"{what}: got shape {got}, the oracle's is {tuple(expected.shape)}\n{where}", repro)
    c = compare(actual, expected, bound)
    a, e, bd, err = c.actual, c.expected, c.bound, c.err
    if err.numel() == 0:
        rec(0.0, 0.0, True)
        return 0.0
    at, e_at = c.worst_at, c.max_err_at
    worst = float(c.ratio.flatten()[at])
    passed = worst <= 1.0
    rec(float(err.flatten()[e_at]), worst, passed)
    if passed:
        return worst
    i = index_of(at, err.shape)
    fail(
        f"{what} is outside pm_core.window_error_bounds\n{where}\n"
        f"  max |err| = {float(err.flatten()[e_at]):.3e} at {index_of(e_at, err.shape)}\n"
        f"  max err/bound = {worst:.3g} at {i}: got {float(a[i]):.6g}, oracle {float(e[i]):.6g}, "
        f"bound {float(bd[i]):.3e}; worst window |mean|/std = {kappa:.3g}",
        repro,
    )


def _call(subject: WindowSubject, case: WindowCase, inp: WindowInputs, norm: Norm) -> Tensor:
    return subject.merge(
        inp.x, inp.weight, inp.norm_weight, inp.norm_bias,
        window=case.window, layout=case.window_layout(), norm=norm, eps=EPS,
    )  # fmt: skip


def check_window_gather(case: WindowCase) -> None:
    """:func:`pm_core.space_to_depth` equals the oracle's index-formula gather bit for bit
    (pure data movement: no rounding is allowed), in shape, dtype and every value."""
    __tracebackhide__ = True
    inp = case.build("none")
    got = space_to_depth(inp.x, case.window, case.window_layout())
    want = reference_space_to_depth(inp.x, case.window, case.window_layout())
    if got.dtype != want.dtype or got.shape != want.shape or not torch.equal(got, want):
        bad = "" if got.shape != want.shape else f", {int((got != want).sum())} entries differ"
        fail(
            f"space_to_depth differs from the oracle gather: {tuple(got.shape)} {got.dtype} vs "
            f"{tuple(want.shape)} {want.dtype}{bad}\n  x: {describe(inp.x)}; {case.window}; "
            f"layout {case.layout!r}",
            _repro("check_window_gather", None, case),
        )


def check_depth_to_space_inverts(case: WindowCase) -> None:
    """For tiling windows, ``depth_to_space(space_to_depth(x))`` is ``x`` bit for bit where
    the windows cover it, and zero elsewhere; and it equals the oracle's scatter."""
    __tracebackhide__ = True
    assert case.window.tiles, "depth_to_space inverts tiling windows only"
    inp = case.build("none")
    lay = case.window_layout()
    size = tuple(case.shape[1:-1])
    v = space_to_depth(inp.x, case.window, lay)
    back = depth_to_space(v, case.window, lay, size=size)
    covered = reference_space_to_depth(torch.ones_like(inp.x), case.window, lay)
    mask = reference_depth_to_space(covered, case.window, lay, size) > 0
    want = torch.where(mask, inp.x, torch.zeros((), dtype=inp.x.dtype))
    scatter = reference_depth_to_space(v, case.window, lay, size)
    if not (torch.equal(back, want) and torch.equal(back, scatter)):
        fail(
            f"depth_to_space does not invert space_to_depth ({case.window}, layout "
            f"{case.layout!r}): {int((back != want).sum())} entries differ from x, "
            f"{int((back != scatter).sum())} from the oracle scatter",
            _repro("check_depth_to_space_inverts", None, case),
        )


def check_window_forward(subject: WindowSubject, case: WindowCase, *, norm: Norm) -> float:
    """``subject`` matches :func:`pm_core.reference_window_merge`, fed the same rounded
    inputs, within :func:`pm_core.window_error_bounds`; returns the worst error / bound."""
    __tracebackhide__ = True
    inp = case.build(norm)
    lay = case.window_layout()
    repro = _repro("check_window_forward", subject, case, norm=norm)
    y = _call(subject, case, inp, norm)
    if y.dtype != inp.x.dtype:
        fail(f"{subject.name!r} returned {y.dtype} for {inp.x.dtype} input", repro)
    x, w, nw, nb = inp.x, inp.weight, inp.norm_weight, inp.norm_bias
    win = case.window
    eb = window_error_bounds(x, w, nw, nb, window=win, layout=lay, norm=norm, eps=EPS)
    want = reference_window_merge(x, w, nw, nb, window=win, layout=lay, norm=norm, eps=EPS)
    return assert_within_window_bound(
        y, want, eb.output, kind="forward", subject=subject, norm=norm, case=case, x=x,
        repro=repro,
    )  # fmt: skip


def check_window_grads(subject: WindowSubject, case: WindowCase, *, norm: Norm) -> None:
    """dL/dx, dL/dW, dL/dg and dL/db of ``subject`` match the float64 oracle's, each
    within its :func:`pm_core.window_error_bounds` bound (overlapping windows included:
    their dL/dx sums over the windows that share an input)."""
    __tracebackhide__ = True
    inp = case.build(norm)
    lay = case.window_layout()
    leaves = [None if t is None else t.detach().requires_grad_() for t in inp[:4]]
    x, w, nw, nb = leaves
    assert x is not None
    assert w is not None
    y = subject.merge(x, w, nw, nb, window=case.window, layout=lay, norm=norm, eps=EPS)
    present = [t for t in leaves if t is not None]
    found = iter(torch.autograd.grad(y, present, inp.grad_out, allow_unused=True))
    got = [None if t is None else next(found) for t in leaves]
    ref = [None if t is None else t.detach().to(F64).requires_grad_() for t in inp[:4]]
    rx, rw, rnw, rnb = ref
    assert rx is not None
    assert rw is not None
    y64 = reference_window_merge(
        rx, rw, rnw, rnb, window=case.window, layout=lay, norm=norm, eps=EPS
    )
    torch.autograd.backward(y64, inp.grad_out.to(F64))
    eb = window_error_bounds(
        inp.x, inp.weight, inp.norm_weight, inp.norm_bias, window=case.window, layout=lay,
        norm=norm, eps=EPS, grad_out=inp.grad_out,
    )  # fmt: skip
    repro = _repro("check_window_grads", subject, case, norm=norm)
    kinds: list[Kind] = ["grad_x", "grad_weight", "grad_norm_weight", "grad_norm_bias"]
    bounds = [eb.x, eb.reduction_weight, eb.norm_weight, eb.norm_bias]
    for g, r, bd, kind in zip(got, ref, bounds, kinds, strict=True):
        if r is None:
            continue
        assert r.grad is not None, f"the oracle gave no {kind}"
        assert bd is not None, f"window_error_bounds gave no bound for {kind}"
        assert_within_window_bound(
            g, r.grad, bd, kind=kind, subject=subject, norm=norm, case=case, x=inp.x,
            repro=repro,
        )  # fmt: skip


def check_window_finite(subject: WindowSubject, case: WindowCase, *, norm: Norm) -> None:
    """The output and gradients of ``subject`` are finite wherever the float64 oracle's
    are finite and within the dtype's range (:func:`~pm_core.testing.assert_finite`)."""
    __tracebackhide__ = True
    inp = case.build(norm)
    kw = {"window": case.window, "layout": case.window_layout(), "norm": norm, "eps": EPS}

    def merge(*t: Tensor | None) -> Tensor:
        return subject.merge(*t, **kw)

    def oracle(*t: Tensor | None) -> Tensor:
        x, w, nw, nb = t
        assert x is not None
        assert w is not None
        return reference_window_merge(x, w, nw, nb, **kw)  # type: ignore[arg-type]

    got = differentiate(merge, inp[:4], inp.grad_out)
    host = tuple(None if t is None else t.to(F64) for t in inp[:4])
    assert_finite(
        got, differentiate(oracle, host, inp.grad_out.to(F64)), inp.x.dtype,
        what=f"{subject.name!r} (norm={norm!r}, dtype={case.dtype})",
        repro=_repro("check_window_finite", subject, case, norm=norm),
    )  # fmt: skip


__all__ = [
    "WindowSubject",
    "assert_within_window_bound",
    "check_depth_to_space_inverts",
    "check_window_finite",
    "check_window_forward",
    "check_window_gather",
    "check_window_grads",
    "window_merge_for",
]
