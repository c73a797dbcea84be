"""The patch-merging implementations, and the registry that names them.

Every implementation has one signature (:class:`ImplFn`)::

    fn(x, weight, norm_weight, norm_bias, norm, eps) -> y
    x: (B, H, W, C) with H and W even     weight: (O, 4C), swin layout
    y: (B, H/2, W/2, O)                   norm params: (4C,) for "pre", (O,) for "post"

Input forms, validation and odd-size padding live in :func:`pm_core.patch_merge`, so an
implementation only computes. Adding one is one :func:`register` call; the tests and
benchmarks enumerate :data:`REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import NORMS, Norm
from .layouts import conv_view, swin_to_unfold

#: ``fn(x, weight, norm_weight, norm_bias, norm, eps) -> y``
ImplFn = Callable[[Tensor, Tensor, Tensor | None, Tensor | None, Norm, float], Tensor]


@dataclass(frozen=True)
class Impl:
    """A registered implementation.

    ``exact_for`` lists the norm modes in which it computes the same function as the
    oracle; outside them the suite checks that it *differs*. ``layout`` is the channel
    order it gathers the window in.
    """

    name: str
    fn: ImplFn
    exact_for: frozenset[Norm]
    layout: str
    summary: str


REGISTRY: dict[str, Impl] = {}


def register(
    name: str, *, layout: str, summary: str, exact_for: tuple[Norm, ...] = NORMS
) -> Callable[[ImplFn], ImplFn]:
    def deco(fn: ImplFn) -> ImplFn:
        if name in REGISTRY:
            raise ValueError(f"implementation {name!r} is already registered")
        REGISTRY[name] = Impl(name, fn, frozenset(exact_for), layout, summary)
        return fn

    return deco


def get_impl(name: object) -> Impl:
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"unknown impl {name!r}; choose one of {tuple(REGISTRY)}")
    return REGISTRY[name]


def _windows(x: Tensor) -> Tensor:
    """``(B, H, W, C)`` -> ``(B, H/2, 2, W/2, 2, C)``, dims (b, i, dh, j, dw, c); always a view."""
    b, h, w, c = x.shape
    return x.view(b, h // 2, 2, w // 2, 2, c)


def _layer_norm(v: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    return F.layer_norm(v, v.shape[-1:], weight, bias, eps)


def _reduce(
    v: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    """LayerNorm and Linear on a gathered ``(..., 4C)`` tensor in ``weight``'s layout."""
    if norm == "pre":
        v = _layer_norm(v, nw, nb, eps)
    v = F.linear(v, weight)
    if norm == "post":
        v = _layer_norm(v, nw, nb, eps)
    return v


