"""Weight layouts of the merged 4C vector, and exact converters between them.

Three layouts describe the same reduction weight:

* **swin** (canonical): ``[O, 4C]`` with column ``k = (2*dw + dh)*C + c``. Microsoft
  Swin, timm, torchvision and HF transformers gather the window pixels in the order
  (0,0), (1,0), (0,1), (1,1) as (row, col) offsets ``(dh, dw)``.
* **unfold**: ``[O, 4C]`` with column ``k = 4*c + 2*dh + dw``, what ``nn.Unfold`` and
  ``F.pixel_unshuffle`` produce on NCHW input (mmcv, mmseg, mmdet).
* **conv**: ``[O, C, 2, 2]`` indexed ``[o, c, dh, dw]``, an ``nn.Conv2d(C, O, 2, 2)`` weight.

Every converter is a pure permutation: no arithmetic, so round trips are bit-exact.
"""

from __future__ import annotations

from typing import Literal, get_args

from torch import Tensor

from ._checks import not_a_tensor

#: The weight layouts a merge's reduction weight (and a pre-norm's 4C vector) come in.
Layout = Literal["swin", "unfold", "conv"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)


def _reverse_window_dims(t: Tensor, inner: tuple[int, int, int]) -> Tensor:
    """``t``'s last dim read as the three window dims ``inner``, reversed and flattened.

    swin is ``(dw, dh, c)``-major and unfold ``(c, dh, dw)``: each is the other with its
    three window dims reversed. A view and one copy, no index tensor (which on a GPU
    would be a host-to-device copy on every call).
    """
    lead = range(t.dim() - 1)
    return t.view(*t.shape[:-1], *inner).permute(*lead, -1, -2, -3).flatten(-3)


def _check_4c(t: Tensor, name: str) -> int:
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
    return n // 4


def linear_to_conv(w: Tensor) -> Tensor:
    """Swin-layout reduction weight ``[O, 4C]`` -> conv weight ``[O, C, 2, 2]``.

    ``linear_to_conv(w)[o, c, dh, dw] == w[o, (2*dw + dh)*C + c]``. Returns a
    contiguous tensor (not a view of ``w``).
    """
    c = _check_4c(w, "w")
    if w.dim() != 2:
        raise ValueError(f"w must be a reduction weight [O, 4C], got shape {tuple(w.shape)}")
    return conv_view(w, c).contiguous()


def conv_view(w: Tensor, c: int) -> Tensor:
    """The ``[O, C, 2, 2]`` view of a swin-layout ``[O, 4C]`` weight (no copy)."""
    return w.view(w.shape[0], 2, 2, c).permute(0, 3, 2, 1)


def conv_to_linear(wc: Tensor) -> Tensor:
    """Conv weight ``[O, C, 2, 2]`` -> swin-layout reduction weight ``[O, 4C]``.

    The exact inverse of :func:`linear_to_conv`.
    """
    if not isinstance(wc, Tensor):
        raise not_a_tensor(wc, "wc")
    if wc.dim() != 4 or tuple(wc.shape[2:]) != (2, 2):
        raise ValueError(f"wc must be a conv weight [O, C, 2, 2], got shape {tuple(wc.shape)}")
    return wc.permute(0, 3, 2, 1).reshape(wc.shape[0], 4 * wc.shape[1])


def swin_to_unfold(t: Tensor) -> Tensor:
    """Reorder a reduction weight ``[O, 4C]`` or a norm vector ``[4C]`` from swin to unfold.

    Matches the mmseg converter's
    ``w.reshape(O, 4, C)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(O, 4C)``.
    """
    c = _check_4c(t, "t")
    return _reverse_window_dims(t, (2, 2, c))


def unfold_to_swin(t: Tensor) -> Tensor:
    """Reorder a reduction weight ``[O, 4C]`` or a norm vector ``[4C]`` from unfold to swin.

    The exact inverse of :func:`swin_to_unfold`.
    """
    c = _check_4c(t, "t")
    return _reverse_window_dims(t, (c, 2, 2))


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
    "conv_view",
    "linear_to_conv",
    "swin_index",
    "swin_to_unfold",
    "unfold_index",
    "unfold_to_swin",
]
