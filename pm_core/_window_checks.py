"""Argument validation shared by the general merge, its oracle and its bounds.

Only checks live here, as in :mod:`pm_core._checks`: nothing computes a merge.
"""

from __future__ import annotations

from typing import NamedTuple, cast

from torch import Tensor

from ._checks import FLOAT_DTYPES, Norm, check_options, check_projection, not_a_tensor
from .window import SWIN_WINDOW, Pads, Window
from .window_layouts import WindowLayout, window_layout


class WindowCall(NamedTuple):
    """A validated general merge call."""

    x: Tensor  # (B, *S, C)
    window: Window
    layout: WindowLayout
    pads: Pads  # (before, after) per spatial dim, adaptive padding resolved
    out_size: tuple[int, ...]  # S'
    out_features: int  # O


def check_window(window: object) -> Window:
    if not isinstance(window, Window):
        raise TypeError(
            f"window must be a pm_core.Window, e.g. Window((2, 2)), got {type(window).__name__}"
        )
    return window


def check_layout(layout: object, window: Window) -> WindowLayout:
    """``layout`` (a name or a :class:`WindowLayout`) resolved for ``window``."""
    if not isinstance(layout, (str, WindowLayout)):
        raise TypeError(
            "layout must be a layout name or a pm_core.window_layouts.WindowLayout, got "
            f"{type(layout).__name__}"
        )
    return window_layout(layout, window)


def check_window_input(x: object, window: Window, name: str = "x") -> Tensor:
    """``x`` is a float ``(B, H, W, C)`` (2-D window) or ``(B, D, H, W, C)`` (3-D) with C >= 1."""
    if not isinstance(x, Tensor):
        raise not_a_tensor(x, name)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype}: a merge "
            "normalises and projects real values"
        )
    want = "(B, H, W, C)" if window.dims == 2 else "(B, D, H, W, C)"
    if x.dim() != window.dims + 2:
        raise ValueError(
            f"{name} must be {want} for a {window.dims}-D window, got shape {tuple(x.shape)}"
        )
    if x.shape[-1] == 0:
        raise ValueError(f"{name} has C == 0 channels: there is nothing to merge")
    return x


def check_window_call(
    x: object,
    reduction_weight: object,
    norm_weight: object,
    norm_bias: object,
    window: object,
    layout: object,
    norm: object,
    eps: object,
) -> WindowCall:
    """Validate a :func:`pm_core.window_merge` call (and its oracle's and bounds')."""
    check_options(norm, "pad", eps)
    win = check_window(window)
    lay = check_layout(layout, win)
    x5 = check_window_input(x, win)
    c = x5.shape[-1]
    n = win.size * c
    out = check_projection(
        x5, reduction_weight, norm_weight, norm_bias, cast(Norm, norm), n,
        "prod(kernel)*C", f"x with C={c} and kernel {win.kernel}",
    )  # fmt: skip
    spatial = tuple(x5.shape[1:-1])
    pads = win.pads(spatial)
    out_size = win.output_size(spatial)
    return WindowCall(x5, win, lay, pads, out_size, out)


def swin_call(x4: Tensor, out_features: int, layout: object = "swin") -> WindowCall:
    """Swin's 2x2 merge of a validated ``(B, H, W, C)`` as a general call:
    :data:`~pm_core.oracle.SWIN_WINDOW` in ``layout`` (the ``"swin"`` order by default;
    validated here). Its padding and output
    size in closed form, since this runs on every :func:`pm_core.patch_merge` call;
    ``SWIN_WINDOW.pads`` / ``.output_size`` give the same (``tests/test_dispatch.py``
    compares ``patch_merge`` with ``window_merge`` over that window, odd sizes included)."""
    lay = _SWIN if layout == "swin" else check_layout(layout, SWIN_WINDOW)
    h, w = x4.shape[1], x4.shape[2]
    pads = ((0, h % 2), (0, w % 2))
    return WindowCall(x4, SWIN_WINDOW, lay, pads, (-(-h // 2), -(-w // 2)), out_features)


_SWIN = window_layout("swin")

__all__ = [
    "WindowCall",
    "check_layout",
    "check_window",
    "check_window_call",
    "check_window_input",
    "swin_call",
]
