"""``nn.Module`` forms of the merge: one base, linear- or conv-parameterised, and Swin's presets.

:class:`WindowMerging` (a ``.reduction`` ``nn.Linear``) and :class:`ConvWindowMerging`
(an ``nn.Conv2d`` / ``nn.Conv3d``) compute :func:`pm_core.window_merge` over any window.
Swin's 2x2 merge is their preset over :data:`~pm_core.oracle.SWIN_WINDOW`:
:class:`PatchMerging` and :class:`ConvPatchMerging` (and the mmcv-ordered
:class:`~pm_core.UnfoldPatchMerging`) fix the window and layout and take Swin's calling
conventions (``forward(x, hw=None)``, the odd-size policy) through
:func:`pm_core.patch_merge`. Every form keeps the ``state_dict`` keys of the libraries it
stands in for: ``norm.weight``, ``norm.bias``, ``reduction.weight``.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from ._checks import Norm, Odd, check_dim, check_options, check_window
from .functional import patch_merge, window_merge
from .impls import check_impl
from .layouts import conv_to_window, convert_window_layout, window_to_conv
from .window import SWIN_WINDOW, Window
from .window_gather import space_to_depth
from .window_layouts import WindowLayout, window_layout

_M = TypeVar("_M", bound="_WindowBase")


class _WindowBase(nn.Module):
    norm: nn.Module
    reduction: nn.Linear | nn.Conv2d | nn.Conv3d
    #: the class :meth:`to_conv` / :meth:`to_linear` build
    _twin: type[_WindowBase]

    #: the impl the module runs when ``impl`` is not given
    default_impl: ClassVar[str]

    def __init__(
        self,
        dim: int,
        window: Window,
        *,
        out_dim: int | None = None,
        norm: Norm = "pre",
        layout: str | WindowLayout = "swin",
        impl: str | None = None,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        impl = self.default_impl if impl is None else impl
        check_options(norm, "pad", eps)
        check_dim(dim)
        self.window = check_window(window)
        self.layout = window_layout(layout, self.window)
        check_impl(impl, self.window, self.layout)
        self.dim = dim
        self.out_dim = 2 * dim if out_dim is None else out_dim
        check_dim(self.out_dim)
        self.norm_mode: Norm = norm
        self.impl = impl
        self.norm = self._make_norm(eps, device=device, dtype=dtype)
        self.reduction = self._make_reduction(device=device, dtype=dtype)

    def _make_reduction(self, **dd: Any) -> nn.Linear | nn.Conv2d | nn.Conv3d:
        """The ``.reduction`` module, its weight fresh."""
        raise NotImplementedError

    def _make_norm(self, eps: float, **dd: Any) -> nn.Module:
        n = self.window.size * self.dim
        if self.norm_mode == "none":
            return nn.Identity()
        size = n if self.norm_mode == "pre" else self.out_dim
        return nn.LayerNorm(size, eps=eps, **dd)

    def _weight(self) -> Tensor:
        """The reduction's weight as the layout's ``(O, n)``."""
        raise NotImplementedError

    @classmethod
    def _like(cls: type[_M], m: _WindowBase, layout: WindowLayout, **dd: Any) -> _M:
        """A module of this class with ``m``'s options in ``layout`` (fresh parameters)."""
        return cls(
            m.dim, m.window, out_dim=m.out_dim, norm=m.norm_mode, layout=layout, impl=m.impl,
            **dd,
        )  # fmt: skip

    def _copy_as(
        self, cls: type[_M], weight: Tensor, layout: WindowLayout, norm_vectors: bool
    ) -> _M:
        """A module of type ``cls`` with the same options and norm, and ``weight`` (copied)."""
        m = cls._like(self, layout, device=weight.device, dtype=weight.dtype)
        sd = self.norm.state_dict()
        if norm_vectors and self.norm_mode == "pre":  # the n-vectors follow the layout
            sd = {
                k: convert_window_layout(v, self.window, self.layout, layout) for k, v in sd.items()
            }
        m.norm.load_state_dict(sd)
        with torch.no_grad():
            m.reduction.weight.copy_(weight)
        return m

    def _as_twin(self, kind: type[_M], weight: Tensor) -> _M:
        """The other parameterisation of this module (``kind``: its base class), holding
        ``weight`` in that form, in the same layout."""
        twin = self._twin
        assert issubclass(twin, kind)
        return self._copy_as(twin, weight, self.layout, norm_vectors=False)

    def _norm_args(self, x: Tensor) -> tuple[Tensor | None, Tensor | None, float]:
        """The LayerNorm's ``(weight, bias, eps)`` for a call on ``x``, whose channels are checked."""
        arg: object = x  # anything else is named by the front door's check
        if isinstance(arg, Tensor) and arg.dim() >= 1 and arg.shape[-1] != self.dim:
            raise ValueError(
                f"x has C={arg.shape[-1]} channels but this merge has dim={self.dim}: "
                f"x is {tuple(arg.shape)}, channels last"
            )
        ln = self.norm if isinstance(self.norm, nn.LayerNorm) else None
        return (None, None, 1e-5) if ln is None else (ln.weight, ln.bias, ln.eps)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, *S, dim)`` -> ``(B, *S', out_dim)``; see :func:`pm_core.window_merge`."""
        nw, nb, eps = self._norm_args(x)
        return window_merge(
            x, self._weight(), nw, nb, window=self.window, layout=self.layout,
            norm=self.norm_mode, eps=eps, impl=self.impl,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, out_dim={self.out_dim}, {self.window}, layout={self.layout.name!r}, "
            f"norm={self.norm_mode!r}, impl={self.impl!r}"
        )


class WindowMerging(_WindowBase):
    """A general merge with a ``.reduction`` ``nn.Linear(prod(kernel)*dim, out_dim, bias=False)``.

    ``.norm`` is ``LayerNorm(prod(kernel)*dim)`` for ``norm="pre"``, ``LayerNorm(out_dim)``
    for ``"post"``, ``Identity`` for ``"none"``; the reduction's columns (and a pre-norm's
    vectors) are in ``layout``. ``out_dim`` defaults to ``2*dim``, ``impl`` to ``"gather"``.

    >>> m = WindowMerging(4, Window((2, 2, 2), padding="corner"), layout="monai-v2-3d")
    >>> m(torch.randn(2, 5, 6, 6, 4)).shape
    torch.Size([2, 3, 3, 3, 8])
    """

    default_impl = "gather"

    def _make_reduction(self, **dd: Any) -> nn.Linear:
        return nn.Linear(self.window.size * self.dim, self.out_dim, bias=False, **dd)

    def _weight(self) -> Tensor:
        return self.reduction.weight

    def to_conv(self) -> ConvWindowMerging:
        """The conv-parameterised form computing the same function (weights copied):
        a :class:`ConvWindowMerging`, or a :class:`ConvPatchMerging` for a :class:`PatchMerging`."""
        wc = window_to_conv(self.reduction.weight.detach(), self.window, self.layout)
        return self._as_twin(ConvWindowMerging, wc)

    def with_layout(self, layout: str | WindowLayout) -> WindowMerging:
        """A :class:`WindowMerging` of the same function with its weights (and pre-norm
        vectors) reordered to ``layout``."""
        lay = window_layout(layout, self.window)
        w = convert_window_layout(self.reduction.weight.detach(), self.window, self.layout, lay)
        return self._copy_as(WindowMerging, w, lay, norm_vectors=True)


class ConvWindowMerging(_WindowBase):
    """A general merge whose ``.reduction`` is ``nn.Conv2d`` / ``nn.Conv3d(dim, out_dim, kernel,
    stride, dilation=..., bias=False)``.

    Its weight ``[O, C, *kernel]`` is :func:`pm_core.layouts.window_to_conv` of the layout's
    ``[O, n]``. The conv's own ``padding`` is the window's where that is symmetric, so
    ``.reduction`` applied to an NCHW / NCDHW input alone is the merge without its norm;
    asymmetric and adaptive padding are applied by ``forward``. A pre-norm's
    ``(n,)`` vectors stay in ``layout``. ``impl`` defaults to ``"conv"``.
    """

    default_impl = "conv"

    def _make_reduction(self, **dd: Any) -> nn.Conv2d | nn.Conv3d:
        pads = self.window.padding
        sym = not isinstance(pads, str) and all(b == a for b, a in pads)
        padding = tuple(b for b, _ in pads) if sym and not isinstance(pads, str) else 0
        conv = nn.Conv2d if self.window.dims == 2 else nn.Conv3d
        return conv(
            self.dim, self.out_dim, self.window.kernel, stride=self.window.stride,  # type: ignore[arg-type]
            padding=padding, dilation=self.window.dilation, bias=False, **dd,  # type: ignore[arg-type]
        )  # fmt: skip

    def _weight(self) -> Tensor:
        return conv_to_window(self.reduction.weight, self.window, self.layout)

    def to_linear(self) -> WindowMerging:
        """The linear-parameterised form computing the same function (weights copied):
        a :class:`WindowMerging`, or a :class:`PatchMerging` for a :class:`ConvPatchMerging`."""
        w = conv_to_window(self.reduction.weight.detach(), self.window, self.layout)
        return self._as_twin(WindowMerging, w)


class _SwinPreset(_WindowBase):
    """Swin's 2x2 merge as a preset: :data:`~pm_core.oracle.SWIN_WINDOW` in a fixed layout,
    Swin's calling conventions, and an odd-size policy."""

    odd: Odd
    #: the layout of the preset's weights
    preset_layout: ClassVar[str] = "swin"

    def __init__(
        self,
        dim: int,
        *,
        out_dim: int | None = None,
        norm: Norm = "pre",
        impl: str | None = None,
        odd: Odd = "pad",
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        check_options(norm, odd, eps)
        self._check_preset_norm(norm)
        super().__init__(
            dim, SWIN_WINDOW, out_dim=out_dim, norm=norm, layout=self.preset_layout, impl=impl,
            eps=eps, device=device, dtype=dtype,
        )  # fmt: skip
        self.odd = odd

    def _check_preset_norm(self, norm: Norm) -> None:
        """Raise ``ValueError`` for a norm this preset does not offer (every preset but one
        offers all three)."""

    @classmethod
    def _like(cls: type[_M], m: _WindowBase, layout: WindowLayout, **dd: Any) -> _M:
        odd = m.odd if isinstance(m, _SwinPreset) else "pad"
        preset: Any = cls  # a preset's constructor: no window or layout, an odd-size policy
        out: _M = preset(m.dim, out_dim=m.out_dim, norm=m.norm_mode, impl=m.impl, odd=odd, **dd)
        return out

    def forward(self, x: Tensor, hw: tuple[int, int] | None = None) -> Tensor:
        """``x``: ``(B, H, W, C)``, or ``(B, L, C)`` with ``hw=(H, W)``; see :func:`pm_core.patch_merge`."""
        nw, nb, eps = self._norm_args(x)
        return patch_merge(
            x, self._weight(), nw, nb, hw=hw, norm=self.norm_mode, eps=eps, impl=self.impl,
            odd=self.odd, layout=self.layout,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, out_dim={self.out_dim}, norm={self.norm_mode!r}, "
            f"impl={self.impl!r}, odd={self.odd!r}"
        )


class PatchMerging(_SwinPreset, WindowMerging):
    """Swin patch merging with a ``.reduction`` ``nn.Linear(4*dim, out_dim, bias=False)``.

    A :class:`WindowMerging` over :data:`~pm_core.oracle.SWIN_WINDOW` in the swin layout.
    ``.norm`` is ``LayerNorm(4*dim)`` for ``norm="pre"`` (Swin v1), ``LayerNorm(out_dim)``
    for ``"post"`` (Swin v2), ``Identity`` for ``"none"``, so the ``state_dict`` keys and
    layouts are those of Microsoft Swin, timm, torchvision and HF transformers. ``impl``
    defaults to ``"slice"``.

    >>> m = PatchMerging(8, impl="conv")
    >>> m(torch.randn(2, 6, 6, 8)).shape
    torch.Size([2, 3, 3, 16])
    """

    default_impl = "slice"

    def to_conv(self) -> ConvPatchMerging:
        """A :class:`ConvPatchMerging` computing the same function (weights copied, not shared)."""
        out = super().to_conv()
        assert isinstance(out, ConvPatchMerging)
        return out


class ConvPatchMerging(_SwinPreset, ConvWindowMerging):
    """Patch merging whose ``.reduction`` is ``nn.Conv2d(dim, out_dim, 2, stride=2, bias=False)``.

    A :class:`ConvWindowMerging` over :data:`~pm_core.oracle.SWIN_WINDOW` in the swin
    layout. Its weight ``[O, C, 2, 2]`` is :func:`pm_core.layouts.linear_to_conv` of the
    swin ``[O, 4C]``; ``.norm`` is as in :class:`PatchMerging`. The conversion both ways
    is a permutation, so it is lossless. ``impl`` defaults to ``"conv"``.
    """

    default_impl = "conv"

    def to_linear(self) -> PatchMerging:
        """A :class:`PatchMerging` computing the same function (weights copied, not shared)."""
        out = super().to_linear()
        assert isinstance(out, PatchMerging)
        return out


WindowMerging._twin = ConvWindowMerging
ConvWindowMerging._twin = WindowMerging
PatchMerging._twin = ConvPatchMerging
ConvPatchMerging._twin = PatchMerging


class SpaceToDepth(nn.Module):
    """The gather alone (:func:`pm_core.space_to_depth`) as a module; no parameters.

    ``forward``: ``(B, *S, C)`` -> ``(B, *S', prod(kernel)*C)`` in ``layout``, or with
    ``channels_first=True`` ``(B, C, *S)`` -> ``(B, prod(kernel)*C, *S')`` (timm's
    ``SpaceToDepth`` and YOLO's convention; the result is then a channels-first view of
    the gathered channels-last tensor). Exact in every dtype: it only moves data.

    >>> SpaceToDepth(Window((4, 4)), "timm-s2d", channels_first=True)(torch.randn(1, 3, 8, 8)).shape
    torch.Size([1, 48, 2, 2])
    """

    def __init__(
        self, window: Window, layout: str | WindowLayout = "swin", *, channels_first: bool = False
    ) -> None:
        super().__init__()
        self.window = check_window(window)
        self.layout = window_layout(layout, self.window)
        self.channels_first = channels_first

    def forward(self, x: Tensor) -> Tensor:
        """See the class docstring for the shapes."""
        if not self.channels_first:
            return space_to_depth(x, self.window, self.layout)
        return space_to_depth(x.movedim(1, -1), self.window, self.layout).movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"{self.window}, layout={self.layout.name!r}, channels_first={self.channels_first}"


__all__ = [
    "ConvPatchMerging",
    "ConvWindowMerging",
    "PatchMerging",
    "SpaceToDepth",
    "WindowMerging",
]
