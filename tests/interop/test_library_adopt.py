"""The space-to-depth family adopted: MONAI's merges, YOLO's Focus, timm's SpaceToDepth.

MONAI and ultralytics are not dependencies of the suite, so their classes are the
reproductions in :mod:`tests.library_code` (copied from the wheels' sources, registered
under the library's class path); ``tests/interop/test_monai.py`` runs the same claims on the
real MONAI in the ``nox -s monai`` session. timm is installed with the models group, and
its real ``SpaceToDepth`` is used. Tolerances come from :func:`pm_core.window_error_bounds`;
claims of exactness are checked bit for bit on integer-valued float64 data, where every
sum is exact in any order.
"""

from __future__ import annotations

import copy
import math
import re
from typing import cast

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pm_core
from pm_core import (
    FocusConv,
    SpaceToDepth,
    Window,
    WindowMerging,
    convert_state_dict,
    from_module,
    reference_window_merge,
    space_to_depth,
    swap_patch_merging,
    window_error_bounds,
)
from pm_core.adopt_family import probe_layout
from pm_core.checkpoints import fold_offsets
from pm_core.focus import conv_to_focus, focus_to_conv
from pm_core.testing import randomise_params
from pm_core.window_layouts import WindowOrderError
from tests import library_code as lib

CORNER3 = Window((2, 2, 2), padding="corner")
CORNER2 = Window((2, 2), padding="corner")
MISSING_1_4 = ((0, 1, 1), (1, 1, 0))


def _ints(*shape: int, seed: int = 0, high: int = 5) -> torch.Tensor:
    """Small integers in float64: every product and sum below is exact, in any order."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-high, high + 1, shape, generator=g).to(torch.float64)


# (class, spatial_dims) -> the layout the probe must find
MONAI = {
    "V2-3d": (lib.MonaiPatchMergingV2, 3, "monai-v2-3d"),
    "V2-2d": (lib.MonaiPatchMergingV2, 2, "swin"),
    "legacy-1.5-3d": (lib.MonaiPatchMerging, 3, "monai-legacy"),
    "legacy-1.5-2d": (lib.MonaiPatchMerging, 2, "swin"),
}


@pytest.mark.parametrize("impl", ["gather", "conv"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", MONAI)
def test_monai_merge_adopted_within_bound(name: str, dtype: torch.dtype, impl: str) -> None:
    """from_module(MONAI merge) finds the library's order by probing, and both the library
    module and the adopted WindowMerging lie within window_error_bounds of the float64
    oracle, on odd, unequal sizes (the corner padding shows)."""
    cls, dims, layout = MONAI[name]
    src = randomise_params(cls(6, spatial_dims=dims), 1).to(dtype).eval()
    pm = from_module(src, impl=impl)
    assert isinstance(pm, WindowMerging)
    assert (pm.layout.name, pm.window, pm.impl) == (layout, CORNER3 if dims == 3 else CORNER2, impl)
    size = (3, 5, 4) if dims == 3 else (5, 7)
    x = torch.randn(2, *size, 6, generator=torch.Generator().manual_seed(2)).to(dtype)
    ln = pm.norm
    assert isinstance(ln, nn.LayerNorm)
    args = (x, pm.reduction.weight, ln.weight, ln.bias)
    kw = {"window": pm.window, "layout": pm.layout, "eps": ln.eps}
    with torch.no_grad():
        ref = reference_window_merge(*args, **kw)  # type: ignore[arg-type]
        bound = window_error_bounds(*args, **kw).output  # type: ignore[arg-type]
        for who, y in (("library", src(x)), ("pm_core", pm(x))):
            worst = ((y.double() - ref).abs() / bound).max().item()
            assert worst <= 1, f"{name} {dtype} impl={impl}: {who} error/bound={worst:.3g}"


@pytest.mark.parametrize("name", MONAI)
def test_monai_merge_shares_parameters_and_keys(name: str) -> None:
    """The adopted merge reuses the source's norm and reduction: same Parameters, same keys."""
    cls, dims, _ = MONAI[name]
    src = cls(4, spatial_dims=dims)
    pm = from_module(src)
    assert list(pm.state_dict()) == list(src.state_dict())
    theirs = dict(src.named_parameters())
    assert all(p is theirs[k] for k, p in pm.named_parameters())