def _reduce_unfold_order(
    v: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    """:func:`_reduce` for a window gathered in unfold order: permute the 4C-sized params."""
    if norm == "pre":
        nw = None if nw is None else swin_to_unfold(nw)
        nb = None if nb is None else swin_to_unfold(nb)
    return _reduce(v, swin_to_unfold(weight), nw, nb, norm, eps)


@register("slice", layout="swin", summary="four strided slices + torch.cat (Swin, torchvision, HF)")
def slice_impl(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    v = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    return _reduce(v, weight, nw, nb, norm, eps)


@register("reshape", layout="swin", summary="reshape + permute + flatten (timm)")
def reshape_impl(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    b, h, w, c = x.shape
    v = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
    return _reduce(v, weight, nw, nb, norm, eps)


@register("unfold", layout="unfold", summary="F.unfold(k=2, s=2) on the NCHW view (mmcv)")
def unfold_impl(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    b, h, w, _ = x.shape
    v = F.unfold(x.permute(0, 3, 1, 2), kernel_size=2, stride=2)  # (B, 4C, L')
    v = v.transpose(1, 2).view(b, h // 2, w // 2, -1)
    return _reduce_unfold_order(v, weight, nw, nb, norm, eps)


@register("pixel_unshuffle", layout="unfold", summary="F.pixel_unshuffle(2) on the NCHW view")
def pixel_unshuffle_impl(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    v = F.pixel_unshuffle(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    return _reduce_unfold_order(v, weight, nw, nb, norm, eps)


def _conv(x: Tensor, weight: Tensor) -> Tensor:
    """k=2 s=2 conv of ``(B, H, W, C)`` read through its NCHW view: a channels-last input, no copy."""
    y = F.conv2d(x.permute(0, 3, 1, 2), conv_view(weight, x.shape[-1]), stride=2)
    return y.permute(0, 2, 3, 1)


def _folded_pre_norm(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, eps: float
) -> Tensor:
    """LN over each 4C window folded into the conv: ``y = conv(x - mu, W*g) * rstd + W @ b``.

    The LN's affine weight ``g`` folds into the conv weight and its bias into a
    constant. What cannot fold is the per-window centring and scaling, and how it is
    done decides the accuracy. Two ways lose it:

    * ``E[x^2] - E[x]^2`` cancels: a window with mean ``mu`` and spread ``s`` loses
      ``(mu/s)^2`` ulps of its variance.
    * ``conv(x) - mu * (W @ g)`` cancels after the GEMM: the conv output of a
      large-mean window is rounded to the output dtype before the subtraction, so in
      bfloat16 the error grows like ``mu/s`` ulps of bfloat16.

    So the window is centred *before* the conv, two-pass: the mean comes from per-pixel
    channel sums pooled over the 2x2 window, in float32 (float64 for float64 input); the
    centred window is materialised once, and both the variance and the conv read it.
    That costs one input-sized write and three reads, against the slice form's
    gather-copy plus a normalised copy; the GEMM runs as a oneDNN convolution.
    """
    b, h, w, c = x.shape
    n = 4 * c
    acc = torch.promote_types(x.dtype, torch.float32)
    # per-window mean: (B, H/2, W/2)
    mean = _windows(x.sum(-1, dtype=acc).unsqueeze(-1)).sum((2, 4, 5)) / n
    centred = _windows(x) - mean[:, :, None, :, None, None]  # (B, H/2, 2, W/2, 2, C), acc
    var = centred.square().sum(-1).sum((2, 4)) / n
    rstd = torch.rsqrt(var + eps).unsqueeze(-1)
    folded = weight if nw is None else weight * nw
    z = _conv(centred.to(x.dtype).view(b, h, w, c), folded)
    shift = None if nb is None else F.linear(nb.to(acc), weight.to(acc))
    y = z * rstd if shift is None else torch.addcmul(shift, z, rstd)
    return y.to(z.dtype)  # z.dtype: x.dtype, or the autocast dtype


@register(
    "conv",
    layout="conv",
    summary="F.conv2d(k=2, s=2) on the channels-last view; pre-norm folded into the conv",
)
def conv_impl(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    if norm == "pre":
        return _folded_pre_norm(x, weight, nw, nb, eps)
    y = _conv(x, weight)
    return _layer_norm(y, nw, nb, eps) if norm == "post" else y


def _by_position(v: Tensor, c: int) -> Tensor:
    """A swin-layout ``(4C,)`` vector as ``(2, 1, 2, C)``, broadcasting over dims (dh, j, dw, c)."""
    return v.view(2, 2, c).transpose(0, 1).unsqueeze(1)


@register(
    "conv_channel_norm",
    layout="conv",
    exact_for=("post", "none"),
    summary="naive 'just use a conv': LN over C per pixel, then the conv (not LN over 4C)",
)
def conv_channel_norm_impl(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    if norm != "pre":
        return conv_impl(x, weight, nw, nb, norm, eps)
    b, h, w, c = x.shape
    win = _windows(_layer_norm(x, None, None, eps))
    if nw is not None:
        win = win * _by_position(nw, c)
    if nb is not None:
        win = win + _by_position(nb, c)
    return _conv(win.reshape(b, h, w, c), weight)


IMPLS: tuple[str, ...] = tuple(REGISTRY)
