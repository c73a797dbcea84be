"""Every private PyTorch API the layer library uses, and every workaround of PyTorch.

Each entry says why it is needed, the torch versions it was checked on, and what it
falls back to through public API when the private name is gone. Nothing else in the
library touches ``torch._C``, ``torch._subclasses`` or dynamo's internals.
``tests/test_compat.py`` checks the entries and their fallbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

_P = ParamSpec("_P")
_R = TypeVar("_R")


def cpu_capabilities() -> dict[str, Any]:
    """The CPU's instruction-set features as torch's dispatcher sees them (``avx512_bf16``,
    ``amx_bf16``, ...), for choosing a kernel dtype and keying ``auto``'s cache.

    Private: ``torch._C._cpu._get_cpu_capability`` (checked on torch 2.4.1 and 2.14.1).
    Fallback: the public ``torch.backends.cpu.get_cpu_capability()`` names only the
    widest vector ISA (``"AVX512"``, ``"AVX2"``, ...), which gives ``avx512_f`` and
    ``avx2``; every other feature is then unknown (absent from the dict).
    """
    try:
        caps: dict[str, Any] = dict(torch._C._cpu._get_cpu_capability())
    except (AttributeError, RuntimeError):
        isa = torch.backends.cpu.get_cpu_capability().upper()
        caps = {"avx512_f": isa.startswith("AVX512"), "avx2": isa.startswith(("AVX2", "AVX512"))}
    return caps


def has_values(t: Tensor) -> bool:
    """Whether ``t`` holds values: not a meta tensor and not a fake one (shape-only
    tracing). Adoption needs values to probe a module; on the others it only checks
    shapes.

    Private: ``torch._subclasses.fake_tensor.is_fake`` (checked on torch 2.4.1 and
    2.14.1). Fallback: the class name, ``FakeTensor``, which a fake tensor has on every
    torch that has them.
    """
    if t.device.type == "meta":
        return False
    try:
        from torch._subclasses.fake_tensor import is_fake
    except ImportError:
        return type(t).__name__ != "FakeTensor"
    return not is_fake(t)


def constant_when_traced(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Mark ``fn`` as :func:`torch.compiler.assume_constant_result` does: dynamo then calls
    it while tracing and keeps its answer in the graph, instead of breaking the graph on
    it (the CPU capability probe returns a dict; ``auto``'s cache read stats a file).

    Private: the attribute ``_dynamo_marked_constant`` (checked on torch 2.14.1), set
    directly because ``assume_constant_result`` imports ``torch._dynamo``, which takes
    seconds, and ``import pm_core`` must stay light; ``tests/interop/test_compile.py`` checks the
    mark is still the one torch sets. Fallback: none needed, an unknown attribute is
    ignored; compiling then breaks the graph at the call, and stays correct.
    """
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _per_dim(v: int | tuple[int, ...], dims: int) -> tuple[int, ...]:
    return (v,) * dims if isinstance(v, int) else tuple(v)


def conv(
    x: Tensor,
    weight: Tensor,
    *,
    stride: int | tuple[int, ...],
    padding: int | tuple[int, ...] = 0,
    dilation: int | tuple[int, ...] = 1,
) -> Tensor:
    """``F.conv2d`` / ``F.conv3d`` (by ``x``'s rank) of channels-first ``x``, no bias.

    On a CPU, a convolution whose output's last spatial dim is 1 runs one column wider
    (``x`` zero-padded by one stride on the right) and keeps the first column. torch
    2.14.1's oneDNN convolution gets such outputs wrong on an AMX CPU (Intel Xeon with
    ``amx_bf16``): NaN, values of 1e19 or a segmentation fault, as if it read past its
    input, in float32, bfloat16 and float16, 2-D and 3-D (about 1.5% of random kernel,
    stride and dilation choices; e.g. bfloat16 input ``(1, 5, 10, 2)``, weight ``(10, 5,
    2, 2)``, stride 2), while the same calls with a two-column output are right (none of
    6000 in the same sweep). The padded column reads only zeros and is dropped, so the
    result is the same function; the cost is one copy of such (small) inputs.

    A dilation along a dim whose kernel is 1 is set to 1, which changes nothing: on the
    same CPU a float16 3-D conv with kernel 1, dilation 2, stride 2 and padding 1 along
    W segfaults (input ``(1, 2, 3, 3, 1)``, weight ``(4, 2, 2, 2, 1)``), and with
    dilation 1 there it is right.

    A half-precision CPU conv that is 3-D or dilated runs in float32 and rounds once:
    oneDNN's bfloat16 and float16 kernels for those segfault now and then on the same
    CPU (a bfloat16 ``(2, 3, 1, 5, 2)`` input, kernel 2, stride 2, dilation 2, padding
    ``(1, 2, 1)``; the float32 kernels never did in the same runs). Float32 arithmetic on
    the rounded operands is within the half dtype's bound. The 2-D undilated conv, Swin's
    merge, keeps its dtype.
    """
    dims = x.dim() - 2
    # a dilation along a kernel of 1 changes nothing but oneDNN's kernel choice
    kernel = weight.shape[2:]
    dilation = tuple(
        1 if kk == 1 else dd for kk, dd in zip(kernel, _per_dim(dilation, dims), strict=True)
    )
    k, s = weight.shape[-1], _per_dim(stride, dims)[-1]
    p, d = _per_dim(padding, dims)[-1], dilation[-1]
    fn = F.conv2d if dims == 2 else F.conv3d
    half = x.dtype in (torch.float16, torch.bfloat16)
    if x.device.type == "cpu" and half and (dims == 3 or max(dilation) > 1):
        x32: Tensor = conv(
            x.float(), weight.float(), stride=stride, padding=padding, dilation=dilation
        )
        return x32.to(x.dtype)
    if x.device.type == "cpu" and _out_size(x.shape[-1], k, s, p, d) == 1:
        wide: Tensor = fn(
            F.pad(x, (0, s)), weight, stride=stride, padding=padding, dilation=dilation
        )
        return wide[..., :1]
    out: Tensor = fn(x, weight, stride=stride, padding=padding, dilation=dilation)
    return out
