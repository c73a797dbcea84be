"""MONAI's legacy 3-D ``PatchMerging`` before 1.5.0: what the suite finds, and what it costs.

MONAI's ``PatchMerging.forward`` (``monai/networks/nets/swin_unetr.py``) gathers each
2x2x2 window as eight strided slices ``x[:, d::2, h::2, w::2, :]``, concatenated, after
zero-padding odd sizes at the end. Up to 1.4 its list held duplicates (MONAI #4757;
PR #8285 fixed it in 1.5.0): ``x5`` repeats ``x2``'s slice and ``x6`` repeats ``x3``'s. The
class kept its name and its parameters, so a <= 1.4 checkpoint loads into >= 1.5
silently and computes another function.

The two slice lists are data here (:data:`SLICES_1_4`, :data:`SLICES_1_5`, the ``(d, h, w)``
starts of ``x0 .. x7`` in the wheels' sources; ``tests/library_code.py`` reproduces the
forwards and ``tests/lab/test_family_lab.py`` checks that the lists are theirs).
:func:`legacy_merge_findings` asks pm_core about them the way :func:`pm_core.from_module`
asks a live module, with :func:`pm_core.adopt_family.probe_layout` on a gather built from each list, and
measures the two functions on the same weights in float64.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pm_core import Window, reference_window_merge
from pm_core.adopt_family import probe_layout
from pm_core.checkpoints import fold_offsets
from pm_core.window_layouts import WindowOrderError

Offset = tuple[int, ...]

#: MONAI's 3-D merge window: 2x2x2, odd sizes zero-padded at the end.
CORNER3 = Window((2, 2, 2), padding="corner")
#: ``x0 .. x7`` of ``PatchMerging.forward`` (3-D) in monai 1.4.0 and earlier.
SLICES_1_4: tuple[Offset, ...] = (
    (0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1),
)  # fmt: skip
#: ``x0 .. x7`` from 1.5.0 on: the 8 distinct offsets, pm_core's ``"monai-legacy"`` layout.
SLICES_1_5: tuple[Offset, ...] = (
    (0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1),
)  # fmt: skip

#: SwinUNETR's first merge input at a 64^3 input with feature_size 12, ``(B, D, H, W, C)``:
#: the configuration of :data:`SWIN_UNETR_1_4_ON_1_5`.
FIRST_MERGE_64 = (1, 32, 32, 32, 12)
#: Relative L2 difference between the <= 1.4 and the >= 1.5 legacy merge on the same
#: weights, in one float64 SwinUNETR (feature_size 12, depths (1, 1, 1, 1), num_heads 3,
#: 64^3 input, random weights with the merges' LayerNorm affine drawn around 1), at the
#: first merge's output and at the model's output. Measured by ``nox -s monai``
#: (``tests/interop/test_monai.py::measure_1_4_checkpoint_on_1_5``); it needs MONAI's SwinUNETR,
#: which the report's environment does not install.
SWIN_UNETR_1_4_ON_1_5 = {"first merge": 0.550, "output": 0.0937}


def slice_gather(slices: Sequence[Offset]) -> Callable[[Tensor], Tensor]:
    """MONAI's legacy 3-D gather over ``slices``: ``(B, D, H, W, C)`` -> ``(B, D', H', W', 8C)``,
    odd sizes zero-padded at the end, then ``cat([x[:, d::2, h::2, w::2, :] ...], -1)``."""

    def gather(x: Tensor) -> Tensor:
        _, d, h, w, _ = x.shape
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        return torch.cat([x[:, a::2, b::2, c::2, :] for a, b, c in slices], -1)

    return gather


@dataclass(frozen=True)
class LegacyMergeFindings:
    """What :func:`legacy_merge_findings` found; relative L2 differences are float64.

    ``refusal`` is :func:`pm_core.adopt_family.probe_layout`'s error on the <= 1.4 list, with its
    ``duplicated`` offsets (offset -> positions in the list) and ``missing`` ones;
    ``fixed_layout`` the layout it finds for the >= 1.5 list. On one random input of
    ``shape`` with the same random weights: ``merge_rel_l2`` between the <= 1.4 and >= 1.5
    functions; ``fold_no_norm_rel_l2`` between the <= 1.4 function without its LayerNorm
    and a >= 1.5 merge with :func:`pm_core.checkpoints.fold_offsets`' weight (a conversion: rounding
    only); ``fold_pre_norm_rel_l2`` the same fold with the LayerNorm kept (its affine folded
    into the weight, its constant added back): what is left is the statistics, over 8
    distinct voxels instead of over the list with repeats, which no weight changes.
    """

    refusal: str
    duplicated: dict[Offset, tuple[int, ...]]
    missing: tuple[Offset, ...]
    fixed_layout: str
    shape: tuple[int, ...]
    merge_rel_l2: float
    fold_no_norm_rel_l2: float
    fold_pre_norm_rel_l2: float


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


def legacy_merge_findings(shape: Sequence[int] = FIRST_MERGE_64) -> LegacyMergeFindings:
    """Probe both slice lists; measure the <= 1.4 and >= 1.5 functions on ``shape``.

    ``shape`` is ``(B, D, H, W, C)``; weights and input are drawn in float64 from a fixed
    seed (reduction ``[2C, 8C]``, LayerNorm affine ``1 + N(0, 0.25)`` and ``N(0, 0.25)``,
    as ``tests/interop/test_monai.py`` draws them), so the figures repeat exactly.
    """
    shape = tuple(shape)
    try:
        probe_layout(slice_gather(SLICES_1_4), CORNER3, name="MONAI <= 1.4 PatchMerging (3-D)")
    except WindowOrderError as e:
        refusal, duplicated, missing = str(e), e.duplicated, e.missing
    else:  # pragma: no cover - the probe refusing is the finding
        raise AssertionError("probe_layout accepted MONAI 1.4's slice list")
    fixed = probe_layout(
        slice_gather(SLICES_1_5), CORNER3, prefer=("monai-legacy",), name="MONAI >= 1.5"
    )
    c = shape[-1]
    g = torch.Generator().manual_seed(0)
    f64 = torch.float64
    x = torch.randn(shape, generator=g, dtype=f64)
    w = torch.randn(2 * c, 8 * c, generator=g, dtype=f64)
    nw = 1 + 0.5 * torch.randn(8 * c, generator=g, dtype=f64)
    nb = 0.5 * torch.randn(8 * c, generator=g, dtype=f64)
    v14 = slice_gather(SLICES_1_4)(x)
    y14 = F.linear(F.layer_norm(v14, (8 * c,), nw, nb), w)
    # >= 1.5: the oracle in the order the probe found for its list
    merge = functools.partial(reference_window_merge, window=CORNER3, layout=fixed)
    y15 = merge(x, w, nw, nb)
    # no norm: the <= 1.4 linear map, folded over the distinct offsets
    no_norm = _rel(merge(x, fold_offsets(w, SLICES_1_4, CORNER3, fixed), norm="none"), v14 @ w.T)
    # pre-norm: fold W*g the same way and add W @ b back; only the statistics differ
    y_fold = merge(x, fold_offsets(w * nw, SLICES_1_4, CORNER3, fixed)) + w @ nb
    return LegacyMergeFindings(
        refusal=refusal,
        duplicated=dict(duplicated),
        missing=tuple(missing),
        fixed_layout=fixed.name,
        shape=shape,
        merge_rel_l2=_rel(y14, y15),
        fold_no_norm_rel_l2=no_norm,
        fold_pre_norm_rel_l2=_rel(y_fold, y14),
    )


def _offs(offsets: Sequence[Offset]) -> str:
    return ", ".join(f"({', '.join(map(str, o))})" for o in offsets)


def legacy_merge_text(f: LegacyMergeFindings) -> list[str]:
    """The report's paragraphs on the <= 1.4 legacy merge, from :func:`legacy_merge_findings`."""
    dup = "; ".join(
        f"({', '.join(map(str, o))}) at positions {', '.join(map(str, at))}"
        for o, at in f.duplicated.items()
    )
    m = SWIN_UNETR_1_4_ON_1_5
    return [
        "MONAI's legacy `PatchMerging` (still SwinUNETR's default, `downsample=\"merging\"`) "
        "gathers a 2x2x2 window as eight strided slices `x[:, d::2, h::2, w::2, :]`. In "
        "monai <= 1.4 the list is "
        f"{_offs(SLICES_1_4)} (`x0` .. `x7`, (d, h, w)): `x5` repeats `x2`'s slice and "
        "`x6` repeats `x3`'s (MONAI #4757; fixed by PR #8285 in 1.5.0). `pm_core.adopt_family.probe_layout`, "
        "which `from_module` runs on every MONAI merge, reads the list from the gather's "
        f"behaviour and refuses it with a `WindowOrderError`: duplicated {dup}; missing "
        f"{_offs(f.missing)}. The message, verbatim:",
        f"> {f.refusal}",
        f"From 1.5.0 the list is {_offs(SLICES_1_5)}: 8 distinct voxels, which the probe "
        f"finds to be the `{f.fixed_layout}` layout (neither Swin's order nor "
        "`PatchMergingV2`'s `itertools.product`), adopted within the bound "
        "(`nox -s monai` runs both versions).",
        "**A <= 1.4 checkpoint on >= 1.5**: the keys and shapes are the same, so "
        "`load_state_dict(strict=True)` succeeds and the model computes another function. "
        f"Measured by `nox -s monai` on a float64 SwinUNETR (feature_size 12, depths "
        f"(1, 1, 1, 1), 64^3 input, random weights): relative L2 difference "
        f"{m['first merge']:#.3g} at the first merge's output and {m['output']:#.3g} at the "
        "model's output (that needs MONAI's SwinUNETR, which the report does not install). "
        f"Measured here on the merge alone, float64, a random {f.shape} input (that first "
        f"merge's input shape) and random weights: {f.merge_rel_l2:.3g}.",
        "**What converts.** Without a pre-norm, everything: the <= 1.4 merge is then a "
        "linear map of the 6 distinct voxels it reads, and `pm_core.checkpoints.fold_offsets` sums the "
        "repeated slices' weight blocks (zero blocks for the 2 missing voxels) into a >= 1.5 "
        f"weight computing it (measured: relative L2 {f.fold_no_norm_rel_l2:.1g}, float64 "
        "rounding). With the pre-norm that every SwinUNETR merge has, nothing converts: the "
        "LayerNorm's mean and variance count two voxels twice and two never, while any "
        ">= 1.5 merge normalises over all 8 (`tests/interop/test_library_adopt.py` proves no weight "
        "makes up for it). The nearest attempt, folding the LayerNorm's affine into the "
        "weight, folding that, and adding its constant back, is still off by relative L2 "
        f"{f.fold_pre_norm_rel_l2:.3g} on the same input. A <= 1.4 model keeps its "
        "function only where its merges run the <= 1.4 forward (monai <= 1.4, or that "
        "forward restored in a subclass); moving it to the fixed merge means fine-tuning.",
    ]


__all__ = [
    "CORNER3",
    "FIRST_MERGE_64",
    "SLICES_1_4",
    "SLICES_1_5",
    "SWIN_UNETR_1_4_ON_1_5",
    "LegacyMergeFindings",
    "legacy_merge_findings",
    "legacy_merge_text",
    "slice_gather",
]
