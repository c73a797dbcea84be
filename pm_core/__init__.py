"""pm-core: Swin patch merging, every real-world form of it, and the evidence they agree.

Patch merging takes each 2x2 window of a ``(B, H, W, C)`` map, concatenates its four
pixels into a 4C vector, and projects it to O (= 2C) channels, with a LayerNorm before
(Swin v1) or after (Swin v2). The same reduction is a Conv2d with kernel 2 and stride 2.

* :func:`patch_merge` runs any registered implementation (:data:`IMPLS`) behind one
  signature; :func:`reference_patch_merge` is the independent float64 oracle.
* :class:`PatchMerging` / :class:`ConvPatchMerging` are the module forms;
  :class:`UnfoldPatchMerging` is mmcv's, with its weights in the unfold layout.
* :func:`from_module` / :func:`swap_patch_merging` adopt torchvision, timm and HF merges;
  :func:`convert_state_dict` moves checkpoints between the :data:`LAYOUTS`;
  :func:`check_merge_layout` catches a checkpoint loaded in the wrong one.
* :func:`gemm_precision` names the arithmetic an impl's GEMMs run in under the backend
  flags in force (TF32 for cuDNN convs on a GPU by default); :func:`error_bounds` takes it.

The general family (space-to-depth merges of MONAI, mmcv, YOLO's Focus, timm's
SpaceToDepth, Video Swin) is the same layer over any :class:`Window` (2-D or 3-D kernel,
stride, padding incl. mmcv's ``"corner"`` / ``"same"``, dilation):

* :func:`window_merge` gathers (``impl="gather"``) or convolves (``"conv"``, pre-norm
  folded where windows tile); :func:`reference_window_merge` is its float64 oracle and
  :func:`window_error_bounds` its bound. :class:`WindowMerging` /
  :class:`ConvWindowMerging` are the module forms.
* :data:`WINDOW_LAYOUTS` names each library's channel order (:class:`WindowLayout`;
  :func:`layout_from_offsets` for an explicit slice list, refusing one that is not a
  permutation with :class:`WindowOrderError`); :func:`convert_window_layout`,
  :func:`window_to_conv` and :func:`conv_to_window` convert weights exactly.
* :func:`space_to_depth` / :func:`depth_to_space` are the gather and its inverse
  (:class:`SpaceToDepth` the module); :func:`patch_expand` / :class:`PatchExpand`
  (Swin-Unet's decoder) project then scatter.
* :func:`from_module` / :func:`swap_patch_merging` also adopt MONAI's ``PatchMergingV2`` /
  ``PatchMerging``, ultralytics' ``Focus`` (:class:`FocusConv`, one conv after
  :func:`focus_to_conv`) and timm's ``SpaceToDepth``; the gather order is read from the
  module's behaviour by :func:`probe_layout`, which refuses MONAI <= 1.4's legacy 3-D merge
  with a :class:`WindowOrderError`. :func:`convert_state_dict` takes ``window=`` for their
  checkpoints; :func:`fold_offsets` re-expresses a weight over a slice list with repeats.

**Two packages.** ``pm_core`` is the layer library and needs only torch. Its modules
import each other in one direction, from the leaves up::

    _checks, layouts, window  ->  window_layouts  ->  oracle, impls, window_gather
      ->  window_oracle, precision, bounds, functional
      ->  window_bounds, window_impls, expand, focus  ->  modules, window_modules
      ->  adopt_family  ->  adopt, checkpoints  ->  unfold_merge  ->  layout_check

``pm_core.lab`` is the measurement and reporting side (traffic, roofline, profiling,
verification, benchmarks, the report, plots and the ``pm-core`` CLI). It imports the
library only through the names in ``pm_core.__all__``, and nothing in the library imports it, so
``import pm_core`` stays light (``tests/test_architecture.py`` checks both).
"""

from __future__ import annotations

__all__ = [
    "IMPLS",
    "LAYOUTS",
    "NORMS",
    "REGISTRY",
    "WINDOW_IMPLS",
    "WINDOW_LAYOUTS",
    "AutoCacheWarning",
    "ConvPatchMerging",
    "ConvWindowMerging",
    "ErrorBounds",
    "FocusConv",
    "Impl",
    "Layout",
    "LayoutCheck",
    "LayoutMismatchError",
    "Norm",
    "Odd",
    "PatchExpand",
    "PatchMerging",
    "SpaceToDepth",
    "UnfoldPatchMerging",
    "Window",
    "WindowLayout",
    "WindowMerging",
    "WindowOrderError",
    "auto_cache_path",
    "auto_choices",
    "auto_class_key",
    "check_impl",
    "check_merge_layout",
    "conv_to_focus",
    "conv_to_linear",
    "conv_to_window",
    "convert_state_dict",
    "convert_window_layout",
    "depth_to_space",
    "error_bounds",
    "focus_to_conv",
    "fold_offsets",
    "from_module",
    "gemm_accumulation",
    "gemm_precision",
    "get_impl",
    "layout_from_offsets",
    "layout_scores",
    "linear_to_conv",
    "merge_prefixes",
    "patch_expand",
    "patch_merge",
    "probe_layout",
    "recognise",
    "recognise_family",
    "reference_patch_merge",
    "reference_space_to_depth",
    "reference_window_merge",
    "register",
    "space_to_depth",
    "swap_patch_merging",
    "swin_to_unfold",
    "tune_auto",
    "unfold_to_swin",
    "window_error_bounds",
    "window_layout",
    "window_merge",
    "window_to_conv",
]

from ._checks import NORMS, Norm, Odd
from .adopt import from_module, recognise, swap_patch_merging
from .adopt_family import probe_layout, recognise_family
from .auto import AutoCacheWarning
from .auto import cache_path as auto_cache_path
from .auto import cached_choices as auto_choices
from .auto import class_key as auto_class_key
from .auto import tune as tune_auto
from .bounds import ErrorBounds, error_bounds
from .checkpoints import convert_state_dict, fold_offsets, merge_prefixes
from .expand import PatchExpand, patch_expand
from .focus import FocusConv, conv_to_focus, focus_to_conv
from .functional import patch_merge
from .impls import IMPLS, REGISTRY, Impl, check_impl, get_impl, register
from .layout_check import LayoutCheck, LayoutMismatchError, check_merge_layout, layout_scores
from .layouts import LAYOUTS, Layout, conv_to_linear, linear_to_conv, swin_to_unfold, unfold_to_swin
from .modules import ConvPatchMerging, PatchMerging
from .oracle import reference_patch_merge
from .precision import gemm_accumulation, gemm_precision
from .unfold_merge import UnfoldPatchMerging
from .window import Window
from .window_bounds import window_error_bounds
from .window_gather import depth_to_space, space_to_depth
from .window_impls import WINDOW_IMPLS, window_merge
from .window_layouts import (
    WINDOW_LAYOUTS,
    WindowLayout,
    WindowOrderError,
    conv_to_window,
    convert_window_layout,
    layout_from_offsets,
    window_layout,
    window_to_conv,
)
from .window_modules import ConvWindowMerging, SpaceToDepth, WindowMerging
from .window_oracle import reference_space_to_depth, reference_window_merge
