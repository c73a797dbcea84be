"""Finite in, finite out: where the float64 oracle's results are finite and within the
dtype's range, a merge's output and gradients are finite (and within the bound)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pm_core import Norm

from .assertions import F64, GRAD_NAMES, AnyCase, Subject, _call, _host, _repro
from .failures import fail, index_of
from .strategies import EPS


def differentiate(
    merge: Callable[..., Tensor], inputs: tuple[Tensor | None, ...], grad_out: Tensor
) -> dict[str, Tensor | None]:
    """``merge(x, weight, norm_weight, norm_bias)`` on fresh leaves, and its gradients.

    Returns the output as ``"output"`` and each input's gradient under its name in
    :data:`GRAD_NAMES` (``None`` for an absent norm parameter)."""
    leaves = [None if t is None else t.detach().requires_grad_() for t in inputs]
    y = merge(*leaves)
    present = [t for t in leaves if t is not None]
    found = iter(torch.autograd.grad(y, present, grad_out.to(y.dtype), allow_unused=True))
    grads = [None if t is None else next(found) for t in leaves]
    return dict(zip(("output", *GRAD_NAMES), (y, *grads), strict=True))


def assert_finite(
    got: dict[str, Tensor | None],
    want: dict[str, Tensor | None],
    dtype: torch.dtype,
    *,
    what: str,
    repro: str,
) -> None:
    """Finite in, finite out: every value in ``got`` is finite where ``want`` (the float64
    oracle's) is finite and within ``dtype``'s range, as :func:`pm_core.bounds.finite_range`
    claims. An oracle value outside the range fails too, naming the strategy: the case
    is outside the claim, so the property would be vacuous on it."""
    __tracebackhide__ = True
    top = torch.finfo(dtype).max / 2
    for name, ref in want.items():
        if ref is None:
            continue
        r = ref.detach().to(F64).cpu()
        if not bool((r.abs() <= top).all()):
            fail(f"the case is outside the finite claim: the oracle's {name} reaches "
                  f"{float(r.abs().max()):.3e}, over half {dtype}'s range", repro)  # fmt: skip
        a = got[name]
        assert a is not None, f"{what} gave no {name}"
        bad = ~torch.isfinite(a.detach().cpu())
        if bool(bad.any()):
            at = index_of(int(bad.flatten().nonzero()[0]), bad.shape)
            fail(
                f"{name} of {what} is not finite where the oracle's is: "
                f"{float(a.detach().cpu()[at])} at {at}, oracle {float(r[at]):.6g} "
                f"({int(bad.sum())} of {bad.numel()} elements)",
                repro,
            )


def check_finite(subject: Subject, case: AnyCase, *, norm: Norm, device: str = "cpu") -> None:
    """The output and gradients of ``subject`` are finite wherever the float64 oracle's
    are finite and within the dtype's range (:func:`assert_finite`)."""
    __tracebackhide__ = True
    inp = case.build(norm, device)
    kw = case.keywords(inp)

    def merge(*t: Tensor | None) -> Tensor:
        return _call(subject, case, inp, norm, x=t[0], weight=t[1], nw=t[2], nb=t[3])

    def oracle(*t: Tensor | None) -> Tensor:
        return case.door.oracle(*t, **kw, norm=norm, eps=EPS)

    got = differentiate(merge, inp[:4], inp.grad_out)
    host = tuple(None if t is None else _host(t).to(F64) for t in inp[:4])
    want = differentiate(oracle, host, _host(inp.grad_out).to(F64))
    assert_finite(
        got, want, inp.x.dtype,
        what=f"{subject.name!r} (norm={norm!r}, dtype={case.dtype}, device={device})",
        repro=_repro("check_finite", subject, case, norm=norm, device=device),
    )  # fmt: skip
