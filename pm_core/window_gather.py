"""The fast gather of a general merge and its inverse: space-to-depth and depth-to-space.

:func:`~pm_core.space_to_depth` reads every window through ``Tensor.unfold`` views of the
(zero-padded) input and writes the merged vectors with one copy: a ``permute`` +
``reshape`` for the layouts that are an axis order (``swin``, ``row-major``,
``unfold``, ...), or one strided slice per offset concatenated for an explicit offset
list. :func:`~pm_core.depth_to_space` is its exact inverse for windows that tile.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_window, check_window_input, not_a_tensor
from .window import Pads, Window
from .window_layouts import WindowLayout, window_layout


def pad_spatial(x: Tensor, pads: Pads) -> Tensor:
    """Zero-pad the spatial dims of ``(B, *S, C)`` by ``(before, after)`` each (a copy), or
    return ``x`` itself when there is nothing to pad. Negative amounts crop."""
    if all(p == (0, 0) for p in pads):
        return x
    flat = [0, 0]  # F.pad lists the last dim first: C, then the spatial dims backwards
    for before, after in reversed(pads):
        flat += [before, after]
    return F.pad(x, flat)


def pad_to_even(x: Tensor) -> Tensor:
    """``(B, H, W, C)`` with an odd H or W zero-padded by one bottom row / right column
    (Swin's odd-size policy, torchvision / timm / HF); ``x`` itself when both are even."""
    h, w = x.shape[1:3]
    return pad_spatial(x, ((0, h % 2), (0, w % 2)))


def window_view(x: Tensor, window: Window, pads: Pads) -> Tensor:
    """``(B, *S, C)`` -> ``(B, *S', C, *kernel)``: every window of the padded ``x`` as a view
    (of ``x`` itself when nothing is padded)."""
    g = pad_spatial(x, pads)
    for a, (span, s) in enumerate(zip(window.span, window.stride, strict=True)):
        g = g.unfold(1 + a, span, s)  # appends the window dim; S'_a = (L - span) // s + 1
    if any(d > 1 for d in window.dilation):
        every: tuple[Any, ...] = (..., *(slice(None, None, d) for d in window.dilation))
        g = g[every]
    return g


def _gather(g: Tensor, window: Window, layout: WindowLayout) -> Tensor:
    """``(B, *S', C, *kernel)`` windows -> ``(B, *S', n)`` merged vectors in ``layout``."""
    d = window.dims
    lead = list(range(1 + d))
    axes = layout.axes(d)
    if axes is not None:
        kdims = [g.dim() - d + a for a in axes]
        perm = lead + ([1 + d, *kdims] if layout.channel_major else [*kdims, 1 + d])
        return g.permute(perm).flatten(1 + d)
    # an explicit offset order: one strided slice per offset
    at: list[tuple[Any, ...]] = [(..., *off) for off in layout.order(window)]
    parts = [g[i] for i in at]  # each (B, *S', C)
    return torch.stack(parts, -1).flatten(-2) if layout.channel_major else torch.cat(parts, -1)


def space_to_depth(x: Tensor, window: Window, layout: str | WindowLayout = "swin") -> Tensor:
    """Gather every window: ``(B, *S, C)`` -> ``(B, *S', prod(kernel)*C)`` in ``layout``.

    ``S`` is ``(H, W)`` for a 2-D window, ``(D, H, W)`` for a 3-D one, and
    ``S' = window.output_size(S)``; padding is zero. Pure data movement, so it is exact
    in every dtype: one copy (two with padding, which ``F.pad`` materialises), or, like
    ``reshape``, a view of ``x`` where its windows already lie in order (a 1x1 kernel).

    >>> import torch
    >>> x = torch.randn(2, 4, 6, 6, 3)
    >>> space_to_depth(x, Window((2, 2, 2)), "monai-v2-3d").shape
    torch.Size([2, 2, 3, 3, 24])
    """
    win = check_window(window)
    lay = window_layout(layout, win)
    x = check_window_input(x, win)
    size = tuple(x.shape[1:-1])
    out_size = win.output_size(size)
    n = win.size * x.shape[-1]
    if x.numel() == 0:  # no windows (C >= 1, so a zero B or spatial size): a view, in the graph
        return x.flatten()[:0].view(x.shape[0], *out_size, n)
    return _gather(window_view(x, win, win.pads(size)), win, lay)


def depth_to_space(
    v: Tensor,
    window: Window,
    layout: str | WindowLayout = "swin",
    *,
    size: tuple[int, ...] | None = None,
) -> Tensor:
    """Scatter merged vectors back: ``(B, *S', prod(kernel)*C)`` -> ``(B, *size, C)``.

    The exact inverse of :func:`~pm_core.space_to_depth` for windows that tile (``window.tiles``:
    stride == kernel, dilation 1): ``depth_to_space(space_to_depth(x, w, lay), w, lay,
    size=S) == x`` bit for bit wherever the windows cover ``x`` (everywhere, for
    adaptive padding or sizes the kernel divides); uncovered positions are zero.
    ``size`` is the spatial size the gather saw; by default the largest one whose
    windows are exactly ``S'``: ``S' * kernel`` less the explicit padding.
    Overlapping or dilated windows have no inverse, and raise.

    >>> import torch
    >>> x = torch.randn(1, 5, 3, 2)
    >>> w = Window((2, 2), padding="corner")
    >>> torch.equal(depth_to_space(space_to_depth(x, w, "unfold"), w, "unfold", size=(5, 3)), x)
    True
    """
    win = check_window(window)
    lay = window_layout(layout, win)
    if not win.tiles:
        raise ValueError(
            f"depth_to_space inverts windows that tile (stride == kernel, dilation 1); got {win}"
        )
    if not isinstance(v, Tensor):
        raise not_a_tensor(v, "v")
    d = win.dims
    if v.dim() != d + 2 or v.shape[-1] == 0 or v.shape[-1] % win.size:
        raise ValueError(
            f"v must be (B, *S', prod(kernel)*C) with {d} spatial dims and "
            f"prod(kernel) = {win.size}, got shape {tuple(v.shape)}"
        )
    b, *out_list, n = v.shape
    out_size = tuple(out_list)
    c = n // win.size
    grid = tuple(o * k for o, k in zip(out_size, win.kernel, strict=True))
    if size is None:
        fixed = win.pads(grid)
        size = tuple(g - pb - pa for g, (pb, pa) in zip(grid, fixed, strict=True))
    sz = tuple(int(s) for s in size)
    if len(sz) != d or win.output_size(sz) != out_size:
        raise ValueError(
            f"size={size!r}: {win} gathers spatial size {size} into "
            f"{win.output_size(sz) if len(sz) == d else '?'} windows, but v has {out_size}"
        )
    axes = lay.axes(d)
    if axes is None:  # an explicit order: put the offsets in row-major order first
        rank = {off: i for i, off in enumerate(lay.order(win))}
        rows = torch.tensor([rank[o] for o in win.offsets()], dtype=torch.long, device=v.device)
        lead = v.shape[:-1]
        blocks = (
            v.view(*lead, c, win.size).transpose(-1, -2)
            if lay.channel_major
            else v.view(*lead, win.size, c)
        )
        v = blocks.index_select(-2, rows).flatten(-2)
        lay = window_layout("row-major")
        axes = tuple(range(d))
    ks = [win.kernel[a] for a in axes]
    t = v.view(*v.shape[:-1], *((c, *ks) if lay.channel_major else (*ks, c)))
    kpos = {a: 1 + d + j + (1 if lay.channel_major else 0) for j, a in enumerate(axes)}
    cpos = 1 + d if lay.channel_major else 1 + 2 * d
    perm = [0]
    for a in range(d):
        perm += [1 + a, kpos[a]]
    full = t.permute(*perm, cpos).reshape(b, *grid, c)
    pads = win.pads(sz)
    return pad_spatial(
        full,
        tuple((-pb, s - (g - pb)) for s, g, (pb, _) in zip(sz, grid, pads, strict=True)),
    )


__all__ = ["depth_to_space", "pad_spatial", "pad_to_even", "space_to_depth", "window_view"]
