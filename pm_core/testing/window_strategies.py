"""Hypothesis strategies for the general merge (:func:`pm_core.window_merge`).

A drawn :class:`WindowCase` has the same value kinds and memory views as the 2x2
:class:`~pm_core.testing.strategies.Case`, for any rank: :func:`windows` draws 2-D and
3-D windows (kernel, stride, padding incl. ``"corner"`` / ``"same"``, dilation),
:func:`layouts_for` a named layout or a random offset permutation, and
:func:`window_shapes` sizes with at least one window, capped by :data:`WINDOW_MAX_NUMEL`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from hypothesis import assume
from hypothesis import strategies as st

import pm_core
from pm_core import Norm

from .strategies import Door, Inputs, Values, _Drawn, build_inputs, dtype_name, memories, values

#: Largest ``B * prod(S) * C`` a window strategy draws (override with
#: ``PM_CORE_WINDOW_MAX_NUMEL``), and largest ``B * prod(S') * prod(kernel) * C``, the
#: gathered size, which overlapping windows multiply.
WINDOW_MAX_NUMEL = int(os.environ.get("PM_CORE_WINDOW_MAX_NUMEL", "384"))
WINDOW_MAX_GATHERED = 4 * WINDOW_MAX_NUMEL


@dataclass(frozen=True)
class WindowCase(_Drawn):
    """One drawn general-merge input: ``WindowCase(...).build(norm)`` gives the tensors.

    ``layout`` is a name from :data:`pm_core.window_layouts.WINDOW_LAYOUTS`, or an explicit offset order
    (``channel_major`` then applies); ``memory`` is how ``x`` sits in memory (see
    :data:`~pm_core.testing.MEMORY`). The ``repr`` is a one-line repro.
    """

    shape: tuple[int, ...]  # (B, *S, C)
    window: pm_core.Window
    layout: str | tuple[tuple[int, ...], ...]
    dtype: str
    memory: str
    values: Values
    channel_major: bool = False
    affine: bool = True

    door: ClassVar[Door] = Door(pm_core.reference_window_merge, pm_core.window_error_bounds)

    def window_layout(self) -> str | pm_core.window_layouts.WindowLayout:
        if isinstance(self.layout, str):
            return self.layout
        return pm_core.window_layouts.layout_from_offsets(
            self.layout, kernel=self.window.kernel, channel_major=self.channel_major
        )

    @property
    def out_size(self) -> tuple[int, ...]:
        return self.window.output_size(self.shape[1:-1])

    def output_shape(self) -> tuple[int, ...]:
        return (self.shape[0], *self.out_size, 2 * self.shape[-1])

    def keywords(self, inp: Inputs) -> dict[str, Any]:
        """The front door's keywords besides ``norm`` and ``eps``."""
        return {"window": self.window, "layout": self.window_layout()}

    def where(self) -> str:
        major = " (channel major)" if self.channel_major else ""
        return f"memory {self.memory}; {self.window}; layout {self.layout!r}{major}; values {self.values}"

    def build(self, norm: Norm, device: str = "cpu") -> Inputs:
        """The tensors of the case for ``norm``, on ``device``; deterministic in the case."""
        return build_inputs(self, norm, device)


def _pad_args(dims: int) -> st.SearchStrategy[Any]:
    per_dim = st.lists(st.integers(0, 2), min_size=dims, max_size=dims).map(tuple)
    pairs = st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=dims, max_size=dims
    ).map(tuple)
    return st.one_of(st.just(0), st.sampled_from(["corner", "same"]), per_dim, pairs)


