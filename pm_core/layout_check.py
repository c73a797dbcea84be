"""Wrong-layout loads: tell whether a merge's weights are in the layout it computes with.

A Swin (swin-layout) checkpoint loaded into an mmcv (unfold-ordered) merge has the right
keys and shapes, so ``load_state_dict(strict=True)`` cannot see it (mmseg #2350).
:func:`check_merge_layout` can, with a reference merge (definitive) or from the weights'
per-channel statistics alone (a heuristic; see its docstring for what it cannot see).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .adopt import Convention, call_as_library, from_module, recognise
from .checkpoints import convert_state_dict
from .layouts import Layout, conv_to_linear
from .modules import PatchMerging
from .unfold_merge import UnfoldPatchMerging


class LayoutMismatchError(ValueError):
    """A merge's weights are in the other layout than the one it computes with."""


@dataclass(frozen=True)
class LayoutCheck:
    """The outcome of :func:`~pm_core.check_merge_layout`.

    ``verdict`` is ``"ok"`` or ``"undetermined"`` (a mismatch raises instead);
    ``method`` is ``"reference"`` or ``"statistics"``; ``swin_score`` / ``unfold_score``
    are the statistics' cross-position correlations (``nan`` for the reference method).
    """

    verdict: Literal["ok", "undetermined"]
    method: Literal["reference", "statistics"]
    expected: Literal["swin", "unfold"]
    swin_score: float
    unfold_score: float
    detail: str


def _cross_position_corr(s: Tensor) -> float:
    """Mean pairwise Pearson correlation between the 4 rows of ``s: (4, C)``."""
    s = s - s.mean(1, keepdim=True)
    n = s.norm(dim=1)
    if bool((n == 0).any()):
        return 0.0
    r = (s / n[:, None]) @ (s / n[:, None]).T
    return float((r.sum() - r.diagonal().sum()) / 12)


def layout_scores(
    weight: Tensor, norm_weight: Tensor | None = None, norm_bias: Tensor | None = None
) -> tuple[float, float]:
    """``(swin_score, unfold_score)``: how consistent per-channel statistics are across the
    4 window positions when ``weight: [O, 4C]`` (and a 4C norm) are read in each layout.

    The statistics are the log RMS of each reduction-weight column and the 4C norm
    weight/bias. Read in the right layout, the 4 positions of one input channel share
    that channel's scale, so the 4 position rows correlate; read in the wrong one, each
    row mixes unrelated channels. Scores are mean pairwise correlations in [-1, 1],
    averaged over the statistics available.
    """
    c = weight.shape[1] // 4
    stats = [weight.detach().double().pow(2).mean(0).add(1e-30).log()]
    stats += [v.detach().double() for v in (norm_weight, norm_bias) if v is not None]
    swin = [_cross_position_corr(s.view(4, c)) for s in stats]
    unfold = [_cross_position_corr(s.view(c, 4).T) for s in stats]
    return sum(swin) / len(swin), sum(unfold) / len(unfold)


def _merge_params(m: nn.Module) -> tuple[Tensor, Tensor | None, Tensor | None, str]:
    red = getattr(m, "reduction", None)
    if isinstance(red, nn.Conv2d):
        w = conv_to_linear(red.weight)
    elif isinstance(red, nn.Linear):
        w = red.weight
    else:
        raise TypeError(f"{type(m).__qualname__} has no Linear/Conv2d .reduction to check")
    norm = getattr(m, "norm", None)
    pre = isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) == (w.shape[1],)
    nw = norm.weight if pre and isinstance(norm, nn.LayerNorm) else None
    nb = norm.bias if pre and isinstance(norm, nn.LayerNorm) else None
    return w, nw, nb, type(m).__qualname__


