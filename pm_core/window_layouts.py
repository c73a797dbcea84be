"""Window layouts: the channel orders of a merged ``prod(kernel) * C`` vector.

A merge gathers, for each output position, the ``K = prod(kernel)`` input positions of
its window (offsets ``(dh, dw)`` or ``(dd, dh, dw)``, see :class:`~pm_core.Window`) and
concatenates their ``C`` channels into one ``n = K*C`` vector. Libraries agree on the
values and disagree on their *order*, and a reduction weight ``[O, n]`` (or a pre-norm's
``[n]`` affine vector) only means something together with that order. A
:class:`~pm_core.window_layouts.WindowLayout` names one:

* offset-major (``channel_major=False``): column ``i*C + c`` holds channel ``c`` of the
  ``i``-th offset of :meth:`~pm_core.window_layouts.WindowLayout.order`;
* channel-major (``channel_major=True``): column ``c*K + i``.

The offset order is a rule over the kernel (``fastest="last"``: row-major, the last
spatial axis fastest; ``"first"``: the first axis fastest) or an explicit list of
offsets (:func:`~pm_core.window_layouts.layout_from_offsets`), which must be a permutation of the window's
offsets: a list with repeats is not a merge of ``K`` distinct positions, and
:class:`~pm_core.window_layouts.WindowOrderError` names the repeated and the missing offsets.

Named layouts (:data:`~pm_core.window_layouts.WINDOW_LAYOUTS`; read from each library's source):

=================  ==========================================================================
``swin``           offsets first-axis fastest, channel minor: Microsoft Swin, timm, torchvision,
                   HF (2x2: ``(2*dw + dh)*C + c``); MONAI ``PatchMergingV2`` 2-D; Video Swin
                   per frame (``Window((1, 2, 2))``)
``focus``          YOLOv5 / ultralytics ``Focus`` (2-D), Swin's order on NCHW channels
``row-major``      offsets row-major (last axis fastest), channel minor
``timm-s2d``       timm ``SpaceToDepth`` (TResNet, 2-D): ``(dh*bs + dw)*C + c``; also
                   Swin-Unet ``PatchExpand``'s ``(p1 p2 c)`` rearrange
``monai-v2-3d``    MONAI ``PatchMergingV2`` 3-D: ``itertools.product`` over ``(d, h, w)``
``unfold``         channel major, offsets row-major: ``nn.Unfold``, ``F.pixel_unshuffle``, mmcv
                   ``PatchMerging``; a conv weight ``[O, C, *kernel]`` flattened to ``[O, n]``
``monai-legacy``   MONAI ``PatchMerging`` 3-D from 1.5.0 (2x2x2 only): x0..x7 at ``(d, h, w)`` =
                   (0,0,0) (1,0,0) (0,1,0) (0,0,1) (1,1,0) (1,0,1) (0,1,1) (1,1,1)
=================  ==========================================================================

``timm-s2d`` and ``monai-v2-3d`` are ``row-major``, and ``focus`` is ``swin``, under the
name their library uses: converting between them is the identity.

This module only names orders (pure Python, no tensors); :mod:`pm_core.layouts` converts
weights between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

from .window import Window

Offset = tuple[int, ...]


class WindowOrderError(ValueError):
    """An offset list that is not a permutation of its window's offsets.

    ``duplicated`` maps each repeated offset to the positions it appears at; ``missing``
    lists the window offsets the list never reads.
    """

    def __init__(
        self,
        message: str,
        *,
        duplicated: dict[Offset, tuple[int, ...]],
        missing: tuple[Offset, ...],
    ) -> None:
        super().__init__(message)
        self.duplicated = duplicated
        self.missing = missing


@dataclass(frozen=True)
class WindowLayout:
    """A channel order of the merged vector (see the module docstring).

    ``fastest`` is the offset rule (``"last"``: row-major; ``"first"``: first axis
    fastest), or ``None`` for an explicit ``offsets`` list with its ``kernel``.
    ``dims`` restricts the layout to 2-D or 3-D windows (``None``: both). ``used_by``
    says which libraries gather in this order.
    """

    name: str
    fastest: Literal["first", "last"] | None = "last"
    channel_major: bool = False
    offsets: tuple[Offset, ...] | None = None
    kernel: tuple[int, ...] | None = None
    dims: int | None = None
    used_by: str = ""

    def axes(self, dims: int) -> tuple[int, ...] | None:
        """Spatial axes from slowest to fastest varying offset, or ``None`` (explicit list)."""
        if self.fastest is None:
            return None
        forward = tuple(range(dims))
        return forward if self.fastest == "last" else forward[::-1]

    def check(self, window: Window) -> None:
        """Raise ``ValueError`` unless this layout applies to ``window``."""
        if self.dims is not None and window.dims != self.dims:
            raise ValueError(
                f"layout {self.name!r} is for {self.dims}-D windows, got the {window.dims}-D "
                f"{window}"
            )
        if self.kernel is not None and window.kernel != self.kernel:
            raise ValueError(
                f"layout {self.name!r} lists the offsets of a {_shape(self.kernel)} window, "
                f"but the window's kernel is {_shape(window.kernel)}"
            )

    def order(self, window: Window) -> tuple[Offset, ...]:
        """The window's ``K`` offsets in this layout's order (``i``-th offset, ``i``-th block)."""
        self.check(window)
        if self.offsets is not None:
            return self.offsets
        axes = self.axes(window.dims)
        assert axes is not None
        out: list[Offset] = [()]
        for a in axes:  # slowest first: the last axis appended varies fastest
            out = [(*o, i) for o in out for i in range(window.kernel[a])]
        # entries were built in axes order; put them back in (d, h, w) order
        inv = sorted(range(len(axes)), key=lambda j: axes[j])
        return tuple(tuple(o[j] for j in inv) for o in out)

    def columns(self, window: Window, channels: int) -> list[list[int]]:
        """``columns(...)[p][c]``: the column of channel ``c`` at row-major offset ``p``."""
        order = self.order(window)
        rank = {off: i for i, off in enumerate(order)}
        k = len(order)
        cols = []
        for off in window.offsets():
            i = rank[off]
            cols.append(
                [c * k + i if self.channel_major else i * channels + c for c in range(channels)]
            )
        return cols


def _shape(kernel: Sequence[int]) -> str:
    return "x".join(str(k) for k in kernel)


#: MONAI ``PatchMerging`` 3-D (``monai/networks/nets/swin_unetr.py``), 1.5.0 and later:
#: ``x0 .. x7`` as ``(d, h, w)`` offsets, concatenated on the channel dim in this order.
MONAI_LEGACY_OFFSETS: tuple[Offset, ...] = (
    (0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1),
)  # fmt: skip

#: The named layouts; see the module docstring for what each library does.
WINDOW_LAYOUTS: dict[str, WindowLayout] = {
    layout.name: layout
    for layout in (
        WindowLayout(
            "swin", "first",
            used_by="Microsoft Swin, timm, torchvision, HF transformers (2x2); MONAI "
            "PatchMergingV2 2-D; Video Swin per frame (kernel (1, 2, 2))",
        ),
        WindowLayout("focus", "first", dims=2, used_by="YOLOv5 / ultralytics Focus"),
        WindowLayout(
            "row-major", "last",
            used_by="timm SpaceToDepth, MONAI PatchMergingV2 3-D, Swin-Unet PatchExpand",
        ),
        WindowLayout("timm-s2d", "last", dims=2, used_by="timm SpaceToDepth (TResNet)"),
        WindowLayout(
            "monai-v2-3d", "last", dims=3,
            used_by="MONAI PatchMergingV2 3-D (itertools.product over (d, h, w))",
        ),
        WindowLayout(
            "unfold", "last", channel_major=True,
            used_by="nn.Unfold, F.pixel_unshuffle, mmcv PatchMerging; conv weights flattened",
        ),
        WindowLayout(
            "monai-legacy", None, offsets=MONAI_LEGACY_OFFSETS, kernel=(2, 2, 2), dims=3,
            used_by="MONAI PatchMerging 3-D, 1.5.0 and later",
        ),
    )
}  # fmt: skip


def window_layout(layout: str | WindowLayout, window: Window | None = None) -> WindowLayout:
    """``layout`` (a name from :data:`WINDOW_LAYOUTS`, or a :class:`WindowLayout`) resolved,
    and checked against ``window`` when one is given."""
    if isinstance(layout, WindowLayout):
        resolved = layout
    elif isinstance(cast(object, layout), str) and layout in WINDOW_LAYOUTS:
        resolved = WINDOW_LAYOUTS[layout]
    else:
        raise ValueError(
            f"unknown window layout {layout!r}; choose one of {tuple(WINDOW_LAYOUTS)} or "
            "build one with pm_core.window_layouts.layout_from_offsets"
        )
    if window is not None:
        resolved.check(window)
    return resolved


def layout_from_offsets(
    offsets: Sequence[Sequence[int]],
    *,
    kernel: Sequence[int] | None = None,
    name: str = "custom",
    channel_major: bool = False,
) -> WindowLayout:
    """A layout from an explicit offset order, e.g. a library's list of strided slices.

    ``offsets``: ``K`` offsets ``(dh, dw)`` or ``(dd, dh, dw)``; ``kernel`` defaults to one
    past the largest offset per dim. Raises :class:`WindowOrderError` unless ``offsets``
    is a permutation of the kernel's ``K`` offsets, naming the repeated and the missing
    ones (MONAI's 3-D ``PatchMerging`` before 1.5.0 read ``(0, 1, 0)`` and ``(0, 0, 1)``
    twice and never ``(1, 1, 0)`` or ``(0, 1, 1)``).

    >>> layout_from_offsets([(0, 0), (1, 0), (0, 1), (1, 1)]).order(Window((2, 2)))
    ((0, 0), (1, 0), (0, 1), (1, 1))
    """
    if not isinstance(offsets, (tuple, list)) or not offsets:
        raise TypeError(f"offsets must be a non-empty sequence of offset tuples, got {offsets!r}")
    offs: list[Offset] = []
    for i, off in enumerate(offsets):
        if (
            not isinstance(off, (tuple, list))
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in off)
            or any(v < 0 for v in off)
        ):
            raise TypeError(f"offsets[{i}] must be a tuple of non-negative ints, got {off!r}")
        offs.append(tuple(off))
    dims = len(offs[0])
    if dims not in (2, 3) or any(len(o) != dims for o in offs):
        raise ValueError(
            f"offsets must all be (dh, dw) or all (dd, dh, dw) tuples, got {list(offsets)!r}"
        )
    k = tuple(max(o[d] for o in offs) + 1 for d in range(dims)) if kernel is None else kernel
    window = Window(k)
    want = window.offsets()
    outside = [o for o in offs if o not in set(want)]
    if outside:
        raise ValueError(f"offsets {outside} lie outside the {_shape(window.kernel)} window")
    seen: dict[Offset, list[int]] = {}
    for i, o in enumerate(offs):
        seen.setdefault(o, []).append(i)
    duplicated = {o: tuple(at) for o, at in seen.items() if len(at) > 1}
    missing = tuple(o for o in want if o not in seen)
    if duplicated or missing:
        parts = [f"{o} appears at positions {list(at)}" for o, at in duplicated.items()]
        raise WindowOrderError(
            f"offsets are not a permutation of the {_shape(window.kernel)} window's {len(want)} "
            f"offsets: {'; '.join(parts) or 'no offset repeats'}; missing "
            f"{list(missing) or 'none'} (got {len(offs)} offsets). A merge that reads them "
            "is not a merge of the window's distinct positions, and no weight conversion makes "
            "it one",
            duplicated=duplicated,
            missing=missing,
        )
    return WindowLayout(
        name, None, channel_major=channel_major, offsets=tuple(offs), kernel=window.kernel,
        dims=dims,
    )  # fmt: skip


__all__ = [
    "MONAI_LEGACY_OFFSETS",
    "WINDOW_LAYOUTS",
    "Offset",
    "WindowLayout",
    "WindowOrderError",
    "layout_from_offsets",
    "window_layout",
]
