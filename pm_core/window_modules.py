"""``nn.Module`` forms of the general merge: linear-parameterised and conv-parameterised."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor, nn

from ._checks import Norm, check_dim, check_options
from ._window_checks import check_window
from .functional import window_merge
from .impls import check_impl
from .window import Window
from .window_gather import space_to_depth
from .window_layouts import (
    WindowLayout,
    conv_to_window,
    convert_window_layout,
    window_layout,
    window_to_conv,
)

_M = TypeVar("_M", bound="_WindowBase")


class _WindowBase(nn.Module):
    norm: nn.Module
    reduction: nn.Linear | nn.Conv2d | nn.Conv3d

    def __init__(
        self, dim: int, window: Window, out_dim: int | None, norm: Norm,
        layout: str | WindowLayout, impl: str, eps: float,
    ) -> None:  # fmt: skip
        super().__init__()
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

    def _make_norm(self, eps: float, **dd: object) -> nn.Module:
        n = self.window.size * self.dim
        if self.norm_mode == "none":
            return nn.Identity()
        size = n if self.norm_mode == "pre" else self.out_dim
        return nn.LayerNorm(size, eps=eps, **dd)  # type: ignore[arg-type]

    def _weight(self) -> Tensor:
        raise NotImplementedError

    def _copy_as(
        self, cls: Callable[..., _M], weight: Tensor, layout: WindowLayout, norm_vectors: bool
    ) -> _M:
        """A module of type ``cls`` with the same options and norm, and ``weight`` (copied)."""
        m = cls(
            self.dim, self.window, out_dim=self.out_dim, norm=self.norm_mode, layout=layout,
            impl=self.impl, device=weight.device, dtype=weight.dtype,
        )  # fmt: skip
        sd = self.norm.state_dict()
        if norm_vectors and self.norm_mode == "pre":  # the n-vectors follow the layout
            sd = {
                k: convert_window_layout(v, self.window, self.layout, layout) for k, v in sd.items()
            }
        m.norm.load_state_dict(sd)
        with torch.no_grad():
            m.reduction.weight.copy_(weight)
        return m

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, *S, dim)`` -> ``(B, *S', out_dim)``; see :func:`pm_core.window_merge`."""
        ln = self.norm if isinstance(self.norm, nn.LayerNorm) else None
        return window_merge(
            x,
            self._weight(),
            None if ln is None else ln.weight,
            None if ln is None else ln.bias,
            window=self.window,
            layout=self.layout,
            norm=self.norm_mode,
            eps=1e-5 if ln is None else ln.eps,
            impl=self.impl,
        )

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, out_dim={self.out_dim}, {self.window}, layout={self.layout.name!r}, "
            f"norm={self.norm_mode!r}, impl={self.impl!r}"
        )


class WindowMerging(_WindowBase):
    """A general merge with a ``.reduction`` ``nn.Linear(prod(kernel)*dim, out_dim, bias=False)``.

    ``.norm`` is ``LayerNorm(prod(kernel)*dim)`` for ``norm="pre"``, ``LayerNorm(out_dim)``
    for ``"post"``, ``Identity`` for ``"none"``; the reduction's columns (and a pre-norm's
    vectors) are in ``layout``. ``out_dim`` defaults to ``2*dim``.

    >>> m = WindowMerging(4, Window((2, 2, 2), padding="corner"), layout="monai-v2-3d")
    >>> m(torch.randn(2, 5, 6, 6, 4)).shape
    torch.Size([2, 3, 3, 3, 8])
    """

    def __init__(
        self,
        dim: int,
        window: Window,
        *,
        out_dim: int | None = None,
        norm: Norm = "pre",
        layout: str | WindowLayout = "swin",
        impl: str = "gather",
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, window, out_dim, norm, layout, impl, eps)
        self.norm = self._make_norm(eps, device=device, dtype=dtype)
        self.reduction = nn.Linear(
            self.window.size * dim, self.out_dim, bias=False, device=device, dtype=dtype
        )

    def _weight(self) -> Tensor:
        return self.reduction.weight

    def to_conv(self) -> ConvWindowMerging:
        """A :class:`ConvWindowMerging` computing the same function (weights copied)."""
        wc = window_to_conv(self.reduction.weight.detach(), self.window, self.layout)
        return self._copy_as(ConvWindowMerging, wc, self.layout, norm_vectors=False)

    def with_layout(self, layout: str | WindowLayout) -> WindowMerging:
        """The same function with its weights (and pre-norm vectors) reordered to ``layout``."""
        lay = window_layout(layout, self.window)
        w = convert_window_layout(self.reduction.weight.detach(), self.window, self.layout, lay)
        return self._copy_as(WindowMerging, w, lay, norm_vectors=True)


class ConvWindowMerging(_WindowBase):
    """A general merge whose ``.reduction`` is ``nn.Conv2d`` / ``nn.Conv3d(dim, out_dim, kernel,
    stride, dilation=..., bias=False)``.

    Its weight ``[O, C, *kernel]`` is :func:`pm_core.window_layouts.window_to_conv` of the layout's
    ``[O, n]``. The conv's own ``padding`` is the window's where that is symmetric, so
    ``.reduction`` applied to an NCHW / NCDHW input alone is the merge without its norm;
    asymmetric and adaptive padding are applied by ``forward``. A pre-norm's
    ``(n,)`` vectors stay in ``layout``. ``impl`` defaults to ``"conv"``.
    """

    def __init__(
        self,
        dim: int,
        window: Window,
        *,
        out_dim: int | None = None,
        norm: Norm = "pre",
        layout: str | WindowLayout = "swin",
        impl: str = "conv",
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, window, out_dim, norm, layout, impl, eps)
        dd = {"device": device, "dtype": dtype}
        self.norm = self._make_norm(eps, **dd)
        pads = self.window.padding
        sym = not isinstance(pads, str) and all(b == a for b, a in pads)
        padding = tuple(b for b, _ in pads) if sym and not isinstance(pads, str) else 0
        conv = nn.Conv2d if self.window.dims == 2 else nn.Conv3d
        self.reduction = conv(
            dim, self.out_dim, self.window.kernel, stride=self.window.stride,  # type: ignore[arg-type]
            padding=padding, dilation=self.window.dilation, bias=False, **dd,  # type: ignore[arg-type]
        )  # fmt: skip

    def _weight(self) -> Tensor:
        return conv_to_window(self.reduction.weight, self.window, self.layout)

    def to_linear(self) -> WindowMerging:
        """A :class:`WindowMerging` computing the same function (weights copied)."""
        w = conv_to_window(self.reduction.weight.detach(), self.window, self.layout)
        return self._copy_as(WindowMerging, w, self.layout, norm_vectors=False)


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


__all__ = ["ConvWindowMerging", "SpaceToDepth", "WindowMerging"]
