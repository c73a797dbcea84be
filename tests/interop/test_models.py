"""Real library merges: from_module reproduces them, swap_patch_merging keeps whole models' outputs.

The libraries' own classes are the ground truth here, not our copy of them: every
torchvision, timm and HF transformers patch-merging class is run next to its pm_core
replacement on Hypothesis-drawn shapes (odd and non-square included).
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import pm_core
from pm_core import IMPLS, REGISTRY, Norm, PatchMerging, from_module, swap_patch_merging
from pm_core.adopt import recognise
from pm_core.bounds import error_bounds
from pm_core.testing import examples, randomise_params, shapes

tv = pytest.importorskip("torchvision.models.swin_transformer")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

from timm.models import swin_transformer as timm_v1  # noqa: E402
from timm.models import swin_transformer_v2 as timm_v2  # noqa: E402
from timm.models import swin_transformer_v2_cr as timm_cr  # noqa: E402
from transformers.models.clap import modeling_clap as hf_clap  # noqa: E402
from transformers.models.donut import modeling_donut_swin as hf_donut  # noqa: E402
from transformers.models.maskformer import modeling_maskformer_swin as hf_maskformer  # noqa: E402
from transformers.models.swin import modeling_swin as hf_swin  # noqa: E402
from transformers.models.swin2sr import modeling_swin2sr as hf_swin2sr  # noqa: E402
from transformers.models.swinv2 import modeling_swinv2 as hf_swinv2  # noqa: E402

pytestmark = pytest.mark.models

# name -> (factory(dim, out_dim), calling convention, norm placement, takes out_dim)
LIBRARY_MERGES: dict[str, tuple[Callable[[int, int | None], nn.Module], str, Norm, bool]] = {
    "torchvision-PatchMerging": (lambda d, o: tv.PatchMerging(d), "bhwc", "pre", False),
    "torchvision-PatchMergingV2": (lambda d, o: tv.PatchMergingV2(d), "bhwc", "post", False),
    "timm-swin": (lambda d, o: timm_v1.PatchMerging(d, out_dim=o), "bhwc", "pre", True),
    "timm-swinv2": (lambda d, o: timm_v2.PatchMerging(d, out_dim=o), "bhwc", "post", True),
    "timm-swinv2_cr": (lambda d, o: timm_cr.PatchMerging(d), "bhwc", "pre", False),
    "hf-Swin": (lambda d, o: hf_swin.SwinPatchMerging(d), "hf", "pre", False),
    # HF annotates input_resolution as tuple[int]; it is (H, W), and unused by the merge
    "hf-Swinv2": (
        lambda d, o: hf_swinv2.Swinv2PatchMerging((0, 0), d),  # type: ignore[arg-type]
        "hf",
        "post",
        False,
    ),
    "hf-DonutSwin": (lambda d, o: hf_donut.DonutSwinPatchMerging(d), "hf", "pre", False),
    "hf-MaskFormerSwin": (
        lambda d, o: hf_maskformer.MaskFormerSwinPatchMerging(d),
        "hf",
        "pre",
        False,
    ),
    "hf-ClapAudio": (lambda d, o: hf_clap.ClapAudioPatchMerging(d), "hf", "pre", False),
    "hf-Swin2SR": (
        lambda d, o: hf_swin2sr.Swin2SRPatchMerging((0, 0), d),  # type: ignore[arg-type]
        "hf",
        "post",
        False,
    ),
}

DTYPES = [torch.float64, torch.float32, torch.bfloat16]


def _call(m: nn.Module, convention: str, x: torch.Tensor) -> torch.Tensor:
    """Call a merge as its library does, on ``x: (B, H, W, C)``; return ``(B, H', W', O)``."""
    b, h, w, c = x.shape
    if convention == "bhwc":
        y: torch.Tensor = m(x)
        return y
    flat: torch.Tensor = m(x.reshape(b, h * w, c), (h, w))
    return flat.view(b, -(-h // 2), -(-w // 2), -1)


def _params(pm: PatchMerging) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    ln = pm.norm if isinstance(pm.norm, nn.LayerNorm) else None
    return pm.reduction.weight, None if ln is None else ln.weight, None if ln is None else ln.bias


def _eps(pm: PatchMerging) -> float:
    """The LayerNorm epsilon of a merge built from a library's (which always has one)."""
    assert isinstance(pm.norm, nn.LayerNorm), pm.norm
    return pm.norm.eps


