"""pm-core: Swin patch merging, every real-world form of it, and the evidence they agree.

Patch merging takes each 2x2 window of a ``(B, H, W, C)`` map, concatenates its four
pixels into a 4C vector, and projects it to O (= 2C) channels, with a LayerNorm before
(Swin v1) or after (Swin v2). The same reduction is a Conv2d with kernel 2 and stride 2.
The general family (MONAI, mmcv, YOLO's Focus, timm's SpaceToDepth, Video Swin) is the
same layer over any :class:`Window` (2-D or 3-D kernel, stride, padding, dilation).

The top level holds what a user calls:

* the front doors: :func:`window_merge` (any :class:`Window`) and :func:`patch_merge`
  (Swin's 2x2 merge, its preset, in Swin's calling conventions), both over one registry
  of impls (:data:`IMPLS` / :data:`REGISTRY`, extended by :func:`register`: the general
  ``gather`` and ``conv``, and the 2x2 fast paths); :func:`space_to_depth` /
  :func:`depth_to_space` and :func:`patch_expand`; ``Norm`` / :data:`NORMS` name the
  norm placements;
* the modules: :class:`PatchMerging`, :class:`ConvPatchMerging`,
  :class:`UnfoldPatchMerging`, :class:`WindowMerging`, :class:`ConvWindowMerging`,
  :class:`SpaceToDepth`, :class:`PatchExpand`, :class:`FocusConv`;
* adoption and conversion: :func:`from_module` and :func:`swap_patch_merging` (torchvision,
  timm, HF, MONAI, ultralytics), :func:`convert_state_dict`, :func:`check_merge_layout`;
* the evidence: the float64 oracles :func:`reference_patch_merge` and
  :func:`reference_window_merge`, their derived bounds :func:`error_bounds` and
  :func:`window_error_bounds`, and :func:`gemm_precision` (the arithmetic a GEMM runs in
  under the backend flags in force).

The rest lives in namespaces named for what they hold (:data:`~pm_core.NAMESPACES`, each with its
own ``__all__``): ``layouts`` and ``window_layouts`` (channel orders and exact weight
conversions), ``focus``, ``checkpoints``, ``layout_check``, ``adopt``, ``adopt_family`` and
``adopt_any`` (recognition and probing), ``impls`` (the registry and its types), ``window_impls`` (the
general impls),
``bounds``, ``precision``, ``oracle`` (the float64 oracle's gathers), ``functional`` and
``auto`` (the ``impl="auto"`` cache).

**Two packages.** ``pm_core`` is the layer library and needs only torch. Its modules
import each other in one direction, from the leaves up::

    window  ->  window_layouts  ->  _checks  ->  layouts, fold  ->  oracle, window_gather
      ->  window_impls  ->  impls  ->  auto, precision, bound_terms, bounds
      ->  functional, window_bounds, expand, focus  ->  modules
      ->  recognition, adopt_family  ->  adopt_any  ->  adopt, checkpoints  ->  unfold_merge
      ->  layout_check

``pm_core.lab`` is the measurement and reporting side (traffic, roofline, profiling,
verification, benchmarks, the report, plots and the ``pm-core`` CLI). It imports the
library only through public names (``pm_core.__all__`` and the namespaces' ``__all__``),
and nothing in the library imports it, so ``import pm_core`` stays light
(``tests/project/test_architecture.py`` checks both).
"""

from __future__ import annotations

__all__ = [
    "IMPLS",
    "NORMS",
    "REGISTRY",
    "ConvPatchMerging",
    "ConvWindowMerging",
    "FocusConv",
    "Norm",
    "PatchExpand",
    "PatchMerging",
    "SpaceToDepth",
    "UnfoldPatchMerging",
    "Window",
    "WindowMerging",
    "check_merge_layout",
    "convert_state_dict",
    "depth_to_space",
    "error_bounds",
    "from_module",
    "gemm_precision",
    "patch_expand",
    "patch_merge",
    "reference_patch_merge",
    "reference_window_merge",
    "register",
    "space_to_depth",
    "swap_patch_merging",
    "window_error_bounds",
    "window_merge",
]

# the namespaces, re-exported as attributes (the redundant alias marks a re-export)
from . import adopt as adopt
from . import adopt_any as adopt_any
from . import adopt_family as adopt_family
from . import auto as auto
from . import bounds as bounds
from . import checkpoints as checkpoints
from . import focus as focus
from . import functional as functional
from . import impls as impls
from . import layout_check as layout_check
from . import layouts as layouts
from . import oracle as oracle
from . import precision as precision
from . import window_impls as window_impls
from . import window_layouts as window_layouts
from ._checks import NORMS, Norm
from .adopt import from_module, swap_patch_merging
from .bounds import error_bounds
from .checkpoints import convert_state_dict
from .expand import PatchExpand, patch_expand
from .focus import FocusConv
from .functional import patch_merge, window_merge
from .impls import IMPLS, REGISTRY, register
from .layout_check import check_merge_layout
from .modules import (
    ConvPatchMerging,
    ConvWindowMerging,
    PatchMerging,
    SpaceToDepth,
    WindowMerging,
)
from .oracle import reference_patch_merge, reference_window_merge
from .precision import gemm_precision
from .unfold_merge import UnfoldPatchMerging
from .window import Window
from .window_bounds import window_error_bounds
from .window_gather import depth_to_space, space_to_depth

#: The namespaces that hold the rest of the public API, each with its own ``__all__``.
NAMESPACES = (
    "adopt",
    "adopt_any",
    "adopt_family",
    "auto",
    "bounds",
    "checkpoints",
    "focus",
    "functional",
    "impls",
    "layout_check",
    "layouts",
    "oracle",
    "precision",
    "window_impls",
    "window_layouts",
)
