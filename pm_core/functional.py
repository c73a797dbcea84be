"""The front doors: :func:`patch_merge` (Swin's 2x2 merge, in Swin's calling conventions)
and :func:`window_merge` (any window). Both validate, then call the one engine,
:func:`merge`; neither calls the other.
"""

from __future__ import annotations

from typing import cast

from torch import Tensor

from ._checks import Norm, Odd, WindowCall, check_call, check_window_call, swin_call
from .impls import REGISTRY, WindowFn, check_impl, run_swin
from .window import Window
from .window_impls import gather_impl, swin_2x2
from .window_layouts import WindowLayout


def merge(
    call: WindowCall,
    w: Tensor,
    nw: Tensor | None,
    nb: Tensor | None,
    norm: Norm,
    eps: float,
    impl: str,
) -> Tensor:
    """The one dispatch point: a validated call run by ``impl``, or by ``"auto"``'s choice.

    A ``"2x2"`` impl gets Swin's 2x2 merge as :func:`~pm_core.window_impls.swin_2x2`
    lays it out; any other window raises, naming the impls that compute it. An empty
    input (a zero B or spatial size) gives an empty output through ``gather``.
    """
    check_impl(impl, call.window, call.layout)
    if call.x.numel() == 0:
        return gather_impl(call.x, w, nw, nb, call, norm, eps)
    spec = None if impl == "auto" else REGISTRY[impl]
    if spec is not None and spec.windows == "any":  # the call's own window and layout
        return cast(WindowFn, spec.fn)(call.x, w, nw, nb, call, norm, eps)
    swin = swin_2x2(call, w, nw, nb, norm)
    assert swin is not None  # check_impl admits "auto" and the 2x2 impls for Swin's merge only
    if spec is None:
        from .auto import choose  # measures on first use: only imported when asked for

        spec = REGISTRY[choose(*swin, norm, eps)]
    return run_swin(spec, *swin, norm, eps)


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
    layout: str | WindowLayout = "swin",
) -> Tensor:
    """Merge each 2x2 window of a feature map into one token: ``(B, H, W, C) -> (B, H', W', O)``.

    Swin's merge is the general :func:`window_merge` over
    :data:`~pm_core.oracle.SWIN_WINDOW` in the ``"swin"`` layout, with Swin's calling
    conventions on top.

    Args:
        x: ``(B, H, W, C)``, or ``(B, L, C)`` with ``hw=(H, W)`` and ``L == H*W``. Any
            strides; the output keeps the input's form: ``(B, H', W', O)`` or
            ``(B, H'*W', O)``.
        reduction_weight: ``(O, 4C)``, its columns in ``layout``: by default the canonical
            swin layout (column ``(2*dw + dh)*C + c``); ``O`` is ``2C`` in every Swin.
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
        layout: the order of the merged 4C vector (and of a pre-norm's vectors): ``"swin"``,
            mmcv's ``"unfold"``, or any 2-D layout of
            :data:`~pm_core.window_layouts.WINDOW_LAYOUTS` or a
            :class:`~pm_core.window_layouts.WindowLayout`.

    Non-finite inputs propagate: a window that holds NaN or inf gives non-finite
    outputs, and every other window is unaffected. Empty inputs (B, H or W zero) give
    an empty output of the right shape.

    >>> import torch
    >>> x = torch.randn(2, 7, 6, 8)
    >>> w = torch.randn(16, 32)
    >>> patch_merge(x, w, norm="none", impl="conv").shape
    torch.Size([2, 4, 3, 16])
    """
    call = check_call(x, reduction_weight, norm_weight, norm_bias, hw, norm, eps, odd)
    wcall = swin_call(call.x, reduction_weight.shape[0], layout)
    y = merge(wcall, reduction_weight, norm_weight, norm_bias, norm, eps, impl)
    return y.flatten(1, 2) if call.flat else y


def window_merge(
    x: Tensor,
    reduction_weight: Tensor,
    norm_weight: Tensor | None = None,
    norm_bias: Tensor | None = None,
    *,
    window: Window,
    layout: str | WindowLayout = "swin",
    norm: Norm = "pre",
    eps: float = 1e-5,
    impl: str = "gather",
) -> Tensor:
    """Merge every window of a 2-D or 3-D map into one token: ``(B, *S, C) -> (B, *S', O)``.

    Args:
        x: ``(B, H, W, C)`` for a 2-D window, ``(B, D, H, W, C)`` for a 3-D one; any
            strides. ``S' = window.output_size(S)``.
        reduction_weight: ``(O, n)`` with ``n = prod(window.kernel) * C``, its columns in
            ``layout``.
        norm_weight, norm_bias: LayerNorm affine parameters, ``(n,)`` in ``layout`` for
            ``norm="pre"``, ``(O,)`` for ``"post"``, ``None`` for no affine.
        window: the :class:`~pm_core.Window` (kernel, stride, padding, dilation).
        layout: the channel order of the merged vector, a name from
            :data:`~pm_core.window_layouts.WINDOW_LAYOUTS` or a
            :class:`~pm_core.window_layouts.WindowLayout`.
        norm: ``"pre"`` (LN over the n window entries, then the projection), ``"post"``
            (projection, then LN over O) or ``"none"``.
        eps: the LayerNorm epsilon.
        impl: a registered impl that computes ``window`` (:meth:`pm_core.impls.Impl.supports`):
            ``"gather"`` or ``"conv"`` for every window (:mod:`pm_core.window_impls`
            says where the conv form folds the pre-norm), a 2x2 fast path for Swin's
            merge, or ``"auto"`` for Swin's merge.

    The float64 oracle is :func:`pm_core.reference_window_merge`, and
    :func:`pm_core.window_error_bounds` bounds the difference.

    >>> import torch
    >>> x = torch.randn(2, 5, 6, 6, 4)  # (B, D, H, W, C)
    >>> w = torch.randn(8, 32)  # (O, 2*2*2*C)
    >>> window_merge(x, w, window=Window((2, 2, 2), padding="corner"), layout="monai-v2-3d",
    ...              norm="none", impl="conv").shape
    torch.Size([2, 3, 3, 3, 8])
    """
    call = check_window_call(x, reduction_weight, norm_weight, norm_bias, window, layout, norm, eps)
    return merge(call, reduction_weight, norm_weight, norm_bias, norm, eps, impl)


__all__ = ["Odd", "merge", "patch_merge", "window_merge"]
