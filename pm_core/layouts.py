"""Weight layouts and the exact converters between them, for every window.

A merge's reduction weight ``[O, n]`` (and a pre-norm's ``[n]`` affine vector), with
``n = prod(kernel) * C``, only means something together with the channel order of the
merged vector: a :class:`~pm_core.window_layouts.WindowLayout`. The general converters
(:func:`convert_window_layout`, :func:`window_to_conv`, :func:`conv_to_window`) move a weight
between any two layouts of a window, or to and from the ``[O, C, *kernel]`` weight of the
equivalent ``nn.Conv2d`` / ``nn.Conv3d``.

Swin's 2x2 merge has three names for its layouts, and the converters below them are
presets of the general ones over ``Window((2, 2))``:

* **swin** (canonical): ``[O, 4C]`` with column ``k = (2*dw + dh)*C + c``. Microsoft
  Swin, timm, torchvision and HF transformers gather the window pixels in the order
  (0,0), (1,0), (0,1), (1,1) as (row, col) offsets ``(dh, dw)``.
* **unfold**: ``[O, 4C]`` with column ``k = 4*c + 2*dh + dw``, what ``nn.Unfold`` and
  ``F.pixel_unshuffle`` produce on NCHW input (mmcv, mmseg, mmdet).
* **conv**: ``[O, C, 2, 2]`` indexed ``[o, c, dh, dw]``, an ``nn.Conv2d(C, O, 2, 2)`` weight.

Every converter is a pure permutation: no arithmetic, so round trips are bit-exact. Between
two layouts that are each an axis order of the window (all but an explicit offset list, as
``monai-legacy``) the permutation is a view and one copy, with no index tensor (which on a GPU
would be a host-to-device copy on every call); otherwise an ``index_select``.
"""

from __future__ import annotations

import functools
from typing import Literal, get_args

import torch
from torch import Tensor

from ._checks import not_a_tensor
from .window import SWIN_WINDOW, Window
from .window_layouts import WINDOW_LAYOUTS, WindowLayout, window_layout

#: The weight layouts a merge's reduction weight (and a pre-norm's 4C vector) come in.
Layout = Literal["swin", "unfold", "conv"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)

_SWIN = WINDOW_LAYOUTS["swin"]
_UNFOLD = WINDOW_LAYOUTS["unfold"]


def _shape(kernel: tuple[int, ...]) -> str:
    return "x".join(str(k) for k in kernel)


def _channels(n: int, window: Window, name: str) -> int:
    k = window.size
    if n == 0 or n % k:
        raise ValueError(
            f"{name} has {n} entries on its layout dim, not prod(kernel) * C = {k} * C with "
            f"C >= 1 for the {_shape(window.kernel)} window"
        )
    return n // k


@functools.lru_cache(maxsize=256)
def _permutation(
    window: Window, channels: int, src: WindowLayout, dst: WindowLayout
) -> tuple[int, ...]:
    """``perm`` with ``t_dst = t_src[..., perm]`` (cached: layouts and windows are frozen)."""
    perm = [0] * (window.size * channels)
    for s_row, d_row in zip(
        src.columns(window, channels), dst.columns(window, channels), strict=True
    ):
        for s, d in zip(s_row, d_row, strict=True):
            perm[d] = s
    return tuple(perm)


def _axis_dims(layout: WindowLayout, window: Window) -> list[int | str] | None:
    """The merged vector's dims, slowest first, for a layout that is an axis order: kernel
    axes by index and ``"c"`` for the channel; ``None`` for an explicit offset list."""
    axes = layout.axes(window.dims)
    if axes is None:
        return None
    return ["c", *axes] if layout.channel_major else [*axes, "c"]


