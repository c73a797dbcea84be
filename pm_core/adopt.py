"""Adopt library patch-merging modules: recognise them, rebuild them as pm_core modules, swap them in.

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

The space-to-depth family (MONAI's ``PatchMergingV2`` / ``PatchMerging``, ultralytics'
``Focus``, timm's ``SpaceToDepth``) is recognised and adopted by
:mod:`pm_core.adopt_family`, whose gather order is *probed* from the module's behaviour.

Checkpoints are :mod:`pm_core.checkpoints`; telling a wrong-layout load is
:mod:`pm_core.layout_check`.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

from . import _compat
from ._checks import Norm, Odd
from .adopt_any import NotAMerge, ProbedMerge, UnadoptableMerge, adopt_by_behaviour, candidate
from .adopt_family import FamilyModule, adopt_family
from .impls import check_impl
from .modules import PatchMerging
from .recognition import KNOWN, Convention, Known, recognise
from .window_layouts import WindowOrderError


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
    norm: Norm = "pre" if known.norm is None else known.norm
    want = 4 * dim if norm == "pre" else out_dim
    if tuple(norm_mod.normalized_shape) != (want,):
        raise ValueError(
            f"{name}.norm normalises {tuple(norm_mod.normalized_shape)} but a {norm!r}-norm "
            f"merge with dim={dim}, out_dim={out_dim} normalises ({want},)"
        )
    return dim, out_dim, norm, float(norm_mod.eps)


def _probe_input(m: nn.Module, dim: int, h: int, w: int) -> Tensor:
    g = torch.Generator().manual_seed(0)
    # a large common offset per window, so a placement error in the pre-norm shows as well
    x = torch.randn(2, h, w, dim, generator=g, dtype=torch.float64) + 3.0
    p = next(m.parameters())
    return x.to(p.device)


def call_as_library(m: nn.Module, convention: Convention, x: Tensor) -> Tensor:
    """Call ``m`` the way its library does, on ``x: (B, H, W, C)``; return ``(B, H', W', O)``."""
    b, h, w, c = x.shape
    if convention == "bhwc":
        y: Tensor = m(x)
        return y
    y = m(x.reshape(b, h * w, c), (h, w))
    return y.view(b, -(-h // 2), -(-w // 2), -1)


def _matches(src: nn.Module, dst: nn.Module, convention: Convention, x: Tensor) -> bool:
    y_src = call_as_library(src, convention, x)
    y_dst = call_as_library(dst, "bhwc", x)
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
    if not all(_compat.has_values(p) for p in src.parameters()):
        return None  # no values to run: meta or fake tensors (shape-only tracing)
    s64 = copy.deepcopy(src).double()
    d64 = copy.deepcopy(dst).double()
    name = type(src).__qualname__
    failures: list[str] = []
    with torch.no_grad():
        for h, w in _ODD_PROBES:
            try:
                call_as_library(s64, known.convention, _probe_input(s64, dim, h, w))
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


#: What :func:`from_module` returns: a 2x2 merge, a member of the general family, or a
#: merge adopted by behaviour.
Adopted = PatchMerging | FamilyModule | ProbedMerge


class UnswappedMergeWarning(UserWarning):
    """:func:`~pm_core.swap_patch_merging` saw merge-like modules it did not replace; the message
    names each one and the reason."""


def from_module(m: nn.Module, *, impl: str = "conv", verify: bool = True) -> Adopted:
    """A pm_core module computing what library merge ``m`` computes.

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

    The space-to-depth family (the rest of :data:`~pm_core.adopt.KNOWN`; its gather
    order is probed from the module, see :mod:`pm_core.adopt_family`):

    * MONAI ``PatchMergingV2`` (2-D: layout ``"swin"``; 3-D: ``"monai-v2-3d"``) and
      ``PatchMerging`` (3-D from 1.5.0: ``"monai-legacy"``; 2-D: V2's forward) become a
      :class:`pm_core.WindowMerging` over ``Window((2,)*dims, padding="corner")`` that
      shares ``norm`` and ``reduction``; ``impl`` is any registered impl that computes its
      window (``"auto"``: ``"conv"`` where the window is not Swin's 2x2).
      MONAI <= 1.4's legacy 3-D merge reads two offsets twice and two never: it raises
      :class:`pm_core.window_layouts.WindowOrderError` naming them, since no pm_core merge computes it.
    * ultralytics ``Focus`` becomes a :class:`pm_core.FocusConv` (one ``2k x 2k`` conv,
      weight :func:`pm_core.focus.focus_to_conv`, the source's BatchNorm and activation).
    * timm ``SpaceToDepth`` becomes a :class:`pm_core.SpaceToDepth` (``"timm-s2d"``).

    Any other module with a merge's structure (one bias-free ``nn.Linear``, an optional
    ``nn.LayerNorm``, no other parameters: Microsoft Swin's ``PatchMerging`` as research
    repos vendor it, Video Swin's, a fork's) is adopted by behaviour
    (:mod:`pm_core.adopt_any`): its calling convention, window, gather order, norm
    placement and odd-size policy are probed, and it becomes a
    :class:`pm_core.adopt_any.ProbedMerge` with its call, keys and Parameters; one that
    merges in a form pm_core cannot compute raises, naming why.

    ``Focus`` and ``SpaceToDepth`` have one form each and ignore ``impl``; ``impl="auto"``
    (see :mod:`pm_core.auto`) chooses among the 2x2 merge's impls, and a MONAI merge
    takes the general merge's ``"conv"`` form for it.

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
    if known is not None and known.kind != "swin":
        return adopt_family(m, known, impl=impl, verify=verify)
    if known is None:
        if candidate(m) is not None:
            return adopt_by_behaviour(m, impl=impl, verify=verify)
        t = type(m)
        raise ValueError(
            f"from_module does not recognise {t.__module__}.{t.__qualname__}, and it has no "
            "merge's structure to probe (one bias-free nn.Linear, in_features a multiple of "
            "4, an optional nn.LayerNorm, no other parameters); by name it knows "
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


def _recognised(m: object) -> bool:
    return recognise(m) is not None


def _merge_like(m: nn.Module) -> bool:
    """Not recognised by name, and not pm_core's own, but built like a merge or named one."""
    if isinstance(m, (PatchMerging, ProbedMerge)) or type(m).__module__.startswith("pm_core."):
        return False
    return candidate(m) is not None or "merg" in type(m).__name__.lower()


def _named_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(prefix for children, module)`` for every module, duplicates included once."""
    return [(f"{name}." if name else "", m) for name, m in model.named_modules()]


def swap_patch_merging(model: nn.Module, impl: str = "conv", *, verify: bool = True) -> int:
    """Replace every recognised patch-merging module inside ``model``, in place.

    Recognised: every class :func:`from_module` adopts, the space-to-depth family
    (MONAI's merges in a ``SwinUNETR``, ``Focus``, ``SpaceToDepth``) included; ``impl``
    is any name in :data:`pm_core.IMPLS`, and a module it cannot apply to (a 2x2 fast path
    for MONAI's 3-D merge) raises before the model is touched.

    Modules no table names but built like a merge are probed (:mod:`pm_core.adopt_any`):
    a merge is replaced; a look-alike that gathers no windows is left alone. A module
    that merges but cannot be adopted exactly, or is named like a merge but built like
    none, is left in place and named, with the reason, in one
    :class:`~pm_core.adopt.UnswappedMergeWarning`: the function never returns silently past a merge it
    did not replace.

    Each replacement is :func:`from_module` of the original, so parameters are shared and
    ``model.state_dict()`` keeps its keys; the model's own forward is unchanged. Modules
    already converted (:class:`pm_core.PatchMerging`) are left alone. A module registered
    under several names is converted once and replaced everywhere.

    Returns:
        The number of distinct modules replaced.

    >>> from torchvision.models import swin_t
    >>> swap_patch_merging(swin_t().eval())
    3
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"swap_patch_merging needs an nn.Module, got {type(model).__name__}")
    if _recognised(model):
        raise ValueError(
            f"model is itself a {type(model).__qualname__}; it cannot be replaced in place, "
            "use pm_core.from_module(model)"
        )
    check_impl(impl)  # reject an unknown impl before touching the model
    # _modules, not named_children(): that skips a second name for the same module
    seen = [
        (parent, name, child, prefix + name)
        for prefix, parent in _named_modules(model)
        for name, child in parent._modules.items()
        if child is not None and (_recognised(child) or _merge_like(child))
    ]
    new: dict[int, Adopted] = {}
    skipped: dict[int, str] = {}
    for _, _, child, path in seen:
        if id(child) in new or id(child) in skipped:
            continue
        if _recognised(child):
            new[id(child)] = from_module(child, impl=impl, verify=verify)
            continue
        try:
            new[id(child)] = adopt_by_behaviour(child, impl=impl, verify=verify, name=path)
        except NotAMerge as e:
            if "merg" in type(child).__name__.lower():  # named like a merge: say so
                skipped[id(child)] = f"{path} ({type(child).__qualname__}): {e}"
        except (UnadoptableMerge, WindowOrderError) as e:
            skipped[id(child)] = f"{path} ({type(child).__qualname__}): {e}"
    for parent, name, child, _ in seen:
        if id(child) in new:
            setattr(parent, name, new[id(child)])
    if skipped:
        warnings.warn(
            f"swap_patch_merging left {len(skipped)} merge-like module(s) in place: "
            + "; ".join(skipped.values()),
            UnswappedMergeWarning,
            stacklevel=2,
        )
    return len(new)


__all__ = [
    "KNOWN",
    "Adopted",
    "Convention",
    "Known",
    "UnswappedMergeWarning",
    "call_as_library",
    "from_module",
    "recognise",
    "swap_patch_merging",
]