@st.composite
def windows(
    draw: st.DrawFn, dims: int | None = None, *, tiling: bool | None = None, max_kernel: int = 3
) -> pm_core.Window:
    """A :class:`pm_core.Window`: kernel 1..``max_kernel`` per dim, stride ``None`` (= the
    kernel) half the time, else 1..3, dilation 1 or up to 2, any padding form.
    ``tiling=True`` draws only windows that tile (stride == kernel, dilation 1)."""
    d = draw(st.sampled_from([2, 3])) if dims is None else dims
    per_dim = st.lists(st.integers(1, max_kernel), min_size=d, max_size=d).map(tuple)
    kernel = draw(per_dim)
    stride: list[int] | None = None
    dilation: int | list[int] = 1
    if not tiling:
        stride = draw(st.one_of(st.none(), st.lists(st.integers(1, 3), min_size=d, max_size=d)))
        dilation = draw(st.one_of(st.just(1), st.lists(st.integers(1, 2), min_size=d, max_size=d)))
    win = pm_core.Window(kernel, stride, draw(_pad_args(d)), dilation)
    if tiling is False:
        assume(not win.tiles)
    return win


def layouts_for(window: pm_core.Window) -> st.SearchStrategy[tuple[Any, bool]]:
    """``(layout, channel_major)``: a named layout that applies to ``window``, or an
    explicit permutation of its offsets (offset- or channel-major)."""
    named = []
    for name, lay in pm_core.window_layouts.WINDOW_LAYOUTS.items():
        try:
            lay.check(window)
        except ValueError:
            continue
        named.append(name)
    explicit = st.tuples(st.permutations(window.offsets()).map(tuple), st.booleans())
    return st.one_of(st.tuples(st.sampled_from(named), st.just(False)), explicit)


@st.composite
def window_shapes(
    draw: st.DrawFn, window: pm_core.Window, *, max_numel: int = WINDOW_MAX_NUMEL, max_c: int = 4
) -> tuple[int, ...]:
    """``(B, *S, C)`` with at least one window per dim: each ``S_a`` from the smallest size
    the padding allows up to two strides more, B in 1..2, C in 1..max_c, all capped."""
    c = draw(st.integers(1, max_c))
    pads = window.padding
    size: list[int] = []
    budget = max_numel // c
    for a, (span, s) in enumerate(zip(window.span, window.stride, strict=True)):
        lo = 1 if isinstance(pads, str) else max(1, span - pads[a][0] - pads[a][1])
        rest = window.dims - a - 1
        hi = max(lo, min(lo + 2 * s, budget // max(1, lo**rest)))
        size.append(draw(st.integers(lo, hi)))
        budget //= size[-1]
    b = draw(st.integers(1, max(1, min(2, budget))))
    shape = (b, *size, c)
    assume(math.prod(shape) <= max_numel)
    out = window.output_size(size)
    assume(b * math.prod(out) * window.size * c <= WINDOW_MAX_GATHERED)
    return shape


@st.composite
def window_cases(
    draw: st.DrawFn,
    dtype: torch.dtype,
    *,
    grad: bool = False,
    dims: int | None = None,
    tiling: bool | None = None,
    window: pm_core.Window | None = None,
    layout: str | None = None,
    max_decade: int | None = None,
    max_numel: int = WINDOW_MAX_NUMEL,
    vals: st.SearchStrategy[Values] | None = None,
) -> WindowCase:
    """A :class:`WindowCase` in ``dtype``; ``grad=True`` leaves out the stride-0 memory
    layout, whose gradients sum. ``window`` / ``layout`` pin those; ``tiling``
    restricts the drawn windows; ``max_numel`` caps ``B * prod(S) * C``; ``vals`` replaces
    the value strategy."""
    win = draw(windows(dims, tiling=tiling)) if window is None else window
    lay, cm = (layout, False) if layout is not None else draw(layouts_for(win))
    shape = draw(window_shapes(win, max_numel=max_numel))
    memory = draw(memories(grad=grad, transposable=win.dims == 2))
    drawn = draw(values(dtype, max_decade) if vals is None else vals)
    affine = draw(st.booleans().map(lambda b: not b))
    return WindowCase(shape, win, lay, dtype_name(dtype), memory, drawn, cm, affine)
