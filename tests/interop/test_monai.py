"""MONAI's merges, real: <= 1.4's legacy 3-D merge is refused, >= 1.5's adopted, and what a
<= 1.4 checkpoint computes on >= 1.5, measured on a SwinUNETR.

Runs in ``nox -s monai`` (monai 1.4.0 and the latest release); skipped where MONAI is not
installed. The <= 1.4 legacy forward is also reproduced in :mod:`tests.library_code`
(from the 1.4.0 wheel's ``swin_unetr.py``), and the >= 1.5 one likewise, so both
functions run in one process on the same weights; each reproduction is first checked
bit for bit against the installed class of its own version.

A <= 1.4 checkpoint loaded on >= 1.5: the keys and shapes are identical (the class
and its parameters did not change, only its slice list), so it loads silently and
computes another function. What converts: nothing, exactly, while the merge has its
pre-norm (``tests/interop/test_library_adopt.py`` proves no >= 1.5 weight computes the <= 1.4
function, and the reverse); without a norm, ``pm_core.checkpoints.fold_offsets`` would.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from pm_core import (
    Window,
    WindowMerging,
    convert_state_dict,
    from_module,
    reference_window_merge,
    swap_patch_merging,
    window_error_bounds,
)
from pm_core.testing import randomise_params
from pm_core.window_layouts import WindowOrderError
from tests import library_code as lib

monai = pytest.importorskip("monai", reason="MONAI is not installed: run `nox -s monai`")
# attribute access on importorskip's modules: MONAI is typed Any, and not a suite dependency
su = pytest.importorskip("monai.networks.nets.swin_unetr")
SwinUNETR = su.SwinUNETR

VERSION = tuple(int(p) for p in monai.__version__.split("+")[0].split(".")[:2])
FIXED = VERSION >= (1, 5)  # PR #8285
CORNER3 = Window((2, 2, 2), padding="corner")
IMG = 64  # SwinUNETR's decoder instance-norms a (IMG/32)^3 bottleneck: 32^3 leaves 1 voxel


def _within_bound(m: WindowMerging, x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    ln = m.norm
    assert isinstance(ln, nn.LayerNorm)
    args = (x, m.reduction.weight, ln.weight, ln.bias)
    kw: dict[str, Any] = {"window": m.window, "layout": m.layout, "eps": ln.eps}
    with torch.no_grad():
        ref = reference_window_merge(*args, **kw)
        bound = window_error_bounds(*args, **kw).output
    worst = ((y.double() - ref).abs() / bound).max().item()
    assert worst <= 1, f"{what}: error/bound={worst:.3g}"


@pytest.mark.parametrize("dims", [2, 3])
def test_real_v2_adopted_within_bound(dims: int) -> None:
    """PatchMergingV2 (2-D: swin order; 3-D: itertools.product, "monai-v2-3d") is adopted,
    and the library's and pm_core's float32 outputs lie within the bound of the oracle."""
    src = randomise_params(su.PatchMergingV2(6, spatial_dims=dims), 0).eval()
    pm = from_module(src)
    assert isinstance(pm, WindowMerging)
    assert pm.layout.name == ("monai-v2-3d" if dims == 3 else "swin")
    x = torch.randn(2, *((3, 5, 4) if dims == 3 else (5, 7)), 6)
    with torch.no_grad():
        _within_bound(pm, x, src(x), "MONAI PatchMergingV2")
        _within_bound(pm, x, pm(x), "pm_core")


@pytest.mark.skipif(FIXED, reason=f"monai {monai.__version__} has the fixed legacy merge")
def test_legacy_3d_up_to_1_4_is_refused() -> None:
    """<= 1.4: the legacy 3-D merge reads (0,1,0) and (0,0,1) twice and (1,1,0), (0,1,1)
    never, so it is no merge of 8 distinct voxels: from_module refuses, naming them; the
    reproduction in tests.library_code is this class's forward, bit for bit."""
    src = randomise_params(su.PatchMerging(4), 0)
    with pytest.raises(WindowOrderError, match=r"missing \[\(0, 1, 1\), \(1, 1, 0\)\]") as info:
        from_module(src)
    assert info.value.duplicated == {(0, 1, 0): (2, 5), (0, 0, 1): (3, 6)}
    assert info.value.missing == ((0, 1, 1), (1, 1, 0))
    _same_as_reproduction(src, lib.MonaiPatchMerging14)


