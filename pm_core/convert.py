"""Real models: adopt library patch-merging modules, swap them in place, convert checkpoints.

Design requirements:

* **No third-party imports.** torchvision, timm and HF transformers modules are recognised
  by their class's module path and name, so ``import pm_core`` needs only torch.
* **Recognised by class, confirmed by behaviour.** :func:`from_module` reads the
  structure (``dim``, ``out_dim``, norm placement, ``eps``) from the module's attributes,
  then runs the source and the replacement on a small odd, non-square float64 probe and
  refuses to return a module that computes something else. The odd-size policy is
  detected the same way: a source that rejects odd sizes gets ``odd="error"``.
* **Drop-in.** The replacement is a :class:`pm_core.PatchMerging` that *reuses* the
  source's ``.norm`` and ``.reduction`` submodules: the state_dict keys, shapes, and the
  Parameter objects (so optimizers and tied references) stay the same. Its
  ``forward(x, hw=None)`` already is each library's calling convention: torchvision and
  timm call ``merge(x)`` with ``x: (B, H, W, C)``; HF transformers calls
  ``merge(x, input_dimensions)`` with ``x: (B, H*W, C)``, which arrives as ``hw``.
* **Checkpoints.** :func:`convert_state_dict` permutes every patch-merging reduction
  weight and 4C norm vector in a state dict between the ``"swin"`` layout (Microsoft,
  timm, torchvision, HF), the ``"unfold"`` layout (mmcv / mmseg / mmdet) and the
  ``"conv"`` layout (:class:`pm_core.ConvPatchMerging`). Keys are not renamed.
* **Wrong-layout loads.** :func:`check_merge_layout` tells whether a merge module's
  weights are in the layout it computes with; see its docstring for what it can and
  cannot see.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._subclasses.fake_tensor import is_fake

from ._checks import Norm, Odd, as_bhwc, check_options
from .impls import get_impl
from .layouts import conv_to_linear, linear_to_conv, swin_to_unfold, unfold_to_swin
from .modules import PatchMerging

Layout = Literal["swin", "unfold", "conv"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
Convention = Literal["bhwc", "hf"]


@dataclass(frozen=True)
class Known:
    """A recognised library class: where it comes from and what it computes."""

    library: str
    convention: Convention  # "bhwc": merge(x (B, H, W, C)); "hf": merge(x (B, L, C), (H, W))
    norm: Norm  # where its LayerNorm sits


#: ``(class module, class qualname) -> Known``. Every entry gathers the 2x2 window in the
#: swin order (0,0), (1,0), (0,1), (1,1) and zero-pads odd sizes (read from the sources of
#: torchvision 0.29, timm 1.0 and transformers 5.x; the probe in :func:`from_module`
#: re-checks both on every call).
KNOWN: dict[tuple[str, str], Known] = {
    ("torchvision.models.swin_transformer", "PatchMerging"): Known("torchvision", "bhwc", "pre"),
    ("torchvision.models.swin_transformer", "PatchMergingV2"): Known("torchvision", "bhwc", "post"),
    ("timm.models.swin_transformer", "PatchMerging"): Known("timm", "bhwc", "pre"),
    ("timm.models.swin_transformer_v2", "PatchMerging"): Known("timm", "bhwc", "post"),
    # v2_cr: despite its docstring ("[B, C, H, W]"), the stage hands it (B, H, W, C), and
    # unlike timm's swinv2 its norm is LN(4C) *before* the reduction, with out = 2C fixed.
    ("timm.models.swin_transformer_v2_cr", "PatchMerging"): Known("timm", "bhwc", "pre"),
    ("transformers.models.swin.modeling_swin", "SwinPatchMerging"): Known(
        "transformers", "hf", "pre"
    ),
    ("transformers.models.swinv2.modeling_swinv2", "Swinv2PatchMerging"): Known(
        "transformers", "hf", "post"
    ),
    # HF's copies of the same code
    ("transformers.models.donut.modeling_donut_swin", "DonutSwinPatchMerging"): Known(
        "transformers", "hf", "pre"
    ),
    ("transformers.models.maskformer.modeling_maskformer_swin", "MaskFormerSwinPatchMerging"): (
        Known("transformers", "hf", "pre")
    ),
    ("transformers.models.clap.modeling_clap", "ClapAudioPatchMerging"): Known(
        "transformers", "hf", "pre"
    ),
    ("transformers.models.swin2sr.modeling_swin2sr", "Swin2SRPatchMerging"): Known(
        "transformers", "hf", "post"
    ),
}


def recognise(m: object) -> Known | None:
    """The :data:`KNOWN` entry for ``m``'s class, or ``None``. Never imports the library."""
    t = type(m)
    return KNOWN.get((t.__module__, t.__qualname__))


