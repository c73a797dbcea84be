"""Adopt any patch merge by what it computes: found by structure, confirmed by probing.

The class-name table (:data:`pm_core.adopt.KNOWN`) covers the libraries; the code most
Swin users run is a copy of Microsoft's ``PatchMerging`` vendored into a research repo,
whose class no table can list. This module adopts such a module by behaviour:

* **Candidate by structure** (:func:`candidate`): the module's own children hold exactly
  one bias-free ``nn.Linear`` whose ``in_features`` is 4 or 8 times a channel count, at
  most one ``nn.LayerNorm`` (over the Linear's input or its output), and nothing else
  with parameters.
* **Gather probed** (:func:`probe`): a shallow copy with the Linear and the LayerNorm
  replaced by ``nn.Identity`` is called on index-coded float64 inputs (every entry ``1 +
  its flat index``; see :func:`pm_core.adopt_family.probe_layout`) in each calling
  convention pm_core knows (:data:`ProbedConvention`) until one returns the windows of a
  pure gather: that fixes the convention, the window and the order of its offsets (any
  permutation, offset- or channel-major). An odd-sized probe then reads the odd-size
  policy: zero-padding at the bottom / right, or an error. A module that returns
  ``(y, output_size)`` (mmcv's ``PatchMerging``, in mmdet and mmseg Swins) is followed.
* **Function verified**: float64 copies of the source and the replacement run on a
  random probe in the source's convention and must lie within
  :func:`pm_core.window_error_bounds` of :func:`pm_core.reference_window_merge`; the
  LayerNorm's placement (before or after the Linear) is the one that passes.

What cannot be adopted exactly raises :class:`NotAMerge` (it computes no merge: a
look-alike) or :class:`UnadoptableMerge` (it merges, but not in a form pm_core computes
exactly), each with the reason.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from . import _compat
from ._checks import Norm
from .adopt_family import _check_within, _replaced, probe_layout
from .functional import window_merge
from .impls import check_impl
from .oracle import reference_window_merge
from .window import Window
from .window_bounds import window_error_bounds
from .window_gather import space_to_depth
from .window_layouts import WindowLayout, WindowOrderError

#: How a merge is called. ``"bhwc"``: ``m(x)`` with ``x: (B, H, W, C)``; ``"bdhwc"``:
#: ``m(x)`` with ``x: (B, D, H, W, C)``, merging H and W only (Video Swin);
#: ``"tokens@resolution"``: ``m(x)`` with ``x: (B, H*W, C)`` and ``(H, W)`` held in
#: ``m.input_resolution`` (Microsoft Swin v1 / v2); ``"tokens+h+w"``: ``m(x, H, W)``
#: (Swin for detection and segmentation); ``"tokens+hw"``: ``m(x, (H, W))`` (HF).
ProbedConvention = Literal["bhwc", "bdhwc", "tokens@resolution", "tokens+h+w", "tokens+hw"]
CONVENTIONS: tuple[ProbedConvention, ...] = (
    "bhwc", "tokens@resolution", "tokens+h+w", "tokens+hw", "bdhwc",
)  # fmt: skip
#: What a merge does with an odd H or W: zero-pad it at the bottom / right, or raise.
OddPolicy = Literal["pad", "error"]


class NotAMerge(ValueError):
    """The module has a merge's parts but computes no merge (a look-alike)."""


class UnadoptableMerge(ValueError):
    """The module merges windows, but not in a form pm_core computes exactly."""


@dataclass(frozen=True)
class Parts:
    """A candidate's parameterised children: the Linear, and the LayerNorm if any."""

    linear: str
    norm: str | None


@dataclass(frozen=True)
class Probed:
    """What probing found: how the module is called, what it gathers, how it normalises."""

    parts: Parts
    convention: ProbedConvention
    window: Window  # with padding "corner" when the module pads odd sizes
    layout: WindowLayout
    odd: OddPolicy
    norm: Norm
    eps: float
    returns_size: bool = False  # it returns (y, (H', W')), as mmcv's PatchMerging does


