"""``window_error_bounds``: the 2x2 bound where windows tile, plus the accumulation term.

The per-window terms are :mod:`pm_core.bounds`' (checked term for term by
``tests/test_bound_formula.py``), so here: (1) on Swin's 2x2 window the general bound
*is* ``error_bounds``, bit for bit; (2) where windows overlap, dL/dx's bound is the
module docstring's ``sum_w E_w + (m - 1) u (c sum_w M_w + sum_w E_w)``, evaluated again
with explicit loops over windows, entries and input positions.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pm_core import Norm, Window, error_bounds, window_error_bounds
from pm_core.bounds import bounds_on_windows
from pm_core.oracle import reference_space_to_depth
from pm_core.testing import NORMS

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
RTOL = 1e-12  # both sides sum the same non-negative float64 terms in other orders


def _problem(
    shape: tuple[int, ...], n: int, o: int, norm: Norm, seed: int
) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)

    def randn(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=gen, dtype=F64)

    size = n if norm == "pre" else o
    return randn(*shape) + 3.0, randn(o, n), randn(size), randn(size)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("norm", NORMS)
@given(h=st.integers(1, 5), w=st.integers(1, 5), c=st.integers(1, 3), seed=st.integers(0, 99))
def test_tiling_2x2_bound_is_error_bounds(
    norm: Norm, dtype: torch.dtype, h: int, w: int, c: int, seed: int
) -> None:
    """On ``Window((2, 2), padding="corner")`` in the swin layout every bound
    ``window_error_bounds`` returns equals ``error_bounds``'s exactly."""
    x, wt, g, b = (t.to(dtype) for t in _problem((2, h, w, c), 4 * c, 2 * c, norm, seed))
    nw, nb = (None, None) if norm == "none" else (g, b)
    grad = torch.randn(2, -(-h // 2), -(-w // 2), 2 * c, dtype=F64).to(dtype)
    got = window_error_bounds(
        x, wt, nw, nb, window=Window((2, 2), padding="corner"), norm=norm, grad_out=grad
    )
    want = error_bounds(x, wt, nw, nb, norm=norm, grad_out=grad)
    for field in want._fields:
        a, e = getattr(got, field), getattr(want, field)
        assert (a is None) == (e is None), field
        if e is not None:
            assert torch.equal(a, e), field


Held = dict[tuple[int, ...], list[tuple[tuple[int, ...], int]]]


def _windows_holding(window: Window, size: tuple[int, ...]) -> Held:
    """``position -> [(output index, column offset index)]`` by explicit loops."""
    pads = window.pads(size)
    out = window.output_size(size)
    held: Held = {}
    for o in _grid(out):
        for p, off in enumerate(window.offsets()):
            pos = tuple(
                o[a] * window.stride[a] - pads[a][0] + off[a] * window.dilation[a]
                for a in range(window.dims)
            )
            if all(0 <= pos[a] < size[a] for a in range(window.dims)):
                held.setdefault(pos, []).append((o, p))
    return held


def _grid(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [()]
    for s in shape:
        out = [(*t, i) for t in out for i in range(s)]
    return out


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "window",
    [
        Window((3, 2), stride=1, padding=1),
        Window((2, 2, 2), stride=(1, 2, 1), padding="same"),
        Window((2, 3), stride=2, dilation=(2, 1), padding="corner"),
    ],
    ids=repr,
)
def test_overlapping_dx_bound_follows_the_derivation(
    window: Window, dtype: torch.dtype, norm: Norm
) -> None:
    """Where windows overlap, dL/dx's bound at each input position is the per-window
    bounds ``E`` and magnitudes ``M`` of the windows holding it (row-major layout),
    ``sum E + (m - 1) u (c sum M + sum E)``, ``c = 1`` for pre-norm and
    ``O u_acc/u (1 + u_in)^2`` otherwise."""
    c = 2
    size = tuple(s + 2 for s in window.span)
    n, o = window.size * c, 3
    x, wt, g, b = (t.to(dtype) for t in _problem((2, *size, c), n, o, norm, 7))
    nw, nb = (None, None) if norm == "none" else (g, b)
    out = window.output_size(size)
    grad = torch.randn(2, *out, o, dtype=F64).to(dtype)
    got = window_error_bounds(
        x, wt, nw, nb, window=window, layout="row-major", norm=norm, grad_out=grad
    )
    assert got.x is not None
    v0 = reference_space_to_depth(x.to(F64), window, "row-major")
    wb = bounds_on_windows(
        v0, wt, nw, nb, grad, norm=norm, eps=1e-5, dtype=dtype, accumulate=None,
        gemm_precision=None,
    )  # fmt: skip
    assert wb.v is not None
    assert wb.v_magnitude is not None
    coef = 1.0 if norm == "pre" else o * wb.ratio * wb.k_in
    held = _windows_holding(window, size)
    assert max(len(v) for v in held.values()) > 1, "the window must overlap somewhere"
    got_x = got.x.tolist()
    for bi in range(2):
        for pos in _grid(size):
            for ch in range(c):
                terms = held.get(pos, [])
                at_w = [(bi, *oi, p * c + ch) for oi, p in terms]
                e = [float(wb.v[i]) for i in at_w]
                mag = [float(wb.v_magnitude[i]) for i in at_w]
                m = len(terms)
                want = sum(e) + max(m - 1, 0) * wb.u * (coef * sum(mag) + sum(e))
                at = got_x[bi]
                for i in pos:
                    at = at[i]
                assert math.isclose(at[ch], want, rel_tol=RTOL, abs_tol=0.0), (bi, pos, ch)


@pytest.mark.parametrize(
    ("dtype", "n", "acc"),
    [(torch.float32, 4, torch.float32), (torch.bfloat16, 384, torch.float32),
     (torch.float64, 8, torch.float64), (torch.float16, 384, torch.float32),
     (torch.bfloat16, 16, torch.bfloat16)],
)  # fmt: skip
def test_finite_range_is_the_documented_formula(
    dtype: torch.dtype, n: int, acc: torch.dtype
) -> None:
    """``min(max_dtype, sqrt(max_acc / n) / 2)``: the largest |x| whose squares over n
    entries sum, with the mean's, below the accumulator's largest value ("Range" in the
    bounds docstring); float16 is capped by its own largest value."""
    from pm_core.bounds import finite_range

    want = min(torch.finfo(dtype).max, math.sqrt(torch.finfo(acc).max / n) / 2)
    given = None if acc == torch.promote_types(dtype, torch.float32) else acc
    assert finite_range(dtype, n, given) == want
    if dtype != torch.float16:
        assert want < torch.finfo(dtype).max  # the accumulator's limit is the one that binds
