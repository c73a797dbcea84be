"""Hypothesis strategies for Swin's 2x2 merge (:func:`pm_core.patch_merge`).

A drawn example is a :class:`Case`: a frozen, ``repr``-able description (shape, dtype,
memory layout, input form, value distribution, seed). ``Case.build`` turns it into real
tensors deterministically, so a failure report can print ``Case(...)`` as a one-line
repro, and Hypothesis shrinks the description (smaller shapes, plainer layouts, better
conditioned values, seed 0) rather than thousands of float elements.

Design requirements:

* shapes reach B = 1, H or W = 1, odd H/W, H != W, C = 1 and C not a multiple of 8,
  with ``B*H*W*C`` capped by :data:`MAX_NUMEL` (env ``PM_CORE_MAX_NUMEL``);
* every layout is a real view of a larger buffer whose unused elements are NaN, so an
  implementation that reads outside its view, or assumes contiguity, shows up;
* values include ill-conditioned windows: a large mean offset against a small spread,
  near-constant windows, and magnitudes spread over many decades, scaled per dtype so
  that nothing overflows;
* :func:`edge_values` draws the ``edge`` kind: magnitudes a power of two below the edge
  of the dtype's range (:func:`pm_core.bounds.finite_range`), the edge itself included,
  with the weights and the upstream gradient scaled so that every value the layer's
  definition rounds to the dtype stays finite (the finite-in, finite-out property).

The general merge has its own cases: :mod:`pm_core.testing.window_strategies`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple, Protocol

import pytest
import torch
from hypothesis import strategies as st
from torch import Tensor, nn

import pm_core
from pm_core import Norm

#: Largest ``B*H*W*C`` a strategy draws; override with ``PM_CORE_MAX_NUMEL``.
MAX_NUMEL = int(os.environ.get("PM_CORE_MAX_NUMEL", "1024"))
#: Caps for the tests that build a Jacobian (gradcheck): every element of x *and* of the
#: (2C, 4C) weight is a column, so C stays small.
GRADCHECK_MAX_NUMEL = 48
GRADCHECK_MAX_C = 3
EPS = 1e-5

DTYPES: tuple[torch.dtype, ...] = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
NORMS: tuple[Norm, ...] = ("pre", "post", "none")
LAYOUTS = (
    "contiguous",
    "channels_first",
    "channel_slice",
    "batch_stride2",
    "storage_offset",
    "hw_transposed",
    "expanded",
)
FORMS = ("bhwc", "blc")
VALUE_KINDS = ("normal", "offset", "near_constant", "wide", "ulp", "edge")
#: The ``edge`` kind's steps below the edge of the range: magnitude ``finite_range * 2**-step``.
EDGE_STEPS = 24

#: log10 of the largest magnitude drawn per dtype: outputs of an unnormalised projection
#: of 4C such values stay far from float16's 65504.
MAX_DECADE = {torch.float64: 8, torch.float32: 6, torch.bfloat16: 4, torch.float16: 2}


def as_norm(name: str) -> Norm:
    """``name``, a norm mode held as a plain ``str`` (a record's, a prediction's), as a
    :data:`pm_core.Norm`."""
    for norm in NORMS:
        if norm == name:
            return norm
    raise ValueError(f"not a norm mode: {name!r}")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Values:
    """How the input values are drawn (all per 2x2 window, so windows differ).

    * ``normal``: ``N(0, 1) * 10**decade``.
    * ``offset``: window mean ``+-10**decade`` (each window its own sign and size),
      spread ``10**spread``: conditioning ``|mean|/std`` up to ``10**(decade - spread)``.
    * ``near_constant``: each window ``c * (1 + 10**spread * N(0, 1))`` with
      ``c ~ N(0, 10**decade)``: variance far below eps.
    * ``wide``: ``+-10**U(-decade, decade)`` elementwise: wide dynamic range.
    * ``ulp``: window level ``+-U(1/2, 1) * 10**decade`` rounded to the dtype, each value
      that level plus ``0 .. 2**spread`` of its ulps: windows whose spread is a few ulps of
      their mean, where the LayerNorm's own rounding of the mean reaches the spread.
    * ``edge``: magnitude ``M = finite_range(dtype, n) * 2**-decade``; each window either
      one-signed in ``[M/2, M]`` or spread over ``[-M, M]`` (centred values up to ``2M``).
    """

    kind: str
    decade: int
    spread: int
    seed: int


@dataclass(frozen=True)
class Case:
    """One drawn input: ``Case(...).build(norm, device)`` gives the tensors."""

    shape: tuple[int, int, int, int]  # logical (B, H, W, C)
    dtype: str
    layout: str
    form: str
    values: Values
    affine: bool = True

    @property
    def torch_dtype(self) -> torch.dtype:
        dt = getattr(torch, self.dtype)
        assert isinstance(dt, torch.dtype)
        return dt

    def build(self, norm: Norm, device: str = "cpu") -> Inputs:
        return build(self, norm, device)


class Inputs(NamedTuple):
    """Tensors for one call: ``patch_merge(x, weight, norm_weight, norm_bias, hw=hw, ...)``."""

    x: Tensor
    weight: Tensor
    norm_weight: Tensor | None
    norm_bias: Tensor | None
    hw: tuple[int, int] | None
    grad_out: Tensor


def _per_window(t: Tensor, h: int, w: int) -> Tensor:
    """``(B, H', W')`` -> ``(B, H, W, 1)``: one value per 2x2 window, cropped to the map."""
    return t.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :h, :w, None]


class _Drawn(Protocol):
    """What the value helpers read of a drawn case, 2x2 or window."""

    @property
    def values(self) -> Values: ...

    @property
    def torch_dtype(self) -> torch.dtype: ...


def edge_magnitude(dtype: torch.dtype, n: int, step: int) -> float:
    """The ``edge`` kind's ``M``: ``step`` powers of two below the range of windows of ``n``."""
    return pm_core.bounds.finite_range(dtype, n) * 2.0**-step


