"""The one table of library classes :func:`pm_core.from_module` adopts by name.

A class is recognised by its module path and qualname, so ``import pm_core`` never
imports torchvision, timm, transformers, MONAI or ultralytics. The table says which
adopter rebuilds an instance (``Known.kind``) and, for Swin's 2x2 merges, how the library
calls it and where its LayerNorm sits. Nothing here is trusted blindly: every adopter
re-checks what it reads against the module's behaviour (a float64 probe, or the
index-coded gather probe of :func:`pm_core.adopt_family.probe_layout`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._checks import Norm

#: How a Swin merge is called: ``"bhwc"``, ``merge(x)`` with ``x: (B, H, W, C)``;
#: ``"hf"``, ``merge(x, (H, W))`` with ``x: (B, H*W, C)``.
Convention = Literal["bhwc", "hf"]
#: Which adopter rebuilds the class: Swin's 2x2 merge (a :class:`pm_core.PatchMerging`),
#: MONAI's merges (a :class:`pm_core.WindowMerging`), ``Focus`` (a :class:`pm_core.FocusConv`)
#: or ``SpaceToDepth`` (a :class:`pm_core.SpaceToDepth`).
Kind = Literal["swin", "monai", "focus", "space-to-depth"]


@dataclass(frozen=True)
class Known:
    """A recognised library class: its library, its adopter, and for a Swin merge its
    calling convention and norm placement (``None`` where the adopter probes them)."""

    library: str
    kind: Kind
    convention: Convention = "bhwc"
    norm: Norm | None = None


def _swin(library: str, convention: Convention, norm: Norm) -> Known:
    return Known(library, "swin", convention, norm)


_TV, _HF = "torchvision.models.swin_transformer", "transformers.models"
_MONAI = "monai.networks.nets.swin_unetr"

#: ``(class module, class qualname) -> Known``. Every Swin entry gathers the 2x2 window in
#: the swin order (0,0), (1,0), (0,1), (1,1) and zero-pads odd sizes (read from the sources
#: of torchvision 0.29, timm 1.0 and transformers 5.x; the probe in
#: :func:`pm_core.from_module` re-checks both on every call). What a family member
#: gathers is probed on every call, so one entry covers every version of a class.
KNOWN: dict[tuple[str, str], Known] = {
    (_TV, "PatchMerging"): _swin("torchvision", "bhwc", "pre"),
    (_TV, "PatchMergingV2"): _swin("torchvision", "bhwc", "post"),
    ("timm.models.swin_transformer", "PatchMerging"): _swin("timm", "bhwc", "pre"),
    ("timm.models.swin_transformer_v2", "PatchMerging"): _swin("timm", "bhwc", "post"),
    # v2_cr: despite its docstring ("[B, C, H, W]"), the stage hands it (B, H, W, C), and
    # unlike timm's swinv2 its norm is LN(4C) *before* the reduction, with out = 2C fixed.
    ("timm.models.swin_transformer_v2_cr", "PatchMerging"): _swin("timm", "bhwc", "pre"),
    (f"{_HF}.swin.modeling_swin", "SwinPatchMerging"): _swin("transformers", "hf", "pre"),
    (f"{_HF}.swinv2.modeling_swinv2", "Swinv2PatchMerging"): _swin("transformers", "hf", "post"),
    # HF's copies of the same code
    (f"{_HF}.donut.modeling_donut_swin", "DonutSwinPatchMerging"): _swin(
        "transformers", "hf", "pre"
    ),
    (f"{_HF}.maskformer.modeling_maskformer_swin", "MaskFormerSwinPatchMerging"): _swin(
        "transformers", "hf", "pre"
    ),
    (f"{_HF}.clap.modeling_clap", "ClapAudioPatchMerging"): _swin("transformers", "hf", "pre"),
    (f"{_HF}.swin2sr.modeling_swin2sr", "Swin2SRPatchMerging"): _swin("transformers", "hf", "post"),
    # the space-to-depth family
    (_MONAI, "PatchMergingV2"): Known("monai", "monai"),
    (_MONAI, "PatchMerging"): Known("monai", "monai"),
    ("ultralytics.nn.modules.conv", "Focus"): Known("ultralytics", "focus"),
    ("timm.layers.space_to_depth", "SpaceToDepth"): Known("timm", "space-to-depth"),
    ("timm.models.layers.space_to_depth", "SpaceToDepth"): Known("timm", "space-to-depth"),
}


def recognise(m: object) -> Known | None:
    """The :data:`KNOWN` entry for ``m``'s class, or ``None``. Never imports the library."""
    t = type(m)
    return KNOWN.get((t.__module__, t.__qualname__))


__all__ = ["KNOWN", "Convention", "Kind", "Known", "recognise"]
