"""The property checks, the one comparison they all go through, and its failure reports.

Each ``check_*`` function takes a :class:`Subject` (a merge function) and a drawn case,
so the property tests and the self-test's planted bugs run the very same code. A case
says which front door's calling convention the subject follows (its
:class:`~pm_core.testing.strategies.Door`): a 2x2
:class:`~pm_core.testing.strategies.Case` calls it as :func:`pm_core.patch_merge`
(minus ``impl``) and judges it by :func:`pm_core.reference_patch_merge` within
:func:`pm_core.error_bounds`; a :class:`~pm_core.testing.window_strategies.WindowCase`
calls it as :func:`pm_core.window_merge`, judged by :func:`pm_core.reference_window_merge`
within :func:`pm_core.window_error_bounds`. Tolerances come only from those bounds.

A failure names the subject, norm, dtype, device, shape, strides and storage offset,
the largest absolute and relative errors with their indices, and ends with a one-line
repro. With ``PM_CORE_RECORD=<path>`` every comparison appends one JSON line there
(see :func:`record`), which ``pm-core verify`` aggregates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, overload

import torch
from torch import Tensor
from torch.autograd import gradcheck, gradgradcheck

import pm_core
from pm_core import Norm, depth_to_space, space_to_depth
from pm_core.layouts import conv_to_window, window_to_conv
from pm_core.oracle import reference_depth_to_space, reference_space_to_depth

from .failures import Kind, compare, describe, fail, index_of, record
from .strategies import EPS, Case, Inputs
from .window_strategies import WindowCase

F64 = torch.float64
Merge = Callable[..., Tensor]
#: A drawn input of either front door.
AnyCase = Case | WindowCase
#: The differentiable inputs of a merge, as :func:`check_grads`'s ``wrt`` names them.
GRAD_NAMES = ("x", "weight", "norm_weight", "norm_bias")
GRAD_INPUTS = frozenset(GRAD_NAMES)


@dataclass(frozen=True)
class Subject:
    """What is under test: a name for reports, the merge function, and code that rebuilds it.

    ``merge`` takes the arguments of the front door of the cases it is checked on (see the
    module docstring). ``impl`` names the registered implementation behind it, if any:
    its GEMM precision on the device under test (:func:`pm_core.gemm_precision`) then
    sets the bound. Planted bugs have none and are judged by the IEEE bound.
    """

    name: str
    merge: Merge
    expr: str
    impl: str | None = None


def merge_for(impl: str) -> Subject:
    """The registered implementation ``impl`` behind :func:`pm_core.patch_merge` (2x2 cases)."""
    return Subject(impl, partial(pm_core.patch_merge, impl=impl), f"merge_for({impl!r})", impl)


def window_merge_for(impl: str) -> Subject:
    """The registered implementation ``impl`` behind :func:`pm_core.window_merge` (window cases)."""
    assert impl in pm_core.REGISTRY, impl
    merge = partial(pm_core.window_merge, impl=impl)
    return Subject(f"window-{impl}", merge, f"window_merge_for({impl!r})", impl)


#: ``gemm_precision=AUTO``: the subject's own, from :func:`pm_core.gemm_precision`.
AUTO = "auto"


def precision_for(subject: Subject, device: str, dtype: torch.dtype, given: str | None) -> str:
    """The GEMM precision a check judges ``subject`` by: ``given``, or under ``AUTO`` what
    :func:`pm_core.gemm_precision` reports for its impl (IEEE for a subject with none)."""
    if given != AUTO:
        return "ieee" if given is None else given
    if subject.impl is None:
        return "ieee"
    return pm_core.gemm_precision(subject.impl, device, dtype)


def _repro(check: str, subject: Subject | None, case: AnyCase, **kw: object) -> str:
    args = "".join(f", {k}={v!r}" for k, v in kw.items())
    head = "" if subject is None else f"{subject.expr}, "
    return (
        'python -c "from pm_core import Window; from pm_core.testing import *; '
        f'{check}({head}{case!r}{args})"'
    )


def _kappa(case: AnyCase, inp: Inputs) -> float:
    """The worst window's ``|mean| / std`` (zero padding included), for the report."""
    x = inp.x.detach().to(F64).cpu()
    if inp.hw is not None:
        x = x.reshape(x.shape[0], *inp.hw, x.shape[-1])
    v = reference_space_to_depth(x, case.window, case.window_layout())
    if v.numel() == 0:
        return 0.0
    mu = v.mean(-1, keepdim=True)
    return float((mu.abs() / torch.sqrt(((v - mu) ** 2).mean(-1, keepdim=True) + EPS)).max())


