"""The window a general merge gathers: kernel, stride, padding and dilation, 2-D or 3-D.

A :class:`Window` describes, per spatial dim of a ``(B, H, W, C)`` or ``(B, D, H, W, C)``
map, which input positions output position ``o`` reads: offset ``k`` in ``range(kernel)``
reads input index ``o*stride - pad_before + k*dilation``, zero outside the input. That is
the index convention of ``nn.Conv2d`` / ``nn.Conv3d`` and of ``nn.Unfold``, plus mmcv's
adaptive padding (``"corner"``, ``"same"``), which depends on the input size and so is
resolved per call by :meth:`Window.pads`.

Swin's 2x2 merge is ``Window((2, 2))`` with ``padding="corner"`` (zero-pad odd sizes at the
bottom/right); MONAI's 3-D merges are ``Window((2, 2, 2), padding="corner")``; Video Swin
merges per frame, ``Window((1, 2, 2), padding="corner")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

#: mmcv's ``AdaptivePadding`` modes: pad so that ``out = ceil(in / stride)``; ``"corner"``
#: puts all of it after (bottom/right/back), ``"same"`` ``total // 2`` before, the rest after.
AdaptivePadding = Literal["corner", "same"]
ADAPTIVE_PADDINGS: tuple[AdaptivePadding, ...] = get_args(AdaptivePadding)
#: What ``Window(padding=...)`` accepts: an int for every side, one int per dim
#: (symmetric, as ``nn.Conv*``), one ``(before, after)`` pair per dim, or an adaptive mode.
PaddingArg: TypeAlias = (
    int | Sequence[int] | Sequence[tuple[int, int]] | Sequence[Sequence[int]] | AdaptivePadding
)
#: Resolved padding: ``(before, after)`` per spatial dim.
Pads: TypeAlias = tuple[tuple[int, int], ...]

WINDOW_DIMS = (2, 3)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ints(value: object, name: str, dims: int, *, minimum: int) -> tuple[int, ...]:
    """``value`` (an int, or one int per dim) as a ``dims``-tuple of ints ``>= minimum``."""
    vals: tuple[object, ...]
    if _is_int(value):
        vals = (value,) * dims
    elif isinstance(value, (tuple, list)):
        vals = tuple(value)
    else:
        raise TypeError(
            f"{name} must be an int or a sequence of {dims} ints, got {type(value).__name__}"
        )
    if len(vals) != dims:
        raise ValueError(f"{name} must have one entry per spatial dim ({dims}), got {value!r}")
    if not all(_is_int(v) for v in vals):
        raise TypeError(f"{name} must hold ints, got {value!r}")
    out = tuple(int(v) for v in vals)  # type: ignore[call-overload]
    if any(v < minimum for v in out):
        kind = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} entries must be {kind}, got {value!r}")
    return out


def _pads(padding: object, dims: int) -> Pads | AdaptivePadding:
    if isinstance(padding, str):
        if padding not in ADAPTIVE_PADDINGS:
            raise ValueError(
                f"padding must be an int, per-dim ints, per-dim (before, after) pairs, or one of "
                f"{ADAPTIVE_PADDINGS}; got {padding!r}"
            )
        return "corner" if padding == "corner" else "same"
    if isinstance(padding, (tuple, list)) and padding and isinstance(padding[0], (tuple, list)):
        if len(padding) != dims:
            raise ValueError(
                f"padding must have one (before, after) pair per spatial dim ({dims}), "
                f"got {padding!r}"
            )
        pairs = []
        for p in padding:
            pair = _ints(p, "padding", 2, minimum=0)
            pairs.append((pair[0], pair[1]))
        return tuple(pairs)
    sym = _ints(padding, "padding", dims, minimum=0)
    return tuple((p, p) for p in sym)


@dataclass(frozen=True, init=False)
class Window:
    """A merge window: ``kernel``, ``stride`` (default: ``kernel``), ``padding``, ``dilation``.

    ``kernel`` is ``(kh, kw)`` or ``(kd, kh, kw)``; ``stride`` and ``dilation`` are an int
    or one int per dim; ``padding`` is an int, one int per dim (symmetric, as in
    ``nn.Conv2d``), one ``(before, after)`` pair per dim, or mmcv's adaptive ``"corner"`` /
    ``"same"``. Fields hold the normalised values (tuples, pairs), so the ``repr`` is a
    valid constructor call.

    >>> Window((2, 2))
    Window(kernel=(2, 2), stride=(2, 2), padding=((0, 0), (0, 0)), dilation=(1, 1))
    >>> Window((2, 2), padding="corner").output_size((7, 6))
    (4, 3)
    >>> Window((3, 3), stride=2, padding=1).pads((8, 8))
    ((1, 1), (1, 1))
    """

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: Pads | AdaptivePadding
    dilation: tuple[int, ...]

    def __init__(
        self,
        kernel: Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: PaddingArg = 0,
        dilation: int | Sequence[int] = 1,
    ) -> None:
        if not isinstance(kernel, (tuple, list)):
            raise TypeError(
                "kernel must be a sequence of 2 or 3 positive ints, (kh, kw) or (kd, kh, kw); "
                f"got {kernel!r}"
            )
        if len(kernel) not in WINDOW_DIMS:
            raise ValueError(
                f"kernel must have 2 (kh, kw) or 3 (kd, kh, kw) entries, got {len(kernel)}: "
                f"{kernel!r}"
            )
        dims = len(kernel)
        k = _ints(kernel, "kernel", dims, minimum=1)
        object.__setattr__(self, "kernel", k)
        s = k if stride is None else _ints(stride, "stride", dims, minimum=1)
        object.__setattr__(self, "stride", s)
        object.__setattr__(self, "padding", _pads(padding, dims))
        object.__setattr__(self, "dilation", _ints(dilation, "dilation", dims, minimum=1))

    @property
    def dims(self) -> int:
        """The number of spatial dims the window spans, 2 or 3."""
        return len(self.kernel)

    @property
    def size(self) -> int:
        """The positions per window, ``prod(kernel)`` (the merged vector is ``size * C`` long)."""
        out = 1
        for k in self.kernel:
            out *= k
        return out

    @property
    def span(self) -> tuple[int, ...]:
        """The input extent of one window per dim, ``(kernel - 1) * dilation + 1``."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilation, strict=True))

    @property
    def tiles(self) -> bool:
        """True where windows tile the padded input (``stride == kernel``, dilation 1).

        Then every input position sits in at most one window (exactly one when the padded
        size is a multiple of the kernel), the case the conv form's pre-norm fold and
        :func:`pm_core.depth_to_space` need.
        """
        return self.stride == self.kernel and all(d == 1 for d in self.dilation)

    def offsets(self) -> tuple[tuple[int, ...], ...]:
        """Every window offset ``(dh, dw)`` / ``(dd, dh, dw)``, row-major (last dim fastest)."""
        out: list[tuple[int, ...]] = [()]
        for k in self.kernel:
            out = [(*o, i) for o in out for i in range(k)]
        return tuple(out)

    def pads(self, size: Sequence[int]) -> Pads:
        """``(before, after)`` zero padding per spatial dim for an input of spatial ``size``.

        Adaptive modes follow mmcv's ``AdaptivePadding``: ``out = ceil(in / stride)``,
        ``total = max((out - 1)*stride + (kernel - 1)*dilation + 1 - in, 0)``.
        """
        sz = _ints(tuple(size), "size", self.dims, minimum=0)
        if not isinstance(self.padding, str):
            return self.padding
        pads = []
        for n, s, span in zip(sz, self.stride, self.span, strict=True):
            out = -(-n // s)
            total = max((out - 1) * s + span - n, 0)
            pads.append(
                (0, total) if self.padding == "corner" else (total // 2, total - total // 2)
            )
        return tuple(pads)

    def output_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """Output spatial size for input spatial ``size`` (``nn.Conv*``'s formula on the
        padded size); raises where the padded input is smaller than one window."""
        pads = self.pads(size)
        out = []
        for dim, (n, (pb, pa), s, span) in enumerate(
            zip(size, pads, self.stride, self.span, strict=True)
        ):
            if n == 0:
                out.append(0)  # an empty dim has no windows, whatever the padding
                continue
            padded = n + pb + pa
            if padded < span:
                raise ValueError(
                    f"spatial dim {dim} has size {n} (padded {padded}), smaller than the "
                    f"window's span {span} = (kernel - 1)*dilation + 1 of {self}"
                )
            out.append((padded - span) // s + 1)
        return tuple(out)


#: Swin's 2x2 merge as a window, kernel 2 and stride 2, an odd size zero-padded at the
#: bottom / right (torchvision, timm, HF; mmcv's ``"corner"``).
SWIN_WINDOW = Window((2, 2), padding="corner")

__all__ = [
    "ADAPTIVE_PADDINGS",
    "SWIN_WINDOW",
    "WINDOW_DIMS",
    "AdaptivePadding",
    "PaddingArg",
    "Pads",
    "Window",
]
