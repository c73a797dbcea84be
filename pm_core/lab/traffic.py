"""Byte accounting: how many bytes each aten op reads and writes while a function runs.

Design requirements:

* **Deterministic and machine-independent.** Bytes are counted at the dispatcher
  (a :class:`~torch.utils._python_dispatch.TorchDispatchMode`), from tensor shapes,
  strides and dtypes, never from timers or hardware counters. The same call gives the
  same table on any machine with the same kernels.
* **Op-boundary traffic.** An op reads each tensor argument once and writes each
  output once. What a kernel does inside (oneDNN's weight reorders, an im2col buffer,
  cache reuse) is invisible here: this counts what the *graph* asks memory to move.
* **Views cost zero.** Ops whose outputs alias an input without writing it (``view``,
  ``permute``, ``slice``, ``expand``, ``as_strided``, ``t``, ...) and allocations
  (``empty*``) move nothing.
* Output memory formats are the kernels' choice (oneDNN and the meta kernels may lay
  out a conv's output differently), and a later copy depends on them: count on the
  device you time on.
* A tensor's size is its *distinct* elements: an expanded (stride-0) dimension is read
  once, so broadcasting a bias does not count as reading a full-size tensor.

>>> import torch, pm_core
>>> x, w = torch.randn(2, 8, 8, 4), torch.randn(8, 16)
>>> t = measure_traffic(pm_core.patch_merge, x, w, norm="none", impl="conv")
>>> t.ratio
1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from pm_core import Norm, patch_merge
from pm_core.functional import Odd

Phase = Literal["forward", "backward"]

#: Ops that produce a rearranged copy of existing data (the cost the issue is about).
COPY_OPS = frozenset(
    {
        "clone",
        "copy_",
        "_to_copy",
        "cat",
        "stack",
        "constant_pad_nd",
        "im2col",
        "col2im",
        "pixel_unshuffle",
        "pixel_shuffle",
        "contiguous",
        "_unsafe_index",
    }
)

# Ops that move no data although their schema does not mark them as views.
_FREE_OPS = frozenset(
    {
        "empty",
        "empty_like",
        "empty_strided",
        "new_empty",
        "new_empty_strided",
        "_unsafe_view",  # re-labels a fresh tensor (reshape's tail)
        "lift_fresh",
        "detach",
        "alias",
        "sym_size",
        "sym_stride",
        "sym_numel",
        "sym_storage_offset",
        "is_same_size",
        "promote_types",
        "squeeze_",
        "unsqueeze_",
        "transpose_",
        "t_",
        "as_strided_",
        "_has_compatible_shallow_copy_type",
        "resize_",
    }
)


def distinct_bytes(t: Tensor) -> int:
    """Bytes of the distinct elements ``t`` addresses: stride-0 (expanded) dims count once."""
    n = math.prod(s for s, st in zip(t.shape, t.stride(), strict=True) if st != 0)
    if t.numel() == 0:
        n = 0
    return n * t.element_size()


#: GEMM ops by the backend that runs them (its precision flags apply: pm_core.precision).
GEMM_OPS: dict[str, str] = {
    "mm": "matmul",
    "addmm": "matmul",
    "bmm": "matmul",
    "baddbmm": "matmul",
    "mv": "matmul",
    "addmv": "matmul",
    "convolution": "conv",
    "convolution_backward": "conv",
    "_convolution": "conv",
}


@dataclass(frozen=True)
class OpTraffic:
    """One aten op call: its name (overload packet, e.g. ``"convolution"``) and bytes moved.

    ``flops`` counts the multiply-adds (x2) of GEMM and convolution ops, from
    ``torch.utils.flop_counter``'s formulas; 0 for every other op. ``gemm`` names the
    backend of a GEMM op (:data:`GEMM_OPS`), else ``None``.
    """

    op: str
    phase: Phase
    read: int
    written: int
    flops: int = 0
    gemm: str | None = None

    @property
    def total(self) -> int:
        return self.read + self.written


@dataclass(frozen=True)
class OpSummary:
    """All calls of one op in one phase, summed."""

    op: str
    phase: Phase
    calls: int
    read: int
    written: int

    @property
    def total(self) -> int:
        return self.read + self.written


@dataclass(frozen=True)
class Traffic:
    """The bytes a function moved, op by op, in forward and (optionally) backward.

    ``minimum`` is the analytic minimum (:func:`minimum_traffic`) when the measured
    function is :func:`pm_core.patch_merge`, else ``None``; ``ratio`` is
    ``total / minimum``.
    """

    events: tuple[OpTraffic, ...]
    backward: bool
    minimum: int | None = None

    def phase(self, phase: Phase) -> tuple[OpTraffic, ...]:
        return tuple(e for e in self.events if e.phase == phase)

    @property
    def read(self) -> int:
        return sum(e.read for e in self.events)

    @property
    def written(self) -> int:
        return sum(e.written for e in self.events)

    @property
    def total(self) -> int:
        return self.read + self.written

    @property
    def forward_total(self) -> int:
        return sum(e.total for e in self.phase("forward"))

    @property
    def backward_total(self) -> int:
        return sum(e.total for e in self.phase("backward"))

    @property
    def ratio(self) -> float | None:
        return None if not self.minimum else self.total / self.minimum

    def by_op(self) -> tuple[OpSummary, ...]:
        """Per-op totals, in first-call order, forward ops before backward ops."""
        acc: dict[tuple[str, Phase], list[int]] = {}
        for e in self.events:
            row = acc.setdefault((e.op, e.phase), [0, 0, 0])
            row[0] += 1
            row[1] += e.read
            row[2] += e.written
        return tuple(OpSummary(op, ph, c, r, w) for (op, ph), (c, r, w) in acc.items())

    def copies(self, phase: Phase | None = None) -> tuple[OpTraffic, ...]:
        """The calls of data-rearranging ops (:data:`COPY_OPS`)."""
        return tuple(
            e for e in self.events if e.op in COPY_OPS and (phase is None or e.phase == phase)
        )

    def ops(self, phase: Phase | None = None) -> tuple[str, ...]:
        return tuple(e.op for e in self.events if phase is None or e.phase == phase)


def _is_view(func: torch._ops.OpOverload) -> bool:
    schema = func._schema
    if not schema.returns:
        return False
    for r in schema.returns:
        info = r.alias_info
        if info is None or info.is_write:
            return False
    return not any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)


class _Counter(TorchDispatchMode):  # type: ignore[no-untyped-call]
    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.events: list[OpTraffic] = []
        self.phase: Phase = "forward"

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        # prim ops (``prim.device`` under fake tensors) are metadata queries, not kernels
        if func.namespace != "aten" or name in _FREE_OPS or _is_view(func):
            return out
        # out= arguments are write-only: their old contents are not read
        write_only = {
            a.name
            for a in func._schema.arguments
            if a.kwarg_only and a.alias_info is not None and a.alias_info.is_write
        }
        read_leaves, _ = tree_flatten(
            (args, {k: v for k, v in kwargs.items() if k not in write_only})
        )
        out_leaves, _ = tree_flatten(out)
        read = sum(distinct_bytes(t) for t in _unique_tensors(read_leaves))
        written = sum(distinct_bytes(t) for t in _unique_tensors(out_leaves))
        flops = 0
        formula = flop_registry.get(func.overloadpacket)
        if formula is not None:
            flops = int(formula(*args, **kwargs, out_val=out))
        gemm = GEMM_OPS.get(name)
        self.events.append(OpTraffic(name, self.phase, read, written, flops, gemm))
        return out


def _unique_tensors(leaves: list[Any]) -> Iterator[Tensor]:
    seen: set[int] = set()
    for t in leaves:
        if isinstance(t, Tensor) and id(t) not in seen:
            seen.add(id(t))
            yield t


def measure_traffic(
    fn: Callable[..., Tensor],
    *args: Any,
    backward: bool = False,
    grad: Tensor | None = None,
    **kwargs: Any,
) -> Traffic:
    """Run ``fn(*args, **kwargs)`` and count the bytes each aten op reads and writes.

    With ``backward=True`` every floating-point tensor argument becomes a leaf that
    requires grad (a detached view: no copy) and the output is backpropagated with
    ``grad``, default ``torch.ones_like(output)``, the gradient of ``output.sum()``
    made dense as a real network's upstream gradient is. ``grad`` is created outside
    the measurement; the leaves' ``.grad`` accumulation is inside it.

    When ``fn`` is :func:`pm_core.patch_merge`, ``.minimum`` holds
    :func:`minimum_traffic` for the same call, so ``.ratio`` is the traffic ratio.

    Args:
        fn: any function of tensors returning one tensor.
        backward: also measure the backward pass (events tagged ``"backward"``).
        grad: the upstream gradient, shaped like the output.
    """
    if backward:
        args = tuple(
            a.detach().requires_grad_(True)
            if isinstance(a, Tensor) and a.is_floating_point() and not a.requires_grad
            else a
            for a in args
        )
    counter = _Counter()
    with counter:
        out = fn(*args, **kwargs)
    if backward:
        g = torch.ones_like(out) if grad is None else grad
        counter.phase = "backward"
        with counter:
            out.backward(g)  # type: ignore[no-untyped-call]
    minimum = None
    if fn is patch_merge:
        kw = {k: v for k, v in kwargs.items() if k in ("hw", "norm", "odd")}
        minimum = minimum_traffic(*args, backward=backward, **kw)
    return Traffic(tuple(counter.events), backward, minimum)


def minimum_traffic(
    x: Tensor,
    reduction_weight: Tensor,
    norm_weight: Tensor | None = None,
    norm_bias: Tensor | None = None,
    *,
    hw: tuple[int, int] | None = None,
    norm: Norm = "pre",
    odd: Odd = "pad",
    backward: bool = False,
) -> int:
    """The analytic minimum bytes a ``patch_merge`` call must move.

    Forward: read ``x`` once (its ``B*H*W*C`` elements; odd-size zero padding is free),
    read the reduction weight and norm parameters once, write the output
    ``(B, H', W', O)`` once. Backward adds: read the upstream gradient and ``x`` and the
    parameters once more, write ``grad_x`` and the parameter gradients once. Per-window
    statistics (two floats per window) are left out: a fused kernel can recompute
    them in registers.

    Args: as :func:`pm_core.patch_merge`; ``backward=True`` gives forward + backward.
    """

    # patch_merge on meta copies validates the call exactly as a real one would (a bad
    # argument raises its error) and gives the output's shape, at no cost
    def meta(t: Tensor | None) -> Tensor | None:
        return torch.empty_like(t, device="meta") if isinstance(t, Tensor) else t

    y = patch_merge(
        meta(x), meta(reduction_weight), meta(norm_weight), meta(norm_bias),  # type: ignore[arg-type]
        hw=hw, norm=norm, odd=odd,
    )  # fmt: skip
    itemsize = x.element_size()
    x_bytes = x.numel() * itemsize
    y_bytes = y.numel() * itemsize
    params = [reduction_weight] + [p for p in (norm_weight, norm_bias) if p is not None]
    p_bytes = sum(p.numel() * p.element_size() for p in params)
    fwd = x_bytes + p_bytes + y_bytes
    if not backward:
        return fwd
    # read grad_y, x, params; write grad_x, grad params
    bwd = y_bytes + x_bytes + p_bytes + x_bytes + p_bytes
    return fwd + bwd


__all__ = [
    "COPY_OPS",
    "GEMM_OPS",
    "OpSummary",
    "OpTraffic",
    "Traffic",
    "distinct_bytes",
    "measure_traffic",
    "minimum_traffic",
]
