"""The general conv form's pre-norm fold, on fixed tiling windows that are not Swin's 2x2.

Swin's 2x2 merge runs the 2x2 fast path, so the general fold (``window_impls``'
``_window_stats`` and ``_folded_pre_norm``) runs only for other tiling windows, which the
window properties draw now and then. These fixed cases reach it on every run: 2-D and
3-D kernels, padding, a batch above 1, uneven sizes, each float dtype, with windows
whose mean is far from zero; output and gradients within the derived bound of the
float64 oracle. And one case of the 2x2 fold's hand-written backward at the top of its
scale's range.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from pm_core import (
    Window,
    error_bounds,
    patch_merge,
    reference_patch_merge,
    reference_window_merge,
    window_error_bounds,
    window_merge,
)
from pm_core.bounds import ErrorBounds

WINDOWS = {
    # window, (B, *S, C)
    "3d-corner": (Window((2, 2, 2), padding="corner"), (2, 3, 5, 4, 3)),
    "video-1x2x2": (Window((1, 2, 2), padding="corner"), (2, 2, 5, 3, 4)),
    "3x3": (Window((3, 3)), (2, 6, 9, 3)),
    "2x3-same": (Window((2, 3), padding="same"), (2, 5, 7, 2)),
    "2x2x2-explicit": (Window((2, 2, 2), padding=((0, 1), (1, 0), (0, 0))), (3, 3, 3, 4, 2)),
}


#: float16 inputs whose window statistics the fold must take in float32: a spread of 512,
#: whose squares (2.6e5) pass float16's largest finite value (65504); and a mean of 3000,
#: whose window sums (3000 times a window's 12 to 27 entries here) pass it in the larger
#: windows.
FLOAT16_EDGES = {"spread-512": (512.0, 20.0), "mean-3000": (1.0, 3000.0)}


@pytest.mark.parametrize(
    ("dtype", "spread", "mean"),
    [(dt, 3.0, 20.0) for dt in (torch.float64, torch.float32, torch.bfloat16, torch.float16)]
    + [(torch.float16, *edge) for edge in FLOAT16_EDGES.values()],
    ids=[*("float64", "float32", "bfloat16", "float16"), *(f"float16-{k}" for k in FLOAT16_EDGES)],
)
@pytest.mark.parametrize("name", list(WINDOWS))
def test_general_fold_matches_the_oracle(
    name: str, dtype: torch.dtype, spread: float, mean: float
) -> None:
    """Output and every gradient of ``window_merge(impl="conv", norm="pre")`` lie within
    ``window_error_bounds`` of ``reference_window_merge``; in float16 also on inputs whose
    window statistics need float32 (:data:`FLOAT16_EDGES`)."""
    window, shape = WINDOWS[name]
    b, *size, c = shape
    g = torch.Generator().manual_seed(len(name))
    x = (torch.randn(b, *size, c, generator=g) * spread + mean).to(dtype).requires_grad_()
    n = window.size * c
    w = (torch.randn(5, n, generator=g) / n**0.5).to(dtype).requires_grad_()
    nw = (1 + 0.5 * torch.randn(n, generator=g)).to(dtype).requires_grad_()
    nb = (0.5 * torch.randn(n, generator=g)).to(dtype).requires_grad_()
    kw = {"window": window, "layout": "row-major", "norm": "pre"}
    _assert_within_bounds(
        f"{name} {dtype}",
        lambda *t: window_merge(*t, impl="conv", **kw),  # type: ignore[arg-type]
        lambda *t: reference_window_merge(*t, **kw),  # type: ignore[arg-type]
        lambda *t, grad_out: window_error_bounds(*t, grad_out=grad_out, **kw),  # type: ignore[arg-type]
        (x, w, nw, nb),
        lambda y: torch.randn(y.shape, generator=g).to(dtype),
    )


def test_2x2_fold_backward_in_float16_where_its_scale_passes_float16s_range() -> None:
    """The 2x2 fold's backward scales the input gradient by ``p``, a power of two near
    rstd. With eps = 1e-12 and windows of spread 2^-18, rstd is about 2^18, past float16's
    largest finite value (65504): cast to float16, ``p`` becomes inf and so does the
    gradient, though the true one is finite (|dL/dx| about 500 here). In float32 it is
    exact, and the gradient is within its bound."""
    g = torch.Generator().manual_seed(0)
    c, eps = 4, 1e-12
    x = (torch.randn(2, 4, 4, c, generator=g) * 2**-18).half().requires_grad_()
    w = (torch.randn(2 * c, 4 * c, generator=g) * 2**-12).half().requires_grad_()
    nw = (1 + 0.1 * torch.randn(4 * c, generator=g)).half().requires_grad_()
    nb = (0.1 * torch.randn(4 * c, generator=g)).half().requires_grad_()
    kw = {"norm": "pre", "eps": eps}
    _assert_within_bounds(
        "2x2 float16 eps=1e-12",
        lambda *t: patch_merge(*t, impl="conv", **kw),  # type: ignore[arg-type]
        lambda *t: reference_patch_merge(*t, **kw),  # type: ignore[arg-type]
        lambda *t, grad_out: error_bounds(*t, grad_out=grad_out, **kw),  # type: ignore[arg-type]
        (x, w, nw, nb),
        torch.ones_like,
    )


def _assert_within_bounds(
    label: str,
    merge: Callable[..., Tensor],
    oracle: Callable[..., Tensor],
    bounds: Callable[..., ErrorBounds],
    inputs: tuple[Tensor, Tensor, Tensor, Tensor],
    grad_out: Callable[[Tensor], Tensor],
) -> None:
    """The output and every input's gradient of ``merge`` are finite and within ``bounds``
    of the float64 ``oracle``'s, for the upstream gradient ``grad_out(y)``."""
    y = merge(*inputs)
    gy = grad_out(y)
    got = torch.autograd.grad(y, inputs, gy)
    ref_in = [t.detach().double().requires_grad_() for t in inputs]
    ref = oracle(*ref_in)
    want = torch.autograd.grad(ref, ref_in, gy.double())
    eb = bounds(*(t.detach() for t in inputs), grad_out=gy)
    checks = [("output", y, ref, eb.output), ("x", got[0], want[0], eb.x),
              ("weight", got[1], want[1], eb.reduction_weight),
              ("norm_weight", got[2], want[2], eb.norm_weight),
              ("norm_bias", got[3], want[3], eb.norm_bias)]  # fmt: skip
    for what, a, e, bound in checks:
        assert bound is not None, what
        assert torch.isfinite(a).all(), f"{label} {what}: not finite"
        ratio = ((a.double() - e).abs() / bound).max().item()
        assert ratio <= 1.0, f"{label} {what}: error is {ratio:.3g}x its bound"