def assert_within_bound(
    actual: Tensor | None,
    expected: Tensor,
    bound: Tensor,
    *,
    kind: Kind,
    subject: Subject,
    norm: str,
    case: AnyCase,
    device: str,
    x: Tensor,
    kappa: float,
    repro: str,
    precision: str = "ieee",
) -> float:
    """``|actual - expected| <= bound`` elementwise, or a failure report naming everything.

    Returns the largest ``|actual - expected| / bound`` (at most 1 when it returns).
    """
    __tracebackhide__ = True
    what = (
        f"{kind} of {subject.name!r} (norm={norm!r}, dtype={case.dtype}, device={device}, "
        f"GEMM precision {precision})"
    )
    where = f"  x: {describe(x)}; {case.where()}"

    def rec(max_abs_err: float, bound_ratio: float, passed: bool) -> None:
        record(
            impl=subject.name, norm=norm, dtype=case.dtype, device=device,
            gemm_precision=precision, kind=kind, shape=list(case.shape), kappa=kappa,
            max_abs_err=max_abs_err, bound_ratio=bound_ratio, passed=passed,
        )  # fmt: skip

    if actual is None or tuple(actual.shape) != tuple(expected.shape):
        rec(max_abs_err=math.inf, bound_ratio=math.inf, passed=False)
        got = None if actual is None else tuple(actual.shape)
        fail(f"{what}: got shape {got}, the oracle's is {tuple(expected.shape)}\n{where}", repro)
    c = compare(actual, expected, bound)
    a, e, bd, err = c.actual, c.expected, c.bound, c.err
    if err.numel() == 0:
        rec(max_abs_err=0.0, bound_ratio=0.0, passed=True)
        return 0.0
    r_at, e_at = c.worst_at, c.max_err_at
    worst = float(c.ratio.flatten()[r_at])
    rel = err / e.abs()
    rel_at = int(rel.nan_to_num(nan=0.0).flatten().argmax())
    passed = worst <= 1.0
    rec(max_abs_err=float(err.flatten()[e_at]), bound_ratio=worst, passed=passed)
    if passed:
        return worst
    shape = err.shape
    at = index_of(r_at, shape)
    fail(
        f"{what} is outside pm_core.{case.door.bounds.__name__}\n{where}\n"
        f"  max |err| = {float(err.flatten()[e_at]):.3e} at {index_of(e_at, shape)}\n"
        f"  max rel err = {float(rel.flatten()[rel_at]):.3e} at {index_of(rel_at, shape)}\n"
        f"  max err/bound = {worst:.3g} at {at}: got {float(a[at]):.6g}, oracle "
        f"{float(e[at]):.6g}, bound {float(bd[at]):.3e}; worst window |mean|/std = {kappa:.3g}",
        repro,
    )


def _call(
    subject: Subject, case: AnyCase, inp: Inputs, norm: Norm, eps: float = EPS, **over: Any
) -> Tensor:
    args = {
        "x": inp.x, "weight": inp.weight, "nw": inp.norm_weight, "nb": inp.norm_bias, **over,
    }  # fmt: skip
    return subject.merge(
        args["x"], args["weight"], args["nw"], args["nb"], **case.keywords(inp), norm=norm,
        eps=eps,
    )  # fmt: skip


@overload
def _host(t: Tensor) -> Tensor: ...
@overload
def _host(t: None) -> None: ...
def _host(t: Tensor | None) -> Tensor | None:
    """MPS has no float64: the oracle and the bounds run on the CPU copy there."""
    return t.cpu() if t is not None and t.device.type == "mps" else t


def _oracle(case: AnyCase, inp: Inputs, norm: Norm, eps: float = EPS) -> Tensor:
    x, w, nw, nb = (_host(t) for t in inp[:4])
    return case.door.oracle(x, w, nw, nb, **case.keywords(inp), norm=norm, eps=eps)


def _bounds(
    case: AnyCase,
    inp: Inputs,
    norm: Norm,
    device: str,
    subject: Subject,
    precision: str,
    eps: float = EPS,
    **kw: Any,
) -> pm_core.bounds.ErrorBounds:
    """The bound for ``subject`` on ``device``: its GEMM precision, and the accumulation
    dtype its backend uses there (:func:`pm_core.precision.gemm_accumulation`)."""
    x, w, nw, nb = (_host(t) for t in inp[:4])
    assert x is not None
    assert w is not None
    if kw.get("grad_out") is not None:
        kw["grad_out"] = _host(kw["grad_out"])
    acc = (
        None
        if subject.impl is None
        else pm_core.precision.gemm_accumulation(subject.impl, device, x.dtype)
    )
    return case.door.bounds(
        x.detach(), w.detach(), nw, nb, **case.keywords(inp), norm=norm, eps=eps,
        accumulate=acc, gemm_precision=precision, **kw,
    )  # fmt: skip