def _is_plain_layer_norm(norm: nn.Module) -> bool:
    """``F.layer_norm`` over the last dim: ``nn.LayerNorm`` itself or timm's thin subclass."""
    t = type(norm)
    if t is nn.LayerNorm:
        return True
    return t.__module__.startswith("timm.layers") and t.__name__ == "LayerNorm"


def _structure(m: nn.Module, known: Known) -> tuple[int, int, Norm, float]:
    """``(dim, out_dim, norm, eps)`` read from a recognised module; raises if it is unusual."""
    name = type(m).__qualname__
    red = getattr(m, "reduction", None)
    if (
        not isinstance(red, nn.Linear)
        or getattr(red, "bias", None) is not None
        or red.in_features % 4
    ):
        raise ValueError(
            f"{name}.reduction must be a bias-free nn.Linear(4*dim, out_dim), got {red!r}"
        )
    dim, out_dim = red.in_features // 4, red.out_features
    norm_mod = getattr(m, "norm", None)
    if isinstance(norm_mod, nn.Identity):
        return dim, out_dim, "none", 1e-5
    if not isinstance(norm_mod, nn.LayerNorm) or not _is_plain_layer_norm(norm_mod):
        raise ValueError(
            f"{name}.norm is {type(norm_mod).__name__}; pm_core can only fold nn.LayerNorm "
            "(or nn.Identity) into the merge"
        )
    want = 4 * dim if known.norm == "pre" else out_dim
    if tuple(norm_mod.normalized_shape) != (want,):
        raise ValueError(
            f"{name}.norm normalises {tuple(norm_mod.normalized_shape)} but a {known.norm!r}-norm "
            f"merge with dim={dim}, out_dim={out_dim} normalises ({want},)"
        )
    return dim, out_dim, known.norm, float(norm_mod.eps)


def _probe_input(m: nn.Module, dim: int, h: int, w: int) -> Tensor:
    g = torch.Generator().manual_seed(0)
    # a large common offset per window, so a placement error in the pre-norm shows as well
    x = torch.randn(2, h, w, dim, generator=g, dtype=torch.float64) + 3.0
    p = next(m.parameters())
    return x.to(p.device)


