"""The registry of merge implementations, the 2x2 fast paths, and the one dispatch point.

One engine computes every merge: a :class:`~pm_core.Window` gathered in a layout,
normalised and projected. An impl states which windows it computes (``Impl.windows``):

* ``"any"``: every window and layout. ``gather`` and ``conv``
  (:mod:`pm_core.window_impls`) are these, with the signature :data:`WindowFn`::

      fn(x, weight, norm_weight, norm_bias, call, norm, eps) -> y
      x: (B, *S, C)    weight: (O, n), n = prod(kernel)*C, in call.layout    y: (B, *S', O)

* ``"2x2"``: Swin's 2x2 merge only (:func:`~pm_core.window_impls.swin_order`), the fast
  paths ``slice``, ``reshape``, ``unfold``, ``pixel_unshuffle``, ``conv_cw`` and the foil
  ``conv_channel_norm``, with the signature :data:`ImplFn`::

      fn(x, weight, norm_weight, norm_bias, norm, eps) -> y
      x: (B, H, W, C) with H and W even     weight: (O, 4C), swin layout
      y: (B, H/2, W/2, O)                   norm params: (4C,) for "pre", (O,) for "post"

Validation, input forms and padding live in the front doors (:func:`pm_core.patch_merge`,
:func:`pm_core.window_merge`), which both dispatch through :func:`pm_core.functional.merge`;
so an impl only computes.
Adding one is one :func:`~pm_core.register` call; the tests and benchmarks enumerate
:data:`~pm_core.REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable, KeysView
from dataclasses import dataclass
from typing import Literal, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import NORMS, Norm, WindowCall, _autocasting, _cpu_capability, swin_call
from .fold import _conv, _windows, conv_2x2
from .layouts import swin_to_unfold
from .window import Window
from .window_impls import conv_impl, gather_impl, swin_order
from .window_layouts import WindowLayout

#: The backend an impl's GEMMs run on.
GemmBackend = Literal["matmul", "conv"]
#: The windows an impl computes, ``"2x2"`` (Swin's merge only) or ``"any"``.
Windows = Literal["2x2", "any"]

#: A 2x2 fast path's signature, ``fn(x, weight, norm_weight, norm_bias, norm, eps) -> y``.
ImplFn = Callable[[Tensor, Tensor, Tensor | None, Tensor | None, Norm, float], Tensor]
#: A general impl's signature, ``fn(x, weight, norm_weight, norm_bias, call, norm, eps) -> y``
#: (``call`` the validated :class:`WindowCall`: window, layout, resolved padding).
WindowFn = Callable[[Tensor, Tensor, Tensor | None, Tensor | None, WindowCall, Norm, float], Tensor]


@dataclass(frozen=True)
class Impl:
    """A registered implementation.

    ``windows`` says which merges it computes (``"2x2"``: Swin's, ``fn`` an
    :data:`ImplFn`; ``"any"``: every window, ``fn`` a :data:`WindowFn`). ``exact_for``
    lists the norm modes in which it computes the same function as the oracle; outside
    them the suite checks that it *differs*. ``layout`` is the channel order it gathers
    the window in (``"any"`` for an impl that reads the call's). ``gemm`` is the backend every GEMM it runs goes
    through, ``"matmul"`` (cuBLAS / MKL / oneDNN matmul) or ``"conv"`` (cuDNN / oneDNN
    convolution): the flags of that backend decide the GEMM's precision
    (:func:`pm_core.gemm_precision`), so an impl must not mix the two.
    """

    name: str
    fn: ImplFn | WindowFn
    exact_for: frozenset[Norm]
    layout: str
    summary: str
    gemm: GemmBackend
    windows: Windows = "2x2"

    def supports(self, window: Window, layout: WindowLayout) -> bool:
        """Whether this impl computes the merge over ``window`` in ``layout``."""
        return self.windows == "any" or swin_order(window, layout) is not None


REGISTRY: dict[str, Impl] = {}

_F = TypeVar("_F", ImplFn, WindowFn)


def register(
    name: str,
    *,
    layout: str,
    summary: str,
    gemm: GemmBackend = "matmul",
    exact_for: tuple[Norm, ...] = NORMS,
    windows: Windows = "2x2",
) -> Callable[[_F], _F]:
    """Register an impl under ``name``: a decorator for its function.

    ``windows="2x2"`` (the default) registers a fast path for Swin's 2x2 merge, an
    :data:`~pm_core.impls.ImplFn`; ``windows="any"`` an impl of every window, a
    :data:`~pm_core.impls.WindowFn`.

    >>> @register("slice_twice", layout="swin", summary="slice, computed twice")
    ... def slice_twice(x, weight, nw, nb, norm, eps):
    ...     return REGISTRY["slice"].fn(x, weight, nw, nb, norm, eps)
    >>> "slice_twice" in IMPLS
    True
    >>> del REGISTRY["slice_twice"]
    """

    def deco(fn: _F) -> _F:
        if name == "auto":
            raise ValueError("'auto' names impl='auto' (pm_core.auto); register under another name")
        if name in REGISTRY:
            raise ValueError(f"implementation {name!r} is already registered")
        if gemm not in ("matmul", "conv"):
            raise ValueError(f"gemm must be 'matmul' or 'conv', got {gemm!r}")
        if windows not in ("2x2", "any"):
            raise ValueError(f"windows must be '2x2' or 'any', got {windows!r}")
        REGISTRY[name] = Impl(name, fn, frozenset(exact_for), layout, summary, gemm, windows)
        return fn

    return deco


def get_impl(name: object) -> Impl:
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"unknown impl {name!r}; choose one of {tuple(REGISTRY)}")
    return REGISTRY[name]


def check_impl(
    name: object, window: Window | None = None, layout: WindowLayout | None = None
) -> str:
    """``name`` if the front doors accept it: a registered impl, or ``"auto"``; with a
    ``window`` and ``layout``, one that computes that merge (``"auto"``: Swin's only)."""
    if name != "auto":
        name = get_impl(name).name
    if window is None or layout is None:
        return name
    fits = name != "auto" and REGISTRY[name].supports(window, layout)
    if fits or (name == "auto" and swin_order(window, layout) is not None):
        return name
    choices = tuple(n for n, spec in REGISTRY.items() if spec.supports(window, layout))
    raise ValueError(
        f"impl {name!r} computes only Swin's 2x2 merge (kernel 2, stride 2, the swin or "
        f"unfold order), not {window} in layout {layout.name!r}; choose one of {choices}"
    )


def run_swin(
    spec: Impl, x4: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm,
    eps: float,
) -> Tensor:  # fmt: skip
    """Run ``spec`` on Swin's 2x2 merge of ``x4``: ``(B, H, W, C)`` with H and W even, the
    parameters in the swin layout (what :func:`~pm_core.window_impls.swin_2x2` returns)."""
    if spec.windows == "2x2":
        return cast(ImplFn, spec.fn)(x4, w, nw, nb, norm, eps)
    call = swin_call(x4, w.shape[0])
    return cast(WindowFn, spec.fn)(x4, w, nw, nb, call, norm, eps)


def _layer_norm(v: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    return F.layer_norm(v, v.shape[-1:], weight, bias, eps)


def _reduce(
    v: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    """LayerNorm and Linear on a gathered ``(..., 4C)`` tensor in ``weight``'s layout."""
    if norm == "pre":
        v = _layer_norm(v, nw, nb, eps)
    v = F.linear(v, weight)
    if norm == "post":
        v = _layer_norm(v, nw, nb, eps)
    return v


def _reduce_unfold_order(
    v: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    """:func:`_reduce` for a window gathered in unfold order: permute the 4C-sized params."""
    if norm == "pre":
        nw = None if nw is None else swin_to_unfold(nw)
        nb = None if nb is None else swin_to_unfold(nb)
    return _reduce(v, swin_to_unfold(weight), nw, nb, norm, eps)


def slice_impl(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    v = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    return _reduce(v, weight, nw, nb, norm, eps)


def reshape_impl(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    b, h, w, c = x.shape
    v = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
    return _reduce(v, weight, nw, nb, norm, eps)


def unfold_impl(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    b, h, w, _ = x.shape
    v = F.unfold(x.permute(0, 3, 1, 2), kernel_size=2, stride=2)  # (B, 4C, L')
    v = v.transpose(1, 2).view(b, h // 2, w // 2, -1)
    return _reduce_unfold_order(v, weight, nw, nb, norm, eps)


def pixel_unshuffle_impl(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    v = F.pixel_unshuffle(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    return _reduce_unfold_order(v, weight, nw, nb, norm, eps)


def _by_position(v: Tensor, c: int) -> Tensor:
    """A swin-layout ``(4C,)`` vector as ``(2, 1, 2, C)``, broadcasting over dims (dh, j, dw, c)."""
    return v.view(2, 2, c).transpose(0, 1).unsqueeze(1)


def conv_channel_norm_impl(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    if norm != "pre":
        return conv_2x2(x, weight, nw, nb, norm, eps)
    b, h, w, c = x.shape
    win = _windows(_layer_norm(x, None, None, eps))
    if nw is not None:
        win = win * _by_position(nw, c)
    if nb is not None:
        win = win + _by_position(nb, c)
    return _conv(win.reshape(b, h, w, c), weight)


def _cpu_half_units(dtype: torch.dtype, unknown: bool = False) -> bool:
    """Whether this CPU has dot-product units for ``dtype``'s GEMMs: AVX512-BF16 or AMX-BF16
    for bfloat16, AMX-FP16 for float16 (oneDNN emulates the others through float32). A CPU
    torch cannot describe is taken to have them if ``unknown``: ``conv_cw`` assumes not
    (float32 is exact either way), :func:`pm_core.gemm_precision` assumes so (a looser
    bound holds either way)."""
    if dtype == torch.bfloat16:
        return _cpu_capability("avx512_bf16", unknown) or _cpu_capability("amx_bf16", unknown)
    return dtype == torch.float16 and _cpu_capability("amx_fp16", unknown)


def _cpu_float32(x: Tensor) -> bool:
    """Compute a half-precision call in float32 instead: on a CPU without units for its
    dtype (see :func:`conv_cw_impl`)."""
    half = x.dtype in (torch.bfloat16, torch.float16)
    return half and x.device.type == "cpu" and not _cpu_half_units(x.dtype)


def conv_cw_impl(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    """``conv`` for throughput on a CPU without dot-product units for a half dtype.

    There (:func:`_cpu_half_units`) a bfloat16 / float16 call runs in float32 and rounds
    its result once: oneDNN emulates such GEMMs through float32, several times slower
    than float32 itself (the report's roofline measures both rates where it runs).
    Float32 arithmetic on the rounded inputs is within the half dtype's bound (it is
    strictly more accurate). Everywhere else (float32 and float64, a CPU with the units,
    CUDA, and under autocast) it is ``conv``. The choice reads the dtype, the device and
    the CPU's capabilities, never a value.
    """
    if not _autocasting(x.device) and _cpu_float32(x):
        nw32 = None if nw is None else nw.float()
        nb32 = None if nb is None else nb.float()
        return conv_2x2(x.float(), weight.float(), nw32, nb32, norm, eps).to(x.dtype)
    return conv_2x2(x, weight, nw, nb, norm, eps)


# The registry, in one place. Registered by call rather than as decorators: mutmut
# (``nox -s mutants``) does not mutate decorated functions, and these bodies are the
# code the mutation score is about.
register("slice", layout="swin", summary="four strided slices + torch.cat (Swin, torchvision, HF)")(
    slice_impl
)
register("reshape", layout="swin", summary="reshape + permute + flatten (timm)")(reshape_impl)
register("unfold", layout="unfold", summary="F.unfold(k=2, s=2) on the NCHW view (mmcv)")(
    unfold_impl
)
register("pixel_unshuffle", layout="unfold", summary="F.pixel_unshuffle(2) on the NCHW view")(
    pixel_unshuffle_impl
)
register(
    "gather",
    layout="any",
    windows="any",
    summary="space_to_depth (Tensor.unfold views, one copy), then LN and F.linear (any window)",
)(gather_impl)
register(
    "conv",
    layout="any",
    gemm="conv",
    windows="any",
    summary="F.conv2d / conv3d on the channels-last view; pre-norm folded where windows tile",
)(conv_impl)
register(
    "conv_cw",
    layout="conv",
    gemm="conv",
    summary="conv, with half dtypes in float32 on a CPU without half-precision units",
)(conv_cw_impl)
register(
    "conv_channel_norm",
    layout="conv",
    gemm="conv",
    exact_for=("post", "none"),
    summary="naive 'just use a conv': LN over C per pixel, then the conv (not LN over 4C)",
)(conv_channel_norm_impl)

#: The registered impls' names, in registration order: a live view of :data:`REGISTRY`,
#: so an impl added by :func:`register` is in it at once.
IMPLS: KeysView[str] = REGISTRY.keys()

__all__ = [
    "IMPLS",
    "REGISTRY",
    "GemmBackend",
    "Impl",
    "ImplFn",
    "WindowCall",
    "WindowFn",
    "Windows",
    "check_impl",
    "get_impl",
    "register",
    "run_swin",
]