@pytest.mark.parametrize("lib", LIBRARY_MERGES)
@examples(1.0)
@given(
    shape=shapes(max_numel=512),
    dtype=st.sampled_from(DTYPES),
    impl_draw=st.data(),
    out_extra=st.sampled_from([None, 1, 2]),
    seed=st.integers(0, 2**16),
)
def test_from_module_matches_library(
    lib: str,
    shape: tuple[int, int, int, int],
    dtype: torch.dtype,
    impl_draw: st.DataObject,
    out_extra: int | None,
    seed: int,
) -> None:
    """from_module(m) computes what the library's own merge m computes, on any (B, H, W, C).

    Shapes (pm_core.testing.shapes) reach odd, non-square and size-1 maps; the impl is
    drawn from every registered impl exact for the library's norm placement.

    Both are held to the same rounding-error bound (pm_core.bounds.error_bounds) against
    the float64 oracle on the values they actually received: the library's output must
    satisfy it (so the oracle describes the library), and so must pm_core's.
    """
    factory, convention, norm, takes_out = LIBRARY_MERGES[lib]
    impl = impl_draw.draw(
        st.sampled_from([i for i in IMPLS if norm in REGISTRY[i].exact_for]), label="impl"
    )
    b, h, w, c = shape
    out_dim = None if out_extra is None or not takes_out else 2 * c + out_extra
    src = randomise_params(factory(c, out_dim), seed).to(dtype).eval()
    pm = from_module(src, impl=impl)
    assert isinstance(pm, PatchMerging)
    assert (pm.norm_mode, pm.odd, pm.impl) == (norm, "pad", impl)
    assert pm.out_dim == (out_dim or 2 * c)
    x = torch.randn(b, h, w, c, generator=torch.Generator().manual_seed(seed)).to(dtype)
    with torch.no_grad():
        y_lib = _call(src, convention, x)
        y_pm = _call(pm, convention, x)
        wt, nw, nb = _params(pm)
        ref = pm_core.reference_patch_merge(x, wt, nw, nb, norm=norm, eps=_eps(pm))
        bound = error_bounds(x, wt, nw, nb, norm=norm, eps=_eps(pm)).output
    for who, y in (("library", y_lib), ("pm_core", y_pm)):
        err = (y.double() - ref).abs()
        worst = (err / bound).max().item() if err.numel() else 0.0
        assert worst <= 1, (
            f"{lib} impl={impl} {dtype} x{tuple(x.shape)}: {who} error/bound={worst:.3g}"
        )


@pytest.mark.parametrize("lib", LIBRARY_MERGES)
def test_from_module_shares_parameters_and_keys(lib: str) -> None:
    """The replacement reuses the source's Parameters and state_dict keys (no copy)."""
    src = LIBRARY_MERGES[lib][0](6, None)
    pm = from_module(src)
    assert list(pm.state_dict()) == list(src.state_dict())
    theirs = dict(src.named_parameters())
    for k, p in pm.named_parameters():
        assert p is theirs[k], k


class _Renamed(nn.Module):
    """Same attributes as torchvision's PatchMerging, but not a class pm_core knows."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)


def test_from_module_rejects_unknown_module() -> None:
    """An unrecognised module raises ValueError naming its class: with a merge's parts but
    no merge's behaviour (here, no forward at all), it says the probe found no windows;
    without a merge's structure, that it knows neither the class nor the structure."""
    with pytest.raises(ValueError, match=r"_Renamed has a merge's parts .* gathers no windows"):
        from_module(_Renamed(4))
    with pytest.raises(ValueError, match=r"does not recognise .*Conv2d, and it has no merge's"):
        from_module(nn.Conv2d(4, 8, 2))
    with pytest.raises(TypeError, match=r"needs an nn\.Module"):
        from_module("PatchMerging")  # type: ignore[arg-type]


def test_from_module_rejects_changed_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    """A recognised class whose forward no longer computes the known function is refused."""
    src = tv.PatchMerging(4)

    # timm's old bug: H and W swapped in the odd-size pad
    def swapped_hw_pad(self: Any, x: torch.Tensor) -> Any:
        x = nn.functional.pad(x, (0, 0, 0, x.shape[-3] % 2, 0, x.shape[-2] % 2))
        return self.reduction(self.norm(tv._patch_merging_pad(x)))

    # bound to the instance, so the probe's deep copy calls it on the copy
    monkeypatch.setattr(src, "forward", types.MethodType(swapped_hw_pad, src))
    with pytest.raises(ValueError, match="does not compute a swin-layout patch merge"):
        from_module(src)


def test_from_module_rejects_unfoldable_norm() -> None:
    """A norm other than LayerNorm/Identity cannot be folded: the error names it."""
    src = tv.PatchMerging(4, norm_layer=lambda n: nn.BatchNorm1d(n))
    with pytest.raises(ValueError, match="BatchNorm1d"):
        from_module(src)


