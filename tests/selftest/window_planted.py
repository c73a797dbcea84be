"""Deliberately wrong 3-D merges: two order bugs and two padding bugs of the kinds shipped.

Each has :func:`pm_core.window_merge`'s signature minus ``impl`` (a
:class:`~pm_core.testing.WindowSubject`), so the property checks run on it unchanged.
None is part of the library.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from pm_core import Norm, Window, window_merge
from pm_core.testing import WindowMerge, WindowSubject
from pm_core.window_layouts import WindowLayout
from tests import library_code as lib


def reduce_gathered(
    v: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    """LayerNorm and the projection of gathered ``(..., n)`` vectors, as a merge does."""
    if norm == "pre":
        v = F.layer_norm(v, v.shape[-1:], nw, nb, eps)
    v = F.linear(v, w)
    return F.layer_norm(v, v.shape[-1:], nw, nb, eps) if norm == "post" else v


def monai_1_4(
    x: Tensor, w: Tensor, nw: Tensor | None = None, nb: Tensor | None = None, *,
    window: Window, layout: str | WindowLayout, norm: Norm = "pre", eps: float = 1e-5,
) -> Tensor:  # fmt: skip
    """MONAI <= 1.4's legacy 3-D merge (issue #4757): its slice list repeats (0, 1, 0) and
    (0, 0, 1) in place of (1, 1, 0) and (0, 1, 1), whatever layout it is asked for."""
    return reduce_gathered(lib.monai_legacy_gather_1_4(x), w, nw, nb, norm, eps)


def offsets_swapped(
    x: Tensor, w: Tensor, nw: Tensor | None = None, nb: Tensor | None = None, *,
    window: Window, layout: str | WindowLayout, norm: Norm = "pre", eps: float = 1e-5,
) -> Tensor:  # fmt: skip
    """A swin-layout checkpoint run by a row-major gather (MONAI's 3-D V2 order where its
    2-D order was meant): the same offsets, in the other order."""
    wrong = "row-major" if layout == "swin" else "swin"
    return window_merge(x, w, nw, nb, window=window, layout=wrong, norm=norm, eps=eps)


def _padded_by(pads: tuple[tuple[int, int], ...], x: Tensor) -> Tensor:
    flat = [0, 0]  # F.pad: last dim first
    for before, after in reversed(pads):
        flat += [before, after]
    return F.pad(x, flat)


def _unpadded(window: Window) -> Window:
    return Window(window.kernel, window.stride, 0, window.dilation)


def pad_dims_reversed(
    x: Tensor, w: Tensor, nw: Tensor | None = None, nb: Tensor | None = None, *,
    window: Window, layout: str | WindowLayout, norm: Norm = "pre", eps: float = 1e-5,
) -> Tensor:  # fmt: skip
    """Padding computed per dim but applied to the dims in reverse (D's to W, W's to D):
    timm's 2-D pad bug (PR #2285) in 3-D, from F.pad's last-dim-first argument order.
    Where that would leave a dim shorter than the window it pads right instead, so the
    bug never crashes: it only computes the wrong thing (or shape)."""
    size = x.shape[1:-1]
    pads = window.pads(size)
    wrong = tuple(reversed(pads))
    fits = all(s + b + a >= span for s, (b, a), span in zip(size, wrong, window.span, strict=True))
    xp = _padded_by(wrong if fits else pads, x)
    return window_merge(xp, w, nw, nb, window=_unpadded(window), layout=layout, norm=norm, eps=eps)


def pad_front(
    x: Tensor, w: Tensor, nw: Tensor | None = None, nb: Tensor | None = None, *,
    window: Window, layout: str | WindowLayout, norm: Norm = "pre", eps: float = 1e-5,
) -> Tensor:  # fmt: skip
    """mmcv's ``"corner"`` padding put before the map instead of after (its ``"same"``
    split read the wrong way round)."""
    pads = window.pads(x.shape[1:-1])
    xp = _padded_by(tuple((after, before) for before, after in pads), x)
    return window_merge(xp, w, nw, nb, window=_unpadded(window), layout=layout, norm=norm, eps=eps)


def correct(
    x: Tensor, w: Tensor, nw: Tensor | None = None, nb: Tensor | None = None, *,
    window: Window, layout: str | WindowLayout, norm: Norm = "pre", eps: float = 1e-5,
) -> Tensor:  # fmt: skip
    """The padding bugs' scaffolding without the bug: pad as resolved, then merge."""
    xp = _padded_by(window.pads(x.shape[1:-1]), x)
    return window_merge(xp, w, nw, nb, window=_unpadded(window), layout=layout, norm=norm, eps=eps)


#: name -> (merge, the layout it is checked in)
WINDOW_PLANTED: dict[str, tuple[WindowMerge, str]] = {
    "monai_1_4": (monai_1_4, "monai-legacy"),
    "offsets_swapped": (offsets_swapped, "swin"),
    "pad_dims_reversed": (pad_dims_reversed, "row-major"),
    "pad_front": (pad_front, "row-major"),
}


def window_planted(name: str) -> WindowSubject:
    """A planted bug by name (see :data:`WINDOW_PLANTED`), ready for the window checks."""
    expr = f"__import__('tests.selftest.window_planted', fromlist=['_']).window_planted({name!r})"
    merge = correct if name == "correct" else WINDOW_PLANTED[name][0]
    return WindowSubject(name, merge, expr)
