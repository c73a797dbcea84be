"""``nn.Module`` forms: linear-parameterised (loads Swin weights as-is) and conv-parameterised."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor, nn

from ._checks import Norm, Odd, check_dim, check_options
from .functional import patch_merge
from .impls import check_impl
from .layouts import conv_to_linear, linear_to_conv


def _make_norm(norm: Norm, dim: int, out_dim: int, eps: float, **dd: object) -> nn.Module:
    if norm == "pre":
        return nn.LayerNorm(4 * dim, eps=eps, **dd)  # type: ignore[arg-type]
    if norm == "post":
        return nn.LayerNorm(out_dim, eps=eps, **dd)  # type: ignore[arg-type]
    return nn.Identity()


_M = TypeVar("_M", bound="_Base")


class _Base(nn.Module):
    norm: nn.Module
    reduction: nn.Linear | nn.Conv2d

    def __init__(self, dim: int, out_dim: int | None, norm: Norm, impl: str, odd: Odd, eps: float):
        super().__init__()
        check_options(norm, odd, eps)
        check_impl(impl)
        check_dim(dim)
        self.dim = dim
        self.out_dim = 2 * dim if out_dim is None else out_dim
        self.norm_mode: Norm = norm
        self.impl = impl
        self.odd: Odd = odd

    def _weight(self) -> Tensor:
        raise NotImplementedError

    def _copy_as(self, cls: Callable[..., _M], reduction_weight: Tensor) -> _M:
        """The other parameterisation with the same options, norm and (converted) weight."""
        m = cls(
            self.dim, out_dim=self.out_dim, norm=self.norm_mode, impl=self.impl, odd=self.odd,
            device=reduction_weight.device, dtype=reduction_weight.dtype,
        )  # fmt: skip
        m.norm.load_state_dict(self.norm.state_dict())
        with torch.no_grad():
            m.reduction.weight.copy_(reduction_weight)
        return m

    def forward(self, x: Tensor, hw: tuple[int, int] | None = None) -> Tensor:
        """``x``: ``(B, H, W, C)``, or ``(B, L, C)`` with ``hw=(H, W)``; see :func:`pm_core.patch_merge`."""
        norm = self.norm if isinstance(self.norm, nn.LayerNorm) else None
        return patch_merge(
            x,
            self._weight(),
            None if norm is None else norm.weight,
            None if norm is None else norm.bias,
            hw=hw,
            norm=self.norm_mode,
            eps=1e-5 if norm is None else norm.eps,
            impl=self.impl,
            odd=self.odd,
        )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, out_dim={self.out_dim}, norm={self.norm_mode!r}, impl={self.impl!r}, odd={self.odd!r}"


class PatchMerging(_Base):
    """Swin patch merging with a ``.reduction`` ``nn.Linear(4*dim, out_dim, bias=False)``.

    ``.norm`` is ``LayerNorm(4*dim)`` for ``norm="pre"`` (Swin v1), ``LayerNorm(out_dim)``
    for ``"post"`` (Swin v2), ``Identity`` for ``"none"``, so the ``state_dict`` keys and
    layouts are those of Microsoft Swin, timm, torchvision and HF transformers.

    >>> m = PatchMerging(8, impl="conv")
    >>> m(torch.randn(2, 6, 6, 8)).shape
    torch.Size([2, 3, 3, 16])
    """

    def __init__(
        self,
        dim: int,
        *,
        out_dim: int | None = None,
        norm: Norm = "pre",
        impl: str = "slice",
        odd: Odd = "pad",
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(dim, out_dim, norm, impl, odd, eps)
        self.norm = _make_norm(norm, dim, self.out_dim, eps, device=device, dtype=dtype)
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False, device=device, dtype=dtype)

    def _weight(self) -> Tensor:
        return self.reduction.weight

    def to_conv(self) -> ConvPatchMerging:
        """A :class:`ConvPatchMerging` computing the same function (weights copied, not shared)."""
        return self._copy_as(ConvPatchMerging, linear_to_conv(self.reduction.weight))


class ConvPatchMerging(_Base):
    """Patch merging whose ``.reduction`` is ``nn.Conv2d(dim, out_dim, 2, stride=2, bias=False)``.

    Its weight ``[O, C, 2, 2]`` is :func:`pm_core.layouts.linear_to_conv` of the swin ``[O, 4C]``;
    ``.norm`` is as in :class:`PatchMerging`. The conversion both ways is a permutation,
    so it is lossless.
    """

    def __init__(
        self,
        dim: int,
        *,
        out_dim: int | None = None,
        norm: Norm = "pre",
        impl: str = "conv",
        odd: Odd = "pad",
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(dim, out_dim, norm, impl, odd, eps)
        self.norm = _make_norm(norm, dim, self.out_dim, eps, device=device, dtype=dtype)
        self.reduction = nn.Conv2d(
            dim, self.out_dim, 2, stride=2, bias=False, device=device, dtype=dtype
        )

    def _weight(self) -> Tensor:
        return conv_to_linear(self.reduction.weight)

    def to_linear(self) -> PatchMerging:
        """A :class:`PatchMerging` computing the same function (weights copied, not shared)."""
        return self._copy_as(PatchMerging, conv_to_linear(self.reduction.weight))


__all__ = ["ConvPatchMerging", "PatchMerging"]
