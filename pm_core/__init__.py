"""pm-core: Swin patch merging, every real-world form of it, and the evidence they agree.

Patch merging takes each 2x2 window of a ``(B, H, W, C)`` map, concatenates its four
pixels into a 4C vector, and projects it to O (= 2C) channels, with a LayerNorm before
(Swin v1) or after (Swin v2). The same reduction is a Conv2d with kernel 2 and stride 2.

* :func:`patch_merge` runs any registered implementation (:data:`IMPLS`) behind one
  signature; :func:`reference_patch_merge` is the independent float64 oracle.
* :class:`PatchMerging` / :class:`ConvPatchMerging` are the module forms.
* :mod:`pm_core.layouts` converts weights between the swin, unfold and conv layouts.
* :func:`gemm_precision` names the arithmetic an impl's GEMMs run in under the backend
  flags in force (TF32 for cuDNN convs on a GPU by default); :func:`error_bounds` takes it.
"""

from .bounds import error_bounds
from .convert import (
    LayoutCheck,
    LayoutMismatchError,
    UnfoldPatchMerging,
    check_merge_layout,
    convert_state_dict,
    from_module,
    swap_patch_merging,
)
from .functional import patch_merge
from .impls import IMPLS, REGISTRY, Impl, get_impl, register
from .layouts import conv_to_linear, linear_to_conv, swin_to_unfold, unfold_to_swin
from .modules import ConvPatchMerging, PatchMerging
from .oracle import reference_patch_merge
from .precision import gemm_accumulation, gemm_precision
from .traffic import measure_traffic, minimum_traffic

__all__ = [
    "IMPLS",
    "REGISTRY",
    "ConvPatchMerging",
    "Impl",
    "LayoutCheck",
    "LayoutMismatchError",
    "PatchMerging",
    "UnfoldPatchMerging",
    "check_merge_layout",
    "conv_to_linear",
    "convert_state_dict",
    "error_bounds",
    "from_module",
    "gemm_accumulation",
    "gemm_precision",
    "get_impl",
    "linear_to_conv",
    "measure_traffic",
    "minimum_traffic",
    "patch_merge",
    "reference_patch_merge",
    "register",
    "swap_patch_merging",
    "swin_to_unfold",
    "unfold_to_swin",
]
