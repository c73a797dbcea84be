"""The mmcv-ordered merge module: what a Swin checkpoint is loaded into in the OpenMMLab world."""

from __future__ import annotations

from torch import nn

from ._checks import Norm
from .adopt import from_module
from .checkpoints import convert_state_dict
from .modules import PatchMerging, WindowMerging, _SwinPreset


class UnfoldPatchMerging(_SwinPreset, WindowMerging):
    """An mmcv-style merge: ``nn.Unfold(2, stride=2)``, LN(4C), Linear, weights in unfold order.

    A :class:`~pm_core.WindowMerging` over :data:`~pm_core.oracle.SWIN_WINDOW` in the
    ``"unfold"`` layout. ``.norm`` is ``LayerNorm(4*dim)`` (``norm="pre"``) or ``Identity``
    (``"none"``); ``.reduction`` is ``nn.Linear(4*dim, out_dim, bias=False)``. Both are in
    the unfold layout (column ``4*c + 2*dh + dw``), as in mmseg/mmdet checkpoints. Keys and
    shapes are those of a Swin merge, so a swin-layout state dict loads *strictly and
    silently* and computes the wrong function (mmseg #2350); convert it with
    ``convert_state_dict(sd, "swin", "unfold")``, and see :func:`check_merge_layout`.

    ``forward(x, hw=None)``: ``x`` is ``(B, H, W, C)``, or ``(B, H*W, C)`` with
    ``hw=(H, W)``; odd sizes are zero-padded at the bottom/right (mmcv's ``"corner"``).
    ``impl`` defaults to ``"unfold"``, mmcv's own gather.
    """

    default_impl = "unfold"
    preset_layout = "unfold"

    def _check_preset_norm(self, norm: Norm) -> None:
        if norm not in ("pre", "none"):
            raise ValueError(f"UnfoldPatchMerging has mmcv's norm='pre' or 'none'; got {norm!r}")

    @classmethod
    def from_swin(cls, m: nn.Module) -> UnfoldPatchMerging:
        """The unfold-layout twin of a swin-layout pre-norm merge (any :func:`from_module` source)."""
        pm = m if isinstance(m, PatchMerging) else from_module(m, impl="slice", verify=False)
        if not isinstance(pm, PatchMerging):
            raise ValueError(f"{type(m).__qualname__} is no 2x2 swin-layout merge: {pm!r}")
        if pm.norm_mode == "post":
            raise ValueError("a post-norm (Swin v2) merge has no mmcv unfold counterpart")
        w = pm.reduction.weight
        ln = pm.norm if isinstance(pm.norm, nn.LayerNorm) else None
        out = cls(
            pm.dim,
            out_dim=pm.out_dim,
            norm="pre" if pm.norm_mode == "pre" else "none",
            eps=1e-5 if ln is None else ln.eps,
            device=w.device,
            dtype=w.dtype,
        )
        out.load_state_dict(convert_state_dict(pm.state_dict(), "swin", "unfold"))
        return out


__all__ = ["UnfoldPatchMerging"]
