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

The general merge's windows, orders and sizes are drawn in
:mod:`pm_core.testing.window_strategies`; its cases are built by the same
:func:`build_inputs`, so both draw the same value kinds and memory views.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, NamedTuple, Protocol

import pytest
import torch
from hypothesis import strategies as st
from torch import Tensor, nn

import pm_core
from pm_core import Norm
from pm_core.bounds import ErrorBounds
from pm_core.window import SWIN_WINDOW

#: Largest ``B*H*W*C`` a strategy draws; override with ``PM_CORE_MAX_NUMEL``.
MAX_NUMEL = int(os.environ.get("PM_CORE_MAX_NUMEL", "1024"))
#: Caps for the tests that build a Jacobian (gradcheck): every element of x *and* of the
#: (2C, prod(kernel) C) weight is a column, so C stays small.
GRADCHECK_MAX_NUMEL = 48
GRADCHECK_MAX_C = 3
EPS = 1e-5

DTYPES: tuple[torch.dtype, ...] = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
NORMS: tuple[Norm, ...] = ("pre", "post", "none")
#: How a drawn x sits in memory: plain, stride-0, or a view of a NaN-filled buffer (_arrange).
MEMORY = (
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
    """How the input values are drawn (per stride-sized block of windows, so windows differ).

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


class _Drawn:
    """What every drawn case has: its dtype's name and its value distribution."""

    dtype: str
    values: Values

    @property
    def torch_dtype(self) -> torch.dtype:
        dt = getattr(torch, self.dtype)
        assert isinstance(dt, torch.dtype)
        return dt


class Drawable(Protocol):
    """What :func:`build_inputs` reads of a drawn case: a :class:`Case` or a
    :class:`~pm_core.testing.window_strategies.WindowCase`."""

    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def window(self) -> pm_core.Window: ...
    @property
    def values(self) -> Values: ...
    @property
    def torch_dtype(self) -> torch.dtype: ...
    @property
    def out_size(self) -> tuple[int, ...]: ...
    @property
    def memory(self) -> str: ...
    @property
    def affine(self) -> bool: ...


class Door(NamedTuple):
    """A front door's float64 oracle and its bound, which take the front door's own
    arguments (no ``impl``)."""

    oracle: Callable[..., Tensor]
    bounds: Callable[..., ErrorBounds]


@dataclass(frozen=True)
class Case(_Drawn):
    """One drawn input of Swin's 2x2 merge: ``Case(...).build(norm, device)`` gives the
    tensors, for :func:`pm_core.patch_merge`'s calling convention (``form`` ``"blc"``:
    ``(B, L, C)`` with ``hw``). It is the general case over Swin's window in the swin
    order: values and memory drawn and built as a WindowCase's, shapes by ``shapes()``."""

    shape: tuple[int, int, int, int]  # logical (B, H, W, C)
    dtype: str
    memory: str  # how x sits in memory, one of MEMORY
    form: str
    values: Values
    affine: bool = True

    door: ClassVar[Door] = Door(pm_core.reference_patch_merge, pm_core.error_bounds)
    window: ClassVar[pm_core.Window] = SWIN_WINDOW

    def window_layout(self) -> str:
        return "swin"

    @property
    def out_size(self) -> tuple[int, ...]:
        return self.window.output_size(self.shape[1:3])

    def output_shape(self) -> tuple[int, ...]:
        (b, *_, c), (hs, ws) = self.shape, self.out_size
        return (b, hs * ws, 2 * c) if self.form == "blc" else (b, hs, ws, 2 * c)

    def keywords(self, inp: Inputs) -> dict[str, Any]:
        """The front door's keywords besides ``norm`` and ``eps``."""
        return {"hw": inp.hw}

    def where(self) -> str:
        return f"memory {self.memory}, form {self.form}, values {self.values}"

    def build(self, norm: Norm, device: str = "cpu") -> Inputs:
        """The tensors of the case for ``norm``, on ``device``; deterministic in the case."""
        return build_inputs(self, norm, device, flat=self.form == "blc")


class Inputs(NamedTuple):
    """Tensors for one call: ``merge(x, weight, norm_weight, norm_bias, ...)``, with
    ``hw`` for a ``(B, L, C)`` x (else ``None``), and the upstream gradient."""

    x: Tensor
    weight: Tensor
    norm_weight: Tensor | None
    norm_bias: Tensor | None
    hw: tuple[int, int] | None
    grad_out: Tensor


def _blockwise(t: Tensor, block: tuple[int, ...], size: tuple[int, ...]) -> Tensor:
    """``(B, *S_blocks)`` -> ``(B, *S, 1)``: one value per block, cropped to ``size``."""
    for a, k in enumerate(block):
        t = t.repeat_interleave(k, 1 + a)
    crop = (slice(None), *(slice(0, s) for s in size))
    return t[crop].unsqueeze(-1)


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


def _edge_scales(case: Drawable, n: int, o: int, windows: int) -> tuple[float, float]:
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


def _capped(weight: Tensor, case: Drawable, s_w: float) -> Tensor:
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


def _values(case: Drawable, gen: torch.Generator) -> Tensor:
    """``case.values`` drawn for ``case.shape``: the per-window kinds are per stride-sized
    block, so tiling windows get their own mean and spread, and overlapping ones mix a few."""
    b, *size_list, _ = case.shape
    size = tuple(size_list)
    v = case.values
    block = case.window.stride
    blocks = (b, *(-(-s // k) for s, k in zip(size, block, strict=True)))
    f64 = torch.float64

    def spread(t: Tensor) -> Tensor:
        return _blockwise(t, block, size)

    if v.kind == "edge":
        m = edge_magnitude(case.torch_dtype, case.window.size * case.shape[-1], v.decade)
        return _edge(case.shape, blocks, spread, m, gen)
    noise = torch.randn(case.shape, generator=gen, dtype=f64)
    if v.kind == "normal":
        return noise * 10.0**v.decade
    if v.kind in ("offset", "ulp"):
        sign = torch.randint(0, 2, blocks, generator=gen).to(f64) * 2 - 1
        level = spread((0.5 + 0.5 * torch.rand(blocks, generator=gen, dtype=f64)) * sign)
        if v.kind == "offset":
            return level * 10.0**v.decade + noise * 10.0**v.spread
        return _ulp_steps(
            level.expand(case.shape) * 10.0**v.decade, case.torch_dtype, v.spread, gen
        )
    if v.kind == "near_constant":
        level = torch.randn(blocks, generator=gen, dtype=f64) * 10.0**v.decade
        return spread(level) * (1 + noise * 10.0**v.spread)
    if v.kind == "wide":
        sign = torch.randint(0, 2, case.shape, generator=gen).to(f64) * 2 - 1
        expo = (torch.rand(case.shape, generator=gen, dtype=f64) * 2 - 1) * v.decade
        return sign * 10.0**expo
    raise ValueError(f"unknown value kind {v.kind!r}")


def _arrange(vals: Tensor, memory: str) -> Tensor:
    """``vals`` (B, ...) as a view of a larger NaN-filled buffer, laid out as ``memory``."""
    shape = tuple(vals.shape)
    nan = float("nan")
    opts: dict[str, Any] = {"dtype": vals.dtype, "device": vals.device}
    if memory == "contiguous":
        view = torch.empty(shape, **opts)
    elif memory == "channels_first":  # storage (B, C, *spatial)
        view = torch.full((shape[0], shape[-1], *shape[1:-1]), nan, **opts).movedim(1, -1)
    elif memory == "channel_slice":  # C channels out of C + 3
        view = torch.full((*shape[:-1], shape[-1] + 3), nan, **opts)[..., 1 : shape[-1] + 1]
    elif memory == "batch_stride2":
        view = torch.full((2 * shape[0], *shape[1:]), nan, **opts)[::2]
    elif memory == "storage_offset":
        view = torch.full((math.prod(shape) + 5,), nan, **opts)[5:].view(shape)
    elif memory == "hw_transposed":  # storage (B, W, H, C)
        view = torch.full((shape[0], shape[2], shape[1], shape[3]), nan, **opts).transpose(1, 2)
    elif memory == "expanded":  # one sample, batch stride 0
        return vals[:1].clone().expand(shape)
    else:
        raise ValueError(f"unknown memory layout {memory!r}; choose one of {MEMORY}")
    view.copy_(vals)
    return view


def build_inputs(case: Drawable, norm: Norm, device: str = "cpu", *, flat: bool = False) -> Inputs:
    """The tensors of a drawn case (a :class:`Case` or a
    :class:`~pm_core.testing.window_strategies.WindowCase`) for ``norm``, on ``device``;
    deterministic in the case. ``flat``: x and ``grad_out`` as ``(B, L, C)``, with ``hw``."""
    b, c = case.shape[0], case.shape[-1]
    dt = case.torch_dtype
    if device == "mps" and dt == torch.float64:
        pytest.skip("MPS has no float64")
    gen = torch.Generator().manual_seed(case.values.seed)
    vals = _values(case, gen)
    n, o = case.window.size * c, 2 * c
    s_w, s_g = _edge_scales(case, n, o, b * math.prod(case.out_size))
    weight = _capped(torch.randn(o, n, generator=gen, dtype=torch.float64) * s_w, case, s_w)
    size = n if norm == "pre" else o
    nw = 1 + 0.5 * torch.randn(size, generator=gen, dtype=torch.float64)
    nb = 0.5 * torch.randn(size, generator=gen, dtype=torch.float64)
    grad = torch.randn(b, *case.out_size, o, generator=gen, dtype=torch.float64) * s_g
    hw = None
    if flat:
        vals, grad, hw = vals.flatten(1, 2), grad.flatten(1, 2), (case.shape[1], case.shape[2])

    def put(t: Tensor) -> Tensor:
        return t.to(dt).to(device)

    x = _arrange(put(vals), case.memory)
    affine = case.affine and norm != "none"
    return Inputs(
        x, put(weight), put(nw) if affine else None, put(nb) if affine else None, hw, put(grad)
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
def memories(*, grad: bool, transposable: bool = True) -> st.SearchStrategy[str]:
    """Memory layouts from :data:`MEMORY`: ``hw_transposed`` only where H and W can be
    swapped (``transposable``: not a ``(B, L, C)`` x nor a 3-D map), the stride-0
    ``expanded`` only without ``grad`` (its gradients sum)."""
    return st.sampled_from(
        [
            m
            for m in MEMORY
            if (transposable or m != "hw_transposed") and not (grad and m == "expanded")
        ]
    )


@st.composite
def cases(
    draw: st.DrawFn,
    dtype: torch.dtype,
    *,
    grad: bool = False,
    max_numel: int = MAX_NUMEL,
    memory: str | None = None,
    max_decade: int | None = None,
    max_c: int = 20,
    vals: st.SearchStrategy[Values] | None = None,
) -> Case:
    """A :class:`Case` in ``dtype``; ``grad=True`` leaves out memory layouts unfit for
    backward, ``memory`` pins one.

    ``max_decade`` caps magnitudes (finite differences need values near 1); ``vals``
    replaces the value strategy (:func:`edge_values`, say).
    """
    shape = draw(shapes(max_numel, max_c))
    form = draw(st.sampled_from(FORMS))
    mem = memory if memory is not None else draw(memories(grad=grad, transposable=form == "bhwc"))
    drawn = draw(values(dtype, max_decade) if vals is None else vals)
    affine = draw(st.booleans().map(lambda b: not b))  # shrinks towards affine=True
    return Case(shape, dtype_name(dtype), mem, form, drawn, affine)


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
