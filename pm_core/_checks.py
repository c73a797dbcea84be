"""Argument validation: the front doors (``patch_merge`` and ``window_merge``), the oracle,
the bounds and the modules all validate here.

Only checks live here: nothing in this module computes a merge, so the oracle and
the implementations still share no arithmetic.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, cast, get_args

import torch
from torch import Tensor

from . import _compat
from .window import SWIN_WINDOW, Pads, Window
from .window_layouts import WindowLayout, window_layout

Norm = Literal["pre", "post", "none"]
Odd = Literal["pad", "error"]
NORMS: tuple[Norm, ...] = get_args(Norm)
ODDS: tuple[Odd, ...] = get_args(Odd)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Call(NamedTuple):
    """A validated call: ``x`` as a ``(B, H, W, C)`` view, and whether it came in as ``(B, L, C)``."""

    x: Tensor
    flat: bool


def check_options(norm: object, odd: object, eps: object) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if odd not in ODDS:
        raise ValueError(f"odd must be one of {ODDS}, got {odd!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a float, got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}")


def check_dim(dim: object) -> None:
    """``dim`` (a module's input channels) is a positive int; ``True`` is not."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")


def _autocasting(device: torch.device) -> bool:
    try:
        return torch.is_autocast_enabled(device.type)
    except RuntimeError:  # a device type autocast does not know, e.g. meta
        return False


def _cpu_capability(name: str, unknown: bool) -> bool:
    """Whether the CPU has instruction-set feature ``name``; ``unknown`` when torch cannot say."""
    return bool(_compat.cpu_capabilities().get(name, unknown))


# torch.compile cannot trace the probe (it returns a dict). By call, not as a decorator:
# mutmut does not mutate decorated functions.
_compat.constant_when_traced(_cpu_capability)


def not_a_tensor(t: object, name: str) -> TypeError:
    """The error for a non-tensor argument: it names the argument and what it got and,
    for a module (a layer passed where its weight was meant), the fix."""
    hint = ""
    if isinstance(t, torch.nn.Module):
        hint = f" (a module: pass its weight, e.g. `{type(t).__name__.lower()}.weight`)"
    return TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}{hint}")


def as_bhwc(x: object, hw: object) -> tuple[Tensor, bool]:
    """View ``x`` as ``(B, H, W, C)``; the flag says it was ``(B, L, C)``. Never copies."""
    if not isinstance(x, Tensor):
        raise not_a_tensor(x, "x")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"x must be float16, bfloat16, float32 or float64, got {x.dtype}: "
            "patch merging normalises and projects real values"
        )
    if hw is not None:
        if (
            not isinstance(hw, (tuple, list))
            or len(hw) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in hw)
        ):
            raise ValueError(f"hw must be a pair of non-negative ints (H, W), got {hw!r}")
        hw = (int(hw[0]), int(hw[1]))
    if x.dim() == 4:
        if hw is not None and hw != tuple(x.shape[1:3]):
            raise ValueError(f"x is (B, H, W, C) = {tuple(x.shape)} but hw={hw!r} disagrees")
        return x, False
    if x.dim() != 3:
        raise ValueError(
            f"x must be (B, L, C) with hw=(H, W), or (B, H, W, C); got rank {x.dim()} "
            f"shape {tuple(x.shape)}"
        )
    if hw is None:
        raise ValueError(f"x is (B, L, C) = {tuple(x.shape)}: pass hw=(H, W)")
    h, w = hw
    if x.shape[1] != h * w:
        raise ValueError(f"x has L={x.shape[1]} tokens but hw=({h}, {w}) needs L == H*W == {h * w}")
    return x.view(x.shape[0], h, w, x.shape[2]), True


def _check_param(t: object, name: str, size: int, what: str, x: Tensor, autocast: bool) -> None:
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
    if t.dim() != 1 or t.shape[0] != size:
        raise ValueError(f"{name} must have shape ({size},) ({what}), got {tuple(t.shape)}")
    _check_like(t, name, x, autocast)


def _check_like(t: Tensor, name: str, x: Tensor, autocast: bool) -> None:
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t.dtype != x.dtype and not autocast:
        raise TypeError(
            f"{name} is {t.dtype} but x is {x.dtype}; cast one of them, or run under torch.autocast"
        )


def check_projection(
    x: Tensor,
    reduction_weight: object,
    norm_weight: object,
    norm_bias: object,
    norm: Norm,
    n: int,
    width: str,
    context: str,
) -> int:
    """Validate a merge's Linear and LayerNorm parameters for windows of ``n`` entries
    (``width`` names it in messages: ``"4C"``; ``context`` says what fixed it: ``"x with
    C=8"``) against the validated input ``x``; returns the output width ``O``."""
    if not isinstance(reduction_weight, Tensor):
        raise not_a_tensor(reduction_weight, "reduction_weight")
    if reduction_weight.dim() != 2 or reduction_weight.shape[1] != n:
        raise ValueError(
            f"reduction_weight must be [O, {width}] = [O, {n}] for {context}, "
            f"got {tuple(reduction_weight.shape)}"
        )
    out = reduction_weight.shape[0]
    if out == 0:
        raise ValueError("reduction_weight has O == 0 outputs: there is nothing to project to")
    autocast = _autocasting(x.device)
    _check_like(reduction_weight, "reduction_weight", x, autocast)
    if norm == "none":
        if norm_weight is not None or norm_bias is not None:
            raise ValueError(
                "norm='none' takes no norm_weight/norm_bias; pass None or pick norm='pre'/'post'"
            )
    else:
        size, what = (
            (n, f"LN over the {width} window") if norm == "pre" else (out, "LN over the O outputs")
        )
        _check_param(norm_weight, "norm_weight", size, what, x, autocast)
        _check_param(norm_bias, "norm_bias", size, what, x, autocast)
    return out


def check_call(
    x: object,
    reduction_weight: object,
    norm_weight: object,
    norm_bias: object,
    hw: object,
    norm: object,
    eps: object,
    odd: object,
) -> Call:
    """Validate a ``patch_merge`` call and return ``x`` as a ``(B, H, W, C)`` view."""
    check_options(norm, odd, eps)
    x4, flat = as_bhwc(x, hw)
    _, h, w, c = x4.shape
    if c == 0:
        raise ValueError("x has C == 0 channels: there is nothing to merge or normalise")
    check_projection(
        x4, reduction_weight, norm_weight, norm_bias, cast(Norm, norm), 4 * c, "4C",
        f"x with C={c}",
    )  # fmt: skip
    if odd == "error" and (h % 2 or w % 2):
        raise ValueError(
            f"odd='error' and H, W = ({h}, {w}) is not even; use odd='pad' to zero-pad"
        )
    return Call(x4, flat)


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
    "FLOAT_DTYPES",
    "NORMS",
    "ODDS",
    "Call",
    "Norm",
    "Odd",
    "WindowCall",
    "as_bhwc",
    "check_call",
    "check_layout",
    "check_options",
    "check_projection",
    "check_window",
    "check_window_call",
    "check_window_input",
    "swin_call",
]