def test_monai_1_4_legacy_merge_is_refused() -> None:
    """MONAI <= 1.4's legacy 3-D merge is no merge of 8 distinct voxels: from_module probes
    its gather and raises WindowOrderError naming the offsets read twice and never; its
    2-D forward (V2's) is adopted. swap_patch_merging refuses before touching the model."""
    src = lib.MonaiPatchMerging14(4)
    with pytest.raises(WindowOrderError) as info:
        from_module(src)
    err = info.value
    assert err.duplicated == {(0, 1, 0): (2, 5), (0, 0, 1): (3, 6)}
    assert err.missing == MISSING_1_4
    for part in ("MONAI PatchMerging (3-D)", "(0, 1, 0) appears at positions [2, 5]",
                 "(0, 0, 1) appears at positions [3, 6]", "missing [(0, 1, 1), (1, 1, 0)]"):  # fmt: skip
        assert part in str(err)
    model = nn.Sequential(lib.MonaiPatchMergingV2(4), src)
    with pytest.raises(WindowOrderError):
        swap_patch_merging(model, impl="gather")
    assert model[1] is src
    assert type(model[0]) is lib.MonaiPatchMergingV2
    two_d = from_module(lib.MonaiPatchMerging14(4, spatial_dims=2))
    assert isinstance(two_d, WindowMerging)
    assert two_d.layout.name == "swin"


def test_monai_probe_works_on_meta_modules() -> None:
    """The probe replaces norm and reduction by identities: it needs no parameter values."""
    with torch.device("meta"):
        legacy, old = lib.MonaiPatchMerging(4), lib.MonaiPatchMerging14(4)
    pm = from_module(legacy)
    assert isinstance(pm, WindowMerging)
    assert pm.layout.name == "monai-legacy"
    with pytest.raises(WindowOrderError):
        from_module(old)