def check_merge_layout(
    module: nn.Module,
    *,
    reference: nn.Module | None = None,
    min_score: float = 0.5,
    margin: float = 0.3,
) -> LayoutCheck:
    """Check that a merge's weights are in the layout it computes with; raise if not.

    ``module`` expects the ``"unfold"`` layout if it is a :class:`UnfoldPatchMerging`, and
    ``"swin"`` otherwise (pm_core modules and every :data:`KNOWN` library class).

    Two kinds of evidence, and what each can see:

    * **reference** (given): ``reference`` is a swin-layout merge known to hold the
      intended weights, e.g. the merge of the model the checkpoint came from. Both run on
      a float64 probe. Same outputs: ``"ok"``. Different outputs, but equal to what the
      reference's weights give when loaded *without* conversion: raises
      :class:`~pm_core.layout_check.LayoutMismatchError` naming the unconverted load. Anything else raises as
      well. This is definitive, but needs the reference.
    * **statistics** (no reference): :func:`~pm_core.layout_check.layout_scores`. Training leaves each input
      channel with its own scale, shared by its 4 window positions, and the layout is
      readable from which grouping of the 4C columns correlates. A score above
      ``min_score`` that beats the other by ``margin`` decides. This sees nothing in
      freshly initialised (i.i.d.) weights, where both layouts are statistically
      identical, so the verdict is ``"undetermined"`` rather than a guess, and it
      cannot see a merge with fewer than 8 input channels. It is a heuristic: it was
      tested on synthetic channel-structured weights (no trained checkpoint can be
      downloaded here), not on real checkpoints.

    Returns:
        A :class:`~pm_core.layout_check.LayoutCheck` with verdict ``"ok"`` or ``"undetermined"``.

    Raises:
        LayoutMismatchError: the weights are in the other layout.
    """
    expected: Literal["swin", "unfold"] = (
        "unfold" if isinstance(module, UnfoldPatchMerging) else "swin"
    )
    w, nw, nb, name = _merge_params(module)
    c = w.shape[1] // 4
    if reference is not None:
        return _check_against(module, reference, expected, name, c)
    if c < 8:
        return LayoutCheck(
            "undetermined", "statistics", expected, math.nan, math.nan,
            f"{name} has C={c} < 8 input channels: too few for the statistics",
        )  # fmt: skip
    s_swin, s_unfold = layout_scores(w, nw, nb)
    got, other = (s_swin, s_unfold) if expected == "swin" else (s_unfold, s_swin)
    other_name = "unfold" if expected == "swin" else "swin"
    scores = f"swin_score={s_swin:.3f}, unfold_score={s_unfold:.3f}"
    if other >= min_score and other - got >= margin:
        hint = (
            "an unconverted swin checkpoint (Microsoft/timm/torchvision/HF) loaded into an "
            "unfold-ordered merge; convert it with convert_state_dict(sd, 'swin', 'unfold')"
            if expected == "unfold"
            else "an unfold-layout (mmseg/mmdet) checkpoint loaded into a swin-ordered merge; "
            "convert it with convert_state_dict(sd, 'unfold', 'swin')"
        )
        raise LayoutMismatchError(
            f"{name} computes in the {expected} layout but its weights look {other_name}-"
            f"ordered ({scores}): {hint}"
        )
    if got >= min_score and got - other >= margin:
        return LayoutCheck("ok", "statistics", expected, s_swin, s_unfold, scores)
    return LayoutCheck(
        "undetermined", "statistics", expected, s_swin, s_unfold,
        f"no per-channel structure to read the layout from ({scores}); pass reference=",
    )  # fmt: skip


def _check_against(
    module: nn.Module,
    reference: nn.Module,
    expected: Literal["swin", "unfold"],
    name: str,
    c: int,
) -> LayoutCheck:
    ref = from_module(reference, impl="slice")
    if not isinstance(ref, PatchMerging):
        raise ValueError(
            f"reference must be a 2x2 swin-layout merge, got {type(reference).__name__}"
        )
    if ref.dim != c:
        raise ValueError(f"reference has dim={ref.dim} but {name} has C={c}")
    known = recognise(module)
    conv: Convention = "bhwc" if known is None else known.convention
    other: Layout = "unfold" if expected == "swin" else "swin"
    ref64 = copy.deepcopy(ref).double()
    mod64 = copy.deepcopy(module).double()
    x = torch.randn(2, 5, 6, c, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x.to(next(ref64.parameters()).device)
    with torch.no_grad():
        y_ref, y_mod = call_as_library(ref64, "bhwc", x), call_as_library(mod64, conv, x)
        scale = float(y_ref.abs().max())
        # float64 rounding ~1e-13 relative (see _matches); a layout error is O(|y|)
        if torch.allclose(y_mod, y_ref, rtol=1e-9, atol=1e-9 * scale):
            return LayoutCheck("ok", "reference", expected, math.nan, math.nan, "matches")
        # what the module computes when handed the reference's weights in the other layout
        misloaded = copy.deepcopy(mod64)
        try:
            misloaded.load_state_dict(convert_state_dict(ref64.state_dict(), "swin", other))
            y_misloaded = call_as_library(misloaded, conv, x)
            wrong = bool(torch.allclose(y_mod, y_misloaded, rtol=1e-9, atol=1e-9 * scale))
        except RuntimeError:  # the other layout does not even load (e.g. a conv weight)
            wrong = False
    what = (
        f"it holds the reference's weights in the {other} layout, loaded without conversion; "
        f"convert the state dict with convert_state_dict(sd, {other!r}, {expected!r})"
        if wrong
        else "its weights are not the reference's in either layout"
    )
    raise LayoutMismatchError(f"{name} does not reproduce the reference merge: {what}")


__all__ = ["LayoutCheck", "LayoutMismatchError", "check_merge_layout", "layout_scores"]