def _call(m: nn.Module, convention: Convention, x: Tensor) -> Tensor:
    """Call ``m`` the way its library does, on ``x: (B, H, W, C)``; return ``(B, H', W', O)``."""
    b, h, w, c = x.shape
    if convention == "bhwc":
        y: Tensor = m(x)
        return y
    y = m(x.reshape(b, h * w, c), (h, w))
    return y.view(b, -(-h // 2), -(-w // 2), -1)


def _matches(src: nn.Module, dst: nn.Module, convention: Convention, x: Tensor) -> bool:
    y_src = _call(src, convention, x)
    y_dst = _call(dst, "bhwc", x)
    if y_src.shape != y_dst.shape:
        return False
    # float64, K = 4C <= a few thousand: both round at <= K * 2**-53 * sum|w||v| ~ 1e-12
    # relative; a permuted layout or a misplaced norm differs at O(|y|).
    scale = float(y_src.abs().max()) if y_src.numel() else 0.0
    return bool(torch.allclose(y_dst, y_src, rtol=1e-9, atol=1e-9 * scale))


_ODD_PROBES = ((5, 4), (4, 3), (5, 3))  # H odd, W odd, both: a pad with H and W swapped shows
_EVEN_PROBE = (4, 6)


def _detect_odd_and_verify(src: nn.Module, dst: PatchMerging, known: Known, dim: int) -> Odd | None:
    """Run float64 copies of ``src`` and ``dst`` on small non-square probes.

    Returns the odd-size policy (``None`` where the parameters are on the meta device and
    nothing can run). Raises if ``dst`` does not reproduce ``src`` on every probe, or if
    ``src`` accepts some odd sizes and rejects others.
    """
    if any(p.device.type == "meta" or is_fake(p) for p in src.parameters()):
        return None  # no values to run: meta or fake tensors (shape-only tracing)
    s64 = copy.deepcopy(src).double()
    d64 = copy.deepcopy(dst).double()
    name = type(src).__qualname__
    failures: list[str] = []
    with torch.no_grad():
        for h, w in _ODD_PROBES:
            try:
                _call(s64, known.convention, _probe_input(s64, dim, h, w))
            except (AssertionError, RuntimeError, ValueError) as e:  # noqa: PERF203
                failures.append(f"({h}, {w}): {e}")
        if failures and len(failures) < len(_ODD_PROBES):
            raise ValueError(
                f"{name} accepts some odd sizes and fails on others ({'; '.join(failures)}); "
                "that is no odd-size policy pm_core knows"
            )
        policy: Odd = "error" if failures else "pad"
        d64.odd = policy
        for h, w in (_EVEN_PROBE,) if failures else (*_ODD_PROBES, _EVEN_PROBE):
            x = _probe_input(s64, dim, h, w)
            try:
                same = _matches(s64, d64, known.convention, x)
            except (AssertionError, RuntimeError, ValueError) as e:
                raise ValueError(f"{name} fails on a float64 {tuple(x.shape)} probe: {e}") from e
            if not same:
                raise ValueError(
                    f"{name} does not compute a swin-layout patch merge with a "
                    f"{dst.norm_mode!r} norm and odd={policy!r} on a {tuple(x.shape)} probe: "
                    "its forward differs from what its attributes describe (a changed "
                    "library version?); refusing to convert it"
                )
    return policy


def from_module(m: nn.Module, *, impl: str = "conv", verify: bool = True) -> PatchMerging:
    """A :class:`pm_core.PatchMerging` computing what library merge ``m`` computes.

    Recognised: torchvision ``PatchMerging`` / ``PatchMergingV2``; timm's
    ``swin_transformer``, ``swin_transformer_v2`` and ``swin_transformer_v2_cr``
    ``PatchMerging`` (any ``out_dim``); HF transformers ``SwinPatchMerging``,
    ``Swinv2PatchMerging`` and their copies (Donut, MaskFormer, CLAP, Swin2SR). See
    :data:`KNOWN`. A :class:`pm_core.PatchMerging` is re-targeted to ``impl``.

    The norm placement (``"pre"`` LN(4C) / ``"post"`` LN(out_dim) / ``"none"``), ``eps``,
    ``dim`` and ``out_dim`` come from ``m``'s submodules. With ``verify=True`` (default)
    float64 copies of ``m`` and the result are run on small probes, odd in H, in W and in
    both: a source that rejects odd sizes gets ``odd="error"`` (checked on an even probe
    instead), and a result that does not reproduce ``m`` on every probe raises (this
    catches, e.g., a pad with H and W swapped, or a different channel order). Parameters on the meta device skip the
    probe and keep ``odd="pad"``, the policy of every recognised library.

    The result *shares* ``m.norm`` and ``m.reduction`` (same Parameter objects, same
    state_dict keys); ``copy.deepcopy`` first for an independent module. Its
    ``forward(x, hw=None)`` takes ``(B, H, W, C)`` as torchvision/timm pass it, or
    ``(B, H*W, C)`` with ``hw = (H, W)`` positional, as HF passes ``input_dimensions``.

    >>> import torch
    >>> from torchvision.models.swin_transformer import PatchMerging as TV
    >>> src = TV(8).eval()
    >>> pm = from_module(src, impl="conv")
    >>> x = torch.randn(1, 5, 6, 8)
    >>> torch.allclose(pm(x), src(x), atol=1e-5)
    True
    """
    if not isinstance(m, nn.Module):
        raise TypeError(f"from_module needs an nn.Module, got {type(m).__name__}")
    if isinstance(m, PatchMerging):
        same = PatchMerging(
            m.dim, out_dim=m.out_dim, norm=m.norm_mode, impl=impl, odd=m.odd, device="meta"
        )
        same.norm, same.reduction = m.norm, m.reduction
        return same.train(m.training)
    known = recognise(m)
    if known is None:
        t = type(m)
        raise ValueError(
            f"from_module does not recognise {t.__module__}.{t.__qualname__}; it knows "
            + ", ".join(f"{mod}.{cls}" for mod, cls in KNOWN)
        )
    dim, out_dim, norm, eps = _structure(m, known)
    out = PatchMerging(dim, out_dim=out_dim, norm=norm, impl=impl, eps=eps, device="meta")
    # reuse the source's submodules: same Parameters, same keys, no copy
    out.norm = m.get_submodule("norm")
    red = m.get_submodule("reduction")
    assert isinstance(red, nn.Linear)  # checked by _structure
    out.reduction = red
    # register in the source's order, so state_dict() lists the keys in the same order
    out._modules = {k: out._modules[k] for k in m._modules if k in out._modules}
    if verify:
        policy = _detect_odd_and_verify(m, out, known, dim)
        if policy is not None:
            out.odd = policy
    out.train(m.training)
    return out


def swap_patch_merging(model: nn.Module, impl: str = "conv", *, verify: bool = True) -> int:
    """Replace every recognised patch-merging module inside ``model``, in place.

    Each replacement is :func:`from_module` of the original, so parameters are shared and
    ``model.state_dict()`` keeps its keys; the model's own forward is unchanged. Modules
    already converted (:class:`pm_core.PatchMerging`) and unrecognised ones are left
    alone: compare the returned count with what you expect. A module registered under
    several names is converted once and replaced everywhere.

    Returns:
        The number of distinct modules replaced.

    >>> from torchvision.models import swin_t
    >>> swap_patch_merging(swin_t().eval())
    3
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"swap_patch_merging needs an nn.Module, got {type(model).__name__}")
    if recognise(model) is not None:
        raise ValueError(
            f"model is itself a {type(model).__qualname__}; it cannot be replaced in place, "
            "use pm_core.from_module(model)"
        )
    get_impl(impl)  # reject an unknown impl before touching the model
    # _modules, not named_children(): that skips a second name for the same module
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent._modules.items()
        if child is not None and recognise(child) is not None
    ]
    new: dict[int, PatchMerging] = {}
    for _, _, child in targets:
        if id(child) not in new:
            new[id(child)] = from_module(child, impl=impl, verify=verify)
    for parent, name, child in targets:
        setattr(parent, name, new[id(child)])
    return len(new)


# --------------------------------------------------------------------------- checkpoints


def _is_merge_weight(t: Tensor, layout: Layout) -> bool:
    if layout == "conv":
        return t.dim() == 4 and tuple(t.shape[2:]) == (2, 2)
    return t.dim() == 2 and t.shape[1] % 4 == 0 and t.shape[1] > 0


def merge_prefixes(sd: Mapping[str, Tensor], layout: Layout = "swin") -> list[str]:
    """Key prefixes of the patch merges in ``sd``: every ``<p>reduction.weight`` without a
    ``<p>reduction.bias`` whose tensor is a ``[O, 4C]`` (or, for ``"conv"``, ``[O, C, 2, 2]``)
    reduction. That covers Microsoft's and timm's ``layers.{i}.downsample.``, torchvision's
    ``features.{2,4,6}.``, HF's ``encoder.layers.{i}.downsample.`` and mmseg's
    ``backbone.stages.{i}.downsample.``.
    """
    out = []
    for k, t in sd.items():
        if not k.endswith("reduction.weight") or not isinstance(t, Tensor):
            continue
        p = k[: -len("reduction.weight")]
        if p and not p.endswith("."):
            continue
        if p + "reduction.bias" not in sd and _is_merge_weight(t, layout):
            out.append(p)
    return out


def _permute_weight(w: Tensor, src: Layout, dst: Layout) -> Tensor:
    if src == "unfold":
        swin = unfold_to_swin(w)
    elif src == "conv":
        swin = conv_to_linear(w)
    else:
        swin = w
    if dst == "swin":
        return swin.contiguous()
    if dst == "unfold":
        return swin_to_unfold(swin).contiguous()
    return linear_to_conv(swin)


def _permute_norm(v: Tensor, src: Layout, dst: Layout) -> Tensor:
    # conv-parameterised merges keep their 4C norm in the swin order
    s = "swin" if src == "conv" else src
    d = "swin" if dst == "conv" else dst
    if s == d:
        return v
    return (swin_to_unfold(v) if d == "unfold" else unfold_to_swin(v)).contiguous()


def convert_state_dict(sd: Mapping[str, Tensor], src: Layout, dst: Layout) -> dict[str, Tensor]:
    """Re-order every patch merge's weights in ``sd`` from layout ``src`` to ``dst``.

    Layouts: ``"swin"`` (Microsoft, timm, torchvision, HF: column ``(2*dw + dh)*C + c``),
    ``"unfold"`` (mmcv/mmseg/mmdet ``nn.Unfold``: column ``4*c + 2*dh + dw``) and ``"conv"``
    (:class:`pm_core.ConvPatchMerging`: ``reduction.weight`` is ``[O, C, 2, 2]``, its 4C norm
    stays in the swin order). For each prefix from :func:`merge_prefixes`:

    * ``<p>reduction.weight`` ``[O, 4C]`` is permuted (reshaped for ``"conv"``);
    * ``<p>norm.weight`` / ``<p>norm.bias`` are permuted when they have ``4C`` entries (Swin
      v1's pre-norm). A ``post`` norm over the ``O`` outputs is left as it is. When
      ``O == 4C`` the two cannot be told apart from shapes, and this raises.

    Every other entry, the key names, their order and ``sd._metadata`` are kept; the input
    is not modified. Each step is a permutation, so ``convert_state_dict(convert_state_dict(
    sd, a, b), b, a)`` equals ``sd`` bit for bit. Keys are not renamed between libraries.

    >>> import torch
    >>> sd = {"layers.0.downsample.norm.weight": torch.arange(8.0),
    ...       "layers.0.downsample.reduction.weight": torch.zeros(4, 8)}
    >>> convert_state_dict(sd, "swin", "unfold")["layers.0.downsample.norm.weight"]
    tensor([0., 4., 2., 6., 1., 5., 3., 7.])
    """
    for arg, layout in (("src", src), ("dst", dst)):
        if layout not in LAYOUTS:
            raise ValueError(f"{arg} must be one of {LAYOUTS}, got {layout!r}")
    if not isinstance(sd, Mapping):
        raise TypeError(f"sd must be a state dict (a Mapping), got {type(sd).__name__}")
    out: OrderedDict[str, Tensor] = OrderedDict(sd)
    meta = getattr(sd, "_metadata", None)
    if meta is not None:
        out._metadata = copy.copy(meta)  # type: ignore[attr-defined]
    if src == dst:
        return out
    for p in merge_prefixes(sd, src):
        w = sd[p + "reduction.weight"]
        o, four_c = (w.shape[0], 4 * w.shape[1]) if src == "conv" else tuple(w.shape)
        for key in (p + "norm.weight", p + "norm.bias"):
            v = sd.get(key)
            if v is None or v.dim() != 1 or v.shape[0] != four_c:
                continue
            if o == four_c:
                raise ValueError(
                    f"{key} has {four_c} entries and {p}reduction.weight is [{o}, {four_c}]: "
                    "a pre-norm (permute) and a post-norm (keep) look the same; convert this "
                    "merge by hand with pm_core.swin_to_unfold / unfold_to_swin"
                )
            out[key] = _permute_norm(v, src, dst)
        out[p + "reduction.weight"] = _permute_weight(w, src, dst)
    return out


# --------------------------------------------------------------------------- unfold module


class UnfoldPatchMerging(nn.Module):
    """An mmcv-style merge: ``nn.Unfold(2, stride=2)``, LN(4C), Linear, weights in unfold order.

    ``.norm`` is ``LayerNorm(4*dim)`` (``norm="pre"``) or ``Identity`` (``"none"``);
    ``.reduction`` is ``nn.Linear(4*dim, out_dim, bias=False)``. Both are in the unfold
    layout (column ``4*c + 2*dh + dw``), as in mmseg/mmdet checkpoints. Keys and shapes are
    those of a Swin merge, so a swin-layout state dict loads *strictly and silently* and
    computes the wrong function (mmseg #2350); convert it with
    ``convert_state_dict(sd, "swin", "unfold")``, and see :func:`check_merge_layout`.

    ``forward(x, hw=None)``: ``x`` is ``(B, H, W, C)``, or ``(B, H*W, C)`` with
    ``hw=(H, W)``; odd sizes are zero-padded at the bottom/right (mmcv's ``"corner"``).
    """

    def __init__(
        self,
        dim: int,
        *,
        out_dim: int | None = None,
        norm: Literal["pre", "none"] = "pre",
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        check_options(norm, "pad", eps)
        if norm not in ("pre", "none"):
            raise ValueError(f"UnfoldPatchMerging has mmcv's norm='pre' or 'none'; got {norm!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.out_dim = 2 * dim if out_dim is None else out_dim
        self.norm: nn.Module = (
            nn.LayerNorm(4 * dim, eps=eps, device=device, dtype=dtype)
            if norm == "pre"
            else nn.Identity()
        )
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False, device=device, dtype=dtype)

    def forward(self, x: Tensor, hw: tuple[int, int] | None = None) -> Tensor:
        x4, flat = as_bhwc(x, hw)
        b, h, w, c = x4.shape
        if c != self.dim:
            raise ValueError(f"x has C={c} channels but this merge has dim={self.dim}")
        nchw = F.pad(x4, (0, 0, 0, w % 2, 0, h % 2)).permute(0, 3, 1, 2)
        v = F.unfold(nchw, kernel_size=2, stride=2).transpose(1, 2)  # (B, L', 4C)
        y: Tensor = self.reduction(self.norm(v))
        return y if flat else y.view(b, -(-h // 2), -(-w // 2), -1)

    @classmethod
    def from_swin(cls, m: nn.Module) -> UnfoldPatchMerging:
        """The unfold-layout twin of a swin-layout pre-norm merge (any :func:`from_module` source)."""
        pm = m if isinstance(m, PatchMerging) else from_module(m, impl="slice", verify=False)
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


# --------------------------------------------------------------------------- layout check


class LayoutMismatchError(ValueError):
    """A merge's weights are in the other layout than the one it computes with."""


@dataclass(frozen=True)
class LayoutCheck:
    """The outcome of :func:`check_merge_layout`.

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
      :class:`LayoutMismatchError` naming the unconverted load. Anything else raises as
      well. This is definitive, but needs the reference.
    * **statistics** (no reference): :func:`layout_scores`. Training leaves each input
      channel with its own scale, shared by its 4 window positions, and the layout is
      readable from which grouping of the 4C columns correlates. A score above
      ``min_score`` that beats the other by ``margin`` decides. This sees nothing in
      freshly initialised (i.i.d.) weights, where both layouts are statistically
      identical, so the verdict is ``"undetermined"`` rather than a guess, and it
      cannot see a merge with fewer than 8 input channels. It is a heuristic: it was
      tested on synthetic channel-structured weights (no trained checkpoint can be
      downloaded here), not on real checkpoints.

    Returns:
        A :class:`LayoutCheck` with verdict ``"ok"`` or ``"undetermined"``.

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
        y_ref, y_mod = _call(ref64, "bhwc", x), _call(mod64, conv, x)
        scale = float(y_ref.abs().max())
        # float64 rounding ~1e-13 relative (see _matches); a layout error is O(|y|)
        if torch.allclose(y_mod, y_ref, rtol=1e-9, atol=1e-9 * scale):
            return LayoutCheck("ok", "reference", expected, math.nan, math.nan, "matches")
        # what the module computes when handed the reference's weights in the other layout
        mis = copy.deepcopy(mod64)
        try:
            mis.load_state_dict(convert_state_dict(ref64.state_dict(), "swin", other))
            y_mis = _call(mis, conv, x)
            wrong = bool(torch.allclose(y_mod, y_mis, rtol=1e-9, atol=1e-9 * scale))
        except RuntimeError:  # the other layout does not even load (e.g. a conv weight)
            wrong = False
    what = (
        f"it holds the reference's weights in the {other} layout, loaded without conversion; "
        f"convert the state dict with convert_state_dict(sd, {other!r}, {expected!r})"
        if wrong
        else "its weights are not the reference's in either layout"
    )
    raise LayoutMismatchError(f"{name} does not reproduce the reference merge: {what}")


__all__ = [
    "KNOWN",
    "LAYOUTS",
    "Known",
    "LayoutCheck",
    "LayoutMismatchError",
    "UnfoldPatchMerging",
    "check_merge_layout",
    "convert_state_dict",
    "from_module",
    "layout_scores",
    "merge_prefixes",
    "recognise",
    "swap_patch_merging",
]
