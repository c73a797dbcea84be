"""The float64 oracle: the merge written straight from its definition, for every window.

It shares no code path with the impls (:mod:`pm_core.impls`, :mod:`pm_core.fold`,
``pm_core.window_gather``, ``pm_core.window_impls``): no ``Tensor.unfold``, no strided
slices, no padding op, no conv. Column ``j`` of the merged vector of output position
``o`` reads, per spatial dim ``a``::

    input index  i_a = o_a * stride_a - pad_before_a + off_a * dilation_a

where ``off`` is the ``p``-th offset of the layout's order and ``c`` the channel, with
``(p, c) = (j // C, j % C)`` (offset-major) or ``(j % K, j // K)`` (channel-major,
``K = prod(kernel)``); entries whose ``i_a`` falls outside the input read zero. The
gather is one advanced-indexing read; LayerNorm is its two-pass definition; the
projection a float64 matmul.

Swin's 2x2 merge is the preset :data:`SWIN_WINDOW` in the ``"swin"`` layout (column
``(2*dw + dh)*C + c``): :func:`reference_patch_merge` adds only Swin's calling
conventions (``(B, L, C)`` with ``hw``, the odd-size policy) to
:func:`reference_window_merge`.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor

from ._checks import Norm, Odd, check_call, check_window, check_window_call, check_window_input
from .window import SWIN_WINDOW, Pads, Window
from .window_layouts import WindowLayout, window_layout


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


def _source_index(
    window: Window,
    layout: WindowLayout,
    channels: int,
    size: tuple[int, ...],
    out_size: tuple[int, ...],
    pads: Pads,
    device: torch.device,
) -> tuple[list[Tensor], Tensor, Tensor]:
    """Input index per spatial dim, each broadcastable to ``(*S', n)``, the channel ``(n,)``
    of every column, and whether the entry lies inside the input ``(*S', n)``."""
    k = window.size
    j = torch.arange(k * channels, device=device)
    pos, ch = (j % k, j // k) if layout.channel_major else (j // channels, j % channels)
    off = torch.tensor(layout.order(window), dtype=torch.long, device=device)[pos]  # (n, d)
    d = window.dims
    idx, inside = [], torch.ones((), dtype=torch.bool, device=device)
    for a in range(d):
        shape = [1] * d + [1]
        shape[a] = out_size[a]
        o = torch.arange(out_size[a], device=device).view(shape)
        i = o * window.stride[a] - pads[a][0] + off[:, a] * window.dilation[a]
        inside = inside & (i >= 0) & (i < size[a])
        idx.append(i)
    return idx, ch, inside.expand(*out_size, k * channels)


def reference_space_to_depth(
    x: Tensor, window: Window, layout: str | WindowLayout = "swin"
) -> Tensor:
    """The oracle gather: ``(B, *S, C)`` -> ``(B, *S', prod(kernel)*C)`` in ``layout``.

    ``S`` is ``(H, W)`` or ``(D, H, W)``; ``S' = window.output_size(S)``. Pure data
    movement in ``x``'s dtype (bit-exact in any dtype), by the index formula above.
    """
    win = check_window(window)
    lay = window_layout(layout, win)
    x = check_window_input(x, win)
    b, *size, c = x.shape
    sz = tuple(size)
    out_size = win.output_size(sz)
    n = win.size * c
    if x.numel() == 0 or 0 in out_size:
        return x.new_zeros(b, *out_size, n)
    idx, ch, inside = _source_index(win, lay, c, sz, out_size, win.pads(sz), x.device)
    clamped = [i.clamp(0, s - 1) for i, s in zip(idx, sz, strict=True)]
    index: tuple[Any, ...] = (slice(None), *clamped, ch)
    v = x[index]
    return torch.where(inside, v, torch.zeros((), dtype=x.dtype, device=x.device))


def reference_depth_to_space(
    v: Tensor,
    window: Window,
    layout: str | WindowLayout,
    size: tuple[int, ...],
) -> Tensor:
    """The adjoint of :func:`reference_space_to_depth`: ``(B, *S', n)`` -> ``(B, *size, C)``.

    Every entry is added into the input position it was gathered from (entries that
    gathered zero padding are dropped), so positions in several windows receive the
    sum. For windows that tile (``window.tiles``) every position is in at most one
    window and this is the inverse of the gather on the positions it covers.
    """
    win = check_window(window)
    lay = window_layout(layout, win)
    if not isinstance(cast(object, v), Tensor) or v.dim() != win.dims + 2:
        raise ValueError(f"v must be (B, *S', n) with {win.dims} spatial dims")
    sz = tuple(int(s) for s in size)
    out_size = win.output_size(sz)
    b, n = v.shape[0], v.shape[-1]
    if tuple(v.shape[1:-1]) != out_size or n % win.size:
        raise ValueError(
            f"v has shape {tuple(v.shape)}, but {win} on spatial size {sz} gathers "
            f"(B, {', '.join(map(str, out_size))}, prod(kernel)*C)"
        )
    c = n // win.size
    out = v.new_zeros(b, *sz, c)
    if v.numel() == 0:
        return out
    idx, ch, inside = _source_index(win, lay, c, sz, out_size, win.pads(sz), v.device)
    clamped = [i.clamp(0, s - 1) for i, s in zip(idx, sz, strict=True)]
    bi = torch.arange(b, device=v.device).view(b, *([1] * (win.dims + 1)))
    vals = torch.where(inside, v, torch.zeros((), dtype=v.dtype, device=v.device))
    full = (b, *out_size, n)
    index = tuple(t.expand(full) for t in (bi, *clamped, ch))
    return out.index_put_(index, vals, accumulate=True)


def reference_window_merge(
    x: Tensor,
    reduction_weight: Tensor,
    norm_weight: Tensor | None = None,
    norm_bias: Tensor | None = None,
    *,
    window: Window,
    layout: str | WindowLayout = "swin",
    norm: Norm = "pre",
    eps: float = 1e-5,
) -> Tensor:
    """The oracle for :func:`pm_core.window_merge`: same arguments (no ``impl``), float64 result.

    ``x``: ``(B, *S, C)``; returns ``(B, *S', O)`` in float64. Inputs are cast to float64
    first, so a low-precision call is judged on the values it received; it is
    differentiable, and the gradients of the float64 copies are the reference gradients.
    """
    call = check_window_call(x, reduction_weight, norm_weight, norm_bias, window, layout, norm, eps)
    f64 = torch.float64
    nw = None if norm_weight is None else norm_weight.to(f64)
    nb = None if norm_bias is None else norm_bias.to(f64)
    v = reference_space_to_depth(call.x.to(f64), call.window, call.layout)
    if norm == "pre":
        v = _layer_norm_by_definition(v, nw, nb, eps)
    y = v @ reduction_weight.to(f64).T
    if norm == "post":
        y = _layer_norm_by_definition(y, nw, nb, eps)
    return y


def gather_windows(x: Tensor) -> Tensor:
    """``(B, H, W, C)`` -> ``(B, ceil(H/2), ceil(W/2), 4C)``: Swin's gather, by the index formula."""
    return reference_space_to_depth(x, SWIN_WINDOW, "swin")


def scatter_windows(v: Tensor, hw: tuple[int, int]) -> Tensor:
    """``(B, H', W', 4C)`` -> ``(B, H, W, C)``: the adjoint of :func:`gather_windows` (every
    pixel sits in exactly one window; entries that gathered zero padding are dropped)."""
    return reference_depth_to_space(v, SWIN_WINDOW, "swin", hw)


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

    :func:`reference_window_merge` over :data:`~pm_core.oracle.SWIN_WINDOW` in the ``"swin"`` layout,
    after Swin's own validation (``hw`` for a ``(B, L, C)`` input, ``odd``). Inputs are
    cast to float64 first, so a low-precision call is judged on the values it actually
    received. It is differentiable: gradients of the float64 copies are the reference
    gradients.
    """
    call = check_call(x, reduction_weight, norm_weight, norm_bias, hw, norm, eps, odd)
    y = reference_window_merge(
        call.x, reduction_weight, norm_weight, norm_bias,
        window=SWIN_WINDOW, layout="swin", norm=norm, eps=eps,
    )  # fmt: skip
    return y.flatten(1, 2) if call.flat else y


__all__ = [
    "SWIN_WINDOW",
    "gather_windows",
    "reference_depth_to_space",
    "reference_patch_merge",
    "reference_space_to_depth",
    "reference_window_merge",
    "scatter_windows",
]
