"""The patch-merging implementations, and the registry that names them.

Every implementation has one signature (:class:`ImplFn`)::

    fn(x, weight, norm_weight, norm_bias, norm, eps) -> y
    x: (B, H, W, C) with H and W even     weight: (O, 4C), swin layout
    y: (B, H/2, W/2, O)                   norm params: (4C,) for "pre", (O,) for "post"

Input forms, validation and odd-size padding live in :func:`pm_core.patch_merge`, so an
implementation only computes. Adding one is one :func:`~pm_core.register` call; the tests and
benchmarks enumerate :data:`~pm_core.REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable, KeysView
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import NORMS, Norm, _autocasting, _cpu_capability
from .fold import _conv, _windows, folded_pre_norm
from .layouts import swin_to_unfold

#: The backend an impl's GEMMs run on.
GemmBackend = Literal["matmul", "conv"]

#: ``fn(x, weight, norm_weight, norm_bias, norm, eps) -> y``
ImplFn = Callable[[Tensor, Tensor, Tensor | None, Tensor | None, Norm, float], Tensor]


@dataclass(frozen=True)
class Impl:
    """A registered implementation.

    ``exact_for`` lists the norm modes in which it computes the same function as the
    oracle; outside them the suite checks that it *differs*. ``layout`` is the channel
    order it gathers the window in. ``gemm`` is the backend every GEMM it runs goes
    through, ``"matmul"`` (cuBLAS / MKL / oneDNN matmul) or ``"conv"`` (cuDNN / oneDNN
    convolution): the flags of that backend decide the GEMM's precision
    (:func:`pm_core.gemm_precision`), so an impl must not mix the two.
    """

    name: str
    fn: ImplFn
    exact_for: frozenset[Norm]
    layout: str
    summary: str
    gemm: GemmBackend


REGISTRY: dict[str, Impl] = {}


def register(
    name: str,
    *,
    layout: str,
    summary: str,
    gemm: GemmBackend = "matmul",
    exact_for: tuple[Norm, ...] = NORMS,
) -> Callable[[ImplFn], ImplFn]:
    def deco(fn: ImplFn) -> ImplFn:
        if name in REGISTRY:
            raise ValueError(f"implementation {name!r} is already registered")
        if gemm not in ("matmul", "conv"):
            raise ValueError(f"gemm must be 'matmul' or 'conv', got {gemm!r}")
        REGISTRY[name] = Impl(name, fn, frozenset(exact_for), layout, summary, gemm)
        return fn

    return deco


def get_impl(name: object) -> Impl:
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"unknown impl {name!r}; choose one of {tuple(REGISTRY)}")
    return REGISTRY[name]


def check_impl(name: object) -> str:
    """``name`` if :func:`pm_core.patch_merge` accepts it: a registered impl, or ``"auto"``."""
    if name == "auto":
        return name
    return get_impl(name).name


def pad_to_even(x: Tensor) -> Tensor:
    """``(B, H, W, C)`` with an odd H or W zero-padded by one bottom row / right column
    (Swin's odd-size policy, torchvision / timm / HF); ``x`` itself when both are even."""
    h, w = x.shape[1:3]
    if h % 2 or w % 2:
        # F.pad's last-dim-first order: (C: 0, 0), (W: 0, W%2), (H: 0, H%2)
        return F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    return x


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


def conv_impl(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    if norm == "pre":
        return folded_pre_norm(x, weight, nw, nb, eps)
    y = _conv(x, weight)
    return _layer_norm(y, nw, nb, eps) if norm == "post" else y


def _by_position(v: Tensor, c: int) -> Tensor:
    """A swin-layout ``(4C,)`` vector as ``(2, 1, 2, C)``, broadcasting over dims (dh, j, dw, c)."""
    return v.view(2, 2, c).transpose(0, 1).unsqueeze(1)


def conv_channel_norm_impl(
    x: Tensor, weight: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    if norm != "pre":
        return conv_impl(x, weight, nw, nb, norm, eps)
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
        return conv_impl(x.float(), weight.float(), nw32, nb32, norm, eps).to(x.dtype)
    return conv_impl(x, weight, nw, nb, norm, eps)


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
    "conv",
    layout="conv",
    gemm="conv",
    summary="F.conv2d(k=2, s=2) on the channels-last view; pre-norm folded into the conv",
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
    "check_impl",
    "get_impl",
    "register",
]