def candidate(m: nn.Module) -> Parts | None:
    """The merge parts of ``m`` by structure alone (see the module docstring), or ``None``."""
    if any(True for _ in m.parameters(recurse=False)):
        return None
    linears, norms, other = [], [], []
    for name, sub in m._modules.items():
        if sub is None:
            continue
        if isinstance(sub, nn.Linear):
            linears.append(name)
        elif isinstance(sub, nn.LayerNorm):
            norms.append(name)
        elif any(True for _ in sub.parameters()):
            other.append(name)
    if len(linears) != 1 or len(norms) > 1 or other:
        return None
    lin = m._modules[linears[0]]
    assert isinstance(lin, nn.Linear)
    if getattr(lin, "bias", None) is not None or lin.in_features % 4:
        return None
    if norms:
        ln = m._modules[norms[0]]
        assert isinstance(ln, nn.LayerNorm)
        if tuple(ln.normalized_shape) not in ((lin.in_features,), (lin.out_features,)):
            return None
    return Parts(linears[0], norms[0] if norms else None)


def _windows(in_features: int) -> list[tuple[Window, ProbedConvention, int]]:
    """The (window, convention, channels) a Linear of ``in_features`` could follow."""
    out: list[tuple[Window, ProbedConvention, int]] = []
    c4 = in_features // 4
    for conv in CONVENTIONS:
        win = Window((1, 2, 2)) if conv == "bdhwc" else Window((2, 2))
        out.append((win, conv, c4))
    if in_features % 8 == 0:
        out.append((Window((2, 2, 2)), "bdhwc", in_features // 8))
    return out


def _raw_call(m: nn.Module, convention: ProbedConvention, x: Tensor) -> Any:
    """What ``m`` returns when called in ``convention`` on ``x: (B, *S, C)``."""
    if convention in ("bhwc", "bdhwc"):
        return m(x)
    b, h, w, c = x.shape
    tokens = x.reshape(b, h * w, c)
    if convention == "tokens@resolution":
        setattr(m, "input_resolution", (h, w))  # noqa: B010 - a probe copy, or a replacement's own
        return m(tokens)
    if convention == "tokens+h+w":
        return m(tokens, h, w)
    return m(tokens, (h, w))


def call_as(m: nn.Module, convention: ProbedConvention, x: Tensor) -> Tensor:
    """Call ``m`` in ``convention`` on ``x: (B, *S, C)``; return ``(B, *S', n)`` (the first
    element where ``m`` returns a tuple, as mmcv's ``(y, output_size)``)."""
    out = _raw_call(m, convention, x)
    y: Tensor = out[0] if isinstance(out, tuple) else out
    if convention in ("bhwc", "bdhwc"):
        return y
    b, h, w, _ = x.shape
    return y.reshape(b, -(-h // 2), -(-w // 2), -1)


def _gather_of(m: nn.Module, parts: Parts) -> nn.Module:
    """A shallow copy of ``m`` whose Linear and LayerNorm are ``nn.Identity``."""
    subs = {parts.linear: nn.Identity()}
    if parts.norm is not None:
        subs[parts.norm] = nn.Identity()
    return _replaced(m, **subs)


def _probe_gather(
    m: nn.Module, parts: Parts, name: str
) -> tuple[ProbedConvention, Window, WindowLayout, int]:
    lin = m._modules[parts.linear]
    assert isinstance(lin, nn.Linear)
    reasons = []
    for window, conv, channels in _windows(lin.in_features):
        ident = _gather_of(m, parts)

        def gather(x: Tensor, ident: nn.Module = ident, conv: ProbedConvention = conv) -> Tensor:
            return call_as(ident, conv, x)

        try:
            layout = probe_layout(gather, window, channels=channels, name=name)
        except WindowOrderError:
            raise  # it gathers windows, reading some offset twice: a merge pm_core cannot compute
        except Exception as e:
            reasons.append(f"{conv} {window.kernel}: {type(e).__name__}: {e}")
            continue
        return conv, window, layout, channels
    raise NotAMerge(
        f"{name} has a merge's parts (a bias-free Linear({lin.in_features}, "
        f"{lin.out_features})) but gathers no windows in any calling convention pm_core "
        "knows: " + " | ".join(reasons)
    )


def _probe_odd(
    m: nn.Module, parts: Parts, conv: ProbedConvention, window: Window, layout: WindowLayout,
    channels: int, name: str,
) -> OddPolicy:  # fmt: skip
    """Whether the gather zero-pads an odd H / W at the bottom / right, or raises."""
    ident = _gather_of(m, parts)
    size = (3, 5) if window.dims == 2 else (window.kernel[0], 3, 5)
    x = torch.arange(1, 2 * math.prod(size) * channels + 1, dtype=torch.float64)
    x = x.view(2, *size, channels)
    padded = Window(window.kernel, padding="corner")
    try:
        with torch.no_grad():
            got = call_as(ident, conv, x)
    except Exception:
        return "error"
    want = space_to_depth(x, padded, layout)
    if got.shape != want.shape or not torch.equal(got, want):
        raise UnadoptableMerge(
            f"{name} accepts an odd {size} input but does not zero-pad it at the bottom / "
            "right as Swin does: pm_core has no merge for its odd-size policy"
        )
    return "pad"


def probe(m: nn.Module, *, name: str | None = None) -> Probed:
    """What ``m`` computes, probed (see the module docstring); raises :class:`NotAMerge` or
    :class:`UnadoptableMerge` with the reason when it is not a merge pm_core computes."""
    name = name or type(m).__qualname__
    parts = candidate(m)
    if parts is None:
        raise NotAMerge(
            f"{name} is no merge by structure: it needs exactly one bias-free nn.Linear "
            "(in_features a multiple of 4), at most one nn.LayerNorm over its input or "
            "output, and no other parameters"
        )
    conv, window, layout, channels = _probe_gather(m, parts, name)
    odd = _probe_odd(m, parts, conv, window, layout, channels, name)
    with torch.no_grad():
        one = torch.ones(1, *window.kernel, channels, dtype=torch.float64)
        returns_size = isinstance(_raw_call(_gather_of(m, parts), conv, one), tuple)
    if odd == "pad":
        window = Window(window.kernel, padding="corner")
    eps, norms = 1e-5, ["none"]
    if parts.norm is not None:
        ln = m._modules[parts.norm]
        lin = m._modules[parts.linear]
        assert isinstance(ln, nn.LayerNorm)
        assert isinstance(lin, nn.Linear)
        if not ln.elementwise_affine or getattr(ln, "bias", None) is None:
            raise UnadoptableMerge(f"{name}.{parts.norm} is a LayerNorm without an affine bias")
        eps = float(ln.eps)
        shape = tuple(ln.normalized_shape)
        norms = [
            n for n, size in (("pre", lin.in_features), ("post", lin.out_features))
            if shape == (size,)
        ]  # fmt: skip
    norm: Norm = "pre" if norms[0] == "pre" else "post" if norms[0] == "post" else "none"
    return Probed(parts, conv, window, layout, odd, norm, eps, returns_size)


class ProbedMerge(nn.Module):
    """The drop-in replacement of a merge adopted by behaviour.

    It holds the source's Linear and LayerNorm under their own names (same Parameters,
    same ``state_dict`` keys, in the source's order), keeps the source's plain attributes
    (``dim``, ``input_resolution``, ...), and has the source's calling convention and
    return shape; it computes :func:`pm_core.window_merge` over the probed window and
    layout with ``impl``.
    """

    def __init__(self, src: nn.Module, probed: Probed, impl: str) -> None:
        super().__init__()
        check_impl(impl, probed.window, probed.layout)
        for key, value in vars(src).items():  # dim, input_resolution, ...
            if not key.startswith("_") and key != "training" and _plain(value):
                setattr(self, key, value)
        self.probed = probed
        self.impl = impl
        keep = {probed.parts.linear, probed.parts.norm}
        for key, sub in src._modules.items():
            if key in keep:
                self.add_module(key, sub)
        self.train(src.training)

    def _params(self) -> tuple[Tensor, Tensor | None, Tensor | None]:
        p = self.probed
        lin = self._modules[p.parts.linear]
        assert isinstance(lin, nn.Linear)
        if p.norm == "none" or p.parts.norm is None:
            return lin.weight, None, None
        ln = self._modules[p.parts.norm]
        assert isinstance(ln, nn.LayerNorm)
        return lin.weight, ln.weight, ln.bias

    def _merge(self, x: Tensor) -> Tensor:
        p = self.probed
        if p.odd == "error" and any(s % 2 for s in x.shape[-3:-1]):
            raise ValueError(
                f"this merge (adopted from a module that rejects odd sizes) needs even H and "
                f"W, got {tuple(x.shape[-3:-1])}"
            )
        w, nw, nb = self._params()
        return window_merge(
            x, w, nw, nb, window=p.window, layout=p.layout, norm=p.norm, eps=p.eps,
            impl=self.impl,
        )  # fmt: skip

    def forward(self, x: Tensor, *args: Any) -> Any:
        """The source's convention (:data:`ProbedConvention`) and return: the merged tensor,
        or ``(y, (H', W'))`` for a source that returns its output size."""
        conv = self.probed.convention
        if conv in ("bhwc", "bdhwc"):
            y = self._merge(x)
            return (y, tuple(y.shape[-3:-1])) if self.probed.returns_size else y
        if conv == "tokens@resolution":
            h, w = getattr(self, "input_resolution")  # noqa: B009 - copied from the source
        elif conv == "tokens+h+w":
            h, w = args
        else:
            h, w = args[0]
        b, _, c = x.shape
        y4 = self._merge(x.view(b, h, w, c))
        y = y4.flatten(1, 2)
        return (y, tuple(y4.shape[1:3])) if self.probed.returns_size else y

    def extra_repr(self) -> str:
        p = self.probed
        return (
            f"convention={p.convention!r}, {p.window}, layout={p.layout.name!r}, "
            f"norm={p.norm!r}, odd={p.odd!r}, impl={self.impl!r}"
        )


def _plain(value: object) -> bool:
    """A plain attribute a replacement keeps: a number, a string, or a tuple / list of them."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return True
    return isinstance(value, (tuple, list)) and all(_plain(v) for v in value)


def _verify(src: nn.Module, dst: ProbedMerge, name: str) -> None:
    """float64 copies of both, on a random probe in the source's convention, within the
    bound of the float64 oracle."""
    p = dst.probed
    s64, d64 = copy.deepcopy(src).double(), copy.deepcopy(dst).double()
    lin = s64._modules[p.parts.linear]
    assert isinstance(lin, nn.Linear)
    c = lin.in_features // p.window.size
    size = (4, 6) if p.window.dims == 2 else (2, 4, 6)
    if p.odd == "pad":
        size = (3, 5) if p.window.dims == 2 else (2, 3, 5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *size, c, generator=g, dtype=torch.float64) + 3.0
    x = x.to(lin.weight.device)
    w, nw, nb = d64._params()
    kw: dict[str, Any] = {"window": p.window, "layout": p.layout, "norm": p.norm, "eps": p.eps}
    with torch.no_grad():
        ys = {
            "the module": call_as(s64, p.convention, x),
            "pm_core's": call_as(d64, p.convention, x),
        }
        ref = reference_window_merge(x, w, nw, nb, **kw)
        bound = window_error_bounds(x, w, nw, nb, **kw).output
    _check_within(name, "the float64 oracle", ys, ref, bound, tuple(x.shape))


def adopt_by_behaviour(
    m: nn.Module, *, impl: str = "conv", verify: bool = True, name: str | None = None
) -> ProbedMerge:
    """The :class:`ProbedMerge` computing what ``m`` computes (see the module docstring).

    Raises :class:`NotAMerge` or :class:`UnadoptableMerge` naming the reason; with
    ``verify`` (and parameters that hold values) a replacement that differs from ``m``
    on a float64 probe raises :class:`UnadoptableMerge`.
    """
    name = name or type(m).__qualname__
    probed = probe(m, name=name)
    if impl == "auto" and probed.window.kernel != (2, 2):
        impl = "conv"
    tried: list[str] = []
    norms: tuple[Norm, ...] = (probed.norm,)
    if probed.parts.norm is not None:
        lin = m._modules[probed.parts.linear]
        assert isinstance(lin, nn.Linear)
        if lin.in_features == lin.out_features:  # LN's size cannot tell pre from post
            norms = ("pre", "post")
    for norm in norms:
        p = Probed(probed.parts, probed.convention, probed.window, probed.layout, probed.odd,
                   norm, probed.eps, probed.returns_size)  # fmt: skip
        out = ProbedMerge(m, p, impl)
        if not verify or not all(_compat.has_values(t) for t in m.parameters()):
            return out
        try:
            _verify(m, out, name)
        except ValueError as e:
            tried.append(f"norm={norm!r}: {e}")
            continue
        return out
    raise UnadoptableMerge(
        f"{name} gathers like a merge ({probed.convention}, {probed.window}, layout "
        f"{probed.layout.name!r}) but its function is not the merge's: " + " | ".join(tried)
    )


__all__ = [
    "CONVENTIONS",
    "NotAMerge",
    "OddPolicy",
    "Parts",
    "Probed",
    "ProbedConvention",
    "ProbedMerge",
    "UnadoptableMerge",
    "adopt_by_behaviour",
    "call_as",
    "candidate",
    "probe",
]