def _edge(
    shape: tuple[int, ...], blocks: tuple[int, ...], spread: Any, m: float, gen: torch.Generator
) -> Tensor:
    """The ``edge`` kind: per block one-signed in ``[M/2, M]`` or over ``[-M, M]``;
    ``spread`` maps a per-block tensor to ``shape``'s (with a trailing 1)."""
    f64 = torch.float64
    sign = torch.randint(0, 2, blocks, generator=gen).to(f64) * 2 - 1
    mixed = torch.randint(0, 2, blocks, generator=gen).to(f64)
    u = torch.rand(shape, generator=gen, dtype=f64)
    one_signed = spread(sign) * (0.5 + 0.5 * u)
    vals: Tensor = torch.where(spread(mixed) > 0, 2 * u - 1, one_signed) * m
    return vals


def _edge_scales(case: _Drawn, n: int, o: int, windows: int) -> tuple[float, float]:
    """``(weight scale, upstream-gradient scale)``: ``N(0, 1) / sqrt(n)`` and ``N(0, 1)``
    for every kind but ``edge``, where they keep the projection's output within the range
    of a LayerNorm over O (``post``) and the gradients (``windows * |G| * (M + 1/s_w + n)``
    at most) within the dtype's."""
    if case.values.kind != "edge":
        return 1 / math.sqrt(n), 1.0
    dt = case.torch_dtype
    m = edge_magnitude(dt, n, case.values.decade)
    # each row's sum of |W| is then capped at 1.9 n s_w (_capped): |W x| <= range / 2
    s_w = min(1 / math.sqrt(n), pm_core.bounds.finite_range(dt, o) / (4 * n * m))
    s_g = min(1.0, torch.finfo(dt).max / (16 * windows * (m + 1 / s_w + n)))
    return s_w, s_g


def _capped(weight: Tensor, case: _Drawn, s_w: float) -> Tensor:
    """``weight`` with every row's sum of ``|W|`` at most ``1.9 n s_w`` for the ``edge`` kind,
    so the projection of inputs of size ``M`` stays within the range by construction."""
    if case.values.kind != "edge":
        return weight
    cap = 1.9 * weight.shape[1] * s_w  # under 2: the rounding to the dtype may grow it
    return weight * (cap / weight.abs().sum(1, keepdim=True).clamp_min(cap)).clamp(max=1)


def _ulp_steps(level: Tensor, dtype: torch.dtype, spread: int, gen: torch.Generator) -> Tensor:
    """The ``ulp`` kind: ``level`` (already spread to the values' shape) rounded to
    ``dtype``, plus ``0 .. 2**spread`` ulps of it per value."""
    lev = level.to(dtype).to(torch.float64)
    ulp = torch.exp2(torch.floor(torch.log2(lev.abs()))) * torch.finfo(dtype).eps
    steps = torch.randint(0, 2**spread + 1, lev.shape, generator=gen).to(torch.float64)
    return lev + steps * ulp