@pytest.mark.skipif(not FIXED, reason=f"monai {monai.__version__} has the <= 1.4 legacy merge")
def test_legacy_3d_from_1_5_is_a_merge_in_its_own_order() -> None:
    """>= 1.5: the legacy 3-D merge reads the 8 distinct voxels, in the "monai-legacy"
    order (neither swin's nor V2's), adopted within the bound; the reproduction matches."""
    src = randomise_params(su.PatchMerging(4), 0).eval()
    pm = from_module(src)
    assert isinstance(pm, WindowMerging)
    assert pm.layout.name == "monai-legacy"
    x = torch.randn(2, 3, 5, 4, 4)
    with torch.no_grad():
        _within_bound(pm, x, src(x), "MONAI PatchMerging")
        _within_bound(pm, x, pm(x), "pm_core")
    _same_as_reproduction(src, lib.MonaiPatchMerging)


def test_legacy_2d_is_v2s_forward() -> None:
    """The legacy class's 2-D forward is V2's: swin order, in every version."""
    pm = from_module(su.PatchMerging(4, spatial_dims=2))
    assert isinstance(pm, WindowMerging)
    assert pm.layout.name == "swin"


def _same_as_reproduction(src: Any, cls: Callable[..., nn.Module]) -> None:
    rep = cls(src.dim)
    rep.load_state_dict(src.state_dict())
    x = torch.randn(2, 3, 4, 5, src.dim)
    with torch.no_grad():
        assert torch.equal(rep(x), src(x))


# ----------------------------------------------------------------------------- SwinUNETR


def _swin_unetr(downsample: str) -> Any:
    kw: dict[str, Any] = {
        "in_channels": 1, "out_channels": 2, "feature_size": 12, "depths": (1, 1, 1, 1),
        "num_heads": (3, 3, 3, 3), "downsample": downsample,
    }  # fmt: skip
    torch.manual_seed(0)
    if "img_size" in inspect.signature(SwinUNETR.__init__).parameters:
        # required up to 1.4 (and deprecated since 1.3, so it warns), removed in 1.5
        with pytest.warns(FutureWarning, match="img_size"):
            model = SwinUNETR(img_size=(IMG,) * 3, **kw).eval()
    else:
        model = SwinUNETR(**kw).eval()
    return _randomise_merges(model)


def _randomise_merges(model: Any) -> Any:
    for i, m in enumerate(_merges(model)):
        randomise_params(m, i)
    return model


def _merges(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__name__ in ("PatchMerging", "PatchMergingV2")]


def _input() -> torch.Tensor:
    return torch.randn(1, 1, IMG, IMG, IMG, generator=torch.Generator().manual_seed(1))


DOWNSAMPLES = ["mergingv2", "merging"] if FIXED else ["mergingv2"]


@pytest.mark.parametrize("downsample", DOWNSAMPLES)
def test_swap_in_swin_unetr_within_bound(downsample: str) -> None:
    """swap_patch_merging replaces SwinUNETR's 4 merges (keys kept); each swapped merge,
    on the input it receives inside the model, is within the bound of the oracle; end to
    end (float32 against the float64 run of the original), the swapped model's RMS error
    is at most 2x the original's (the rule tests/interop/test_models.py uses)."""
    original = _swin_unetr(downsample)
    swapped = copy.deepcopy(original)
    assert swap_patch_merging(swapped, impl="conv") == 4
    assert list(swapped.state_dict()) == list(original.state_dict())
    seen: list[tuple[WindowMerging, torch.Tensor, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda m, a, y: seen.append((m, a[0], y)))
        for m in swapped.modules()
        if isinstance(m, WindowMerging)
    ]
    x = _input()
    with torch.no_grad():
        y_swap = swapped(x).double()
        for h in hooks:
            h.remove()
        assert len(seen) == 4
        for m, xin, y in seen:
            _within_bound(m, xin, y, f"swapped merge dim={m.dim}")
        ref = copy.deepcopy(original).double()(x.double())
        rms_orig = (original(x).double() - ref).pow(2).mean().sqrt().item()
        rms_swap = (y_swap - ref).pow(2).mean().sqrt().item()
    assert rms_orig > 0
    assert rms_swap <= 2 * rms_orig, f"swapped RMS {rms_swap:.3g} > 2 x {rms_orig:.3g}"


@pytest.mark.skipif(FIXED, reason="<= 1.4 only")
def test_swap_refuses_the_1_4_default_merge() -> None:
    """<= 1.4's default downsample="merging" cannot be swapped: the model is left as it is."""
    model = _swin_unetr("merging")
    before = [type(m) for m in model.modules()]
    with pytest.raises(WindowOrderError):
        swap_patch_merging(model)
    assert [type(m) for m in model.modules()] == before


