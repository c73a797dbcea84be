"""The bound's terms, evaluated: the derivation in :mod:`pm_core.bounds` on any gathered
windows of length ``n`` (Swin's 2x2 merge, and the general merge through
:mod:`pm_core.window_bounds`). Every coefficient here is one the derivation names, and
``tests/test_bound_formula.py`` evaluates them a second time, independently."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ._checks import FLOAT_DTYPES, Norm
from .precision import FP32_MODES, INPUT_ROUNDOFF

_F64 = torch.float64


def unit_roundoff(dtype: torch.dtype) -> float:
    """``u = eps / 2``: the largest relative error of one rounding to ``dtype``."""
    return torch.finfo(dtype).eps / 2


def _mean(t: Tensor) -> Tensor:
    return t.mean(-1, keepdim=True)


def _max(t: Tensor) -> Tensor:
    return t.amax(-1, keepdim=True)  # never empty: C and O are at least 1 (check_call)


class _LN(NamedTuple):
    """LayerNorm quantities over the last dim, and their first-order error coefficients."""

    xhat: Tensor
    sigma: Tensor
    kappa: Tensor


def _ln(v: Tensor, eps: float) -> _LN:
    mu = _mean(v)
    d = v - mu
    sigma = torch.sqrt(_mean(d * d) + eps)
    return _LN(d / sigma, sigma, mu.abs() / sigma + 1)


def _ln_of_computed(z: Tensor, dz: Tensor, eps: float) -> _LN:
    """:class:`_LN` of a LayerNorm whose computed spread and centred values are off by up
    to ``dz`` (see "As computed" in the module docstring): ``sigma`` is the smallest its
    spread can compute to, ``sigma_lo``, ``kappa`` follows it, and ``xhat`` holds the
    largest ``|zhat|`` it can compute."""
    mu = _mean(z)
    spread = torch.sqrt(_mean((z - mu) ** 2))
    sigma = torch.sqrt((spread - dz).clamp_min(0) ** 2 + eps)
    return _LN(((z - mu).abs() + 2 * dz) / sigma, sigma, mu.abs() / sigma + 1)


def _second_order(c: Tensor, u: float) -> Tensor:
    """``c (1 + u c)``: a first-order coefficient with its second-order term.

    Once ``u c`` nears 1 (a window whose mean is known to fewer digits than its
    spread), products of two perturbed quantities (``xhat * mean(g xhat)``, a variance
    from a misplaced mean) add ``(u c)^2``, which the first-order term misses.
    """
    return c * (1 + u * c)


def _ln_backward_magnitude(gx: Tensor, ln: _LN) -> Tensor:
    """``M``: the magnitude of LayerNorm's input gradient given ``|g * dL/dxhat|``."""
    ax = ln.xhat.abs()
    return (gx + _mean(gx) + ax * _mean(gx * ax)) / ln.sigma


def _ln_backward_error(gx: Tensor, err_gx: Tensor, ln: _LN, cond: Tensor) -> Tensor:
    """Error coefficient of LayerNorm's input gradient (see the module docstring);
    ``cond`` is the window's ``gamma(n) kappa`` with its second-order term."""
    ax = ln.xhat.abs()
    m = _ln_backward_magnitude(gx, ln)
    own = cond * (2 * m + (1 + ax) * _mean(gx * (1 + ax)) / ln.sigma)
    return own + (2 + ax) * _max(err_gx) / ln.sigma


class WindowBounds(NamedTuple):
    """:func:`bounds_on_windows`'s bounds, per gathered window (float64).

    ``output`` is ``(*lead, O)``; ``v`` bounds the error of dL/dv, the gradient of each
    gathered window vector ``(*lead, n)``, and ``v_magnitude`` bounds ``|dL/dv|`` itself
    (what an accumulation over windows that share an input sums). ``u``, ``ratio``
    (``u_acc / u``) and ``k_in`` (``(1 + u_in)^2``) are the module docstring's.
    """

    output: Tensor
    v: Tensor | None
    v_magnitude: Tensor | None
    reduction_weight: Tensor | None
    norm_weight: Tensor | None
    norm_bias: Tensor | None
    kappa: Tensor
    u: float
    ratio: float
    k_in: float