def check_forward(
    subject: Subject,
    case: AnyCase,
    *,
    norm: Norm,
    device: str = "cpu",
    gemm_precision: str | None = AUTO,
    eps: float = EPS,
) -> float:
    """``subject`` matches the float64 oracle, computed from the same rounded inputs,
    within the bound for its GEMM precision (``AUTO``: :func:`precision_for`), both
    with LayerNorm epsilon ``eps``.

    Returns the largest error / bound ratio.
    """
    __tracebackhide__ = True
    inp = case.build(norm, device)
    precision = precision_for(subject, device, inp.x.dtype, gemm_precision)
    y = _call(subject, case, inp, norm, eps=eps)
    repro = _repro("check_forward", subject, case, norm=norm, device=device, eps=eps)
    if y.dtype != inp.x.dtype:
        fail(f"{subject.name!r} returned {y.dtype} for {inp.x.dtype} input", repro)
    eb = _bounds(case, inp, norm, device, subject, precision, eps=eps)
    return assert_within_bound(
        y, _oracle(case, inp, norm, eps), eb.output, kind="forward", subject=subject,
        norm=norm, case=case, device=device, x=inp.x, kappa=_kappa(case, inp), repro=repro,
        precision=precision,
    )  # fmt: skip


def check_differs(subject: Subject, case: AnyCase, *, norm: Norm, device: str = "cpu") -> float:
    """The largest ``|subject - oracle| / bound`` of the output (> 1 means it differs)."""
    inp = case.build(norm, device)
    precision = precision_for(subject, device, inp.x.dtype, AUTO)
    y = _call(subject, case, inp, norm).detach().to(F64).cpu()
    eb = _bounds(case, inp, norm, device, subject, precision)
    err = (y - _oracle(case, inp, norm).cpu()).abs()
    return float((err / eb.output.cpu()).max()) if err.numel() else 0.0


def check_pair(a: Subject, b: Subject, case: AnyCase, *, norm: Norm, device: str = "cpu") -> None:
    """Two implementations agree in the same dtype, within the sum of their oracle bounds
    (each at its own GEMM precision: on a GPU, a TF32 conv against an IEEE matmul)."""
    __tracebackhide__ = True
    inp = case.build(norm, device)
    ya, yb = _call(a, case, inp, norm), _call(b, case, inp, norm)
    pa, pb = (precision_for(s, device, inp.x.dtype, AUTO) for s in (a, b))
    bound = (
        _bounds(case, inp, norm, device, a, pa).output
        + _bounds(case, inp, norm, device, b, pb).output
    )
    both = Subject(f"{a.name}~{b.name}", a.merge, a.expr)
    assert_within_bound(
        ya, yb, bound, kind="pair", subject=both, norm=norm, case=case,
        device=device, x=inp.x, kappa=_kappa(case, inp),
        repro=_repro("check_pair", a, case, norm=norm, device=device).replace(
            f"{a.expr}, ", f"{a.expr}, {b.expr}, "
        ),
        precision=pa if pa == pb else f"{pa}~{pb}",
    )  # fmt: skip


