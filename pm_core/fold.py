"""The conv form's fast path for Swin's 2x2 merge, and its pre-norm fold: LayerNorm over
each 4C window folded into one k=2 s=2 convolution.

:func:`conv_2x2` is what the ``conv`` impl (and ``conv_cw``) run on the 2x2 merge; for
``norm="pre"`` it is :func:`folded_pre_norm`, whose derivation, and why it centres and
scales each window before the GEMM, is in its docstring. The general window merge's fold (:mod:`pm_core.window_impls`) uses the same
power-of-two scaling, :func:`_unit_scale`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _compat
from ._checks import Norm, _autocasting
from .layouts import conv_view


def _windows(x: Tensor) -> Tensor:
    """``(B, H, W, C)`` -> ``(B, H/2, 2, W/2, 2, C)``, dims (b, i, dh, j, dw, c); always a view."""
    b, h, w, c = x.shape
    return x.view(b, h // 2, 2, w // 2, 2, c)


def _conv(x: Tensor, weight: Tensor) -> Tensor:
    """k=2 s=2 conv of ``(B, H, W, C)`` read through its NCHW view: a channels-last input, no copy."""
    y = _compat.conv(x.permute(0, 3, 1, 2), conv_view(weight, x.shape[-1]), stride=2)
    return y.permute(0, 2, 3, 1)


def _unit_scale(rstd: Tensor) -> tuple[Tensor, Tensor]:
    """``(p, rs)`` with ``rstd == p * rs``: ``p = 2**floor(log2(rstd))``, ``rs`` in ``[1, 2)``
    (down to ``1 - 2^-23`` where ``log2`` rounds a value just below a power of two up).

    The fold scales each centred window by ``p`` before it is rounded to the input's
    dtype and convolved, and the conv's output by ``rs`` after: the convolved values are
    then ``xhat``-sized (``|c p| <= |xhat| (1 + 2^-23)``) whatever the input's scale, where
    ``conv(x - mu, W*g)`` carries the input's scale and overflows float16 (a window of
    spread 5000 times 4C weights of size 1). ``exp2`` of an integer is a power of two
    (exact: ``tests/properties/test_finite_range.py`` checks it on every device it runs on), so the
    scaling is exact and the result is bit for bit the unscaled fold's wherever that one
    neither overflows nor underflows. ``exp2(floor(log2))`` rather than ``frexp`` or bit
    operations: ONNX has neither, and it exports. ``p`` has no gradient (it is piecewise
    constant); ``rs`` carries ``rstd``'s.
    """
    p = torch.exp2(torch.floor(torch.log2(rstd.detach())))
    rs: Tensor = rstd / p
    return p, rs


def _window_stats(x: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Centre each 2x2 window of ``(B, H, W, C)`` and scale it to unit spread, two-pass.

    Returns ``(scaled, rs, p)``: ``scaled`` is ``(x - mu) * p`` in ``x``'s dtype, laid out
    as ``x``; ``p`` and ``rs`` (``(B, H/2, W/2, 1)``, float32, or float64 for float64
    input) are :func:`_unit_scale`'s, ``p * rs = rstd``. The mean comes from per-pixel
    channel sums (``x.sum(-1)`` is fast where ``var_mean`` is not); the variance from the
    centred values in the accumulation dtype, never from ``E[x^2] - E[x]^2``; the scale
    is applied before the rounding to ``x``'s dtype, so a half window whose centred
    values exceed its range (``x - mu`` up to twice ``max|x|``) is still finite.
    """
    b, h, w, c = x.shape
    n = 4 * c
    acc = torch.promote_types(x.dtype, torch.float32)
    mean = x.sum(-1, dtype=acc).view(b, h // 2, 2, w // 2, 2).sum((2, 4)) / n
    m6 = mean[:, :, None, :, None, None]
    # contiguous whatever x's strides; mixed-dtype broadcasting is a slow path on CPU,
    # so a low-precision x is cast first and centred in place
    grad = torch.is_grad_enabled() and x.requires_grad
    if x.dtype == acc and grad:
        centred = (_windows(x) - m6).contiguous()  # out= is not differentiable
    elif x.dtype == acc:
        centred = torch.sub(_windows(x), m6, out=x.new_empty(_windows(x).shape))
    else:
        centred = _windows(x).to(acc, memory_format=torch.contiguous_format).sub_(m6)

    def mean_square(t: Tensor, smooth: bool = False) -> Tensor:
        rows = t.view(b, h // 2, 2, w // 2, 2 * c)  # a window's (dw, c) part is contiguous
        # the norm is the fast path; its gradient of gradient is NaN on an all-zero row (a
        # window whose values are equal), so under autograd the squares are summed
        ss = rows.square().sum(-1) if smooth else torch.linalg.vector_norm(rows, dim=-1).square()
        return (ss.sum(2) / n).unsqueeze(-1)

    with torch.no_grad():
        p, rs = _unit_scale(torch.rsqrt(mean_square(centred) + eps))
    p6 = p[:, :, None, :, None]
    if grad:
        # differentiate the scaled window's statistics: rstd's own gradient, var^-3/2,
        # underflows float32 for a spread over 2^42 where the scaled one is O(1)
        scaled = centred * p6
        rs = torch.rsqrt(mean_square(scaled, smooth=True) + eps * p * p)
        return scaled.to(x.dtype).view(b, h, w, c), rs, p
    # in place, then rounded to a half x's dtype (a mixed-dtype out= is a slow path on CPU)
    return centred.mul_(p6).to(x.dtype).view(b, h, w, c), rs, p


def _matvec(m: Tensor, v: Tensor) -> Tensor:
    """``m @ v`` over the last dim as a multiply and a sum, not a GEMM.

    The fold's small matrix-vector products (``W @ b``, the backward's row sums) would
    otherwise run on the matmul backend while its convolution runs on the conv backend,
    and the two follow different precision flags (TF32 by default for cuDNN convs, IEEE
    for cuBLAS matmuls). As reductions they stay IEEE everywhere, so the impl's only
    GEMMs are convolutions and :func:`pm_core.gemm_precision` can name their precision.
    """
    out: Tensor = torch.linalg.vecdot(m, v)
    return out


def folded_weight(weight: Tensor, nw: Tensor | None) -> Tensor:
    """``W * g``: the LayerNorm's affine weight folded into the projection's columns."""
    return weight if nw is None else weight * nw


def fold_epilogue(z: Tensor, rs: Tensor, weight: Tensor, nb: Tensor | None) -> Tensor:
    """The fold's output from ``z``, the conv of the scaled windows: ``z * rs + W @ b``,
    computed in ``rs``'s dtype (float32; float64 for float64) and rounded once to ``z``'s.

    Shared by the 2x2 fold and the general merge's (:mod:`pm_core.window_impls`), whose
    convs differ; ``W @ b`` is a reduction, not a GEMM (:func:`_matvec`).
    """
    acc = rs.dtype
    if nb is None:
        return (z * rs).to(z.dtype)
    return torch.addcmul(_matvec(weight.to(acc), nb.to(acc)), z, rs).to(z.dtype)


class _FoldedPreNorm(torch.autograd.Function):
    """``conv((x - mu) p, W*g) * rs + W @ b`` with LayerNorm's backward written in the conv's terms.

    ``p * rs = rstd`` (:func:`_unit_scale`). With ``xhat = c * r`` (``c`` the scaled
    window ``(x - mu) p``, ``r = rs``), LN's input gradient is ``p * r * (gxhat -
    mean(gxhat) - xhat * mean(gxhat * xhat))``. Both means are per-window dot products
    of the *output* gradient: ``mean(gxhat) = gy . rowsum(Wg) / n`` and ``mean(gxhat *
    xhat) = r * (gy . z) / n`` with ``z = conv(c, Wg)``. So the backward is one
    ``convolution_backward`` (input and weight) of ``gy * r`` plus one input-sized
    correction, instead of autograd through every elementwise op. Every operand stays
    ``xhat``- or ``gy``-sized; the true gradient's scale ``p`` is applied last, once, so
    a half gradient underflows only where the true one is below the dtype's normal range.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, eps: float
    ) -> Tensor:
        centred, rs, p = _window_stats(x, eps)
        folded = folded_weight(weight, nw)
        z = _conv(centred, folded)
        ctx.save_for_backward(centred, rs, p, z, weight, folded, nw, nb, x)
        ctx.eps = eps
        return fold_epilogue(z, rs, weight, nb)

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():
            # create_graph=True: the analytic backward below is not itself differentiable,
            # so recompute the forward in differentiable ops and differentiate that
            return _FoldedPreNorm._backward_with_graph(ctx, gy)
        return _FoldedPreNorm._backward(ctx, gy)  # grad mode is off: no graph is recorded

    @staticmethod
    def _backward_with_graph(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        *_, weight, _folded, nw, nb, x = ctx.saved_tensors
        inputs = (x, weight, nw, nb)
        wanted = [t for t, need in zip(inputs, ctx.needs_input_grad[:4], strict=True) if need]
        y = _folded_composite(x, weight, nw, nb, ctx.eps)
        grads = iter(torch.autograd.grad(y, wanted, gy, create_graph=True))
        return (*(next(grads) if need else None for need in ctx.needs_input_grad[:4]), None)

    @staticmethod
    def _backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        centred, rs, p, z, weight, folded, nw, nb, _ = ctx.saved_tensors
        need_x, need_w, need_nw, need_nb = ctx.needs_input_grad[:4]
        b, h, w, c = centred.shape
        o, n = weight.shape
        acc = rs.dtype
        lowp = centred.dtype
        gx = gw = gnw = gnb = None
        gyr = gy * rs.to(lowp)
        need_wg = need_w or need_nw
        gxr, gwc, _ = torch.ops.aten.convolution_backward(
            gyr.permute(0, 3, 1, 2), centred.permute(0, 3, 1, 2), conv_view(folded, c),
            None, [2, 2], [0, 0], [1, 1], False, [0, 0], 1, [need_x, need_wg, False],
        )  # fmt: skip
        if need_x:
            gya = gy.to(acc)
            mean_g = _matvec(gya, folded.to(acc).sum(1)) / n  # mean(gxhat) / r
            mean_gx = torch.linalg.vecdot(gya, z.to(acc)) / n  # mean(gxhat * xhat) / r^2
            r = rs.squeeze(-1)
            # the correction in gxr's own layout (splitting H and W is always a view)
            alpha = (r * mean_g)[:, None, :, None, :, None].to(lowp)
            beta = (r.pow(3) * mean_gx)[:, None, :, None, :, None].to(lowp)
            g6 = gxr.view(b, c, h // 2, 2, w // 2, 2)
            c6 = centred.permute(0, 3, 1, 2).view(b, c, h // 2, 2, w // 2, 2)
            # p, a power of two, stays in rs's dtype: it reaches eps^-1/2 (2^19 at eps=1e-12,
            # past float16's 65504) on a window of spread below sqrt(eps). The in-place mul_
            # forms the exact product in that dtype and rounds it once to lowp.
            g6.sub_(alpha).addcmul_(c6, beta, value=-1).mul_(p.view(b, 1, h // 2, 1, w // 2, 1))
            gx = gxr.permute(0, 2, 3, 1)
        if need_wg or need_nb:
            gy_sum = gy.sum((0, 1, 2), dtype=acc)
        if need_wg:
            gwg = gwc.permute(0, 3, 2, 1).reshape(o, n)  # conv layout -> swin layout
            if need_w:
                gw = gwg if nw is None else gwg * nw
                if nb is not None:
                    gw = gw + torch.outer(gy_sum, nb.to(acc)).to(gw.dtype)
            if need_nw:
                gnw = (gwg * weight).sum(0)
        if need_nb:
            gnb = _matvec(weight.to(acc).T, gy_sum).to(nb.dtype)
        return gx, gw, gnw, gnb, None


def folded_pre_norm(
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

    So the window is centred *before* the conv, two-pass (:func:`_window_stats`): the
    centred window is materialised once in ``x``'s dtype, the variance reads it once
    (a row norm) and the conv reads it once. The centred window is scaled by a power of
    two ``p`` near ``rstd`` before it is rounded (:func:`_unit_scale`), and the conv's
    output by ``rstd / p``: ``conv(x - mu, W*g)`` itself carries the input's scale, and in
    float16 overflows where the LayerNorm's output is small and finite. Traffic: 4 input-sized passes plus the
    output's scale, against the slice form's gather-copy plus a normalised copy; the
    GEMM runs as a oneDNN convolution. The backward is :class:`_FoldedPreNorm`'s.
    """
    if not _autocasting(x.device):
        y: Tensor = _FoldedPreNorm.apply(x, weight, nw, nb, eps)
        return y
    # under autocast the conv runs in the autocast dtype: let autograd follow the casts
    return _folded_composite(x, weight, nw, nb, eps)


def _folded_composite(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, eps: float
) -> Tensor:
    """The fold in plain differentiable ops: autocast, and gradients of gradients, go through it."""
    centred, rs, _ = _window_stats(x, eps)
    z = _conv(centred, folded_weight(weight, nw))
    return fold_epilogue(z, rs, weight, nb)  # in z's dtype: x's, or the autocast dtype


def conv_2x2(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    """Swin's 2x2 merge as one k=2 s=2 conv of ``(B, H, W, C)`` (H, W even) with the swin
    ``(O, 4C)`` weight: the pre-norm folded in (``folded_pre_norm``), the post-norm
    a LayerNorm over the conv's O outputs."""
    if norm == "pre":
        return folded_pre_norm(x, weight, nw, nb, eps)
    y = _conv(x, weight)
    return F.layer_norm(y, y.shape[-1:], nw, nb, eps) if norm == "post" else y


__all__ = ["conv_2x2", "fold_epilogue", "folded_pre_norm", "folded_weight"]
