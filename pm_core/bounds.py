"""Rounding-error bounds for patch merging: the one tolerance the suite and the report use.

:func:`~pm_core.error_bounds` returns, for one call of :func:`pm_core.patch_merge`, an elementwise
bound on ``|impl - oracle|`` for the output and for every gradient. A comparison passes
when ``|impl - oracle| <= bound`` everywhere; ``max(|impl - oracle| / bound)`` is the
"error / bound" ratio the report prints. Nothing here is tuned: every term comes from
the derivation below, and every input to it is a quantity of the call itself.

Nothing in the derivation needs the window to be 2x2: ``bounds_on_windows`` evaluates
it on any gathered windows of length ``n``, and :func:`pm_core.window_error_bounds` uses
it for the general merge, adding only what overlapping windows need.

Derivation
----------
Notation: ``u`` is the unit roundoff of the compute dtype (``finfo.eps / 2``: 2^-53,
2^-24, 2^-8, 2^-11 for float64/32, bfloat16, float16), plus float64's own for the
oracle; ``u_acc`` that of the dtype sums accumulate in (``accumulate``: PyTorch's
"opmath" type, float32 for the half types on CPU and CUDA, else the dtype itself).
``n = 4C`` is the window length, ``O`` the output width, ``N`` the number of windows
``B * ceil(H/2) * ceil(W/2)``. A sum of ``L`` products accumulated in any order and
nesting is off by at most ``L * u_acc * sum |terms|`` (Higham, *Accuracy and Stability
of Numerical Algorithms*, sec. 3.1), and rounding its input and its result to the
dtype at the op boundaries adds ``2 u``; in units of ``u``::

    gamma(L) = L * u_acc / u + 2

Each bound is ``u * E + gamma(L) * u * tiny`` where ``E`` is the first-order error
coefficient below and the last term covers gradual underflow (``tiny`` is the dtype's
smallest normal). An intermediate the layer's definition rounds to the dtype (``v`` in
``pre``, ``z`` in ``post``, and the gradients ``dL/dv``, ``dL/dz``) can underflow as
well, by up to ``u * tiny`` absolute, which the products after it scale by their other
factor (a float16 ``dL/dz`` of 1e-6, rounded to a multiple of 2^-24, times an input of
3e4 in ``dL/dW``): each such intermediate's ``E`` carries ``tiny`` too. Inputs are exact: the oracle casts the *rounded* low-precision inputs
to float64, so input rounding is not an error of the implementation.

The reductions over the N windows (the parameter gradients dL/dW, dL/dg, dL/db) are
bounded as if accumulated in the dtype itself, ``gamma_N(L) = L + 2``: PyTorch's CPU
LayerNorm backward does accumulate dL/dbeta partly in bfloat16 (measured: 1.08 *
``u * sum|G|`` over 25 rows, where one final rounding would give at most ``u |sum G|``).

Reduced-precision reductions (cuBLAS half GEMMs with
``torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction``) accumulate in
the dtype itself: pass ``accumulate=dtype`` there.

Magnitudes use ``|.|`` of every factor (``|W| |v|`` rather than ``|W v|``), because an
implementation may group the sum differently from the oracle (the conv fold computes
``sum_k (W_ok g_k) (x_k - mu)`` then scales, not ``sum_k W_ok (g_k xhat_k + b_k)``).

**LayerNorm over a window** (``norm="pre"``; the same over the O outputs for ``"post"``).
With window mean ``mu``, ``sigma = sqrt(var + eps)``, ``xhat = (x - mu) / sigma``:
the computed mean is off by at most ``gamma(n) u mean|x|``; centring rounds each
``x_k - mu`` by ``u |x_k - mu|``; dividing by ``sigma`` amplifies the mean's error by
``1/sigma``, so ``|d xhat_k| <= gamma(n) u (mean|x| / sigma) + u |xhat_k|``. Since
``mean|x| <= |mu| + sigma``, the amplification is the window's conditioning::

    kappa = |mu| / sigma + 1            (1 for a centred window; eps caps 1/sigma)

and the two-pass variance inherits the same relative error (Cauchy-Schwarz on
``sum d_k * delta_k``), so ``|d sigma| / sigma <= gamma(n) u kappa``. Altogether the
normalised value is good to ``gamma(n) u kappa (1 + |xhat_k|)``, and the affine output
``v = g xhat + b`` to ``E_v = gamma(n) kappa |g| (1 + |xhat|) + a`` (times ``u``),
where ``a = |g| |xhat| + |b| >= |v|`` covers the rounding of ``v`` however ``g xhat + b``
is grouped.
A single-pass ``E[x^2] - E[x]^2`` would instead lose ``kappa^2`` (not ``kappa``) ulps
of the variance: this bound does not cover it, on purpose. The analysis is first order;
when ``c = gamma(n) kappa`` reaches ``1/u`` the window's mean is known to fewer digits
than its spread, products of two perturbed quantities (``xhat * mean(g xhat)`` in the
backward, the variance about a misplaced mean) contribute ``(u c)^2``, and every ``c``
below is taken as ``c (1 + u c)``. (Found by the thorough profile: a float32 window of
mean 1e6 and spread 1e-3, ``u c = 324``, gave dL/dx 1.93x the first-order bound.)

**As computed.** Near ``u c = 1`` the mean's error ``u c sigma`` reaches the spread, and
the computed variance can collapse to 0 (PyTorch's Welford update normalises the float32
window ``(1e7 + 1, 1e7 + 2)`` to ``(-316, 0)``, not ``(-1, 1)``). So a LayerNorm whose
spread and centred values can move by ``shift`` (``u c sigma`` from its own mean, plus its
input's error in ``post``) computes ``sigma`` no smaller than ``sigma_lo = sqrt(max(0, s -
shift)^2 + eps)`` (``s`` the spread without eps) and ``|xhat|`` no larger than ``(|x - mu|
+ 2 shift) / sigma_lo``. The normalised value's error above is divided by the computed
``sigma``, not the exact one: ``E_v``'s ``c (1 + |xhat|)`` is multiplied by ``sigma /
sigma_lo``. The backward, whose kernel forms ``dx = a dy + b x + c`` on the uncentred
``x`` (its ``b`` carries ``rstd^3``), is bounded on the LayerNorm as computed: ``sigma_lo``,
``kappa = |mu| / sigma_lo + 1`` and that ``|xhat|``. Away from ``u c = 1`` these differ
from the exact quantities by ``O(u c)`` relative.

**Forward.**

* ``none``: ``y_o = sum_k W_ok x_k``: ``E = gamma(n) sum_k |W_ok| |x_k|``.
* ``pre``: the projection of ``v``: ``E = gamma(n) sum_k |W_ok| a_k + sum_k |W_ok| E_v,k``
  with ``a = |g| |xhat| + |b|``.
* ``post``: ``z = W x`` has ``E_z = gamma(n) |W| |x|``; the LN over O maps an error
  ``dz`` to ``(2 + |zhat_o|) max|dz| / sigma_z``, and adds its own ``gamma(O) kappa_z
  (1 + |zhat_o|)``: ``E_zhat = (2 + |zhat|) rho`` with ``rho = 2 max(E_z) / sigma_z +
  gamma(O) kappa_z``, and ``E = |g| E_zhat + |y|``. The LN runs on the *computed*
  ``z' = z + dz``, whose spread can be smaller than ``z``'s: ``rms(z' - mean z') >= s -
  max|dz|`` (``s`` the spread of ``z`` without eps; the triangle inequality, and
  ``rms(dz - mean dz) <= max|dz|``). So every ``sigma_z`` here is the "as computed"
  ``sigma_lo`` with ``shift = u max E_z + u c_z sigma_z`` (``c_z = gamma(O) kappa_z``),
  ``kappa_z = |mu_z| / sigma_lo + 1``, and ``|zhat|`` is ``(|z - mu_z| + 2 shift) /
  sigma_lo``. Where ``z``'s rounding
  reaches its spread, the rounded outputs can coincide and the computed variance
  collapse to eps: a LayerNorm that computes ``(z - mu) rstd`` as ``z rstd - mu rstd``
  (PyTorch's half-precision CPU kernel) is then off by ``u_acc |mu_z| / sqrt(eps)``,
  which ``sigma_lo`` covers and the exact ``sigma_z`` did not (found by the finite-range
  property: bfloat16 windows near the range's edge, 2 outputs rounding to one value).

**Gradients** (upstream gradient ``G``, exact in the compute dtype). Each backward is
again a set of sums of products, with the reduction lengths of the backward:

* through the projection, ``dL/dv = G W`` sums over O (``gamma(O)``); ``dL/dW = sum over
  windows G^T v`` sums over N (``gamma(N)``), plus ``|G|^T E_v`` from the error in ``v``;
* LayerNorm backward ``dL/dx = (gx - mean(gx) - xhat mean(gx xhat)) / sigma`` (``gx =
  g dL/dxhat``) has magnitude ``M = (|gx| + mean|gx| + |xhat| mean|gx xhat|) / sigma``;
  its error is ``gamma(n) kappa (2M + (1 + |xhat|) mean(|gx| (1 + |xhat|)) / sigma)``
  (its own rounding plus the forward errors in ``xhat`` and ``sigma``), plus the
  incoming error of ``gx`` mapped through it, ``(2 + |xhat|) max|d gx| / sigma``;
* ``dL/dg = sum_windows gv xhat`` and ``dL/db = sum_windows gv`` sum over N windows of
  terms that are themselves O-term sums: ``gamma(N + O)``.

**Range.** The bounds are on finite results, and pm-core claims the results are finite
wherever the layer's own values are: every input ``|x| <= finite_range(dtype, n)``, and
every value the layer's definition rounds to the dtype (the output; in ``post`` the
projection's output; each gradient) below the dtype's largest finite value.
:func:`~pm_core.bounds.finite_range` is ``min(max_dtype, sqrt(max_acc / n) / 2)``: a LayerNorm's
statistics accumulate ``n`` squares of ``|x - mu| <= 2 |x|`` in the accumulation dtype,
and past that PyTorch's own ``F.layer_norm`` is wrong too (a float32 window of
magnitude 1e20 normalises to 0). In float16 the first term binds: the whole range.
The conv form's pre-norm fold forms a value the definition does not,
``conv(x - mu, W*g)``, which carries the input's scale (in float16 it overflows where
the LayerNorm's output is small). So the fold scales each centred window by a power
of two ``p`` with ``p / rstd`` in ``(1/2, 1]`` before rounding it to the dtype, and the
conv's output by ``rstd / p`` after: every value it forms is then of the size of
``xhat``, ``W*g`` or the output. Scaling by a power of two is exact, so the terms above
are unchanged, except where ``(x_k - mu) p`` falls below the dtype's smallest normal:
it is then rounded to the subnormal spacing, an absolute error in ``xhat``'s units of
at most half that spacing (2^-25 in float16, 2^-134 in bfloat16), against the
centring term ``gamma(n) u kappa >= 2u`` (2^-10 in float16) that covers it. The fold's
backward keeps its operands ``G``- and ``xhat``-sized and applies the gradient's scale
``p`` last, once: an underflow there is the dtype's own rounding of the true gradient,
which the ``gamma * tiny`` term below covers.

**GEMMs on rounded inputs** (``gemm_precision="tf32"`` or ``"bf16"``, float32 only;
see :mod:`pm_core.precision`). The backend rounds both float32 operands of every GEMM
to a shorter format, relative error ``u_in`` each, multiplies them exactly (a product
of two 11- or 8-bit significands fits float32's 24) and accumulates in float32. With
``w~ = w (1 + a)``, ``x~ = x (1 + b)``, ``|a|, |b| <= u_in``::

    |fl(sum w~ x~) - sum w x| <= (2 u_in + u_in^2) sum |w| |x|          (rounding)
                                + gamma(L) u (1 + u_in)^2 sum |w| |x|   (summation)

so every GEMM reduction coefficient ``gamma(L)`` above becomes::

    gamma_in(L) = gamma(L) (1 + u_in)^2 + (2 u_in + u_in^2) / u

and an error arriving at a GEMM from upstream (``E_v`` in ``pre``, ``E_z`` in the
``post`` backward) is carried through by ``(1 + u_in)^2``. LayerNorm statistics and
elementwise ops are not GEMMs and keep their terms. The same holds for each backward
GEMM: ``dL/dv = G W`` (length O), ``dL/dW = G^T v`` (length N), and the conv fold's
``convolution_backward`` (the same two products on ``G rstd`` and the centred window,
whose operands are bounded by the same ``|G| |W|`` and ``|xhat|`` magnitudes, so the
same terms cover it; its ``dL/dg = sum_o (dL/dW~)_ok W_ok`` inherits the rounding of
``dL/dW~``, which the window-reduction terms of ``dL/dg`` and ``dL/db`` carry as
``gamma_in``). ``u_in`` is one full ulp of the format (2^-10 for TF32, 2^-7 for
bfloat16), twice the round-to-nearest figure, because whether cuBLAS / cuDNN round or
truncate operands to TF32 is not documented; the suite checks both emulations. Values
below float32's smallest normal round to the format's subnormal spacing, so the
underflow term uses ``u + u_in``.

Examples:
    >>> import torch
    >>> from pm_core import error_bounds, patch_merge, reference_patch_merge
    >>> x, w = torch.randn(2, 6, 6, 8), torch.randn(16, 32)
    >>> eb = error_bounds(x, w, norm="none")
    >>> err = (patch_merge(x, w, norm="none", impl="conv") - reference_patch_merge(x, w, norm="none")).abs()
    >>> bool((err <= eb.output).all())
    True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ._checks import FLOAT_DTYPES, Norm, Odd, check_call
from .bound_terms import WindowBounds, _mean, bounds_on_windows, unit_roundoff
from .oracle import gather_windows, scatter_windows

_F64 = torch.float64


class ErrorBounds(NamedTuple):
    """Elementwise bounds (float64, each shaped like the quantity it bounds).

    ``output`` bounds the forward result. The gradient fields are ``None`` unless
    ``grad_out`` was given (and ``norm_weight``/``norm_bias`` also when those are
    ``None``). ``kappa`` is the worst window's ``|mean| / sqrt(var + eps)`` of ``x``, a
    0-dim float64 tensor on ``x``'s device (``float(eb.kappa)`` for a number): reading
    it would synchronise a GPU, and fake or meta tensors have no value to read.
    """

    output: Tensor
    x: Tensor | None
    reduction_weight: Tensor | None
    norm_weight: Tensor | None
    norm_bias: Tensor | None
    kappa: Tensor


def finite_range(dtype: torch.dtype, n: int, accumulate: torch.dtype | None = None) -> float:
    """The largest ``|x|`` a LayerNorm over ``n`` entries of ``dtype`` takes (see "Range" in
    the module docstring): ``min(max_dtype, sqrt(max_acc / n) / 2)``, where ``acc`` is
    ``accumulate`` (default: float32 for the half types, else ``dtype``).

    Inside it, with every value the layer's definition rounds to ``dtype`` finite there,
    every impl's output and gradients are finite and within the bounds.

    >>> finite_range(torch.float16, 384)  # float16's own largest value
    65504.0
    """
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype!r}")
    if n < 1:
        raise ValueError(f"n must be a positive window length, got {n}")
    acc = torch.promote_types(dtype, torch.float32) if accumulate is None else accumulate
    return min(torch.finfo(dtype).max, math.sqrt(torch.finfo(acc).max / n) / 2)


def window_conditioning(
    x: Tensor, *, hw: tuple[int, int] | None = None, eps: float = 1e-5
) -> Tensor:
    """``|mean| / sqrt(var + eps)`` of every 2x2 window (zero padding included), in float64.

    ``x``: ``(B, H, W, C)``, or ``(B, L, C)`` with ``hw``; returns ``(B, ceil(H/2), ceil(W/2))``.
    """
    v = gather_windows(_as_bhwc_f64(x, hw))
    mu = _mean(v)
    sigma = torch.sqrt(_mean((v - mu) ** 2) + eps)
    return (mu.abs() / sigma).squeeze(-1)


def _as_bhwc_f64(x: Tensor, hw: tuple[int, int] | None) -> Tensor:
    x = x.detach().to(_F64)
    if x.dim() == 3:
        assert hw is not None
        x = x.reshape(x.shape[0], hw[0], hw[1], x.shape[2])
    return x


def error_bounds(
    x: Tensor,
    reduction_weight: Tensor,
    norm_weight: Tensor | None = None,
    norm_bias: Tensor | None = None,
    *,
    hw: tuple[int, int] | None = None,
    norm: Norm = "pre",
    eps: float = 1e-5,
    odd: Odd = "pad",
    grad_out: Tensor | None = None,
    dtype: torch.dtype | None = None,
    accumulate: torch.dtype | None = None,
    gemm_precision: str | None = None,
) -> ErrorBounds:
    """Bounds on ``|patch_merge(...) - reference_patch_merge(...)|`` and on the gradients' errors.

    Same arguments as :func:`pm_core.patch_merge` (no ``impl``: the bound holds for any
    order of summation), plus ``grad_out`` (the upstream gradient, shaped like the
    output) to bound the gradients, ``dtype``, the compute dtype (default
    ``x.dtype``), and ``accumulate``, the dtype its sums accumulate in (default
    float32 for float16/bfloat16, else ``dtype``). ``gemm_precision`` is the input
    precision of the GEMMs (:func:`pm_core.gemm_precision`): ``None`` or ``"ieee"`` for
    GEMMs in the dtype itself, ``"tf32"`` / ``"bf16"`` for float32 GEMMs whose operands
    are rounded to that format (the dtype's own name, as ``gemm_precision`` reports it
    for other dtypes, is accepted too). All bounds are float64 tensors shaped like what
    they bound: ``output`` like the result, ``x`` like ``x``, and so on. See the module
    docstring for the derivation.
    """
    call = check_call(x, reduction_weight, norm_weight, norm_bias, hw, norm, eps, odd)
    with torch.no_grad():
        x0 = call.x.detach().to(_F64)
        wb = bounds_on_windows(
            gather_windows(x0), reduction_weight, norm_weight, norm_bias, grad_out,
            norm=norm, eps=eps, dtype=call.x.dtype if dtype is None else dtype,
            accumulate=accumulate, gemm_precision=gemm_precision,
        )  # fmt: skip
        out = wb.output.flatten(1, 2) if call.flat else wb.output
        bx = None
        if wb.v is not None:  # every pixel is in exactly one 2x2 window: nothing sums
            bx = scatter_windows(wb.v, (x0.shape[1], x0.shape[2])).reshape(x.shape)
    return ErrorBounds(out, bx, wb.reduction_weight, wb.norm_weight, wb.norm_bias, wb.kappa)


__all__ = [
    "ErrorBounds",
    "WindowBounds",
    "bounds_on_windows",
    "error_bounds",
    "finite_range",
    "unit_roundoff",
    "window_conditioning",
]