def check_grads(
    subject: Subject,
    case: AnyCase,
    *,
    norm: Norm,
    device: str = "cpu",
    weight_param: str = "linear",
    gemm_precision: str | None = AUTO,
    create_graph: bool = False,
    wrt: frozenset[str] = GRAD_INPUTS,
) -> None:
    """Gradients w.r.t. x, the reduction weight and the norm parameters match the oracle's,
    within the bound for the subject's GEMM precision (``AUTO``: :func:`precision_for`);
    overlapping windows included (their dL/dx sums over the windows sharing an input).

    ``wrt`` names the inputs that require grad (a subset of :data:`GRAD_INPUTS`); the
    others are frozen, as in fine-tuning, and an impl must still give the rest right
    (its backward skips work by ``needs_input_grad``).

    ``weight_param="conv"`` differentiates w.r.t. the ``[O, C, *kernel]`` conv weight and
    maps its gradient back through :func:`pm_core.layouts.conv_to_window` before comparing.
    ``create_graph=True`` takes them as the first step of a second derivative does,
    which may run a different backward (the conv fold's differentiable one).
    """
    __tracebackhide__ = True
    inp = case.build(norm, device)
    precision = precision_for(subject, device, inp.x.dtype, gemm_precision)
    assert wrt, "wrt names no input to differentiate"
    assert wrt <= GRAD_INPUTS, f"wrt must be a subset of {sorted(GRAD_INPUTS)}, got {sorted(wrt)}"
    x = inp.x.requires_grad_("x" in wrt)
    win, lay = case.window, case.window_layout()
    if weight_param == "conv":
        leaf_w = window_to_conv(inp.weight, win, lay).requires_grad_("weight" in wrt)
        weight = conv_to_window(leaf_w, win, lay)
    else:
        leaf_w = weight = inp.weight.requires_grad_("weight" in wrt)
    nw = None if inp.norm_weight is None else inp.norm_weight.requires_grad_("norm_weight" in wrt)
    nb = None if inp.norm_bias is None else inp.norm_bias.requires_grad_("norm_bias" in wrt)
    y = _call(subject, case, inp, norm, x=x, weight=weight, nw=nw, nb=nb)
    leaves = [t for t in (x, leaf_w, nw, nb) if t is not None and t.requires_grad]
    if not leaves:  # only absent norm parameters were asked for: nothing to differentiate
        return
    found = iter(
        torch.autograd.grad(y, leaves, inp.grad_out, create_graph=create_graph, allow_unused=True)
    )
    gx, gw, gnw, gnb = (
        next(found) if t is not None and t.requires_grad else None for t in (x, leaf_w, nw, nb)
    )
    if weight_param == "conv" and gw is not None:
        gw = conv_to_window(gw, win, lay)

    ref = [None if t is None else _host(t.detach()).to(F64).requires_grad_() for t in inp[:4]]
    rx, rw, rnw, rnb = ref
    y64 = case.door.oracle(rx, rw, rnw, rnb, **case.keywords(inp), norm=norm, eps=EPS)
    torch.autograd.backward(y64, _host(inp.grad_out).to(F64))
    eb = _bounds(case, inp, norm, device, subject, precision, grad_out=inp.grad_out)
    kappa = _kappa(case, inp)
    repro = _repro(
        "check_grads", subject, case, norm=norm, device=device, weight_param=weight_param,
        create_graph=create_graph,
    )  # fmt: skip
    got = [gx, gw, gnw, gnb]
    kinds: list[Kind] = ["grad_x", "grad_weight", "grad_norm_weight", "grad_norm_bias"]
    bounds = [eb.x, eb.reduction_weight, eb.norm_weight, eb.norm_bias]
    for g, r, bd, kind, name in zip(got, ref, bounds, kinds, GRAD_NAMES, strict=True):
        if r is None or name not in wrt:
            continue
        assert r.grad is not None, f"the oracle gave no {kind}"
        assert bd is not None, f"{case.door.bounds.__name__} gave no bound for {kind}"
        assert_within_bound(
            g, r.grad, bd, kind=kind, subject=subject, norm=norm, case=case, device=device,
            x=inp.x, kappa=kappa, repro=repro, precision=precision,
        )  # fmt: skip


def check_gradcheck(subject: Subject, case: AnyCase, *, norm: Norm, device: str = "cpu") -> None:
    """``torch.autograd.gradcheck`` and ``gradgradcheck`` pass in float64."""
    __tracebackhide__ = True
    inp = case.build(norm, device)
    assert inp.x.dtype == F64, "gradcheck needs float64"
    leaves = tuple(t.requires_grad_() for t in inp[:4] if t is not None)
    has_nw, has_nb = inp.norm_weight is not None, inp.norm_bias is not None

    def fn(*t: Tensor) -> Tensor:
        it = iter(t[2:])
        nw = next(it) if has_nw else None
        nb = next(it) if has_nb else None
        return _call(subject, case, inp, norm, x=t[0], weight=t[1], nw=nw, nb=nb)

    repro = _repro("check_gradcheck", subject, case, norm=norm, device=device)
    for check in (gradcheck, gradgradcheck):
        try:
            # fast_mode: random projections of the Jacobian, O(1) passes not O(numel)
            check(fn, leaves, fast_mode=True)
        except Exception as exc:  # noqa: PERF203 (GradcheckError and shape errors alike)
            fail(
                f"{check.__name__} failed for {subject.name!r} (norm={norm!r}, device={device})"
                f"\n  x: {describe(inp.x)}; {case.where()}\n  {str(exc)[:800]}",
                repro,
            )


def check_output_meta(subject: Subject, case: AnyCase, *, norm: Norm, device: str = "cpu") -> None:
    """Output shape, dtype, device and layout follow the input, on every device incl. meta."""
    __tracebackhide__ = True
    inp = case.build(norm, device)
    y = _call(subject, case, inp, norm)
    want = (case.output_shape(), inp.x.dtype, inp.x.device, torch.strided)
    got = (tuple(y.shape), y.dtype, y.device, y.layout)
    if got != want:
        fail(
            f"{subject.name!r} (norm={norm!r}) returned (shape, dtype, device, layout) = {got}, "
            f"expected {want}\n  x: {describe(inp.x)}; {case.where()}",
            _repro("check_output_meta", subject, case, norm=norm, device=device),
        )


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
            f"{tuple(want.shape)} {want.dtype}{bad}\n  x: {describe(inp.x)}; {case.where()}",
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
            f"depth_to_space does not invert space_to_depth ({case.where()}): "
            f"{int((back != want).sum())} entries differ from x, "
            f"{int((back != scatter).sum())} from the oracle scatter",
            _repro("check_depth_to_space_inverts", None, case),
        )