def bounds_on_windows(
    v0: Tensor,
    reduction_weight: Tensor,
    norm_weight: Tensor | None,
    norm_bias: Tensor | None,
    grad_out: Tensor | None,
    *,
    norm: Norm,
    eps: float,
    dtype: torch.dtype,
    accumulate: torch.dtype | None,
    gemm_precision: str | None,
) -> WindowBounds:
    """The module docstring's bounds, computed on already gathered windows.

    ``v0``: ``(*lead, n)``, float64, every window vector of the call's input (zero
    padding included), in the layout of ``reduction_weight`` ``(O, n)``; ``grad_out``
    (any shape with ``prod(lead) * O`` elements) is read as ``(*lead, O)``. The merge of
    :func:`error_bounds` and the general merge of :func:`pm_core.window_error_bounds`
    both come here; only how their windows map back to the input differs.
    """
    dt = dtype
    u_in = _input_roundoff(gemm_precision, dt)
    acc = torch.promote_types(dt, torch.float32) if accumulate is None else accumulate
    u = unit_roundoff(dt) + unit_roundoff(_F64)
    ratio = unit_roundoff(acc) / unit_roundoff(dt)
    k_in = (1 + u_in) ** 2  # an upstream error through a GEMM on rounded operands
    r_in = (2 * u_in + u_in**2) / u  # the operands' own rounding, in units of u

    def _gamma(length: int) -> float:
        return length * ratio + 2.0

    def _gamma_n(length: int) -> float:  # reductions over windows: dtype accumulation
        return length + 2.0

    def _gemm(length: int) -> float:  # a GEMM's reduction, operands rounded by u_in
        return _gamma(length) * k_in + r_in

    def _gemm_n(length: int) -> float:  # a GEMM's reduction over windows
        return _gamma_n(length) * k_in + r_in

    tiny = torch.finfo(dt).smallest_normal * (unit_roundoff(dt) + u_in)
    sub = tiny / u  # an intermediate's underflow, in units of u (see the docstring)
    with torch.no_grad():
        n = v0.shape[-1]
        w = reduction_weight.detach().to(_F64)
        aw = w.abs()
        o = w.shape[0]
        nwin = v0.shape[:-1].numel()
        size = n if norm == "pre" else o
        g = torch.ones(size, dtype=_F64, device=w.device)
        b = torch.zeros(size, dtype=_F64, device=w.device)
        if norm_weight is not None:
            g = norm_weight.detach().to(_F64)
        if norm_bias is not None:
            b = norm_bias.detach().to(_F64)
        ag, ab = g.abs(), b.abs()
        kappa = (_ln(v0, eps).kappa - 1).amax() if v0.numel() else v0.new_zeros(())
        av0 = v0.abs()

        e_gx_win: Tensor | None = None
        m_gx_win: Tensor | None = None
        e_gw = e_gg = e_gb = None
        gq = None if grad_out is None else grad_out.detach().to(_F64).reshape(*v0.shape[:-1], o)
        if norm == "none":
            e_y = _gemm(n) * av0 @ aw.T
            if gq is not None:
                ag_ = gq.abs()
                e_gx_win = _gemm(o) * ag_ @ aw
                m_gx_win = ag_ @ aw
                e_gw = _gemm_n(nwin) * ag_.reshape(-1, o).T @ av0.reshape(-1, n)
        elif norm == "pre":
            exact = _ln(v0, eps)
            ax = exact.xhat.abs()
            a = ag * ax + ab
            cond = _second_order(_gamma(n) * exact.kappa, u)
            # as computed: its own mean's error moves the spread by u c sigma
            ln = _ln_of_computed(v0, u * cond * exact.sigma, eps)
            e_xhat = cond * (1 + ax) * (exact.sigma / ln.sigma)
            e_v = e_xhat * ag + a + sub
            e_y = _gemm(n) * a @ aw.T + k_in * e_v @ aw.T
            if gq is not None:
                ag_ = gq.abs()
                agw = ag_ @ aw  # |G| |W|: magnitude of dL/dv, (..., n)
                e_gv = _gemm(o) * agw + sub
                flat_g = ag_.reshape(-1, o).T
                e_gw = _gemm_n(nwin) * flat_g @ a.reshape(-1, n) + k_in * flat_g @ e_v.reshape(
                    -1, n
                )
                lead = tuple(range(v0.dim() - 1))
                e_gg = (_gemm_n(nwin + o) * agw * ax + e_gv * ax + agw * e_xhat).sum(lead)
                e_gb = (_gemm_n(nwin + o) * agw + e_gv).sum(lead)
                cond_lo = _second_order(_gamma(n) * ln.kappa, u)
                e_gx_win = _ln_backward_error(ag * agw, ag * e_gv, ln, cond_lo)
                m_gx_win = _ln_backward_magnitude(ag * agw, ln)
        else:  # post
            z = v0 @ w.T
            e_z = _gemm(n) * av0 @ aw.T + sub
            exact = _ln(z, eps)
            own = u * _second_order(_gamma(o) * exact.kappa, u) * exact.sigma
            ln = _ln_of_computed(z, u * _max(e_z) + own, eps)
            az = ln.xhat
            rho = _second_order(2 * _max(e_z) / ln.sigma + _gamma(o) * ln.kappa, u)
            e_zhat = (2 + az) * rho
            e_y = ag * e_zhat + (g * exact.xhat + b).abs()
            if gq is not None:
                ag_ = gq.abs()
                gz_mag = _ln_backward_magnitude(ag * ag_, ln)
                e_gz = (
                    (_gamma(o) + rho) * gz_mag
                    + sub
                    + (e_zhat * _mean(ag * ag_ * az) + az * _mean(ag * ag_ * e_zhat)) / ln.sigma
                )
                e_gx_win = _gemm(o) * gz_mag @ aw + k_in * e_gz @ aw
                m_gx_win = gz_mag @ aw
                flat_gz = gz_mag.reshape(-1, o).T
                e_gw = (_gemm_n(nwin) * flat_gz + k_in * e_gz.reshape(-1, o).T) @ av0.reshape(-1, n)
                lead = tuple(range(v0.dim() - 1))
                e_gg = (_gamma_n(nwin) * ag_ * az + ag_ * e_zhat).sum(lead)
                e_gb = (_gamma_n(nwin) * ag_).sum(lead)

        out = u * e_y + _gamma(n + o) * tiny
        bv = bw = bg = bb = None
        if e_gx_win is not None:
            bv = u * e_gx_win + _gamma(n + o) * tiny
        if e_gw is not None:
            bw = u * e_gw + _gamma_n(nwin) * tiny
        if e_gg is not None and norm_weight is not None:
            bg = u * e_gg + _gamma_n(nwin + o) * tiny
        if e_gb is not None and norm_bias is not None:
            bb = u * e_gb + _gamma_n(nwin + o) * tiny
    return WindowBounds(out, bv, m_gx_win, bw, bg, bb, kappa, u, ratio, k_in)


def _input_roundoff(mode: str | None, dtype: torch.dtype) -> float:
    """``u_in`` of a GEMM's operands for ``error_bounds(gemm_precision=mode)``, checked."""
    own = str(dtype).removeprefix("torch.")
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype!r}")
    if mode is None or mode == "ieee" or mode == own:
        return 0.0
    if dtype != torch.float32:
        raise ValueError(
            f"gemm_precision={mode!r} rounds float32 GEMM operands, but the compute dtype is "
            f"{own}: pass None or {own!r} (what pm_core.gemm_precision reports for it)"
        )
    if mode not in FP32_MODES:
        raise ValueError(f"gemm_precision must be None or one of {FP32_MODES}, got {mode!r}")
    return INPUT_ROUNDOFF[mode]


__all__ = ["WindowBounds", "bounds_on_windows", "unit_roundoff"]
