"""``patch_merge``: one front door to every registered implementation."""

from __future__ import annotations

from torch import Tensor

from ._checks import Norm, Odd, check_call
from .impls import REGISTRY, get_impl, pad_to_even


def patch_merge(
    x: Tensor,
    reduction_weight: Tensor,
    norm_weight: Tensor | None = None,
    norm_bias: Tensor | None = None,
    *,
    hw: tuple[int, int] | None = None,
    norm: Norm = "pre",
    eps: float = 1e-5,
    impl: str = "slice",
    odd: Odd = "pad",
) -> Tensor:
    """Merge each 2x2 window of a feature map into one token: ``(B, H, W, C) -> (B, H', W', O)``.

    Args:
        x: ``(B, H, W, C)``, or ``(B, L, C)`` with ``hw=(H, W)`` and ``L == H*W``. Any
            strides; the output keeps the input's form: ``(B, H', W', O)`` or
            ``(B, H'*W', O)``.
        reduction_weight: ``(O, 4C)`` in the canonical swin layout (column
            ``(2*dw + dh)*C + c``); ``O`` is ``2C`` in every Swin.
        norm_weight, norm_bias: LayerNorm affine parameters, ``(4C,)`` for
            ``norm="pre"``, ``(O,)`` for ``norm="post"``, ``None`` for no affine.
        norm: ``"pre"`` (Swin v1: LN over the 4C window, then the Linear), ``"post"``
            (Swin v2: Linear, then LN over O) or ``"none"``.
        eps: the LayerNorm epsilon.
        impl: a name from :data:`pm_core.IMPLS`, or ``"auto"``: the fastest impl exact
            for ``norm`` on this machine, measured on the first call of its kind and
            cached (:mod:`pm_core.auto`).
        odd: ``"pad"`` zero-pads a bottom row / right column (torchvision, timm, HF),
            so ``H' = ceil(H/2)``; ``"error"`` raises on odd sizes (Microsoft Swin).

    Non-finite inputs propagate: a window that holds NaN or inf gives non-finite
    outputs, and every other window is unaffected. Empty inputs (B, H or W zero) give
    an empty output of the right shape through the ``"slice"`` path.

    >>> import torch
    >>> x = torch.randn(2, 7, 6, 8)
    >>> w = torch.randn(16, 32)
    >>> patch_merge(x, w, norm="none", impl="conv").shape
    torch.Size([2, 4, 3, 16])
    """
    spec = None if impl == "auto" else get_impl(impl)
    call = check_call(x, reduction_weight, norm_weight, norm_bias, hw, norm, eps, odd)
    x4 = pad_to_even(call.x)
    if spec is None:
        from .auto import choose  # measures on first use: only imported when asked for

        spec = REGISTRY[choose(x4, reduction_weight, norm_weight, norm_bias, norm, eps)]
    fn = REGISTRY["slice"].fn if x4.numel() == 0 else spec.fn
    y = fn(x4, reduction_weight, norm_weight, norm_bias, norm, eps)
    return y.flatten(1, 2) if call.flat else y


__all__ = ["Odd", "patch_merge"]
