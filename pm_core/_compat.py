"""Where the layer library works around PyTorch: each workaround, why, and where it was seen.

Every entry names the torch versions and hardware it was seen on, and is checked by a
test that fails if the workaround is lost (``tests/test_compat.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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

    On a CPU, a bfloat16 convolution whose output's last spatial dim is 1 runs in
    float32 and rounds once. torch 2.14.1's oneDNN bfloat16 convolution returns NaN or
    unbounded values for such shapes on an AMX-BF16 CPU (Intel Xeon with ``amx_bf16``):
    e.g. input ``(1, 5, 10, 2)``, weight ``(10, 5, 2, 2)``, stride 2, from stride 2 up,
    with odd channel counts among others, in 2-D and 3-D, while float32, float16 and
    outputs two or more wide are right. Float32 arithmetic on the rounded operands is
    within bfloat16's error bound (it is more accurate), and such outputs are small.
    """
    dims = x.dim() - 2
    k, s = weight.shape[-1], _per_dim(stride, dims)[-1]
    p, d = _per_dim(padding, dims)[-1], _per_dim(dilation, dims)[-1]
    fn = F.conv2d if dims == 2 else F.conv3d
    if (
        x.dtype == torch.bfloat16
        and x.device.type == "cpu"
        and _out_size(x.shape[-1], k, s, p, d) == 1
    ):
        y: Tensor = fn(x.float(), weight.float(), stride=stride, padding=padding, dilation=dilation)
        return y.to(x.dtype)
    out: Tensor = fn(x, weight, stride=stride, padding=padding, dilation=dilation)
    return out
