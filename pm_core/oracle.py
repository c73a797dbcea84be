"""The float64 oracle: patch merging written straight from its definition.

It shares no computation with :mod:`pm_core.impls`: no slicing, reshaping, unfold or
conv. Each output window gathers its 4C vector by the index formula
``k = (2*dw + dh)*C + c`` (pixel ``(2i + dh, 2j + dw)``, zero outside the map), then
applies LayerNorm by its two-pass definition and the projection, all in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import Norm, Odd, check_call


def _layer_norm_by_definition(
    v: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> Tensor:
    mean = v.mean(-1, keepdim=True)
    d = v - mean
    out = d / torch.sqrt((d * d).mean(-1, keepdim=True) + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def _window_index(h: int, w: int, c: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Source row ``(H', 1, 4C)``, column ``(1, W', 4C)`` and channel ``(4C,)`` of every
    window entry ``k = (2*dw + dh)*C + c``; rows and columns may fall outside the map."""
    ho, wo = -(-h // 2), -(-w // 2)
    k = torch.arange(4 * c, device=device)
    pos, ch = k // c, k % c
    dh, dw = pos % 2, pos // 2
    rows = 2 * torch.arange(ho, device=device)[:, None, None] + dh
    cols = 2 * torch.arange(wo, device=device)[None, :, None] + dw
    return rows, cols, ch


def gather_windows(x: Tensor) -> Tensor:
    """``(B, H, W, C)`` -> ``(B, ceil(H/2), ceil(W/2), 4C)`` by the swin index formula."""
    _, h, w, c = x.shape
    rows, cols, ch = _window_index(h, w, c, x.device)
    inside = (rows < h) & (cols < w)
    v = x[:, rows.clamp(max=max(h - 1, 0)), cols.clamp(max=max(w - 1, 0)), ch]
    return torch.where(inside, v, torch.zeros((), dtype=x.dtype, device=x.device))


def scatter_windows(v: Tensor, hw: tuple[int, int]) -> Tensor:
    """``(B, H', W', 4C)`` -> ``(B, H, W, C)``: the adjoint of :func:`gather_windows`.

    Every pixel of the map sits in exactly one window, so nothing is summed; entries
    that gathered zero padding are dropped. Written as an index assignment into the
    padded map (no autograd, no data-dependent shapes), so it runs on every device,
    fake and meta tensors included.
    """
    h, w = hw
    b, ho, wo, n = v.shape
    c = n // 4
    rows, cols, ch = _window_index(h, w, c, v.device)
    out = v.new_zeros(b, 2 * ho, 2 * wo, c)
    out[:, rows, cols, ch] = v
    return out[:, :h, :w]


def reference_patch_merge(
    x: Tensor,
    reduction_weight: Tensor,
    norm_weight: Tensor | None = None,
    norm_bias: Tensor | None = None,
    *,
    hw: tuple[int, int] | None = None,
    norm: Norm = "pre",
    eps: float = 1e-5,
    odd: Odd = "pad",
) -> Tensor:
    """The oracle for :func:`pm_core.patch_merge`: same arguments (no ``impl``), float64 result.

    Inputs are cast to float64 first, so a low-precision call is judged on the values it
    actually received. It is differentiable: gradients of the float64 copies are the
    reference gradients.
    """
    call = check_call(x, reduction_weight, norm_weight, norm_bias, hw, norm, eps, odd)
    f64 = torch.float64
    nw = None if norm_weight is None else norm_weight.to(f64)
    nb = None if norm_bias is None else norm_bias.to(f64)
    v = gather_windows(call.x.to(f64))
    if norm == "pre":
        v = _layer_norm_by_definition(v, nw, nb, eps)
    y = v @ reduction_weight.to(f64).T
    if norm == "post":
        y = _layer_norm_by_definition(y, nw, nb, eps)
    return y.flatten(1, 2) if call.flat else y


__all__ = ["gather_windows", "reference_patch_merge", "scatter_windows"]