def test_convert_swin_unetr_checkpoint_between_layouts() -> None:
    """convert_state_dict(window=...) finds SwinUNETR's 4 merges; "monai-v2-3d" -> "conv"
    -> back is bit-exact, and a V2 checkpoint moved to "monai-legacy" loads into a
    legacy-merge SwinUNETR (>= 1.5 order, reproduced where not installed) that computes
    the same function: end-to-end RMS error within 2x the original's (float32)."""
    v2 = _swin_unetr("mergingv2")
    sd = v2.state_dict()
    conv = convert_state_dict(sd, "monai-v2-3d", "conv", window=CORNER3)
    changed = [k for k in sd if not torch.equal(conv[k], sd[k]) or conv[k].shape != sd[k].shape]
    # the 4 reduction weights; a conv merge keeps its pre-norm vectors in its layout
    assert changed == [k for k in sd if k.endswith("downsample.reduction.weight")]
    assert len(changed) == 4
    back = convert_state_dict(conv, "conv", "monai-v2-3d", window=CORNER3)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    legacy = _swin_unetr("mergingv2")
    for layer in (legacy.swinViT.layers1, legacy.swinViT.layers2, legacy.swinViT.layers3,
                  legacy.swinViT.layers4):  # fmt: skip
        layer[0].downsample = lib.MonaiPatchMerging(layer[0].downsample.dim)
    legacy.load_state_dict(convert_state_dict(sd, "monai-v2-3d", "monai-legacy", window=CORNER3))
    x = _input()
    with torch.no_grad():
        ref = copy.deepcopy(v2).double()(x.double())
        rms_orig = (v2(x).double() - ref).pow(2).mean().sqrt().item()
        rms_conv = (legacy(x).double() - ref).pow(2).mean().sqrt().item()
    assert rms_conv <= 2 * rms_orig, f"converted RMS {rms_conv:.3g} > 2 x {rms_orig:.3g}"


def _as(model: Any, cls: Callable[..., nn.Module]) -> Any:
    """A copy of ``model`` whose legacy merges run ``cls``'s forward on the same weights."""
    out = copy.deepcopy(model)
    for layer in (out.swinViT.layers1, out.swinViT.layers2, out.swinViT.layers3,
                  out.swinViT.layers4):  # fmt: skip
        old = layer[0].downsample
        new = cls(old.dim).to(old.reduction.weight.dtype)
        new.load_state_dict(old.state_dict())
        layer[0].downsample = new
    return out


def measure_1_4_checkpoint_on_1_5() -> dict[str, float]:
    """Relative L2 differences between the <= 1.4 and >= 1.5 legacy functions on one
    float64 SwinUNETR (feature_size 12, depths (1, 1, 1, 1), 64^3 input) with the same
    weights: the final output, and the first merge's output."""
    model = _swin_unetr("merging").double()
    old, new = _as(model, lib.MonaiPatchMerging14), _as(model, lib.MonaiPatchMerging)
    firsts: dict[str, torch.Tensor] = {}
    for name, m in (("old", old), ("new", new)):
        m.swinViT.layers1[0].downsample.register_forward_hook(
            lambda mod, a, y, name=name: firsts.__setitem__(name, y)
        )
    x = _input().double()
    with torch.no_grad():
        y_old, y_new = old(x), new(x)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm())

    return {"output": rel(y_old, y_new), "first_merge": rel(firsts["old"], firsts["new"])}


def test_1_4_checkpoint_on_1_5_loads_and_computes_another_function(
    record_property: Callable[[str, object], None],
) -> None:
    """A <= 1.4 SwinUNETR checkpoint has the keys and shapes of a >= 1.5 one, so it loads
    strictly; the function differs. Measured in float64 (rounding ~1e-16): the relative
    L2 difference of the first merge's output and of the final output, far above the
    float64 bound of the merge. The installed class is checked against the reproduction
    of its own version first."""
    model = _swin_unetr("merging")
    own = lib.MonaiPatchMerging if FIXED else lib.MonaiPatchMerging14
    _same_as_reproduction(model.swinViT.layers1[0].downsample, own)
    # the other version's model built from this checkpoint: same keys, same shapes
    other = _as(model, lib.MonaiPatchMerging14 if FIXED else lib.MonaiPatchMerging)
    other.load_state_dict(model.state_dict(), strict=True)
    figures = measure_1_4_checkpoint_on_1_5()
    for k, v in figures.items():
        record_property(k, v)
    assert figures["first_merge"] > 1e-3, figures
    assert figures["output"] > 1e-6, figures


if __name__ == "__main__":  # the figures for the report: python -m tests.interop.test_monai
    print(measure_1_4_checkpoint_on_1_5())
