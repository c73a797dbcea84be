"""The inverse family: patch expanding, a projection then depth-to-space.

Swin-Unet's decoder upsamples with ``PatchExpand``: ``Linear(C, 2C)``, then a
``rearrange`` that moves each token's ``4 * C/2`` channels to a 2x2 block of pixels, then
``LayerNorm(C/2)``. Its rearrange reads the channels as ``(p1 p2 c)``, row-major offsets
with the channel minor (the ``row-major`` layout), which is *not* the order Swin's merge
gathers in (``swin``, ``(p2 p1 c)``). :func:`patch_expand` takes the layout as an
argument, and for the same layout its scatter exactly inverts the merge's gather
(:func:`~pm_core.depth_to_space` of :func:`~pm_core.space_to_depth` is the identity).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import (
    FLOAT_DTYPES,
    Norm,
    _autocasting,
    _check_like,
    _check_param,
    check_dim,
    check_options,
    not_a_tensor,
)
from .window import Window
from .window_gather import depth_to_space
from .window_layouts import WindowLayout, window_layout


def _expand_window(kernel: Sequence[int] | Window) -> Window:
    win = kernel if isinstance(kernel, Window) else Window(kernel)
    if not win.tiles or not all(p == (0, 0) for p in win.pads(win.kernel)):
        raise ValueError(
            f"patch_expand scatters each token to one {win.kernel} block: give the kernel "
            f"alone (stride == kernel, dilation 1, no padding), got {win}"
        )
    return win


def _check_expand(
    x: object, weight: object, norm_weight: object, norm_bias: object, win: Window, norm: object
) -> tuple[int, int]:
    """Validate a :func:`patch_expand` call; returns ``(C_in, C_out)``."""
    if not isinstance(x, Tensor) or x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}")
    if x.dim() != win.dims + 2 or x.shape[-1] == 0:
        want = "(B, H, W, C_in)" if win.dims == 2 else "(B, D, H, W, C_in)"
        raise ValueError(
            f"x must be {want} with C_in >= 1 for a {win.dims}-D kernel, got {tuple(x.shape)}"
        )
    c_in = x.shape[-1]
    if not isinstance(weight, Tensor):
        raise not_a_tensor(weight, "weight")
    if (
        weight.dim() != 2
        or weight.shape[1] != c_in
        or weight.shape[0] == 0
        or weight.shape[0] % win.size
    ):
        raise ValueError(
            f"weight must be (prod(kernel)*C_out, C_in) = ({win.size}*C_out, {c_in}) with "
            f"C_out >= 1, got {tuple(weight.shape)}"
        )
    autocast = _autocasting(x.device)
    _check_like(weight, "weight", x, autocast)
    c_out = weight.shape[0] // win.size
    if norm == "none":
        if norm_weight is not None or norm_bias is not None:
            raise ValueError("norm='none' takes no norm_weight/norm_bias")
    else:
        size, what = (c_out, "LN over C_out") if norm == "post" else (c_in, "LN over C_in")
        _check_param(norm_weight, "norm_weight", size, what, x, autocast)
        _check_param(norm_bias, "norm_bias", size, what, x, autocast)
    return c_in, c_out


def patch_expand(
    x: Tensor,
    weight: Tensor,
    norm_weight: Tensor | None = None,
    norm_bias: Tensor | None = None,
    *,
    kernel: Sequence[int] | Window,
    layout: str | WindowLayout = "swin",
    norm: Norm = "post",
    eps: float = 1e-5,
) -> Tensor:
    """Expand every token to a block of pixels: ``(B, *S, C_in) -> (B, *(S*kernel), C_out)``.

    Args:
        x: ``(B, H, W, C_in)`` for a 2-D kernel, ``(B, D, H, W, C_in)`` for a 3-D one.
        weight: ``(K*C_out, C_in)``, ``K = prod(kernel)``: an ``nn.Linear(C_in, K*C_out)``
            weight whose *rows* are in ``layout`` (row ``i*C_out + c`` goes to the
            ``i``-th offset's channel ``c`` for an offset-major layout).
        norm_weight, norm_bias: LayerNorm affine parameters, ``(C_out,)`` for
            ``norm="post"`` (Swin-Unet: LN over each output pixel), ``(C_in,)`` for
            ``"pre"`` (LN over each input token first), ``None`` for no affine.
        kernel: the block each token fills, ``(kh, kw)`` or ``(kd, kh, kw)``.
        layout: the order of the projected vector (see :data:`~pm_core.window_layouts.WINDOW_LAYOUTS`);
            Swin-Unet's ``PatchExpand`` is ``"row-major"``.
        norm: ``"post"``, ``"pre"`` or ``"none"``.
        eps: the LayerNorm epsilon.

    ``depth_to_space(F.linear(x, weight), Window(kernel), layout)`` with the norm around
    it: for the same layout, the scatter is the exact inverse of a merge's gather.

    >>> import torch
    >>> x = torch.randn(2, 3, 3, 8)
    >>> patch_expand(x, torch.randn(16, 8), kernel=(2, 2)).shape
    torch.Size([2, 6, 6, 4])
    """
    check_options(norm, "pad", eps)
    win = _expand_window(kernel)
    lay = window_layout(layout, win)
    c_in, c_out = _check_expand(x, weight, norm_weight, norm_bias, win, norm)
    if norm == "pre":
        x = F.layer_norm(x, (c_in,), norm_weight, norm_bias, eps)
    y = depth_to_space(F.linear(x, weight), win, lay)
    if norm == "post":
        y = F.layer_norm(y, (c_out,), norm_weight, norm_bias, eps)
    return y


class PatchExpand(nn.Module):
    """Swin-Unet's ``PatchExpand``, any kernel and layout: ``.expand`` then ``.norm``.

    ``.expand`` is ``nn.Linear(dim, prod(kernel)*out_dim, bias=False)`` (rows in
    ``layout``), ``.norm`` is ``LayerNorm(out_dim)`` (``norm="post"``), ``LayerNorm(dim)``
    (``"pre"``) or ``Identity``: the state-dict keys of Swin-Unet's ``PatchExpand``
    (``kernel=(2, 2)``, ``out_dim=dim // 2``, ``layout="row-major"``) and of its
    ``FinalPatchExpand_X4`` (``kernel=(4, 4)``, ``out_dim=dim``).

    ``forward(x)``: ``(B, *S, dim)`` -> ``(B, *(S*kernel), out_dim)``.

    >>> m = PatchExpand(8, layout="row-major")
    >>> m(torch.randn(2, 3, 3, 8)).shape
    torch.Size([2, 6, 6, 4])
    """

    def __init__(
        self,
        dim: int,
        *,
        kernel: Sequence[int] = (2, 2),
        out_dim: int | None = None,
        layout: str | WindowLayout = "swin",
        norm: Literal["pre", "post", "none"] = "post",
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_options(norm, "pad", eps)
        check_dim(dim)
        self.window = _expand_window(kernel)
        self.layout = window_layout(layout, self.window)
        if out_dim is None:
            if dim < 2:
                raise ValueError(f"out_dim defaults to dim // 2, which is 0 for dim={dim}")
            out_dim = dim // 2
        check_dim(out_dim)
        self.dim, self.out_dim = dim, out_dim
        self.norm_mode: Norm = norm
        self.expand = nn.Linear(
            dim, self.window.size * out_dim, bias=False, device=device, dtype=dtype
        )
        self.norm: nn.Module = (
            nn.LayerNorm(out_dim if norm == "post" else dim, eps=eps, device=device, dtype=dtype)
            if norm != "none"
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        ln = self.norm if isinstance(self.norm, nn.LayerNorm) else None
        return patch_expand(
            x,
            self.expand.weight,
            None if ln is None else ln.weight,
            None if ln is None else ln.bias,
            kernel=self.window,
            layout=self.layout,
            norm=self.norm_mode,
            eps=1e-5 if ln is None else ln.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, out_dim={self.out_dim}, kernel={self.window.kernel}, "
            f"layout={self.layout.name!r}, norm={self.norm_mode!r}"
        )


__all__ = ["PatchExpand", "patch_expand"]
