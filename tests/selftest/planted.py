"""Deliberately wrong patch merges, each the shape of a bug real codebases shipped.

None of them is registered in ``pm_core.REGISTRY``. Impl-level bugs have the impl
signature ``fn(x, weight, norm_weight, norm_bias, norm, eps)`` on even-sized
``(B, H, W, C)`` input; :func:`front_door` gives them ``patch_merge``'s calling
convention (input forms, odd-size padding), which is where the pad bug lives.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pm_core import Norm
from pm_core.impls import ImplFn
from pm_core.testing import Merge, Subject

IDENTITY = (0, 1, 2, 3)
#: the 23 wrong orders of the window pixels (0,0), (1,0), (0,1), (1,1)
WRONG_ORDERS = [p for p in itertools.permutations(IDENTITY) if p != IDENTITY]


def _slices(x: Tensor) -> list[Tensor]:
    return [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]


def _ln(v: Tensor, nw: Tensor | None, nb: Tensor | None, eps: float) -> Tensor:
    return F.layer_norm(v, v.shape[-1:], nw, nb, eps)


def _reduce(
    v: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
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
        return _reduce(torch.cat([s[i] for i in order], -1), w, nw, nb, norm, eps)

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
