"""Deliberately wrong merges, each the shape of a bug real codebases shipped.

None of them is registered in ``pm_core.REGISTRY``.

* **Swin's 2x2 merge** (:data:`PLANTED`, the ``order*`` names, ``swap_pad``): impl-level
  bugs have the impl signature ``fn(x, weight, norm_weight, norm_bias, norm, eps)`` on
  even-sized ``(B, H, W, C)`` input; :func:`front_door` gives them ``patch_merge``'s
  calling convention (input forms, odd-size padding), which is where the pad bug lives.
* **General windows** (:data:`WINDOW_PLANTED`): two order bugs and two padding bugs of 3-D
  merges, each a :class:`~pm_core.testing.Subject` with :func:`pm_core.window_merge`'s
  signature minus ``impl``, so the checks run on them unchanged.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pm_core import Norm, Window, window_merge
from pm_core.impls import ImplFn
from pm_core.testing import Merge, Subject
from pm_core.window_layouts import WindowLayout
from tests import library_code as lib

IDENTITY = (0, 1, 2, 3)
#: the 23 wrong orders of the window pixels (0,0), (1,0), (0,1), (1,1)
WRONG_ORDERS = [p for p in itertools.permutations(IDENTITY) if p != IDENTITY]


def _slices(x: Tensor) -> list[Tensor]:
    return [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]


def _ln(v: Tensor, nw: Tensor | None, nb: Tensor | None, eps: float) -> Tensor:
    return F.layer_norm(v, v.shape[-1:], nw, nb, eps)


def reduce_gathered(
    v: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    """LayerNorm and the projection of gathered ``(..., n)`` vectors, as a merge does."""
    if norm == "pre":
        v = _ln(v, nw, nb, eps)
    v = F.linear(v, w)
    return _ln(v, nw, nb, eps) if norm == "post" else v


def window_order(order: tuple[int, ...]) -> ImplFn:
    """The slice impl with its four window pixels concatenated in ``order``."""

    def fn(
        x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Any, eps: float
    ) -> Tensor:
        s = _slices(x)
        return reduce_gathered(torch.cat([s[i] for i in order], -1), w, nw, nb, norm, eps)

    return fn


def correct(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Any, eps: float
) -> Tensor:
    return window_order(IDENTITY)(x, w, nw, nb, norm, eps)


def norm_after(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Any, eps: float
) -> Tensor:
    """Swin v1 read as v2: for ``"pre"`` the LayerNorm runs after the projection."""
    if norm != "pre":
        return correct(x, w, nw, nb, norm, eps)
    return _ln(F.linear(torch.cat(_slices(x), -1), w), None, None, eps)


def eps_10x(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Any, eps: float
) -> Tensor:
    """LayerNorm epsilon ten times too large (1e-4 for 1e-5)."""
    return correct(x, w, nw, nb, norm, 10 * eps)


def conv_weight_transposed(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Any, eps: float
) -> Tensor:
    """The conv impl with the swin ``[O, 4C]`` weight viewed as ``[O, C, 2, 2]`` directly:
    channels and window positions mixed, shapes all fine (the mmseg #2350 class of bug)."""
    if norm == "pre":
        x = _ln(torch.cat(_slices(x), -1), nw, nb, eps)  # keep the pre path correct
        return F.linear(x, w)
    o, c = w.shape[0], x.shape[-1]
    y = F.conv2d(x.permute(0, 3, 1, 2), w.reshape(o, c, 2, 2), stride=2).permute(0, 2, 3, 1)
    return _ln(y, nw, nb, eps) if norm == "post" else y


def unscaled_fold(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Any, eps: float
) -> Tensor:
    """The conv form's pre-norm fold without its power-of-two scale: ``(W*g) @ (x - mu)``
    rounded to ``x``'s dtype, then times ``rstd``. The product carries the input's scale,
    so in float16 it overflows where the LayerNorm's output is small and finite."""
    if norm != "pre":
        return correct(x, w, nw, nb, norm, eps)
    acc = torch.promote_types(x.dtype, torch.float32)
    v = torch.cat(_slices(x), -1).to(acc)
    centred = v - v.mean(-1, keepdim=True)
    rstd = torch.rsqrt(centred.square().mean(-1, keepdim=True) + eps)
    z = F.linear(centred.to(x.dtype), w if nw is None else w * nw)
    y = z.to(acc) * rstd
    return (y if nb is None else y + F.linear(nb.to(acc), w.to(acc))).to(x.dtype)


class _OneWrongGradient(torch.autograd.Function):
    """Identity forward; backward scales the gradient of element 0 by (1 + 1e-3)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        g = g.clone()
        g.view(-1)[0] *= 1 + 1e-3
        return g


def wrong_gradient(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Any, eps: float
) -> Tensor:
    """Forward exact; dL/dx off by a relative 1e-3 at element (0, 0, 0, 0)."""
    return correct(_OneWrongGradient.apply(x), w, nw, nb, norm, eps)


def contiguous_only(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Any, eps: float
) -> Tensor:
    """Reads x's storage as if it were contiguous from its offset (a hand-written kernel's
    classic mistake)."""
    _, h, wd, c = x.shape
    flat = x.as_strided(x.shape, (h * wd * c, wd * c, c, 1), x.storage_offset())
    return correct(flat, w, nw, nb, norm, eps)


def front_door(fn: ImplFn, *, swap_pad: bool = False) -> Merge:
    """``patch_merge``'s calling convention around ``fn``; ``swap_pad`` pads H by W % 2 and
    W by H % 2 (the timm bug fixed in PR #2285)."""

    def merge(
        x: Tensor,
        w: Tensor,
        nw: Tensor | None = None,
        nb: Tensor | None = None,
        *,
        hw: tuple[int, int] | None = None,
        norm: Norm = "pre",
        eps: float = 1e-5,
    ) -> Tensor:
        x4 = x if hw is None else x.view(x.shape[0], *hw, x.shape[-1])
        h, wd = x4.shape[1:3]
        pad = (0, 0, 0, h % 2, 0, wd % 2) if swap_pad else (0, 0, 0, wd % 2, 0, h % 2)
        if h % 2 or wd % 2:
            x4 = F.pad(x4, pad)
        y = fn(x4, w, nw, nb, norm, eps)
        return y if hw is None else y.flatten(1, 2)

    return merge


def planted(name: str) -> Subject:
    """A planted bug by name (see :data:`PLANTED`), ready for the ``check_*`` functions."""
    expr = f"__import__('tests.selftest.planted', fromlist=['_']).planted({name!r})"
    if name.startswith("order"):
        order = tuple(int(ch) for ch in name.removeprefix("order"))
        return Subject(name, front_door(window_order(order)), expr)
    if name == "swap_pad":
        return Subject(name, front_door(correct, swap_pad=True), expr)
    return Subject(name, front_door(PLANTED[name]), expr)


PLANTED: dict[str, ImplFn] = {
    "norm_after": norm_after,
    "eps_10x": eps_10x,
    "conv_weight_transposed": conv_weight_transposed,
    "wrong_gradient": wrong_gradient,
    "contiguous_only": contiguous_only,
    "unscaled_fold": unscaled_fold,
}
ORDER_NAMES = ["order" + "".join(map(str, p)) for p in WRONG_ORDERS]


# --- general windows ---


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


def window_correct(
    x: Tensor, w: Tensor, nw: Tensor | None = None, nb: Tensor | None = None, *,
    window: Window, layout: str | WindowLayout, norm: Norm = "pre", eps: float = 1e-5,
) -> Tensor:  # fmt: skip
    """The padding bugs' scaffolding without the bug: pad as resolved, then merge."""
    xp = _padded_by(window.pads(x.shape[1:-1]), x)
    return window_merge(xp, w, nw, nb, window=_unpadded(window), layout=layout, norm=norm, eps=eps)


#: name -> (merge, the layout it is checked in)
WINDOW_PLANTED: dict[str, tuple[Merge, str]] = {
    "monai_1_4": (monai_1_4, "monai-legacy"),
    "offsets_swapped": (offsets_swapped, "swin"),
    "pad_dims_reversed": (pad_dims_reversed, "row-major"),
    "pad_front": (pad_front, "row-major"),
}


def window_planted(name: str) -> Subject:
    """A planted bug by name (see :data:`WINDOW_PLANTED`), ready for the window checks."""
    expr = f"__import__('tests.selftest.planted', fromlist=['_']).window_planted({name!r})"
    merge = window_correct if name == "correct" else WINDOW_PLANTED[name][0]
    return Subject(name, merge, expr)
