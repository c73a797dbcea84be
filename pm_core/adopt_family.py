"""Adopt the space-to-depth family: MONAI's merges, YOLO's ``Focus`` and timm's ``SpaceToDepth``.

:func:`pm_core.from_module` hands these classes here. Design requirements, as in
``pm_core.adopt``:

* **No third-party imports.** Classes are recognised by module path and qualname
  (:data:`~pm_core.adopt.KNOWN`); ``import pm_core`` needs only torch.
* **The order is probed, never assumed from a version.** MONAI's legacy 3-D
  ``PatchMerging`` kept its class name while its slice list changed (1.5.0, PR #8285),
  so a version string or a class name says nothing about what a module gathers.
  :func:`~pm_core.adopt_family.probe_layout` asks the module itself: a shallow copy with its weighted
  submodules (MONAI's ``norm`` and ``reduction``, Focus's ``conv``) replaced by
  ``nn.Identity`` is run on an *index-coded* float64 input, whose every entry is
  ``1 + its flat index`` (all distinct; zero padding reads as 0). Each entry of the
  first window's output names the ``(offset, channel)`` it was read from, so the
  offset list comes back as the module really reads it, and
  :func:`pm_core.window_layouts.layout_from_offsets` turns it into a layout or raises
  :class:`pm_core.window_layouts.WindowOrderError` naming the repeated and the missing offsets (MONAI
  <= 1.4's legacy 3-D merge reads ``(0, 1, 0)`` and ``(0, 0, 1)`` twice). The whole
  gather is then compared bit for bit with :func:`pm_core.space_to_depth` in that layout
  on an index-coded input of odd size (for padded windows), which checks the stride
  and the zero padding as well. The probe needs no parameter values, so it runs on
  meta modules too.
* **The function is verified within the derived bound.** With ``verify=True``, float64
  copies of the source and the result run on a random probe, and each must lie within
  :func:`pm_core.window_error_bounds` of :func:`pm_core.reference_window_merge`.
* **Drop-in.** MONAI merges become a :class:`pm_core.WindowMerging` that *reuses* the
  source's ``norm`` and ``reduction`` (same Parameters, same keys). ``Focus`` becomes a
  :class:`pm_core.FocusConv` whose conv weight is :func:`pm_core.focus.focus_to_conv` of
  Focus's (a copy: its shape changes) and whose BatchNorm and activation are the
  source's. ``SpaceToDepth`` has no weights and becomes a :class:`pm_core.SpaceToDepth`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from . import _compat
from ._checks import Norm
from .focus import FocusConv, focus_to_conv
from .impls import check_impl
from .layouts import convert_window_layout
from .modules import SpaceToDepth, WindowMerging
from .oracle import reference_window_merge
from .recognition import Known
from .window import Window
from .window_bounds import window_error_bounds
from .window_gather import space_to_depth
from .window_impls import swin_order
from .window_layouts import (
    WINDOW_LAYOUTS,
    Offset,
    WindowLayout,
    WindowOrderError,
    layout_from_offsets,
)

#: What :func:`pm_core.from_module` returns for a family member.
FamilyModule = WindowMerging | FocusConv | SpaceToDepth


def _replaced(m: nn.Module, **subs: nn.Module) -> nn.Module:
    """A shallow copy of ``m`` with the named submodules replaced; ``m`` is not touched."""
    out = copy.copy(m)
    out._modules = dict(m._modules)  # its own dict, so the source keeps its submodules
    for name, sub in subs.items():
        if name not in m._modules:
            raise ValueError(f"{type(m).__qualname__} has no submodule {name!r} to probe around")
        out._modules[name] = sub
    return out


def _coded(shape: Sequence[int]) -> Tensor:
    """float64 ``1 .. prod(shape)`` in ``shape``: every entry distinct, none zero."""
    return torch.arange(1, math.prod(shape) + 1, dtype=torch.float64).view(*shape)


def _call_bsc(gather: Callable[[Tensor], Tensor], x: Tensor, channels_first: bool) -> Tensor:
    """Run ``gather`` on ``x: (B, *S, C)`` in its own convention; return ``(B, *S', n)``."""
    if not channels_first:
        return gather(x)
    return gather(x.movedim(-1, 1).contiguous()).movedim(1, -1)


def _decode(v: Tensor, window: Window, channels: int, name: str) -> list[tuple[Offset, int]]:
    """``(offset, channel)`` read by each entry of one window's gathered vector."""
    offsets = window.offsets()  # row-major, the order of the coded input's flat index
    out = []
    for j, val in enumerate(v.tolist()):
        idx = int(val) - 1
        if val != int(val) or not 0 <= idx < len(offsets) * channels:
            raise ValueError(
                f"{name}'s gather put {val} at entry {j} of a window of the index-coded "
                "probe: it does not only move data, so it is no space-to-depth"
            )
        out.append((offsets[idx // channels], idx % channels))
    return out


def _offset_list(
    read: list[tuple[Offset, int]], k: int, channels: int, *, channel_major: bool
) -> list[Offset] | None:
    """The offset order if ``read`` is offset-major (or channel-major) with channels in order."""
    order: list[Offset | None] = [None] * k
    for j, (off, c) in enumerate(read):
        block, chan = (j % k, j // k) if channel_major else (j // channels, j % channels)
        if c != chan or order[block] not in (None, off):
            return None
        order[block] = off
    return [o for o in order if o is not None]


def probe_layout(
    gather: Callable[[Tensor], Tensor],
    window: Window,
    *,
    channels: int = 2,
    channels_first: bool = False,
    prefer: Sequence[str] = (),
    name: str = "module",
) -> WindowLayout:
    """The layout in which ``gather`` (a pure space-to-depth over ``window``) orders its output.

    ``gather`` maps ``(B, *S, C)`` -> ``(B, *S', n)``, or with ``channels_first`` ``(B, C,
    *S)`` -> ``(B, n, *S')``. It is run on index-coded float64 inputs (see the module
    docstring): one window, whose output names the ``(offset, channel)`` of every entry,
    then an input of ``2*kernel`` (``+ 1`` for adaptive padding) per dim, compared bit for
    bit with :func:`pm_core.space_to_depth`. Returns the first of ``prefer``, then of
    :data:`pm_core.window_layouts.WINDOW_LAYOUTS`, that orders the window the same way, else an
    explicit layout named ``name``.

    Raises:
        WindowOrderError: the gather reads some offset twice (and so misses another);
            the error names both.
        ValueError: the output is not a gather in an offset- or channel-major order, or
            it disagrees with ``space_to_depth`` over ``window`` on the larger input.
    """
    k = window.size
    with torch.no_grad():
        v = _call_bsc(gather, _coded((1, *window.kernel, channels)), channels_first)
    if tuple(v.shape) != (1, *(1,) * window.dims, k * channels):
        raise ValueError(
            f"{name} maps one {window.kernel} window of {channels} channels to "
            f"{tuple(v.shape)}, not to one vector of {k * channels}"
        )
    read = _decode(v.reshape(-1), window, channels, name)
    for channel_major in (False, True):
        offsets = _offset_list(read, k, channels, channel_major=channel_major)
        if offsets is not None:
            break
    else:
        raise ValueError(
            f"{name} gathers in no offset-major or channel-major order: entry j reads "
            + ", ".join(f"{j}: {o} c{c}" for j, (o, c) in enumerate(read))
        )
    try:
        found = layout_from_offsets(
            offsets, kernel=window.kernel, name=name, channel_major=channel_major
        )
    except WindowOrderError as e:
        raise WindowOrderError(
            f"{name} reads the offsets {offsets} (probed): {e}",
            duplicated=e.duplicated,
            missing=e.missing,
        ) from e
    layout = found
    for cand in (*prefer, *WINDOW_LAYOUTS):
        lay = WINDOW_LAYOUTS[cand]
        if lay.channel_major != channel_major or lay.dims not in (None, window.dims):
            continue
        if lay.kernel not in (None, window.kernel):
            continue
        if lay.order(window) == found.order(window):
            layout = lay
            break
    size = tuple(2 * kk + (1 if isinstance(window.padding, str) else 0) for kk in window.kernel)
    x = _coded((2, *size, channels))
    with torch.no_grad():
        got = _call_bsc(gather, x, channels_first)
    want = space_to_depth(x, window, layout)
    if got.shape != want.shape or not torch.equal(got, want):
        raise ValueError(
            f"{name} reads a window in the {layout.name!r} order but does not gather like "
            f"space_to_depth over {window} on a {size} input (got {tuple(got.shape)}, want "
            f"{tuple(want.shape)}): its stride or padding differ"
        )
    return layout


def _has_values(m: nn.Module) -> bool:
    return all(_compat.has_values(p) for p in m.parameters())


def _check_within(
    name: str, what: str, ys: dict[str, Tensor], ref: Tensor, bound: Tensor, shape: tuple[int, ...]
) -> None:
    for who, y in ys.items():
        if y.shape != ref.shape:
            raise ValueError(f"{name}: {who} gives {tuple(y.shape)} on {shape}, want {ref.shape}")
        worst = float(((y - ref).abs() / bound).max()) if y.numel() else 0.0
        if not worst <= 1:
            raise ValueError(
                f"{name}: {who} is {worst:.3g}x the float64 rounding bound away from "
                f"{what} on a {shape} probe: it does not compute what its structure "
                "describes (a changed library version?); refusing to convert it"
            )


# --------------------------------------------------------------------------------- MONAI


def _monai_structure(m: nn.Module) -> tuple[int, int, Window, Norm, float]:
    """``(dim, out_dim, window, norm, eps)`` of a MONAI merge, from its submodules."""
    name = type(m).__qualname__
    red = m._modules.get("reduction")
    dim = getattr(m, "dim", None)
    if (
        not isinstance(dim, int)
        or not isinstance(red, nn.Linear)
        or getattr(red, "bias", None) is not None
    ):
        raise ValueError(
            f"{name} must have an int .dim and a bias-free nn.Linear .reduction, got "
            f"dim={dim!r}, reduction={red!r}"
        )
    k, rest = divmod(red.in_features, dim)
    if rest or k not in (4, 8):
        raise ValueError(
            f"{name}.reduction takes {red.in_features} features: not 4*dim (2-D) or 8*dim "
            f"(3-D) with dim={dim}"
        )
    window = Window((2,) * (2 if k == 4 else 3), padding="corner")
    norm_mod = m._modules.get("norm")
    if isinstance(norm_mod, nn.Identity):
        return dim, red.out_features, window, "none", 1e-5
    if type(norm_mod) is not nn.LayerNorm or tuple(norm_mod.normalized_shape) != (k * dim,):
        raise ValueError(
            f"{name}.norm is {norm_mod!r}; pm_core adopts a LayerNorm({k * dim}) pre-norm or "
            "nn.Identity"
        )
    return dim, red.out_features, window, "pre", float(norm_mod.eps)


def _adopt_monai(m: nn.Module, impl: str, verify: bool) -> WindowMerging:
    check_impl(impl)  # an unknown name fails before any probing
    dim, out_dim, window, norm, eps = _monai_structure(m)
    name = f"MONAI {type(m).__qualname__} ({window.dims}-D)"
    ident = _replaced(m, norm=nn.Identity(), reduction=nn.Identity())
    layout = probe_layout(ident, window, prefer=("monai-v2-3d", "monai-legacy", "swin"), name=name)
    if impl == "auto" and swin_order(window, layout) is None:
        impl = "conv"  # auto times Swin's 2x2 merge's impls; other windows take the conv form
    check_impl(impl, window, layout)
    out = WindowMerging(
        dim, window, out_dim=out_dim, norm=norm, layout=layout, impl=impl, eps=eps, device="meta"
    )
    out.norm = m.get_submodule("norm")  # reused: same Parameters, same keys
    red = m.get_submodule("reduction")
    assert isinstance(red, nn.Linear)  # checked by _monai_structure
    out.reduction = red
    out._modules = {k: out._modules[k] for k in m._modules if k in out._modules}
    if verify and _has_values(m):
        _verify_merge(m, out, name)
    return out.train(m.training)


def _verify_merge(src: nn.Module, dst: WindowMerging, name: str) -> None:
    s64, d64 = copy.deepcopy(src).double(), copy.deepcopy(dst).double()
    w = d64.reduction.weight
    ln = d64.norm if isinstance(d64.norm, nn.LayerNorm) else None
    nw, nb = (None, None) if ln is None else (ln.weight, ln.bias)
    eps = 1e-5 if ln is None else ln.eps
    g = torch.Generator().manual_seed(0)
    # odd, unequal sizes: the padding and the axis order both show
    size = (3, 5) if dst.window.dims == 2 else (3, 5, 4)
    # a large common offset, so a misplaced pre-norm shows too
    x = (torch.randn(2, *size, dst.dim, generator=g, dtype=torch.float64) + 3.0).to(w.device)
    kw = {"window": dst.window, "layout": dst.layout, "norm": dst.norm_mode, "eps": eps}
    with torch.no_grad():
        ys = {"the library module": s64(x), "pm_core's": d64(x)}
        ref = reference_window_merge(x, w, nw, nb, **kw)  # type: ignore[arg-type]
        bound = window_error_bounds(x, w, nw, nb, **kw).output  # type: ignore[arg-type]
    _check_within(name, "the float64 oracle", ys, ref, bound, tuple(x.shape))


# --------------------------------------------------------------------------------- Focus


def _focus_parts(m: nn.Module) -> tuple[nn.Module, nn.Conv2d]:
    name = type(m).__qualname__
    inner = m._modules.get("conv")
    conv = None if inner is None else inner._modules.get("conv")
    if (
        inner is None
        or not isinstance(conv, nn.Conv2d)
        or "bn" not in inner._modules
        or "act" not in inner._modules
    ):
        raise ValueError(
            f"{name} must hold ultralytics' Conv as .conv (with .conv: nn.Conv2d, .bn, .act), "
            f"got {inner!r}"
        )
    if (
        conv.groups != 1
        or conv.dilation != (1, 1)
        or getattr(conv, "bias", None) is not None
        or isinstance(conv.padding, str)
        or conv.padding_mode != "zeros"
        or conv.in_channels % 4
    ):
        raise ValueError(
            f"{name}.conv.conv is {conv!r}; pm_core maps Focus's conv to one conv for groups=1, "
            "dilation 1, no bias, integer zero padding and 4*C input channels"
        )
    return inner, conv


def _adopt_focus(m: nn.Module, verify: bool) -> FocusConv:
    inner, conv = _focus_parts(m)
    c = conv.in_channels // 4
    name = f"ultralytics {type(m).__qualname__}"
    window = Window((2, 2))
    layout = probe_layout(
        _replaced(m, conv=nn.Identity()), window, channels_first=True, prefer=("focus",), name=name
    )
    kh, kw = conv.kernel_size
    pad = conv.padding
    assert not isinstance(pad, str)  # checked by _focus_parts
    out = FocusConv(
        c, conv.out_channels, (kh, kw), conv.stride, (pad[0], pad[1]),
        bn=inner.get_submodule("bn"), act=inner.get_submodule("act"),
        device=conv.weight.device, dtype=conv.weight.dtype,
    )  # fmt: skip
    with torch.no_grad():
        # Focus's input channels in the probed order, as focus_to_conv reads them
        wk = convert_window_layout(conv.weight, window, layout, "focus", dim=1)
        out.conv.conv.weight.copy_(focus_to_conv(wk))
    if verify and _has_values(m):
        _verify_focus(m, out, name)
    return out.train(m.training)


def _verify_focus(src: nn.Module, dst: FocusConv, name: str) -> None:
    """The conv parts (BN and activation are the same modules, applied to their outputs)."""
    s64, d64 = copy.deepcopy(src).double(), copy.deepcopy(dst).double()
    inner = _replaced(s64.get_submodule("conv"), bn=nn.Identity(), act=nn.Identity())
    src_conv = _replaced(s64, conv=inner)
    wc = d64.conv.conv.weight
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, dst.dim, 6, 10, generator=g, dtype=torch.float64).to(wc.device)
    (kh, kw), (sh, sw), (ph, pw) = dst.kernel, dst.stride, dst.padding
    window = Window((2 * kh, 2 * kw), stride=(2 * sh, 2 * sw), padding=(2 * ph, 2 * pw))
    w_flat = wc.reshape(wc.shape[0], -1)  # [O, C*2kh*2kw]: the "unfold" layout
    xb = x.movedim(1, -1)
    with torch.no_grad():
        ys = {
            "Focus's conv": src_conv(x).movedim(1, -1),
            "pm_core's": d64.conv.conv(x).movedim(1, -1),
        }
        ref = reference_window_merge(xb, w_flat, window=window, layout="unfold", norm="none")
        bound = window_error_bounds(xb, w_flat, window=window, layout="unfold", norm="none").output
    _check_within(name, "the float64 oracle of the k6-style conv", ys, ref, bound, tuple(x.shape))


# ----------------------------------------------------------------------- timm SpaceToDepth


def _adopt_space_to_depth(m: nn.Module) -> SpaceToDepth:
    bs = getattr(m, "bs", None)
    if not isinstance(bs, int) or bs < 1:
        raise ValueError(f"{type(m).__qualname__} must have an int block size .bs, got {bs!r}")
    window = Window((bs, bs))
    layout = probe_layout(
        m, window, channels_first=True, prefer=("timm-s2d",), name=f"timm {type(m).__qualname__}"
    )  # the probe compares the whole gather bit for bit: that is the verification
    return SpaceToDepth(window, layout, channels_first=True).train(m.training)


def adopt_family(m: nn.Module, known: Known, *, impl: str, verify: bool) -> FamilyModule:
    """The pm_core module computing what family member ``m`` computes (see the module
    docstring); :func:`pm_core.from_module` is the public entry point."""
    if known.kind == "monai":
        return _adopt_monai(m, impl, verify)
    if known.kind == "focus":
        return _adopt_focus(m, verify)
    return _adopt_space_to_depth(m)


__all__ = [
    "FamilyModule",
    "adopt_family",
    "probe_layout",
]