def test_from_module_detects_odd_error_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A source that rejects odd sizes (Microsoft Swin's assert) gets odd='error'."""
    src = randomise_params(tv.PatchMerging(4), 0)

    def strict(self: Any, x: torch.Tensor) -> Any:
        assert x.shape[1] % 2 == 0, "x size is not even"
        assert x.shape[2] % 2 == 0, "x size is not even"
        return tv.PatchMerging.forward(self, x)

    monkeypatch.setattr(src, "forward", types.MethodType(strict, src))
    assert from_module(src).odd == "error"
    assert from_module(tv.PatchMerging(4)).odd == "pad"


def test_from_module_identity_norm_and_meta() -> None:
    """norm_layer=nn.Identity maps to norm='none'; meta parameters skip the probe."""
    assert from_module(tv.PatchMerging(4, norm_layer=lambda n: nn.Identity())).norm_mode == "none"
    meta = from_module(timm_v1.PatchMerging(4, device="meta"))
    assert isinstance(meta, PatchMerging)
    assert meta.reduction.weight.device.type == "meta"
    assert meta(torch.empty(2, 5, 6, 4, device="meta")).shape == (2, 3, 3, 8)


# --------------------------------------------------------------------------- whole models

SMALL = {"embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 2)}


def _tv_small(v2: bool) -> nn.Module:
    extra = (
        {"block": tv.SwinTransformerBlockV2, "downsample_layer": tv.PatchMergingV2} if v2 else {}
    )
    model: nn.Module = tv.SwinTransformer(
        [4, 4], 16, [1, 1, 1, 1], [1, 1, 2, 2], [4, 4], num_classes=10, **extra
    )
    return model


def _hf(
    cls: Callable[[Any], nn.Module], cfg: Callable[..., Any], **kw: Any
) -> Callable[[], nn.Module]:
    return lambda: cls(cfg(**kw))


_HF_SMALL = {"image_size": (72, 88), "embed_dim": 16, "depths": [1, 1, 1, 1]}
_HF_SMALL |= {"num_heads": [1, 1, 2, 2], "window_size": 3}

# id -> (factory, input (H, W)). Full-size: one per library. Small ones run at 72 x 88,
# so the merges see odd and non-square maps (18x22 -> 9x11 -> 5x6) and pad inside the model.
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int]]] = {
    "torchvision-swin_t": (lambda: __import__("torchvision").models.swin_t(), (224, 224)),
    "torchvision-swin_t-small": (lambda: _tv_small(False), (72, 88)),
    "torchvision-swin_v2_t-small": (lambda: _tv_small(True), (72, 88)),
    "timm-swin_tiny_patch4_window7_224": (
        lambda: timm.create_model("swin_tiny_patch4_window7_224"),
        (224, 224),
    ),
    "timm-swinv2_tiny_window8_256-small": (
        lambda: timm.create_model(
            "swinv2_tiny_window8_256", window_size=4, img_size=(72, 88), **SMALL
        ),
        (72, 88),
    ),
    "timm-swinv2_cr_tiny_224-small": (
        lambda: timm.create_model("swinv2_cr_tiny_224", window_size=4, img_size=(72, 88), **SMALL),
        (72, 88),
    ),
    "hf-SwinModel": (_hf(transformers.SwinModel, transformers.SwinConfig), (224, 224)),
    "hf-SwinModel-small": (
        _hf(transformers.SwinModel, transformers.SwinConfig, **_HF_SMALL),
        (72, 88),
    ),
    "hf-Swinv2Model-small": (
        _hf(transformers.Swinv2Model, transformers.Swinv2Config, **_HF_SMALL),
        (72, 88),
    ),
}


def _out(y: object) -> torch.Tensor:
    return y if isinstance(y, torch.Tensor) else y.last_hidden_state  # type: ignore[attr-defined]


#: (model id, original, swapped copy, merges swapped, input)
ModelPair = tuple[str, nn.Module, nn.Module, int, torch.Tensor]


@pytest.fixture(scope="module", params=list(MODELS))
def model_pair(request: pytest.FixtureRequest) -> ModelPair:
    """(original, swapped copy, input) for one model, eval mode, random weights."""
    torch.manual_seed(0)
    factory, (h, w) = MODELS[request.param]
    original = factory().eval()
    swapped = copy.deepcopy(original)
    n = swap_patch_merging(swapped, impl="conv")
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1))
    return request.param, original, swapped, n, x


