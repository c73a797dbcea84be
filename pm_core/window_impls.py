"""The general merge over 2-D and 3-D windows, :func:`~pm_core.window_merge`, as a gather or a conv.

Every output position gathers its window (:class:`~pm_core.Window`: kernel, stride,
padding, dilation) into a ``n = prod(kernel)*C`` vector in a layout
(:class:`~pm_core.window_layouts.WindowLayout`), normalises it (``norm="pre"``: LayerNorm over the n
entries, Swin v1, mmcv, MONAI), projects it to O channels, or normalises the O outputs
(``"post"``, Swin v2). Two implementations (:data:`~pm_core.window_impls.WINDOW_IMPLS`) compute it:

* ``"gather"``: :func:`~pm_core.space_to_depth` (``Tensor.unfold`` views, one copy), then
  ``F.layer_norm`` and ``F.linear`` on the gathered vectors;
* ``"conv"``: ``F.conv2d`` / ``F.conv3d`` with the same kernel, stride, padding and
  dilation on the channels-last view of ``x`` (no input copy; padding that a conv cannot
  express, i.e. asymmetric, is one ``F.pad``), the weight mapped from the layout by
  :func:`~pm_core.window_layouts.window_to_conv`. For ``norm="pre"`` on windows that tile (stride ==
  kernel, dilation 1) the LayerNorm folds into the conv,
  ``y = conv(x - mu, W*g) * rstd + W @ b`` with each window centred once and its
  variance taken two-pass from the centred values (never ``E[x^2] - E[x]^2``), the
  centred window scaled by a power of two near ``rstd`` before the conv, so its output
  is ``xhat``-sized whatever the input's scale; windows
  that overlap or skip have no such fold (each input sits in several windows, with
  several means), so there ``"conv"`` runs LayerNorm on the gathered windows and the
  projection as a matmul.

The 2-D 2x2 merge of Swin (``Window((2, 2))``, stride 2, dilation 1, any padding that
only zero-pads odd sizes at the bottom/right) in the ``swin`` or ``unfold`` layout runs
the registered 2x2 ``conv`` impl for ``impl="conv"`` (its fold has a hand-written
backward): the fast path of the general merge, called directly, not through
:func:`pm_core.patch_merge`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _compat
from ._checks import Norm
from ._window_checks import WindowCall, check_window_call
from .fold import _unit_scale, fold_epilogue, folded_weight
from .impls import REGISTRY, pad_to_even
from .layouts import unfold_to_swin
from .window import Pads, Window
from .window_gather import pad_spatial, space_to_depth
from .window_layouts import WindowLayout, conv_weight_view

#: The implementations of :func:`window_merge`.
WindowImpl = Literal["gather", "conv"]
WINDOW_IMPLS: tuple[WindowImpl, ...] = get_args(WindowImpl)

_Fn = Callable[[Tensor, Tensor, Tensor | None, Tensor | None, WindowCall, Norm, float], Tensor]


def _layer_norm(v: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    return F.layer_norm(v, v.shape[-1:], weight, bias, eps)


def _gather_impl(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, call: WindowCall, norm: Norm,
    eps: float,
) -> Tensor:  # fmt: skip
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


def _conv_impl(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, call: WindowCall, norm: Norm,
    eps: float,
) -> Tensor:  # fmt: skip
    win = call.window
    if norm == "pre":
        if win.tiles:
            return _folded_pre_norm(x, w, nw, nb, call, eps)
        return _gather_impl(x, w, nw, nb, call, norm, eps)  # no fold for overlapping windows
    y = _conv(x, conv_weight_view(w, win, call.layout), win, call.pads)
    return _layer_norm(y, nw, nb, eps) if norm == "post" else y


_IMPLS: dict[str, _Fn] = {"gather": _gather_impl, "conv": _conv_impl}


def _swin_2x2_crop(call: WindowCall) -> tuple[Tensor, str] | None:
    """``(x cropped, "swin" or "unfold")`` when the call is :func:`pm_core.patch_merge`'s
    merge: 2-D, kernel 2, stride 2, dilation 1, the swin or unfold order, and padding that
    adds at most the one bottom row / right column an odd size needs; else ``None``."""
    win, lay = call.window, call.layout
    if win.kernel != (2, 2) or not win.tiles:
        return None
    if not lay.channel_major and lay.fastest == "first":
        name = "swin"
    elif lay.channel_major and lay.fastest == "last":
        name = "unfold"
    else:
        return None
    x = call.x
    for a, ((before, _), o) in enumerate(zip(call.pads, call.out_size, strict=True)):
        size = x.shape[1 + a]
        if before != 0 or size < 2 * o - 1:
            return None
        x = x.narrow(1 + a, 0, min(size, 2 * o))  # rows past the last window are not read
    return x, name


def window_merge(
    x: Tensor,
    reduction_weight: Tensor,
    norm_weight: Tensor | None = None,
    norm_bias: Tensor | None = None,
    *,
    window: Window,
    layout: str | WindowLayout = "swin",
    norm: Norm = "pre",
    eps: float = 1e-5,
    impl: WindowImpl = "gather",
) -> Tensor:
    """Merge every window of a 2-D or 3-D map into one token: ``(B, *S, C) -> (B, *S', O)``.

    Args:
        x: ``(B, H, W, C)`` for a 2-D window, ``(B, D, H, W, C)`` for a 3-D one; any
            strides. ``S' = window.output_size(S)``.
        reduction_weight: ``(O, n)`` with ``n = prod(window.kernel) * C``, its columns in
            ``layout``.
        norm_weight, norm_bias: LayerNorm affine parameters, ``(n,)`` in ``layout`` for
            ``norm="pre"``, ``(O,)`` for ``"post"``, ``None`` for no affine.
        window: the :class:`~pm_core.Window` (kernel, stride, padding, dilation).
        layout: the channel order of the merged vector, a name from
            :data:`~pm_core.window_layouts.WINDOW_LAYOUTS` or a :class:`~pm_core.window_layouts.WindowLayout`.
        norm: ``"pre"`` (LN over the n window entries, then the projection), ``"post"``
            (projection, then LN over O) or ``"none"``.
        eps: the LayerNorm epsilon.
        impl: ``"gather"`` or ``"conv"`` (:data:`~pm_core.window_impls.WINDOW_IMPLS`; see the module docstring
            for where the conv form folds the pre-norm and where it falls back).

    The float64 oracle is :func:`pm_core.reference_window_merge`, and
    :func:`pm_core.window_error_bounds` bounds the difference.

    >>> import torch
    >>> x = torch.randn(2, 5, 6, 6, 4)  # (B, D, H, W, C)
    >>> w = torch.randn(8, 32)  # (O, 2*2*2*C)
    >>> window_merge(x, w, window=Window((2, 2, 2), padding="corner"), layout="monai-v2-3d",
    ...              norm="none", impl="conv").shape
    torch.Size([2, 3, 3, 3, 8])
    """
    if impl not in _IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {WINDOW_IMPLS}")
    call = check_window_call(x, reduction_weight, norm_weight, norm_bias, window, layout, norm, eps)
    w, nw, nb = reduction_weight, norm_weight, norm_bias
    if call.x.numel() == 0 or 0 in call.out_size:
        return _gather_impl(call.x, w, nw, nb, call, norm, eps)  # empty in, empty out
    swin = _swin_2x2_crop(call) if impl == "conv" else None
    if swin is not None:
        x2, name = swin
        if name == "unfold":
            w = unfold_to_swin(w)
            if norm == "pre":
                nw = None if nw is None else unfold_to_swin(nw)
                nb = None if nb is None else unfold_to_swin(nb)
        return REGISTRY["conv"].fn(pad_to_even(x2), w, nw, nb, norm, eps)
    return _IMPLS[impl](call.x, w, nw, nb, call, norm, eps)


__all__ = ["WINDOW_IMPLS", "WindowImpl", "window_merge"]