def test_probe_layout_reads_the_order_from_behaviour() -> None:
    """probe_layout names the order of any pure gather, prefers the given names, builds an
    explicit layout for an unnamed order, and refuses what is not a gather."""
    assert probe_layout(lib.monai_v2_gather, CORNER3).name == "row-major"
    assert probe_layout(lib.monai_v2_gather, CORNER3, prefer=["monai-v2-3d"]).name == "monai-v2-3d"
    assert probe_layout(lib.monai_legacy_gather, CORNER3).name == "monai-legacy"
    s2d = probe_layout(lib.timm_space_to_depth, Window((4, 4)), channels_first=True)
    assert s2d.name == "row-major"

    def reversed_gather(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, i::2, j::2, :] for i in (1, 0) for j in (1, 0)], -1)

    custom = probe_layout(reversed_gather, Window((2, 2)), name="reversed")
    assert custom.name == "reversed"
    assert custom.order(Window((2, 2))) == ((1, 1), (1, 0), (0, 1), (0, 0))
    with pytest.raises(ValueError, match="does not only move data"):
        probe_layout(lambda x: 2 * lib.monai_v2_gather(x), CORNER3)
    # right order on one window, no padding on the larger probe
    with pytest.raises(ValueError, match="its stride or padding differ"):
        probe_layout(
            lambda x: lib.swin_gather(x[:, : x.shape[1] // 2 * 2, : x.shape[2] // 2 * 2]), CORNER2
        )


# ------------------------------------------------------------------------------ Focus


@pytest.mark.parametrize(("k", "s"), [(1, 1), (3, 1), (3, 2), (2, 1)])
def test_focus_is_one_conv_exactly(k: int, s: int) -> None:
    """Focus's conv part (gather, then a k x k conv, padding k//2, stride s) equals ONE conv
    of kernel 2k, stride 2s, padding 2*(k//2) with focus_to_conv's weight, bit for bit on
    integer data (k=3, s=1: yolov5 #4825's 6x6, s2, p2). conv_to_focus inverts the
    mapping bit for bit. The full modules (BN in eval mode, SiLU) then agree bit for bit:
    the same BN and SiLU act on identical conv outputs."""
    src = lib.UltralyticsFocus(3, 8, k, s).double().eval()
    bn = src.conv.bn
    assert bn.running_mean is not None
    assert bn.running_var is not None
    with torch.no_grad():
        src.conv.conv.weight.copy_(_ints(8, 12, k, k, seed=1, high=3))
        randomise_params(bn, 2)
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    x = _ints(2, 3, 12, 16, seed=3)
    wk = src.conv.conv.weight
    w6 = focus_to_conv(wk)
    assert w6.shape == (8, 3, 2 * k, 2 * k)
    assert torch.equal(conv_to_focus(w6), wk)
    with torch.no_grad():
        half_res = src.conv.conv(lib.focus_gather(x))
        full_res = F.conv2d(x, w6, stride=2 * s, padding=2 * (k // 2))
        assert torch.equal(full_res, half_res)
        pm = from_module(src)
        assert isinstance(pm, FocusConv)
        assert pm.conv.bn is src.conv.bn
        assert pm.conv.act is src.conv.act
        assert torch.equal(pm(x), src(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_focus_adopted_within_bound(dtype: torch.dtype) -> None:
    """On random data in a low precision, both Focus's conv and FocusConv's lie within
    window_error_bounds of the float64 oracle of the 6x6, s2, p2 conv (a window merge
    with norm='none' in the unfold layout)."""
    src = lib.UltralyticsFocus(3, 16, 3)
    randomise_params(src, 0)
    src = src.to(dtype).eval()
    pm = from_module(src)
    assert isinstance(pm, FocusConv)
    x = torch.randn(2, 3, 10, 14, generator=torch.Generator().manual_seed(1)).to(dtype)
    w6 = pm.conv.conv.weight
    w_flat = w6.reshape(16, -1)
    win = Window((6, 6), stride=2, padding=2)
    xb = x.movedim(1, -1)
    with torch.no_grad():
        ref = reference_window_merge(xb, w_flat, window=win, layout="unfold", norm="none")
        bound = window_error_bounds(xb, w_flat, window=win, layout="unfold", norm="none").output
        ours = pm.conv.conv(x)
        for who, y in (("Focus", src.conv.conv(lib.focus_gather(x))), ("pm_core", ours)):
            worst = ((y.movedim(1, -1).double() - ref).abs() / bound).max().item()
            assert worst <= 1, f"{who} {dtype}: error/bound={worst:.3g}"


def test_focus_refuses_what_it_cannot_map() -> None:
    """Groups other than 1 mix the channel blocks: the error names the conv."""
    with pytest.raises(ValueError, match="groups=1"):
        from_module(lib.UltralyticsFocus(4, 8, 3, g=2))
    with pytest.raises(ValueError, match="even H and W"):
        FocusConv(3, 8)(torch.randn(1, 3, 5, 4))


# ----------------------------------------------------------------------- timm SpaceToDepth


def test_timm_space_to_depth_adopted_exactly() -> None:
    """timm's real SpaceToDepth (TResNet) adopts as pm_core's SpaceToDepth, "timm-s2d",
    and computes the same tensor bit for bit (it only moves data)."""
    timm_layers = pytest.importorskip("timm.layers")
    src = timm_layers.SpaceToDepth()
    pm = from_module(src)
    assert isinstance(pm, SpaceToDepth)
    assert (pm.layout.name, pm.window) == ("timm-s2d", Window((4, 4)))
    x = torch.randn(2, 5, 8, 12)
    assert torch.equal(pm(x), src(x))
    assert torch.equal(pm(x), lib.timm_space_to_depth(x))
    assert swap_patch_merging(nn.Sequential(src)) == 1


# ---------------------------------------------------------------------------- checkpoints

LAYOUT_NAMES = ["monai-legacy", "monai-v2-3d", "swin", "unfold", "conv"]


@pytest.mark.parametrize("dst", LAYOUT_NAMES)
@pytest.mark.parametrize("src", ["monai-legacy", "monai-v2-3d"])
def test_convert_state_dict_monai_layouts(src: str, dst: str) -> None:
    """convert_state_dict(window=...) moves a MONAI merge's checkpoint (SwinUNETR's keys)
    to any layout and back bit for bit, and the converted merge (WindowMerging, or
    ConvWindowMerging for "conv") computes the source's function: within the float64
    bound of the source's oracle (a moved column would be O(1) off)."""
    p = "swinViT.layers1.0.downsample."
    src_m = WindowMerging(3, CORNER3, layout=src).double()
    with torch.no_grad():
        for t in src_m.parameters():
            t.copy_(_ints(*t.shape, seed=t.numel(), high=3))
    sd = {f"{p}{k}": v for k, v in src_m.state_dict().items()} | {"other.weight": torch.ones(2)}
    out = convert_state_dict(sd, src, dst, window=CORNER3)
    assert list(out) == list(sd)
    assert out["other.weight"] is sd["other.weight"]
    back = convert_state_dict(out, dst, src, window=CORNER3)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    dst_m = (
        WindowMerging(3, CORNER3, layout=src).to_conv() if dst == "conv"
        else WindowMerging(3, CORNER3, layout=dst)
    ).double()  # fmt: skip
    dst_m.load_state_dict({k[len(p) :]: v for k, v in out.items() if k.startswith(p)})
    x = torch.randn(2, 3, 4, 5, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    ln = src_m.norm
    assert isinstance(ln, nn.LayerNorm)
    args = (x, src_m.reduction.weight, ln.weight, ln.bias)
    with torch.no_grad():
        ref = reference_window_merge(*args, window=CORNER3, layout=src)
        bound = window_error_bounds(*args, window=CORNER3, layout=src).output
        worst = ((dst_m(x) - ref).abs() / bound).max().item()
    assert worst <= 1, f"{src} -> {dst}: the converted merge is {worst:.3g}x the bound away"


# ----------------------------------------------------------- MONAI <= 1.4 vs >= 1.5


def test_1_4_function_without_norm_is_a_1_5_merge_with_folded_weight() -> None:
    """Without a pre-norm, the <= 1.4 legacy merge IS a merge of the 8 distinct voxels:
    fold_offsets sums the repeated offsets' blocks and zeroes the missing ones
    (y = sum_i W_i x_off(i) = sum_p (sum_{off(i)=p} W_i) x_p); exact on integer data."""
    old = lib.MonaiPatchMerging14(3).double()
    old.norm = nn.Identity()  # type: ignore[assignment]
    with torch.no_grad():
        old.reduction.weight.copy_(_ints(6, 24, seed=4, high=3))
    w = fold_offsets(old.reduction.weight.detach(), lib.MONAI_1_4_OFFSETS, CORNER3, "monai-legacy")
    new = WindowMerging(3, CORNER3, norm="none", layout="monai-legacy").double()
    with torch.no_grad():
        new.reduction.weight.copy_(w)
        x = _ints(2, 3, 4, 5, 3, seed=5)
        assert torch.equal(new(x), old(x))
        # the missing offsets' blocks are zero: the folded merge never reads them either
        cols = new.layout.columns(CORNER3, 3)
        for off in MISSING_1_4:
            p = CORNER3.offsets().index(off)
            assert torch.equal(w[:, cols[p]], torch.zeros(6, 3, dtype=w.dtype))


def test_1_4_function_with_pre_norm_is_no_1_5_merge() -> None:
    """With MONAI's pre-norm, no weight makes a >= 1.5 merge compute the <= 1.4 function.

    Proof. Split a window into u (the 2 voxels <= 1.4 never reads) and r (the rest).
    F14(r, u) ignores u. Any >= 1.5 merge G(v) = W' LN(v) + c normalises all 8 voxels:
    as u = t*e grows, (v - mean) / std tends to the normalised (e - mean(e)) alone, so
    G(r, t*e) forgets r. If G = F14, then F14(r) = F14(r, t*e) = G(r, t*e) -> the same
    limit for every r: F14 would be constant. It is not (a repeated slice adds weight to
    it), so no G equals it. This checks each step: F14 ignores u, F14 is not constant in
    r, and a >= 1.5 merge with any weights (here drawn at random, 5 seeds) forgets r as
    t grows, at the 1/t rate the proof gives.
    """
    old = randomise_params(lib.MonaiPatchMerging14(3), 0).double().eval()
    g = torch.Generator().manual_seed(1)
    r1, r2 = (torch.randn(1, 2, 2, 2, 3, generator=g, dtype=torch.float64) for _ in range(2))
    e = torch.randn(2, 3, generator=g, dtype=torch.float64)

    def with_u(r: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        x = r.clone()
        for i, (d, h, w) in enumerate(MISSING_1_4):
            x[0, d, h, w] = u[i]
        return x

    with torch.no_grad():
        f_r1 = old(with_u(r1, 0 * e))
        for t in (1.0, 1e3, 1e6):
            assert torch.equal(old(with_u(r1, t * e)), f_r1)  # F14 never reads u
        gap_old = (old(r2) - f_r1).abs().max().item()
        assert gap_old > 0.1, "F14 is not constant in r"
        for seed in range(5):
            new = randomise_params(WindowMerging(3, CORNER3, layout="monai-legacy"), seed).double()
            gaps = [
                (new(with_u(r1, t * e)) - new(with_u(r2, t * e))).abs().max().item()
                for t in (1e2, 1e4)
            ]
            assert gaps[1] < gaps[0] / 50, f"seed {seed}: G does not forget r: {gaps}"
            assert gaps[1] < gap_old / 100


def test_1_5_function_is_no_1_4_merge() -> None:
    """The other way: a >= 1.5 merge reads the 2 voxels <= 1.4 never sees, so no
    permutation or rewrite of a <= 1.4 module's weight computes it."""
    new = randomise_params(WindowMerging(3, CORNER3, layout="monai-legacy"), 0).double()
    x = torch.randn(1, 2, 2, 2, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[0, 1, 1, 0] += 1.0  # a voxel <= 1.4 never reads
    with torch.no_grad():
        assert not torch.allclose(new(x), new(x2))
    # and the gather <= 1.4 performs is blind to it
    assert torch.equal(lib.monai_legacy_gather_1_4(x), lib.monai_legacy_gather_1_4(x2))
    assert math.prod(CORNER3.kernel) == len(set(lib.MONAI_1_4_OFFSETS)) + 2


def test_space_to_depth_module_matches_function() -> None:
    """pm_core's SpaceToDepth module is space_to_depth, channels last or first."""
    x = torch.randn(2, 5, 6, 3)
    m = SpaceToDepth(CORNER2, "focus")
    assert torch.equal(m(x), space_to_depth(x, CORNER2, "focus"))
    mc = SpaceToDepth(CORNER2, "focus", channels_first=True)
    assert torch.equal(mc(x.movedim(-1, 1)), space_to_depth(x, CORNER2, "focus").movedim(-1, 1))
    assert copy.deepcopy(mc).layout == mc.layout


class _Wrapped(nn.Module):
    """A later layer whose conv keys (``conv.conv.weight``) look like a Focus's, as
    ultralytics' blocks' do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = lib.UltralyticsConv(8, 8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


class _YoloLike(nn.Module):
    """``model.0`` a Focus (or its FocusConv), ``model.1`` a later conv block."""

    def __init__(self, first: nn.Module, later: nn.Module | None = None) -> None:
        super().__init__()
        self.model = nn.Sequential(first, _Wrapped() if later is None else later)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out


def test_focus_checkpoint_converts_to_focus_conv_and_back() -> None:
    """A YOLO-style checkpoint with a Focus at ``model.0.``: ``convert_state_dict(...,
    focus="model.0.")`` re-shapes only that conv weight, a :class:`pm_core.FocusConv` loads
    it strictly under the same keys and computes the same function bit for bit (integer
    data), the later layer's ``conv.conv.weight`` is left alone, and the way back is
    bit-exact."""
    focus, later = lib.UltralyticsFocus(3, 8, 3, 1), _Wrapped()
    src = _YoloLike(focus, later).double().eval()
    with torch.no_grad():
        for i, layer in enumerate((focus.conv, later.conv)):
            conv = layer.conv
            conv.weight.copy_(_ints(*conv.weight.shape, seed=10 + i, high=3))
            randomise_params(cast(nn.Module, layer.bn), 20 + i)
    sd = src.state_dict()
    conv_sd = convert_state_dict(sd, "focus", "conv", focus="model.0.")
    assert list(conv_sd) == list(sd)
    assert conv_sd["model.0.conv.conv.weight"].shape == (8, 3, 6, 6)
    assert conv_sd["model.1.conv.conv.weight"] is sd["model.1.conv.conv.weight"]
    dst = _YoloLike(FocusConv(3, 8, 3, 1)).double().eval()
    dst.load_state_dict(conv_sd, strict=True)
    x = _ints(2, 3, 12, 16, seed=3)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))
    back = convert_state_dict(conv_sd, "conv", "focus", focus=["model.0."])
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    with pytest.raises(KeyError, match=re.escape("no Focus at prefix 'model.1.conv.'")):
        convert_state_dict(sd, "focus", "conv", focus="model.1.conv.")
    with pytest.raises(ValueError, match="src and dst are 'focus' and 'conv'"):
        convert_state_dict(sd, "swin", "conv", focus="model.0.")


def test_one_recognition_table_names_every_adopter() -> None:
    """pm_core.adopt.KNOWN is the one table: each entry names its adopter, a Swin merge its
    calling convention and norm placement, and a family member neither (they are probed)."""
    kinds = {k.kind for k in pm_core.adopt.KNOWN.values()}
    assert kinds == {"swin", "monai", "focus", "space-to-depth"}
    for (module, qualname), known in pm_core.adopt.KNOWN.items():
        assert module.split(".")[0] in {
            "torchvision",
            "timm",
            "transformers",
            "monai",
            "ultralytics",
        }
        if known.kind == "swin":
            assert known.norm in {"pre", "post"}, qualname
        else:
            assert (known.norm, known.convention) == (None, "bhwc"), qualname
    with pytest.raises(
        ValueError, match=r"knows .*monai\.networks\.nets\.swin_unetr\.PatchMergingV2"
    ):
        pm_core.from_module(torch.nn.Linear(4, 2))