def test_swap_replaces_every_merge(model_pair: ModelPair) -> None:
    """Every library merge in the model is replaced (3 in each Swin), and only those."""
    name, original, swapped, n, _ = model_pair
    assert n == 3, name
    assert not any(recognise(m) for m in swapped.modules())
    assert sum(isinstance(m, PatchMerging) and m.impl == "conv" for m in swapped.modules()) == 3
    assert list(swapped.state_dict()) == list(original.state_dict())
    assert swap_patch_merging(swapped) == 0  # already swapped: nothing left to do


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_swapped_model_matches_original(model_pair: ModelPair, dtype: torch.dtype) -> None:
    """The swapped model computes what the original computes, within the dtype's error.

    Two checks, on the model's real activations:

    * every swapped merge, on the input it actually received inside the model, is within
      pm_core.bounds.error_bounds of the float64 oracle (the derived per-layer bound);
    * end to end, both models are judged against the original run in float64 on the
      same, already-rounded weights and input. The swapped model differs only in its
      merges, each within the same per-layer bound as the op it replaces, so
      (flash-attention's rule) its RMS error may be at most 2x the original's. RMS, not
      max: the max over ~1e5 outputs is an extreme-value statistic of the rounding noise
      and swings by 2x between runs of the *same* model.
    """
    name, original, swapped, _, x = model_pair
    with torch.no_grad():
        o = copy.deepcopy(original).to(dtype)
        s = copy.deepcopy(swapped).to(dtype)
        seen: list[tuple[PatchMerging, tuple[Any, ...], torch.Tensor]] = []
        hooks = [
            m.register_forward_hook(lambda m, a, y: seen.append((m, a, y)))
            for m in s.modules()
            if isinstance(m, PatchMerging)
        ]
        xd = x.to(dtype)
        y_swap = _out(s(xd)).double()
        for h in hooks:
            h.remove()
        assert len(seen) == 3, name
        for m, args, y in seen:
            wt, nw, nb = _params(m)
            hw = args[1] if len(args) > 1 else None
            ref = pm_core.reference_patch_merge(
                args[0], wt, nw, nb, hw=hw, norm=m.norm_mode, eps=_eps(m)
            )
            bound = error_bounds(args[0], wt, nw, nb, hw=hw, norm=m.norm_mode, eps=_eps(m)).output
            worst = ((y.double() - ref).abs() / bound).max().item()
            assert worst <= 1, f"{name} {dtype} merge dim={m.dim}: error/bound={worst:.3g}"
        ref = _out(copy.deepcopy(o).double()(xd.double()))
        rms_orig = (_out(o(xd)).double() - ref).pow(2).mean().sqrt().item()
        rms_swap = (y_swap - ref).pow(2).mean().sqrt().item()
    assert rms_orig > 0, f"{name}: the original is exact in {dtype}? the reference is broken"
    assert rms_swap <= 2 * rms_orig, (
        f"{name} {dtype}: swapped RMS error {rms_swap:.3g} > 2 x original's {rms_orig:.3g}"
    )


def test_swapped_model_gradients_match() -> None:
    """Gradients through a swapped model equal the original's (float64, small torchvision)."""
    torch.manual_seed(0)
    original = _tv_small(False).double().eval()
    swapped = copy.deepcopy(original)
    assert swap_patch_merging(swapped) == 3
    x = torch.randn(2, 3, 72, 88, dtype=torch.float64)
    original(x).square().sum().backward()
    swapped(x).square().sum().backward()
    theirs = dict(swapped.named_parameters())  # same names; registration order may differ
    assert theirs.keys() == dict(original.named_parameters()).keys()
    for k, a in original.named_parameters():
        b = theirs[k]
        # float64 throughout; the two differ by rounding (~1e-15 relative), a wrong
        # layout or a lost gradient path by O(1)
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-9, msg=k)


def test_swap_rejects_bad_input() -> None:
    """swap_patch_merging names what is wrong: not a module, a bare merge, an unknown impl."""
    with pytest.raises(TypeError, match=r"needs an nn\.Module"):
        swap_patch_merging(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"use pm_core\.from_module"):
        swap_patch_merging(tv.PatchMerging(4))
    model = nn.Sequential(tv.PatchMerging(4))
    with pytest.raises(ValueError, match="unknown impl"):
        swap_patch_merging(model, impl="nope")
    assert isinstance(model[0], tv.PatchMerging)  # untouched


def test_swap_shared_module_is_replaced_once() -> None:
    """A merge registered under two names is converted once and replaced in both places."""
    merge = tv.PatchMerging(4)
    model = nn.Sequential(merge, nn.Identity())
    model.add_module("again", merge)
    assert swap_patch_merging(model) == 1
    assert model[0] is model.again