def _values(case: Case, gen: torch.Generator) -> Tensor:
    b, h, w, c = case.shape
    v = case.values
    win = (b, -(-h // 2), -(-w // 2))
    f64 = torch.float64
    if v.kind == "edge":
        m = edge_magnitude(case.torch_dtype, 4 * c, v.decade)
        return _edge(case.shape, win, lambda t: _per_window(t, h, w), m, gen)
    noise = torch.randn(b, h, w, c, generator=gen, dtype=f64)
    if v.kind == "normal":
        return noise * 10.0**v.decade
    if v.kind == "offset":
        sign = torch.randint(0, 2, win, generator=gen).to(f64) * 2 - 1
        size = 0.5 + 0.5 * torch.rand(win, generator=gen, dtype=f64)
        return _per_window(sign * size * 10.0**v.decade, h, w) + noise * 10.0**v.spread
    if v.kind == "ulp":
        sign = torch.randint(0, 2, win, generator=gen).to(f64) * 2 - 1
        size = 0.5 + 0.5 * torch.rand(win, generator=gen, dtype=f64)
        level = _per_window(sign * size * 10.0**v.decade, h, w).expand(b, h, w, c)
        return _ulp_steps(level, case.torch_dtype, v.spread, gen)
    if v.kind == "near_constant":
        level = torch.randn(win, generator=gen, dtype=f64) * 10.0**v.decade
        return _per_window(level, h, w) * (1 + noise * 10.0**v.spread)
    if v.kind == "wide":
        sign = torch.randint(0, 2, (b, h, w, c), generator=gen).to(f64) * 2 - 1
        expo = (torch.rand(b, h, w, c, generator=gen, dtype=f64) * 2 - 1) * v.decade
        return sign * 10.0**expo
    raise ValueError(f"unknown value kind {v.kind!r}")


def _arrange(vals: Tensor, layout: str) -> Tensor:
    """``vals`` (B, ...) as a view of a larger NaN-filled buffer, in the given layout."""
    shape = tuple(vals.shape)
    nan = float("nan")
    opts: dict[str, Any] = {"dtype": vals.dtype, "device": vals.device}
    if layout == "contiguous":
        view = torch.empty(shape, **opts)
    elif layout == "channels_first":  # storage (B, C, *spatial)
        view = torch.full((shape[0], shape[-1], *shape[1:-1]), nan, **opts).movedim(1, -1)
    elif layout == "channel_slice":  # C channels out of C + 3
        view = torch.full((*shape[:-1], shape[-1] + 3), nan, **opts)[..., 1 : shape[-1] + 1]
    elif layout == "batch_stride2":
        view = torch.full((2 * shape[0], *shape[1:]), nan, **opts)[::2]
    elif layout == "storage_offset":
        view = torch.full((math.prod(shape) + 5,), nan, **opts)[5:].view(shape)
    elif layout == "hw_transposed":  # storage (B, W, H, C)
        view = torch.full((shape[0], shape[2], shape[1], shape[3]), nan, **opts).transpose(1, 2)
    elif layout == "expanded":  # one sample, batch stride 0
        return vals[:1].clone().expand(shape)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    view.copy_(vals)
    return view


def build(case: Case, norm: Norm, device: str = "cpu") -> Inputs:
    """The tensors of ``case`` for ``norm``, on ``device``; deterministic in ``case``."""
    b, h, w, c = case.shape
    dt = case.torch_dtype
    if device == "mps" and dt == torch.float64:
        pytest.skip("MPS has no float64")
    gen = torch.Generator().manual_seed(case.values.seed)
    vals = _values(case, gen)
    n, o = 4 * c, 2 * c
    s_w, s_g = _edge_scales(case, n, o, b * -(-h // 2) * -(-w // 2))
    weight = _capped(torch.randn(o, n, generator=gen, dtype=torch.float64) * s_w, case, s_w)
    size = n if norm == "pre" else o
    nw = 1 + 0.5 * torch.randn(size, generator=gen, dtype=torch.float64)
    nb = 0.5 * torch.randn(size, generator=gen, dtype=torch.float64)
    grad = torch.randn(b, -(-h // 2), -(-w // 2), o, generator=gen, dtype=torch.float64) * s_g
    hw = None
    if case.form == "blc":
        vals, grad, hw = vals.flatten(1, 2), grad.flatten(1, 2), (h, w)

    def put(t: Tensor) -> Tensor:
        return t.to(dt).to(device)

    x = _arrange(put(vals), case.layout)
    affine = case.affine and norm != "none"
    return Inputs(
        x,
        put(weight),
        put(nw) if affine else None,
        put(nb) if affine else None,
        hw,
        put(grad),
    )


@st.composite
def shapes(
    draw: st.DrawFn, max_numel: int = MAX_NUMEL, max_c: int = 20
) -> tuple[int, int, int, int]:
    """``(B, H, W, C)``: C in 1..max_c, H and W in 1..12, B in 1..3, ``B*H*W*C <= max_numel``."""
    c = draw(st.integers(1, min(max_c, max_numel)))
    h = draw(st.integers(1, min(12, max_numel // c)))
    w = draw(st.integers(1, min(12, max_numel // (c * h))))
    b = draw(st.integers(1, min(3, max_numel // (c * h * w))))
    return b, h, w, c


@cache
def values(dtype: torch.dtype, max_decade: int | None = None) -> st.SearchStrategy[Values]:
    """Value distributions, scaled so ``dtype`` neither overflows nor underflows."""
    top = MAX_DECADE[dtype] if max_decade is None else min(max_decade, MAX_DECADE[dtype])
    # two decades more reach u c >> 1 in float32 (ulp-wide windows, far inside its range);
    # float16's top is already set by the range its gradients' sums over windows need
    ulp_top = top + 2 if max_decade is None and dtype != torch.float16 else top
    seeds = st.integers(0, 2**16)
    return st.one_of(
        st.builds(Values, st.just("normal"), st.integers(-2, 2), st.just(0), seeds),
        st.builds(Values, st.just("offset"), st.integers(0, top), st.integers(-4, 0), seeds),
        st.builds(
            Values, st.just("near_constant"), st.integers(-1, top), st.integers(-7, -3), seeds
        ),
        st.builds(Values, st.just("wide"), st.integers(1, top), st.just(0), seeds),
        st.builds(Values, st.just("ulp"), st.integers(0, ulp_top), st.integers(0, 2), seeds),
    )


@cache
def edge_values(step: int | None = None) -> st.SearchStrategy[Values]:
    """The ``edge`` kind at ``step`` powers of two below the range (``0``: the edge itself),
    or at any step up to ``EDGE_STEPS`` (24) when ``None``."""
    steps = st.integers(0, EDGE_STEPS) if step is None else st.just(step)
    return st.builds(Values, st.just("edge"), steps, st.just(0), st.integers(0, 2**16))


@cache
def layouts(form: str, *, grad: bool) -> st.SearchStrategy[str]:
    """Layouts valid for ``form``: (B, L, C) has no H/W to transpose; stride 0 is forward-only."""
    return st.sampled_from(
        [
            lay
            for lay in LAYOUTS
            if not (form == "blc" and lay == "hw_transposed") and not (grad and lay == "expanded")
        ]
    )


@st.composite
def cases(
    draw: st.DrawFn,
    dtype: torch.dtype,
    *,
    grad: bool = False,
    max_numel: int = MAX_NUMEL,
    layout: str | None = None,
    max_decade: int | None = None,
    max_c: int = 20,
    vals: st.SearchStrategy[Values] | None = None,
) -> Case:
    """A :class:`Case` in ``dtype``; ``grad=True`` leaves out layouts unfit for backward.

    ``max_decade`` caps magnitudes (finite differences need values near 1); ``vals``
    replaces the value strategy (:func:`edge_values`, say).
    """
    shape = draw(shapes(max_numel, max_c))
    form = draw(st.sampled_from(FORMS))
    lay = layout if layout is not None else draw(layouts(form, grad=grad))
    drawn = draw(values(dtype, max_decade) if vals is None else vals)
    affine = draw(st.booleans().map(lambda b: not b))  # shrinks towards affine=True
    return Case(shape, dtype_name(dtype), lay, form, drawn, affine)


def randomise_params(m: nn.Module, seed: int) -> nn.Module:
    """Give ``m`` non-trivial parameters, in place: normal matrices, and vectors near 1.
    A fresh LayerNorm (g=1, b=0) would hide a permuted norm vector; returns ``m``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.5 if p.dim() == 1 else 1))
            if p.dim() == 1:
                p.add_(1.0)
    return m
