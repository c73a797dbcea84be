"""The general impls: ``gather`` and ``conv``, which compute the merge over every window.

Every output position gathers its window (:class:`~pm_core.Window`: kernel, stride,
padding, dilation) into a ``n = prod(kernel)*C`` vector in a layout
(:class:`~pm_core.window_layouts.WindowLayout`), normalises it (``norm="pre"``: LayerNorm
over the n entries, Swin v1, mmcv, MONAI), projects it to O channels, or normalises the O
outputs (``"post"``, Swin v2). Both are registered in :data:`pm_core.REGISTRY` with
``windows="any"``:

* ``"gather"``: :func:`~pm_core.space_to_depth` (``Tensor.unfold`` views, one copy), then
  ``F.layer_norm`` and ``F.linear`` on the gathered vectors;
* ``"conv"``: ``F.conv2d`` / ``F.conv3d`` with the same kernel, stride, padding and
  dilation on the channels-last view of ``x`` (no input copy; padding that a conv cannot
  express, i.e. asymmetric, is one ``F.pad``), the weight mapped from the layout by
  :func:`~pm_core.layouts.window_to_conv`. For ``norm="pre"`` on windows that tile
  (stride == kernel, dilation 1) the LayerNorm folds into the conv,
  ``y = conv(x - mu, W*g) * rstd + W @ b`` with each window centred once and its
  variance taken two-pass from the centred values (never ``E[x^2] - E[x]^2``), the
  centred window scaled by a power of two near ``rstd`` before the conv, so its output
  is ``xhat``-sized whatever the input's scale; windows that overlap or skip have no
  such fold (each input sits in several windows, with several means), so there
  ``"conv"`` runs LayerNorm on the gathered windows and the projection as a matmul.

Swin's 2x2 merge (:func:`swin_2x2`: a 2-D kernel-2 stride-2 window whose padding only
zero-pads an odd size at the bottom / right, in the ``swin`` or ``unfold`` order) is where
the registered 2x2 fast paths apply; ``"conv"`` runs its own there,
``pm_core.fold.conv_2x2``, whose pre-norm fold has a hand-written backward.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _compat
from ._checks import Norm, WindowCall
from .fold import _unit_scale, conv_2x2, fold_epilogue, folded_weight
from .layouts import conv_weight_view, unfold_to_swin
from .window import Pads, Window
from .window_gather import pad_spatial, pad_to_even, space_to_depth
from .window_layouts import WindowLayout

#: The two gather orders of the 2x2 window the fast paths read: Swin's and mmcv's.
SwinOrder = Literal["swin", "unfold"]


def swin_order(window: Window, layout: WindowLayout) -> SwinOrder | None:
    """``"swin"`` or ``"unfold"`` where ``window`` in ``layout`` is Swin's 2x2 merge, else ``None``.

    Swin's merge: 2-D, kernel 2, stride 2, dilation 1, and padding that adds nothing
    before and at most one row / column after (zero, ``"corner"``, ``"same"``, or
    explicit ``(0, 0)`` / ``(0, 1)`` pairs), so every window it reads is a window of the
    input zero-padded to even sizes at the bottom / right.
    """
    if window.kernel != (2, 2) or not window.tiles:
        return None
    pads = window.padding
    if not isinstance(pads, str) and any(b != 0 or a > 1 for b, a in pads):
        return None
    if not layout.channel_major and layout.fastest == "first":
        return "swin"
    if layout.channel_major and layout.fastest == "last":
        return "unfold"
    return None


def swin_2x2(
    call: WindowCall, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None] | None:
    """A call of Swin's 2x2 merge as a fast path's arguments, else ``None``.

    Returns ``(x4, w, nw, nb)``: ``x4`` the ``(B, H, W, C)`` input cropped to the windows
    the call reads and zero-padded to even H and W, the parameters in the swin order.
    """
    order = swin_order(call.window, call.layout)
    if order is None:
        return None
    x = call.x
    for a, o in enumerate(call.out_size):
        if x.shape[1 + a] > 2 * o:  # rows past the last window are never read
            x = x.narrow(1 + a, 0, 2 * o)
    if order == "unfold":
        w = unfold_to_swin(w)
        if norm == "pre":
            nw = None if nw is None else unfold_to_swin(nw)
            nb = None if nb is None else unfold_to_swin(nb)
    return pad_to_even(x), w, nw, nb


def _layer_norm(v: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    return F.layer_norm(v, v.shape[-1:], weight, bias, eps)


def gather_impl(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, call: WindowCall, norm: Norm,
    eps: float,
) -> Tensor:  # fmt: skip
    """:func:`~pm_core.space_to_depth`, then LayerNorm and the projection on the vectors."""
    v = space_to_depth(x, call.window, call.layout)
    if norm == "pre":
        v = _layer_norm(v, nw, nb, eps)
    v = F.linear(v, w)
    return _layer_norm(v, nw, nb, eps) if norm == "post" else v


def _conv(x: Tensor, wc: Tensor, window: Window, pads: Pads) -> Tensor:
    """``F.conv{2,3}d`` of ``(B, *S, C)`` through its channels-first view: ``(B, *S', O)``."""
    if all(pb == pa for pb, pa in pads):
        padding = tuple(pb for pb, _ in pads)
    else:  # the conv pads symmetrically only: pad the input itself (a copy)
        x, padding = pad_spatial(x, pads), (0,) * window.dims
    xc = _plain_strides(x.movedim(-1, 1))
    y = _compat.conv(
        xc,
        _plain_strides(wc.contiguous()),
        stride=window.stride,
        padding=padding,
        dilation=window.dilation,
    )
    return y.movedim(1, -1)


def _plain_strides(t: Tensor) -> Tensor:
    """``t`` with the standard strides of its shape when it is contiguous (a view, no copy).

    Where a dim has size 1 (C == 1, say) a channels-last view's strides are also those
    of a contiguous tensor, and torch 2.14.1's CPU convolution (oneDNN, float32) then
    gets some strided convs wrong: measured errors of O(1) for B >= 2 and an output
    width of 1, for an ambiguous input or weight alike. Plain strides take the NCHW path.
    """
    return t.flatten().view(t.shape) if t.is_contiguous() else t


def _window_stats(x: Tensor, kernel: tuple[int, ...], eps: float) -> tuple[Tensor, Tensor]:
    """Centre each tiling window of ``(B, *S, C)`` (``S`` a multiple of ``kernel``) and scale
    it to unit spread, two-pass.

    Returns ``(scaled, rs)``: ``scaled`` is ``(x - mu) * p`` in ``x``'s dtype, laid out as
    ``x``, with ``p`` a power of two and ``rs = rstd / p`` in ``[1, 2)``
    (:func:`pm_core.fold._unit_scale`), ``(B, *S', 1)`` in float32 (float64 for float64
    input). The mean sums per-pixel channel sums; the variance is taken from the centred
    values in the accumulation dtype, never from ``E[x^2] - E[x]^2``; the scale is
    applied before the rounding to ``x``'s dtype, so the conv of the scaled window is
    ``xhat``-sized whatever the input's scale (unscaled, it overflows float16).
    """
    b, *size, c = x.shape
    d = len(kernel)
    out = [s // k for s, k in zip(size, kernel, strict=True)]
    split, per_window = [b], [b]
    for o, k in zip(out, kernel, strict=True):
        split += [o, k]
        per_window += [o, 1]
    kdims = tuple(2 + 2 * a for a in range(d))  # the within-window dims of the split view
    n = c
    for k in kernel:
        n *= k
    acc = torch.promote_types(x.dtype, torch.float32)
    mean = x.sum(-1, dtype=acc).view(split).sum(kdims, keepdim=True) / n
    centred = x.view(*split, c).to(acc) - mean.unsqueeze(-1)  # splitting dims is always a view

    def mean_square(t: Tensor) -> Tensor:
        return t.square().sum((*kdims, -1)) / n

    with torch.no_grad():
        p, _ = _unit_scale(torch.rsqrt(mean_square(centred) + eps))
    scaled = centred * p.view(*per_window, 1)  # p: (B, *S'), one per window
    # the scaled window's statistics, so that autograd's are O(1) too (rstd's own
    # gradient, var^-3/2, underflows float32 for a spread over 2^42)
    rs = torch.rsqrt(mean_square(scaled) + eps * p * p)
    # the product keeps x's strides; reshape copies only where they do not merge
    return scaled.to(x.dtype).reshape(b, *size, c), rs.unsqueeze(-1)


def _folded_pre_norm(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, call: WindowCall, eps: float
) -> Tensor:
    """``conv((x - mu) p, W*g) * rs + W @ b`` over tiling windows (see the module docstring).

    The padded input is cropped to the windows (``S' * kernel``), each window centred
    and scaled once (:func:`_window_stats`; ``p * rs = rstd``), and the conv runs with
    stride == kernel on the scaled map. Plain differentiable ops: autograd gives the
    backward, whose operands are ``xhat``- and gradient-sized too.
    """
    win = call.window
    xp = pad_spatial(x, call.pads)
    for a, (o, k) in enumerate(zip(call.out_size, win.kernel, strict=True)):
        xp = xp.narrow(1 + a, 0, o * k)  # positions past the last window are never read
    scaled, rs = _window_stats(xp, win.kernel, eps)
    zero = ((0, 0),) * win.dims
    z = _conv(scaled, conv_weight_view(folded_weight(w, nw), win, call.layout), win, zero)
    return fold_epilogue(z, rs, w, nb)


def conv_impl(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, call: WindowCall, norm: Norm,
    eps: float,
) -> Tensor:  # fmt: skip
    """The conv form (see the module docstring); Swin's 2x2 merge runs ``fold.conv_2x2``."""
    swin = swin_2x2(call, w, nw, nb, norm)
    if swin is not None:
        return conv_2x2(*swin, norm, eps)
    win = call.window
    if norm == "pre":
        if win.tiles:
            return _folded_pre_norm(x, w, nw, nb, call, eps)
        return gather_impl(x, w, nw, nb, call, norm, eps)  # no fold for overlapping windows
    y = _conv(x, conv_weight_view(w, win, call.layout), win, call.pads)
    return _layer_norm(y, nw, nb, eps) if norm == "post" else y


__all__ = ["SwinOrder", "conv_impl", "gather_impl", "swin_2x2", "swin_order"]
