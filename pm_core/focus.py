"""YOLOv5 / ultralytics ``Focus`` is one convolution: the weight mapping, and its module form.

``Focus(c1, c2, k, s, p)`` gathers each 2x2 window of an NCHW map into ``4*c1`` channels
in Swin's order (``cat(x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2],
x[..., 1::2, 1::2])``, the ``"focus"`` layout) and runs ultralytics' ``Conv`` on the
half-resolution result: ``Conv2d(4*c1, c2, k, s, p, bias=False)``, BatchNorm, SiLU.
The gather followed by a ``k x k`` conv is a single ``2k x 2k`` conv with stride ``2s``
and padding ``2p`` on the full-resolution map (yolov5 #4825: ``k=3, s=1, p=1`` is
``6x6, s2, p2``), after the weight mapping :func:`focus_to_conv` derives. The BatchNorm
and the activation act on the conv's output and are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._checks import not_a_tensor


def _pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2 or not all(i >= 0 for i in t):
        raise ValueError(f"{name} must be an int or a pair of non-negative ints, got {v!r}")
    return t[0], t[1]


def focus_to_conv(w: Tensor) -> Tensor:
    """Focus's conv weight ``[O, 4C, kh, kw]`` -> the full-resolution weight ``[O, C, 2kh, 2kw]``.

    Derivation. Focus's gather, for even ``H, W``, is
    ``z[b, (2*dw + dh)*C + c, p, q] = x[b, c, 2p + dh, 2q + dw]`` (``dh, dw`` in ``{0, 1}``).
    Its conv (stride ``s``, zero padding ``P`` per side) is
    ``y[b, o, m, n] = sum_{c', i, j} Wk[o, c', i, j] z[b, c', m*s - P + i, n*s - P + j]``.
    Substituting ``z``, the row read is ``2(m*s - P + i) + dh = m*(2s) - 2P + (2i + dh)``,
    and the column likewise with ``2j + dw``, so with ``a = 2i + dh`` in ``[0, 2kh)`` and
    ``b = 2j + dw`` in ``[0, 2kw)``::

        y[b, o, m, n] = sum_{c, a, b} W6[o, c, a, b] x[b, c, m*2s - 2P + a, n*2s - 2P + b]
        W6[o, c, 2i + dh, 2j + dw] = Wk[o, (2*dw + dh)*C + c, i, j]

    a ``2kh x 2kw`` conv with stride ``2s`` and padding ``2P``. The zero padding agrees:
    ``z``'s row ``r`` lies outside ``[0, H/2)`` exactly when ``2r + dh`` lies outside
    ``[0, H)``, since ``H`` is even. Every ``(c, a, b)`` is hit once, so this is a
    permutation of the entries: no arithmetic, and :func:`conv_to_focus` inverts it bit
    for bit. (Groups other than 1 mix the channel blocks differently and are not covered.)

    >>> focus_to_conv(torch.zeros(64, 12, 3, 3)).shape
    torch.Size([64, 3, 6, 6])
    """
    if not isinstance(w, Tensor):
        raise not_a_tensor(w, "w")
    if w.dim() != 4 or w.shape[1] % 4 or w.shape[1] == 0:
        raise ValueError(
            f"w must be a Focus conv weight [O, 4C, kh, kw] with C >= 1, got {tuple(w.shape)}"
        )
    o, four_c, kh, kw = w.shape
    c = four_c // 4
    # (o, dw, dh, c, i, j) -> (o, c, i, dh, j, dw): row 2i + dh, column 2j + dw
    return w.view(o, 2, 2, c, kh, kw).permute(0, 3, 4, 2, 5, 1).reshape(o, c, 2 * kh, 2 * kw)


def conv_to_focus(wc: Tensor) -> Tensor:
    """The inverse of :func:`focus_to_conv`: ``[O, C, 2kh, 2kw]`` -> ``[O, 4C, kh, kw]``."""
    if not isinstance(wc, Tensor):
        raise not_a_tensor(wc, "wc")
    if wc.dim() != 4 or wc.shape[2] % 2 or wc.shape[3] % 2:
        raise ValueError(
            f"wc must be a conv weight [O, C, 2kh, 2kw] (even kernel), got {tuple(wc.shape)}"
        )
    o, c, h2, w2 = wc.shape
    kh, kw = h2 // 2, w2 // 2
    # (o, c, i, dh, j, dw) -> (o, dw, dh, c, i, j)
    return wc.view(o, c, kh, 2, kw, 2).permute(0, 5, 3, 1, 2, 4).reshape(o, 4 * c, kh, kw)


class ConvBNAct(nn.Module):
    """``act(bn(conv(x)))`` on NCHW, the structure (and state_dict keys) of ultralytics' ``Conv``."""

    def __init__(self, conv: nn.Conv2d, bn: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, C, H, W)`` -> ``(B, O, H', W')``."""
        y: Tensor = self.act(self.bn(self.conv(x)))
        return y


class FocusConv(nn.Module):
    """``Focus(dim, out_dim, k, s, p)`` as one ``2k x 2k`` conv, stride ``2s``, padding ``2p``.

    ``forward``: ``(B, dim, H, W)`` with even ``H, W`` -> ``(B, out_dim, H', W')``, NCHW in
    and out like ``Focus``. ``.conv`` is a ``ConvBNAct`` (``.conv.conv``,
    ``.conv.bn``, ``.conv.act``), so the state_dict keys are ``Focus``'s; only
    ``conv.conv.weight`` changes shape, ``[O, 4C, k, k]`` -> ``[O, C, 2k, 2k]``
    (:func:`~pm_core.focus.focus_to_conv`). ``bn`` and ``act`` default to ``BatchNorm2d(out_dim)`` and
    ``SiLU``, ultralytics' defaults.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        kernel: int | Sequence[int] = 1,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | None = None,
        *,
        bias: bool = False,
        bn: nn.Module | None = None,
        act: nn.Module | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        k, s = _pair(kernel, "kernel"), _pair(stride, "stride")
        p = (k[0] // 2, k[1] // 2) if padding is None else _pair(padding, "padding")  # autopad
        self.dim, self.out_dim = dim, out_dim
        self.kernel, self.stride, self.padding = k, s, p
        conv = nn.Conv2d(
            dim, out_dim, (2 * k[0], 2 * k[1]), stride=(2 * s[0], 2 * s[1]),
            padding=(2 * p[0], 2 * p[1]), bias=bias, device=device, dtype=dtype,
        )  # fmt: skip
        bn = nn.BatchNorm2d(out_dim, device=device, dtype=dtype) if bn is None else bn
        self.conv = ConvBNAct(conv, bn, nn.SiLU() if act is None else act)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, dim, H, W)``, even ``H, W`` -> ``(B, out_dim, H', W')``."""
        if x.dim() != 4 or x.shape[-2] % 2 or x.shape[-1] % 2:
            raise ValueError(
                f"FocusConv needs (B, C, H, W) with even H and W, as Focus does (its four "
                f"slices only concatenate then), got {tuple(x.shape)}"
            )
        y: Tensor = self.conv(x)
        return y

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, out_dim={self.out_dim}, focus kernel={self.kernel}, "
            f"stride={self.stride}, padding={self.padding}"
        )


__all__ = ["ConvBNAct", "FocusConv", "conv_to_focus", "focus_to_conv"]
