"""Checkpoints: re-order every patch merge's weights in a state dict between layouts.

:func:`convert_state_dict` permutes every patch-merging reduction weight and 4C norm
vector in a state dict between the ``"swin"`` layout (Microsoft, timm, torchvision, HF),
the ``"unfold"`` layout (mmcv / mmseg / mmdet) and the ``"conv"`` layout
(:class:`pm_core.ConvPatchMerging`). Keys are not renamed. Every step is a permutation,
so round trips are bit-exact.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping

from torch import Tensor

from .layouts import LAYOUTS, Layout, conv_to_linear, linear_to_conv, swin_to_unfold, unfold_to_swin


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


def convert_state_dict(sd: Mapping[str, Tensor], src: Layout, dst: Layout) -> dict[str, Tensor]:
    """Re-order every patch merge's weights in ``sd`` from layout ``src`` to ``dst``.

    Layouts: ``"swin"`` (Microsoft, timm, torchvision, HF: column ``(2*dw + dh)*C + c``),
    ``"unfold"`` (mmcv/mmseg/mmdet ``nn.Unfold``: column ``4*c + 2*dh + dw``) and ``"conv"``
    (:class:`pm_core.ConvPatchMerging`: ``reduction.weight`` is ``[O, C, 2, 2]``, its 4C norm
    stays in the swin order). For each prefix from :func:`merge_prefixes`:

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
    """
    for arg, layout in (("src", src), ("dst", dst)):
        if layout not in LAYOUTS:
            raise ValueError(f"{arg} must be one of {LAYOUTS}, got {layout!r}")
    if not isinstance(sd, Mapping):
        raise TypeError(f"sd must be a state dict (a Mapping), got {type(sd).__name__}")
    out: OrderedDict[str, Tensor] = OrderedDict(sd)
    meta = getattr(sd, "_metadata", None)
    if meta is not None:
        out._metadata = copy.copy(meta)  # type: ignore[attr-defined]
    if src == dst:
        return out
    for p in merge_prefixes(sd, src):
        w = sd[p + "reduction.weight"]
        o, four_c = (w.shape[0], 4 * w.shape[1]) if src == "conv" else tuple(w.shape)
        for key in (p + "norm.weight", p + "norm.bias"):
            v = sd.get(key)
            if v is None or v.dim() != 1 or v.shape[0] != four_c:
                continue
            if o == four_c:
                raise ValueError(
                    f"{key} has {four_c} entries and {p}reduction.weight is [{o}, {four_c}]: "
                    "a pre-norm (permute) and a post-norm (keep) look the same; convert this "
                    "merge by hand with pm_core.swin_to_unfold / unfold_to_swin"
                )
            out[key] = _permute_norm(v, src, dst)
        out[p + "reduction.weight"] = _permute_weight(w, src, dst)
    return out


__all__ = ["convert_state_dict", "merge_prefixes"]