def _check_tensor(t: object, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise not_a_tensor(t, name)
    return t


def convert_window_layout(
    t: Tensor,
    window: Window,
    src: str | WindowLayout,
    dst: str | WindowLayout,
    *,
    dim: int = -1,
) -> Tensor:
    """Reorder ``t``'s dim ``dim`` (``n = prod(kernel) * C`` long) from layout ``src`` to ``dst``.

    ``t``: a merge's reduction weight ``[O, n]`` or a pre-norm vector ``[n]`` (``dim=-1``),
    or an expand weight ``[n, C_in]`` (``dim=0``); any shape works. Returns a new tensor
    of ``t``'s shape; the exact inverse is ``convert_window_layout(out, window, dst, src)``.
    """
    t = _check_tensor(t, "t")
    s, d = window_layout(src, window), window_layout(dst, window)
    if t.dim() == 0:
        raise ValueError("t must have at least one dim, got a 0-dim tensor")
    c = _channels(t.shape[dim], window, "t")
    src_dims, dst_dims = _axis_dims(s, window), _axis_dims(d, window)
    if src_dims is None or dst_dims is None:
        perm = torch.tensor(_permutation(window, c, s, d), dtype=torch.long, device=t.device)
        return t.index_select(dim, perm)
    sizes = [c if isinstance(a, str) else window.kernel[a] for a in src_dims]
    moved = t.movedim(dim, -1)
    split = moved.view(*moved.shape[:-1], *sizes)  # splitting one dim is always a view
    lead = t.dim() - 1
    order = [*range(lead), *(lead + src_dims.index(a) for a in dst_dims)]
    # clone: one copy, a new tensor even where the orders agree
    out = split.permute(order).clone(memory_format=torch.contiguous_format)
    return out.flatten(lead).movedim(-1, dim).contiguous()


def window_to_conv(w: Tensor, window: Window, layout: str | WindowLayout = "swin") -> Tensor:
    """A reduction weight ``[O, prod(kernel)*C]`` in ``layout`` -> conv weight ``[O, C, *kernel]``.

    ``window_to_conv(w, ...)[o, c, *off] == w[o, column of (off, c) in layout]``, the
    weight of ``nn.Conv2d`` / ``nn.Conv3d(C, O, kernel, stride, ...)`` computing the same
    merge without a norm. Returns a contiguous tensor.
    """
    w = _check_tensor(w, "w")
    if w.dim() != 2:
        raise ValueError(
            f"w must be a reduction weight [O, prod(kernel)*C], got shape {tuple(w.shape)}"
        )
    c = _channels(w.shape[1], window, "w")
    flat = convert_window_layout(w, window, layout, "unfold")
    return flat.view(w.shape[0], c, *window.kernel)


def conv_weight_view(w: Tensor, window: Window, layout: WindowLayout) -> Tensor:
    """:func:`window_to_conv` without the checks: ``[O, prod(kernel)*C]`` -> ``[O, C, *kernel]``,
    a view (no copy, no index tensor) for the layouts that are an axis order. What the
    conv form runs on every call."""
    axes = layout.axes(window.dims)
    if axes is None:
        return window_to_conv(w, window, layout)
    o, c = w.shape[0], w.shape[1] // window.size
    ks = [window.kernel[a] for a in axes]
    t = w.view(o, c, *ks) if layout.channel_major else w.view(o, *ks, c)
    first = 2 if layout.channel_major else 1  # where the window dims start in t
    kpos = {a: first + j for j, a in enumerate(axes)}
    cpos = 1 if layout.channel_major else 1 + window.dims
    return t.permute(0, cpos, *(kpos[a] for a in range(window.dims)))


def conv_to_window(wc: Tensor, window: Window, layout: str | WindowLayout = "swin") -> Tensor:
    """Conv weight ``[O, C, *kernel]`` -> reduction weight ``[O, prod(kernel)*C]`` in ``layout``.

    The exact inverse of :func:`window_to_conv`.
    """
    wc = _check_tensor(wc, "wc")
    if wc.dim() != 2 + window.dims or tuple(wc.shape[2:]) != window.kernel or wc.shape[1] == 0:
        raise ValueError(
            f"wc must be a conv weight [O, C, {', '.join(map(str, window.kernel))}] for the "
            f"{_shape(window.kernel)} window, got shape {tuple(wc.shape)}"
        )
    flat = wc.reshape(wc.shape[0], -1)  # channel major, offsets row-major: "unfold"
    return convert_window_layout(flat, window, "unfold", layout)


def _check_4c(t: Tensor, name: str) -> None:
    if not isinstance(t, Tensor):
        raise not_a_tensor(t, name)
    if t.dim() not in (1, 2):
        raise ValueError(
            f"{name} must be a reduction weight [O, 4C] or a norm vector [4C], "
            f"got shape {tuple(t.shape)}"
        )
    n = t.shape[-1]
    if n == 0 or n % 4:
        raise ValueError(f"{name} last dim must be 4*C with C >= 1, got {n}")


def linear_to_conv(w: Tensor) -> Tensor:
    """Swin-layout reduction weight ``[O, 4C]`` -> conv weight ``[O, C, 2, 2]``.

    ``linear_to_conv(w)[o, c, dh, dw] == w[o, (2*dw + dh)*C + c]``. Returns a
    contiguous tensor (not a view of ``w``).
    """
    _check_4c(w, "w")
    if w.dim() != 2:
        raise ValueError(f"w must be a reduction weight [O, 4C], got shape {tuple(w.shape)}")
    return window_to_conv(w, SWIN_WINDOW)  # the default layout is swin


def conv_view(w: Tensor, c: int) -> Tensor:
    """The ``[O, C, 2, 2]`` view of a swin-layout ``[O, 4C]`` weight (no copy):
    :func:`conv_weight_view` over ``Window((2, 2))`` in closed form, since the fold runs it on
    every call (``tests/test_layouts.py`` checks that the two agree)."""
    return w.view(w.shape[0], 2, 2, c).permute(0, 3, 2, 1)


def conv_to_linear(wc: Tensor) -> Tensor:
    """Conv weight ``[O, C, 2, 2]`` -> swin-layout reduction weight ``[O, 4C]``.

    The exact inverse of :func:`linear_to_conv`.
    """
    return conv_to_window(wc, SWIN_WINDOW)  # the default layout is swin


def swin_to_unfold(t: Tensor) -> Tensor:
    """Reorder a reduction weight ``[O, 4C]`` or a norm vector ``[4C]`` from swin to unfold.

    Matches the mmseg converter's
    ``w.reshape(O, 4, C)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(O, 4C)``.
    """
    _check_4c(t, "t")
    return convert_window_layout(t, SWIN_WINDOW, _SWIN, _UNFOLD)


def unfold_to_swin(t: Tensor) -> Tensor:
    """Reorder a reduction weight ``[O, 4C]`` or a norm vector ``[4C]`` from unfold to swin.

    The exact inverse of :func:`swin_to_unfold`.
    """
    _check_4c(t, "t")
    return convert_window_layout(t, SWIN_WINDOW, _UNFOLD, _SWIN)


def swin_index(dh: int, dw: int, c: int, channels: int) -> int:
    """Column of pixel offset ``(dh, dw)``, channel ``c`` in the swin layout."""
    return (2 * dw + dh) * channels + c


def unfold_index(dh: int, dw: int, c: int) -> int:
    """Column of pixel offset ``(dh, dw)``, channel ``c`` in the unfold layout."""
    return 4 * c + 2 * dh + dw


__all__ = [
    "LAYOUTS",
    "Layout",
    "conv_to_linear",
    "conv_to_window",
    "conv_view",
    "conv_weight_view",
    "convert_window_layout",
    "linear_to_conv",
    "swin_index",
    "swin_to_unfold",
    "unfold_index",
    "unfold_to_swin",
    "window_to_conv",
]
