"""Gathers and expands of the libraries that ship the space-to-depth family, reproduced.

Each function below is written from that library's published source (named in its
docstring), keeping its indexing statements as they are, so the tests can check that
a named :data:`pm_core.window_layouts.WINDOW_LAYOUTS` entry is the order the library really uses. Only
the gather (and, for Swin-Unet, the module) is reproduced; norms and projections are
the plain ``nn.LayerNorm`` / ``nn.Linear`` every one of them uses. None of these
libraries is imported: MONAI, ultralytics, Video Swin and Swin-Unet are not
dependencies of the suite (timm is, and ``tests/test_layouts.py`` also checks its
real ``SpaceToDepth`` where it is installed).

The module classes at the end (MONAI's merges, ultralytics' ``Conv`` and ``Focus``) are
copied from the wheels' sources (``monai/networks/nets/swin_unetr.py`` of monai 1.4.0
and 1.6.1, ``ultralytics/nn/modules/conv.py`` of ultralytics 8.4.190) with their
forwards as they are. :func:`as_library_class` gives each the module path and qualname
of the class it reproduces, so ``pm_core.from_module`` recognises it as it would the
real one (pm_core recognises by class path, and then probes the behaviour).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def swin_gather(x: Tensor) -> Tensor:
    """Microsoft Swin ``PatchMerging.forward`` (``models/swin_transformer.py``), on
    ``(B, H, W, C)`` with even H, W: ``(B, H/2, W/2, 4C)``."""
    x0 = x[:, 0::2, 0::2, :]  # B H/2 W/2 C
    x1 = x[:, 1::2, 0::2, :]  # B H/2 W/2 C
    x2 = x[:, 0::2, 1::2, :]  # B H/2 W/2 C
    x3 = x[:, 1::2, 1::2, :]  # B H/2 W/2 C
    return torch.cat([x0, x1, x2, x3], -1)  # B H/2 W/2 4*C


def video_swin_gather(x: Tensor) -> Tensor:
    """Video Swin ``PatchMerging.forward`` (``mmaction/models/backbones/swin_transformer.py``
    of SwinTransformer/Video-Swin-Transformer): ``(B, D, H, W, C)``, H and W zero-padded
    to even at the bottom/right, D untouched: ``(B, D, H/2, W/2, 4C)``."""
    _, _, h, w, _ = x.shape
    pad_input = (h % 2 == 1) or (w % 2 == 1)
    if pad_input:
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    x0 = x[:, :, 0::2, 0::2, :]  # B D H/2 W/2 C
    x1 = x[:, :, 1::2, 0::2, :]  # B D H/2 W/2 C
    x2 = x[:, :, 0::2, 1::2, :]  # B D H/2 W/2 C
    x3 = x[:, :, 1::2, 1::2, :]  # B D H/2 W/2 C
    return torch.cat([x0, x1, x2, x3], -1)  # B D H/2 W/2 4*C


def monai_v2_gather(x: Tensor) -> Tensor:
    """MONAI ``PatchMergingV2.forward`` (``monai/networks/nets/swin_unetr.py``): 3-D
    ``(B, D, H, W, C)`` or 2-D ``(B, H, W, C)``, odd sizes zero-padded at the end."""
    x_shape = x.size()
    if len(x_shape) == 5:
        _, d, h, w, _ = x_shape
        pad_input = (h % 2 == 1) or (w % 2 == 1) or (d % 2 == 1)
        if pad_input:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        return torch.cat(
            [
                x[:, i::2, j::2, k::2, :]
                for i, j, k in itertools.product(range(2), range(2), range(2))
            ],
            -1,
        )
    _, h, w, _ = x_shape
    pad_input = (h % 2 == 1) or (w % 2 == 1)
    if pad_input:
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    return torch.cat([x[:, j::2, i::2, :] for i, j in itertools.product(range(2), range(2))], -1)


def _monai_legacy_pad(x: Tensor) -> Tensor:
    _, d, h, w, _ = x.shape
    pad_input = (h % 2 == 1) or (w % 2 == 1) or (d % 2 == 1)
    if pad_input:
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
    return x


def monai_legacy_gather(x: Tensor) -> Tensor:
    """MONAI ``PatchMerging.forward`` (3-D), 1.5.0 and later (PR #8285)."""
    x = _monai_legacy_pad(x)
    x0 = x[:, 0::2, 0::2, 0::2, :]
    x1 = x[:, 1::2, 0::2, 0::2, :]
    x2 = x[:, 0::2, 1::2, 0::2, :]
    x3 = x[:, 0::2, 0::2, 1::2, :]
    x4 = x[:, 1::2, 1::2, 0::2, :]
    x5 = x[:, 1::2, 0::2, 1::2, :]
    x6 = x[:, 0::2, 1::2, 1::2, :]
    x7 = x[:, 1::2, 1::2, 1::2, :]
    return torch.cat([x0, x1, x2, x3, x4, x5, x6, x7], -1)


def monai_legacy_gather_1_4(x: Tensor) -> Tensor:
    """MONAI ``PatchMerging.forward`` (3-D), 1.4.0 and earlier (MONAI issue #4757): ``x5``
    repeats ``x2``'s slice and ``x6`` repeats ``x3``'s."""
    x = _monai_legacy_pad(x)
    x0 = x[:, 0::2, 0::2, 0::2, :]
    x1 = x[:, 1::2, 0::2, 0::2, :]
    x2 = x[:, 0::2, 1::2, 0::2, :]
    x3 = x[:, 0::2, 0::2, 1::2, :]
    x4 = x[:, 1::2, 0::2, 1::2, :]
    x5 = x[:, 0::2, 1::2, 0::2, :]
    x6 = x[:, 0::2, 0::2, 1::2, :]
    x7 = x[:, 1::2, 1::2, 1::2, :]
    return torch.cat([x0, x1, x2, x3, x4, x5, x6, x7], -1)


#: The ``(d, h, w)`` offsets of ``monai_legacy_gather_1_4``'s slices ``x0 .. x7``.
MONAI_1_4_OFFSETS = (
    (0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1),
)  # fmt: skip


def focus_gather(x: Tensor) -> Tensor:
    """YOLOv5 / ultralytics ``Focus.forward`` without its conv, on NCHW:
    ``(B, C, H, W)`` -> ``(B, 4C, H/2, W/2)``."""
    return torch.cat(
        (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1
    )


def timm_space_to_depth(x: Tensor, bs: int = 4) -> Tensor:
    """timm ``SpaceToDepth.forward`` (``timm/layers/space_to_depth.py``, TResNet), on NCHW;
    timm asserts ``bs == 4``, the order is the same for any block size."""
    n, c, h, w = x.size()
    x = x.view(n, c, h // bs, bs, w // bs, bs)  # (N, C, H//bs, bs, W//bs, bs)
    x = x.permute(0, 3, 5, 1, 2, 4).contiguous()  # (N, bs, bs, C, H//bs, W//bs)
    return x.view(n, c * bs * bs, h // bs, w // bs)  # (N, C*bs^2, H//bs, W//bs)


def rearrange_b_h_w_p1p2c(x: Tensor, p1: int, p2: int, c: int) -> Tensor:
    """einops ``rearrange(x, 'b h w (p1 p2 c)-> b (h p1) (w p2) c')``, written out: the
    grouped axis splits p1-major, then p2, then c; ``(h p1)`` puts p1 inside h."""
    b, h, w, _ = x.shape
    return x.view(b, h, w, p1, p2, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h * p1, w * p2, c)


class SwinUnetPatchExpand(nn.Module):
    """Swin-Unet ``PatchExpand`` (``networks/swin_transformer_unet_skip_expand_decoder_sys.py``
    of HuCaoFighting/Swin-Unet), with its ``einops.rearrange`` written out by
    :func:`rearrange_b_h_w_p1p2c` (einops is not a dependency here)."""

    def __init__(
        self,
        input_resolution: tuple[int, int],
        dim: int,
        dim_scale: int = 2,
        norm_layer: type[nn.LayerNorm] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.dim = dim
        self.expand: nn.Module = (
            nn.Linear(dim, 2 * dim, bias=False) if dim_scale == 2 else nn.Identity()
        )
        self.norm: nn.Module = norm_layer(dim // dim_scale)

    def forward(self, x: Tensor) -> Tensor:
        """x: B, H*W, C"""
        h, w = self.input_resolution
        x = self.expand(x)
        b, length, c = x.shape
        assert length == h * w, "input feature has wrong size"

        x = x.view(b, h, w, c)
        x = rearrange_b_h_w_p1p2c(x, p1=2, p2=2, c=c // 4)
        x = x.view(b, -1, c // 4)
        out: Tensor = self.norm(x)
        return out


_C = TypeVar("_C", bound=type)


def as_library_class(module: str, qualname: str) -> Callable[[_C], _C]:
    """Give a reproduced class its library's ``__module__`` and ``__qualname__``."""

    def wrap(cls: _C) -> _C:
        cls.__module__, cls.__qualname__ = module, qualname
        return cls

    return wrap


MONAI_MODULE = "monai.networks.nets.swin_unetr"


@as_library_class(MONAI_MODULE, "PatchMergingV2")
class MonaiPatchMergingV2(nn.Module):
    """MONAI ``PatchMergingV2`` (identical in 1.4.0 and 1.6.1), ``norm_layer`` a class."""

    def __init__(
        self, dim: int, norm_layer: type[nn.LayerNorm] = nn.LayerNorm, spatial_dims: int = 3
    ) -> None:
        super().__init__()
        self.dim = dim
        if spatial_dims == 3:
            self.reduction = nn.Linear(8 * dim, 2 * dim, bias=False)
            self.norm = norm_layer(8 * dim)
        elif spatial_dims == 2:
            self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
            self.norm = norm_layer(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        x = monai_v2_gather(x)  # the forward's gather, verbatim above
        x = self.norm(x)
        out: Tensor = self.reduction(x)
        return out


@as_library_class(MONAI_MODULE, "PatchMerging")
class MonaiPatchMerging(MonaiPatchMergingV2):
    """MONAI ``PatchMerging`` (legacy), 1.5.0 and later: 2-D is V2's forward."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return super().forward(x)
        if x.dim() != 5:
            raise ValueError(f"expecting 5D x, got {x.shape}.")
        out: Tensor = self.reduction(self.norm(monai_legacy_gather(x)))
        return out


@as_library_class(MONAI_MODULE, "PatchMerging")
class MonaiPatchMerging14(MonaiPatchMergingV2):
    """MONAI ``PatchMerging`` (legacy), 1.4.0 and earlier: ``x5``/``x6`` repeat ``x2``/``x3``."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return super().forward(x)
        if x.dim() != 5:
            raise ValueError(f"expecting 5D x, got {x.shape}.")
        out: Tensor = self.reduction(self.norm(monai_legacy_gather_1_4(x)))
        return out


def autopad(k: Any, p: Any = None, d: int = 1) -> Any:  # kernel, padding, dilation
    """ultralytics ``autopad``: pad to 'same' shape outputs."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]  # auto-pad
    return p


@as_library_class("ultralytics.nn.modules.conv", "Conv")
class UltralyticsConv(nn.Module):
    """ultralytics ``Conv``: conv, batch norm, activation (SiLU by default)."""

    default_act = nn.SiLU()

    def __init__(
        self, c1: int, c2: int, k: Any = 1, s: Any = 1, p: Any = None, g: int = 1, d: int = 1,
        act: bool | nn.Module = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = (
            self.default_act
            if act is True
            else act
            if isinstance(act, nn.Module)
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.act(self.bn(self.conv(x)))
        return out


@as_library_class("ultralytics.nn.modules.conv", "Focus")
class UltralyticsFocus(nn.Module):
    """ultralytics ``Focus``: the 2x2 gather of :func:`focus_gather`, then ``Conv``."""

    def __init__(
        self, c1: int, c2: int, k: Any = 1, s: Any = 1, p: Any = None, g: int = 1,
        act: bool | nn.Module = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.conv = UltralyticsConv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(
            torch.cat(
                (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1
            )
        )
        return out


__all__ = [
    "MONAI_1_4_OFFSETS",
    "MONAI_MODULE",
    "MonaiPatchMerging",
    "MonaiPatchMerging14",
    "MonaiPatchMergingV2",
    "SwinUnetPatchExpand",
    "UltralyticsConv",
    "UltralyticsFocus",
    "as_library_class",
    "autopad",
    "focus_gather",
    "monai_legacy_gather",
    "monai_legacy_gather_1_4",
    "monai_v2_gather",
    "rearrange_b_h_w_p1p2c",
    "swin_gather",
    "timm_space_to_depth",
    "video_swin_gather",
]
