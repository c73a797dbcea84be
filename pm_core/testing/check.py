"""One call that checks a user's merge: :func:`~pm_core.testing.check_merge`, and what ``pm-core check`` runs.

The subject may be

* a function with the impl signature :func:`pm_core.register` takes (an
  :data:`~pm_core.impls.ImplFn`: ``fn(x, weight, norm_weight, norm_bias, norm, eps)``,
  ``x`` ``(B, H, W, C)`` with H and W even, the weight in the swin layout); it is run
  through :func:`pm_core.patch_merge`'s calling conventions, as a registered impl is;
* an ``nn.Module`` that computes a 2-D 2x2 merge: recognised by class or adopted by
  behaviour (:mod:`pm_core.adopt_any`), which reads its calling convention, gather order,
  norm placement and odd-size policy. Its *code* is checked: on each drawn case its
  Linear and LayerNorm are swapped, in a shallow copy, for ones holding the case's
  weights (permuted into the module's own order), so every B, H, W, C and dtype the
  strategies draw reaches it;
* a zero-argument callable returning either.

Each applicable norm x dtype x device is a Hypothesis property over :func:`~pm_core.testing.cases`: the
output, and the gradients w.r.t. x and every parameter, against the float64 oracle within
the derived bound (:func:`~pm_core.testing.check_forward`, :func:`~pm_core.testing.check_grads`, the checks pm-core's own
tests run on its registered impls). The verdict records the worst error / bound ratio and
the number of examples per cell; a failure carries Hypothesis's minimal counterexample
and a one-line repro.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from torch import Tensor, nn

import pm_core
from pm_core import Norm
from pm_core.adopt_any import Probed, ProbedMerge, call_as
from pm_core.layouts import convert_window_layout

from .assertions import Subject, check_forward, check_grads
from .failures import RECORDERS
from .strategies import DTYPES, NORMS, cases, dtype_name

#: What :func:`~pm_core.testing.check_merge` takes: a merge function, a module, or a factory of either.
Checkable = Callable[..., Any] | nn.Module


@dataclass(frozen=True)
class Cell:
    """One norm x dtype x device x (forward | gradients) cell of a verdict."""

    norm: str
    dtype: str
    device: str
    kind: str  # "forward" or "gradients"
    examples: int
    worst: float  # largest error / bound ratio over the cell's examples (<= 1 passes)
    passed: bool


@dataclass
class Verdict:
    """The outcome of :func:`~pm_core.testing.check_merge`: a cell per property, and the first failure."""

    subject: str
    cells: list[Cell] = field(default_factory=list)
    failure: str | None = None

    @property
    def passed(self) -> bool:
        return self.failure is None and all(c.passed for c in self.cells)

    def table(self) -> str:
        """The verdict as a text table, one row per cell."""
        head = f"{'norm':<5} {'dtype':<9} {'device':<6} {'check':<9} {'examples':>8} {'worst':>7}  verdict"
        rows = [f"pm-core check: {self.subject}", head, "-" * len(head)]
        for c in self.cells:
            worst = "-" if math.isnan(c.worst) else f"{c.worst:.3g}x"
            rows.append(
                f"{c.norm:<5} {c.dtype:<9} {c.device:<6} {c.kind:<9} {c.examples:>8} "
                f"{worst:>7}  {'pass' if c.passed else 'FAIL'}"
            )
        rows.append("equivalent" if self.passed else "NOT equivalent")
        return "\n".join(rows)


class NotEquivalent(AssertionError):
    """:func:`~pm_core.testing.check_merge` found a counterexample; the message holds it and a repro."""


def load(spec: str) -> Any:
    """The object ``package.module:attr`` names (``attr`` may be dotted)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected package.module:attr, got {spec!r}")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _resolve(obj: Any) -> Any:
    """``obj``, or what a zero-argument factory returns."""
    if isinstance(obj, nn.Module):
        return obj
    if callable(obj):
        try:
            params = inspect.signature(obj).parameters.values()
            required = [
                p
                for p in params
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
        except (TypeError, ValueError):
            required = []
        if not required:
            made = obj()
            if isinstance(made, nn.Module) or callable(made):
                return made
    return obj


def _function_subject(fn: Callable[..., Tensor], name: str, expr: str) -> Subject:
    """``fn`` (an impl) behind Swin's calling conventions, as :func:`pm_core.patch_merge`
    runs a registered one: ``(B, L, C)`` viewed as ``(B, H, W, C)``, an odd H / W
    zero-padded at the bottom / right, an empty input answered by ``gather``."""

    def merge(
        x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, *, hw: Any,
        norm: Norm, eps: float,
    ) -> Tensor:  # fmt: skip
        if x.numel() == 0:
            return pm_core.patch_merge(x, weight, nw, nb, hw=hw, norm=norm, eps=eps, impl="gather")
        x4 = x if hw is None else x.view(x.shape[0], *hw, x.shape[-1])
        h, w = x4.shape[1:3]
        y: Tensor = fn(F.pad(x4, (0, 0, 0, w % 2, 0, h % 2)), weight, nw, nb, norm, eps)
        return y if hw is None else y.flatten(1, 2)

    return Subject(name, merge, expr)


def _module_subject(m: nn.Module, name: str, expr: str) -> tuple[Subject, Probed]:
    adopted = pm_core.adopt_any.adopt_by_behaviour(m, impl="gather", verify=False, name=name)
    p = adopted.probed
    if p.window.kernel != (2, 2):
        raise ValueError(
            f"{name} merges over {p.window}: check_merge checks 2-D 2x2 merges; for other "
            "windows use pm_core.testing.window_cases with check_forward"
        )

    def merge(
        x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, *, hw: Any,
        norm: Norm, eps: float,
    ) -> Tensor:  # fmt: skip
        x4 = x if hw is None else x.view(x.shape[0], *hw, x.shape[-1])
        c, o = x4.shape[-1], weight.shape[0]
        dd: dict[str, Any] = {"device": x.device, "dtype": weight.dtype}

        def own(t: Tensor) -> Tensor:  # a swin-order (4C) vector or matrix in the module's
            return convert_window_layout(t, p.window, "swin", p.layout)

        # the module's code around parts of the case's size; their values are the case's
        # own tensors (functional_call), so the gradients reach the case's leaves
        subs: dict[str, nn.Module] = {p.parts.linear: nn.Linear(4 * c, o, bias=False, **dd)}
        params = {f"{p.parts.linear}.weight": own(weight)}
        if p.parts.norm is not None:
            size = 4 * c if p.norm == "pre" else o
            subs[p.parts.norm] = nn.LayerNorm(
                size, eps=eps, elementwise_affine=nw is not None, **dd
            )
            if nw is not None and nb is not None:
                pre = p.norm == "pre"
                params[f"{p.parts.norm}.weight"] = own(nw) if pre else nw
                params[f"{p.parts.norm}.bias"] = own(nb) if pre else nb
        runner = _Runner(pm_core.adopt_family._replaced(m, **subs), p)
        named = {f"body.{k}": v for k, v in params.items()}
        y4 = cast(Tensor, torch.func.functional_call(runner, named, (x4,)))
        return y4 if hw is None else y4.flatten(1, 2)

    return Subject(name, merge, expr), p


class _Runner(nn.Module):
    """``body`` called in its convention on ``(B, H, W, C)``, for ``functional_call``."""

    def __init__(self, body: nn.Module, p: Probed) -> None:
        super().__init__()
        self.body = body
        self.convention = p.convention

    def forward(self, x: Tensor) -> Tensor:
        return call_as(self.body, self.convention, x)


def _name(obj: Any) -> str:
    """``module.qualname`` of a function or class, or of a module instance's class."""
    t = type(obj) if isinstance(obj, nn.Module) else obj
    return f"{getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', repr(t))}"


def check_merge(
    obj: Checkable | str,
    *,
    norms: Sequence[Norm] | None = None,
    dtypes: Sequence[torch.dtype] = DTYPES,
    devices: Sequence[str] = ("cpu",),
    max_examples: int = 25,
    grads: bool = True,
    raise_on_failure: bool = True,
) -> Verdict:
    """Check ``obj`` (see the module docstring) against the float64 oracle: the output and
    the gradients, per norm x dtype x device, on ``max_examples`` drawn cases each.

    ``obj`` may also be a ``"package.module:attr"`` string. ``norms`` defaults to all three
    for a function and to the module's own placement for a module. Returns the
    :class:`Verdict`; on a counterexample raises :class:`NotEquivalent` with Hypothesis's
    minimal case and a repro, or with ``raise_on_failure=False`` returns the verdict with
    its ``failure`` set.

    >>> from pm_core.impls import REGISTRY
    >>> check_merge(REGISTRY["slice"].fn, norms=["none"], dtypes=[torch.float64],
    ...             max_examples=3, grads=False).passed
    True
    """
    spec = obj if isinstance(obj, str) else None
    target = _resolve(load(obj) if isinstance(obj, str) else obj)
    name = spec or _name(target)
    expr = f"subject_for({spec!r})" if spec else name
    p: Probed | None = None
    if isinstance(target, ProbedMerge):
        raise ValueError("that is pm_core's own replacement: check the module it replaced")
    if isinstance(target, nn.Module):
        subject, p = _module_subject(target, name, expr)
        applicable: Sequence[Norm] = [p.norm]
    elif callable(target):
        subject = _function_subject(target, name, expr)
        applicable = NORMS
    else:
        raise TypeError(
            f"check_merge needs a merge function, an nn.Module or a zero-argument factory of "
            f"one, got {type(target).__name__}"
        )
    verdict = Verdict(name)
    for norm in norms if norms is not None else applicable:
        if norm not in applicable:
            raise ValueError(f"{name} computes norm={p.norm if p else '?'!r} only, not {norm!r}")
        for device in devices:
            for dtype in dtypes:
                for kind in ("forward", "gradients") if grads else ("forward",):
                    cell = _run_cell(subject, p, norm, dtype, device, kind, max_examples)
                    verdict.cells.append(cell[0])
                    if cell[1] is not None:
                        verdict.failure = cell[1]
                        if raise_on_failure:
                            raise NotEquivalent(verdict.table() + "\n\n" + cell[1])
                        return verdict
    return verdict


def _run_cell(
    subject: Subject, p: Probed | None, norm: Norm, dtype: torch.dtype, device: str, kind: str,
    max_examples: int,
) -> tuple[Cell, str | None]:  # fmt: skip
    ratios: list[float] = []
    count = [0]

    def recorder(rec: dict[str, Any]) -> None:
        ratios.append(float(rec["bound_ratio"]))

    even = p is not None and p.odd == "error"
    strategy = cases(dtype, grad=kind == "gradients")
    if even:  # the module rejects odd sizes, as its library does: draw even ones
        strategy = strategy.filter(lambda c: c.shape[1] % 2 == 0 and c.shape[2] % 2 == 0)

    @settings(
        max_examples=max_examples, derandomize=True, database=None, deadline=None,
        suppress_health_check=list(HealthCheck), print_blob=False,
    )  # fmt: skip
    @given(case=strategy)
    def prop(case: Any) -> None:
        count[0] += 1
        if kind == "forward":
            check_forward(subject, case, norm=norm, device=device, gemm_precision=None)
        else:
            check_grads(subject, case, norm=norm, device=device, gemm_precision=None)

    RECORDERS.append(recorder)
    failure = None
    try:
        prop()
    except AssertionError as e:
        failure = "".join([str(e), *(f"\n{n}" for n in getattr(e, "__notes__", []))])
    finally:
        RECORDERS.remove(recorder)
    worst = max(ratios) if ratios else math.nan
    cell = Cell(norm, dtype_name(dtype), device, kind, count[0], worst, failure is None)
    return cell, failure


def subject_for(spec: str) -> Subject:
    """The :class:`Subject` ``check_merge`` builds for ``"package.module:attr"``, for a
    repro: ``check_forward(subject_for("pkg.mod:fn"), Case(...), norm="pre")``."""
    target = _resolve(load(spec))
    if isinstance(target, nn.Module):
        return _module_subject(target, spec, f"subject_for({spec!r})")[0]
    return _function_subject(target, spec, f"subject_for({spec!r})")


__all__ = ["Cell", "NotEquivalent", "Verdict", "check_merge", "load", "subject_for"]
