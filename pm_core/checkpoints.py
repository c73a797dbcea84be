"""Checkpoints: re-order every patch merge's weights in a state dict between layouts.

:func:`convert_state_dict` permutes every patch-merging reduction weight and 4C norm
vector in a state dict between the ``"swin"`` layout (Microsoft, timm, torchvision, HF),
the ``"unfold"`` layout (mmcv / mmseg / mmdet) and the ``"conv"`` layout
(:class:`pm_core.ConvPatchMerging`). Keys are not renamed. Every step is a permutation,
so round trips are bit-exact.

With ``window=`` it does the same for general merges (:class:`pm_core.Window`) between
any two :data:`pm_core.window_layouts.WINDOW_LAYOUTS` (MONAI's ``"monai-v2-3d"`` and ``"monai-legacy"``
included) and ``"conv"`` (:class:`pm_core.ConvWindowMerging`'s ``[O, C, *kernel]``).
:func:`fold_offsets` re-expresses a weight over a slice list *with repeats* (MONAI <= 1.4)
on the window's distinct offsets, which is exact only for a merge without a pre-norm.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import Tensor

from .focus import conv_to_focus, focus_to_conv
from .layouts import (
    LAYOUTS,
    Layout,
    conv_to_linear,
    conv_to_window,
    convert_window_layout,
    linear_to_conv,
    swin_to_unfold,
    unfold_to_swin,
    window_to_conv,
)
from .window import Window
from .window_layouts import Offset, WindowLayout, window_layout


def _is_merge_weight(t: Tensor, layout: Layout) -> bool:
    if layout == "conv":
        return t.dim() == 4 and tuple(t.shape[2:]) == (2, 2)
    return t.dim() == 2 and t.shape[1] % 4 == 0 and t.shape[1] > 0


def merge_prefixes(sd: Mapping[str, Tensor], layout: Layout = "swin") -> list[str]:
    """Key prefixes of the patch merges in ``sd``: every ``<p>reduction.weight`` without a
    ``<p>reduction.bias`` whose tensor is a ``[O, 4C]`` (or, for ``"conv"``, ``[O, C, 2, 2]``)
    reduction. That covers Microsoft's and timm's ``layers.{i}.downsample.``, torchvision's
    ``features.{2,4,6}.``, HF's ``encoder.layers.{i}.downsample.`` and mmseg's
    ``backbone.stages.{i}.downsample.``.
    """
    out = []
    for k, t in sd.items():
        if not k.endswith("reduction.weight") or not isinstance(t, Tensor):
            continue
        p = k[: -len("reduction.weight")]
        if p and not p.endswith("."):
            continue
        if p + "reduction.bias" not in sd and _is_merge_weight(t, layout):
            out.append(p)
    return out


def _permute_weight(w: Tensor, src: Layout, dst: Layout) -> Tensor:
    if src == "unfold":
        swin = unfold_to_swin(w)
    elif src == "conv":
        swin = conv_to_linear(w)
    else:
        swin = w
    if dst == "swin":
        return swin.contiguous()
    if dst == "unfold":
        return swin_to_unfold(swin).contiguous()
    return linear_to_conv(swin)


def _permute_norm(v: Tensor, src: Layout, dst: Layout) -> Tensor:
    # conv-parameterised merges keep their 4C norm in the swin order
    s = "swin" if src == "conv" else src
    d = "swin" if dst == "conv" else dst
    if s == d:
        return v
    return (swin_to_unfold(v) if d == "unfold" else unfold_to_swin(v)).contiguous()


def _window_prefixes(sd: Mapping[str, Tensor], window: Window, conv: bool) -> list[str]:
    out = []
    for k, t in sd.items():
        if not k.endswith("reduction.weight") or not isinstance(t, Tensor):
            continue
        p = k[: -len("reduction.weight")]
        if (p and not p.endswith(".")) or p + "reduction.bias" in sd:
            continue
        if conv:
            ok = t.dim() == 2 + window.dims and tuple(t.shape[2:]) == window.kernel
        else:
            ok = t.dim() == 2 and t.shape[1] > 0 and t.shape[1] % window.size == 0
        if ok:
            out.append(p)
    return out


def _copy(sd: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    """A shallow copy of ``sd`` that keeps its key order and ``_metadata``."""
    out: OrderedDict[str, Tensor] = OrderedDict(sd)
    meta = getattr(sd, "_metadata", None)
    if meta is not None:
        out._metadata = copy.copy(meta)  # type: ignore[attr-defined]
    return out


def _pre_norm_keys(sd: Mapping[str, Tensor], p: str, n: int, o: int, by_hand: str) -> list[str]:
    """``<p>norm.weight`` / ``<p>norm.bias`` when they are ``n``-entry vectors (a pre-norm
    over the window). With ``o == n`` a post-norm over the ``O`` outputs looks the same,
    and this raises, naming ``by_hand``, the converter to use instead."""
    keys = []
    for key in (p + "norm.weight", p + "norm.bias"):
        v = sd.get(key)
        if v is None or v.dim() != 1 or v.shape[0] != n:
            continue
        if o == n:
            raise ValueError(
                f"{key} has {n} entries and {p}reduction.weight is [{o}, {n}]: a pre-norm "
                f"(permute) and a post-norm (keep) look the same; convert this merge by hand "
                f"with {by_hand}"
            )
        keys.append(key)
    return keys


def _convert_windows(
    sd: Mapping[str, Tensor], src: str | WindowLayout, dst: str | WindowLayout, window: Window
) -> OrderedDict[str, Tensor]:
    s = None if src == "conv" else window_layout(src, window)
    d = None if dst == "conv" else window_layout(dst, window)
    out = _copy(sd)
    if (s is None and d is None) or s == d:
        return out
    for p in _window_prefixes(sd, window, conv=s is None):
        w = sd[p + "reduction.weight"]
        o, n = w.shape[0], (w.shape[1] * window.size if s is None else w.shape[1])
        if s is not None and d is not None:
            for key in _pre_norm_keys(sd, p, n, o, "pm_core.layouts.convert_window_layout"):
                out[key] = convert_window_layout(sd[key], window, s, d).contiguous()
        if s is None:
            assert d is not None
            out[p + "reduction.weight"] = conv_to_window(w, window, d).contiguous()
        elif d is None:
            out[p + "reduction.weight"] = window_to_conv(w, window, s)
        else:
            out[p + "reduction.weight"] = convert_window_layout(w, window, s, d).contiguous()
    return out


def convert_state_dict(
    sd: Mapping[str, Tensor],
    src: Layout | str | WindowLayout,
    dst: Layout | str | WindowLayout,
    *,
    window: Window | None = None,
    focus: str | Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """Re-order every patch merge's weights in ``sd`` from layout ``src`` to ``dst``.

    Layouts: ``"swin"`` (Microsoft, timm, torchvision, HF: column ``(2*dw + dh)*C + c``),
    ``"unfold"`` (mmcv/mmseg/mmdet ``nn.Unfold``: column ``4*c + 2*dh + dw``) and ``"conv"``
    (:class:`pm_core.ConvPatchMerging`: ``reduction.weight`` is ``[O, C, 2, 2]``, its 4C norm
    stays in the swin order). For each prefix from :func:`~pm_core.checkpoints.merge_prefixes`:

    * ``<p>reduction.weight`` ``[O, 4C]`` is permuted (reshaped for ``"conv"``);
    * ``<p>norm.weight`` / ``<p>norm.bias`` are permuted when they have ``4C`` entries (Swin
      v1's pre-norm). A ``post`` norm over the ``O`` outputs is left as it is. When
      ``O == 4C`` the two cannot be told apart from shapes, and this raises.

    Every other entry, the key names, their order and ``sd._metadata`` are kept; the input
    is not modified. Each step is a permutation, so ``convert_state_dict(convert_state_dict(
    sd, a, b), b, a)`` equals ``sd`` bit for bit. Keys are not renamed between libraries.

    >>> import torch
    >>> sd = {"layers.0.downsample.norm.weight": torch.arange(8.0),
    ...       "layers.0.downsample.reduction.weight": torch.zeros(4, 8)}
    >>> convert_state_dict(sd, "swin", "unfold")["layers.0.downsample.norm.weight"]
    tensor([0., 4., 2., 6., 1., 5., 3., 7.])

    **General merges** (``window`` given, e.g. ``Window((2, 2, 2), padding="corner")`` for
    MONAI's 3-D merges): ``src`` and ``dst`` are names from :data:`pm_core.window_layouts.WINDOW_LAYOUTS`
    (or :class:`pm_core.window_layouts.WindowLayout` s) or ``"conv"``. Every ``<p>reduction.weight``
    without a bias that is ``[O, prod(kernel)*C]`` (``[O, C, *kernel]`` for ``"conv"``) is
    converted with :func:`pm_core.layouts.convert_window_layout` (:func:`pm_core.layouts.window_to_conv` /
    :func:`pm_core.layouts.conv_to_window` to and from ``"conv"``), and its ``n``-entry pre-norm
    vectors with it. A :class:`pm_core.ConvWindowMerging` keeps its pre-norm vectors in
    its ``layout``, so to and from ``"conv"`` they are left as they are: go
    ``"conv" -> L -> L'`` to change that layout too. Round trips are bit-exact. MONAI's
    ``SwinUNETR`` keys (``swinViT.layers1.0.downsample.``) are found as they are.

    **Focus** (``focus`` given: the prefix of each ultralytics ``Focus`` in ``sd``, e.g.
    ``"model.0."``; its keys look like every other ``Conv``'s, so they are named, not
    searched for): ``src`` / ``dst`` are ``"focus"`` and ``"conv"``, either way round.
    ``<p>conv.conv.weight`` becomes :class:`pm_core.FocusConv`'s ``[O, C, 2k, 2k]`` weight
    (:func:`pm_core.focus.focus_to_conv`; :func:`pm_core.focus.conv_to_focus` back); the BatchNorm and
    every other key are kept, and the key names are the same in both modules. A
    permutation: round trips are bit-exact.
    """
    if not isinstance(sd, Mapping):
        raise TypeError(f"sd must be a state dict (a Mapping), got {type(sd).__name__}")
    if focus is not None:
        return _convert_focus(sd, src, dst, (focus,) if isinstance(focus, str) else tuple(focus))
    if window is not None:
        if not isinstance(window, Window):
            raise TypeError(f"window must be a pm_core.Window, got {type(window).__name__}")
        return _convert_windows(sd, src, dst, window)
    for arg, layout in (("src", src), ("dst", dst)):
        if layout not in LAYOUTS:
            raise ValueError(
                f"{arg} must be one of {LAYOUTS}, got {layout!r} (a general merge's "
                "layout needs window=)"
            )
    src, dst = cast(Layout, src), cast(Layout, dst)
    out = _copy(sd)
    if src == dst:
        return out
    for p in merge_prefixes(sd, src):
        w = sd[p + "reduction.weight"]
        o, four_c = (w.shape[0], 4 * w.shape[1]) if src == "conv" else tuple(w.shape)
        by_hand = "pm_core.layouts.swin_to_unfold / unfold_to_swin"
        for key in _pre_norm_keys(sd, p, four_c, o, by_hand):
            out[key] = _permute_norm(sd[key], src, dst)
        out[p + "reduction.weight"] = _permute_weight(w, src, dst)
    return out


def _convert_focus(
    sd: Mapping[str, Tensor], src: object, dst: object, prefixes: tuple[str, ...]
) -> dict[str, Tensor]:
    if {src, dst} != {"focus", "conv"}:
        raise ValueError(
            f"with focus=, src and dst are 'focus' and 'conv' (either way round), got {src!r} "
            f"and {dst!r}"
        )
    out = _copy(sd)
    for p in prefixes:
        if not isinstance(p, str):
            raise TypeError(f"focus prefixes must be strings, got {p!r}")
        key = p + "conv.conv.weight"
        if key not in sd:
            raise KeyError(f"no Focus at prefix {p!r}: {key!r} is not in the state dict")
        out[key] = focus_to_conv(sd[key]) if src == "focus" else conv_to_focus(sd[key])
    return out


def fold_offsets(
    w: Tensor,
    offsets: Sequence[Sequence[int]],
    window: Window,
    layout: str | WindowLayout,
) -> Tensor:
    """A reduction weight over a slice list, re-expressed over the window's distinct offsets.

    ``w``: ``[O, K*C]``, block ``i`` (columns ``i*C .. i*C + C``) applied to the slice at
    ``offsets[i]``; the list may repeat offsets and so miss others (MONAI <= 1.4's legacy
    3-D merge). Returns ``[O, prod(kernel)*C]`` in ``layout``, whose block for offset
    ``p`` is the sum of ``w``'s blocks at ``p`` (zero where the list never reads ``p``).

    Without a pre-norm, ``y = sum_i W_i x_{offsets[i]} = sum_p (sum_{i: offsets[i] = p}
    W_i) x_p``: the same linear map, exact in exact arithmetic (in floating point the
    repeated blocks' products are added in another order). **With a pre-norm it is not
    the same function**: LayerNorm's mean and variance over the ``K*C`` entries count a
    repeated slice twice and a missing one never, while any merge of the distinct
    offsets normalises over each voxel once; no weight makes up for that
    (``tests/interop/test_library_adopt.py`` shows why).
    """
    if w.dim() != 2 or w.shape[1] % len(offsets):
        raise ValueError(f"w must be [O, K*C] for the {len(offsets)} offsets, got {tuple(w.shape)}")
    c = w.shape[1] // len(offsets)
    want = window.offsets()
    outside = [tuple(o) for o in offsets if tuple(o) not in want]
    if outside:
        raise ValueError(f"offsets {outside} lie outside the window {window}")
    rank: dict[Offset, int] = {o: i for i, o in enumerate(want)}
    row_major = torch.zeros(w.shape[0], window.size * c, dtype=w.dtype, device=w.device)
    for i, off in enumerate(offsets):
        p = rank[tuple(off)]
        row_major[:, p * c : (p + 1) * c] += w[:, i * c : (i + 1) * c]
    return convert_window_layout(row_major, window, "row-major", layout)


__all__ = ["convert_state_dict", "fold_offsets", "merge_prefixes"]
