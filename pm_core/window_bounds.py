"""Rounding-error bounds for the general merge: the 2x2 derivation on windows of length n.

:func:`~pm_core.window_error_bounds` bounds ``|window_merge(...) - reference_window_merge(...)|``
and the gradients' errors, elementwise, as :func:`pm_core.error_bounds` does for
:func:`pm_core.patch_merge`. Nothing in the derivation of :mod:`pm_core.bounds` depends
on the window being 2x2: it bounds one LayerNorm over a window vector of length ``n``, a
projection of length ``n``, their backward, and reductions over the ``N`` windows. So it
is evaluated unchanged (``pm_core.bounds.bounds_on_windows``) on the windows the
oracle gathers, with ``n = prod(kernel) * C`` and ``N = B * prod(S')``; zero padding is
part of a window, as in the merge. What is new is the way back to the input.

Derivation: dL/dx where windows overlap
---------------------------------------
For windows that tile (stride == kernel, dilation 1) every input position ``p`` lies in
at most one window, and its dL/dx is that window's dL/dv entry: the per-window bound
holds as it is. When windows overlap (stride < span), ``p`` lies in ``m_p`` windows and
``dL/dx_p = sum_{w ∋ p} g_w,p`` with ``g_w = dL/dv_w``. Write ``E_w`` for the per-window
bound on ``|g^_w - g_w|`` (absolute, underflow included) and ``M_w`` for the bound on
``|g_w|`` (``WindowBounds.v_magnitude``). Two ways of computing the
sum are covered:

* **Per window, then accumulated** (the gather form: LayerNorm and the projection per
  window, then ``Tensor.unfold``'s backward adds the ``m_p`` computed values in the
  dtype). Summing ``m`` numbers in any order and nesting is off by at most
  ``(m - 1) u sum |terms|`` (Higham, sec. 3.1), and each term is at most
  ``M_w + E_w``::

      |err_p| <= sum_w E_w,p + (m_p - 1) u sum_w (M_w,p + E_w,p)

* **Fused in the GEMM** (the conv form without pre-norm: the conv's input gradient
  ``dx_p = sum_w sum_o G_w,o W_o,(p - w)`` is one reduction of ``O m_p`` products, in any
  order). Its bound is the per-window GEMM term with ``gamma(O m_p)`` in place of
  ``gamma(O)``; ``gamma`` is affine, ``gamma(O m) - gamma(O) = O (m - 1) u_acc / u``, and
  on rounded operands the difference is carried by ``k_in = (1 + u_in)^2``. The GEMM's
  terms sum to at most ``M_w`` in magnitude, so this adds
  ``(m_p - 1) O (u_acc / u) k_in u sum_w M_w,p``.

Since ``O (u_acc / u) k_in >= 1``, one bound covers both, with ``c = O (u_acc/u) k_in``
for ``norm="none"`` and ``"post"`` (whose last step is that GEMM) and ``c = 1`` for
``"pre"`` (whose last step is LayerNorm's elementwise backward, never fused with the
accumulation)::

    bound_p = sum_w E_w,p + (m_p - 1) u (c sum_w M_w,p + sum_w E_w,p)

For ``m_p <= 1`` this is the per-window bound, so tiling windows get exactly
:func:`pm_core.error_bounds`'s. Adding subnormals is exact, so the accumulation adds no
underflow term beyond the ``E_w``'s own. The sums over ``w`` are the adjoint of the
oracle's gather (``pm_core.window_oracle.reference_depth_to_space``); positions a
window reads from the zero padding receive nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import Norm, check_window_call
from .bounds import ErrorBounds, bounds_on_windows
from .oracle import reference_depth_to_space, reference_space_to_depth
from .window import Window
from .window_layouts import WindowLayout

_F64 = torch.float64


def window_error_bounds(
    x: Tensor,
    reduction_weight: Tensor,
    norm_weight: Tensor | None = None,
    norm_bias: Tensor | None = None,
    *,
    window: Window,
    layout: str | WindowLayout = "swin",
    norm: Norm = "pre",
    eps: float = 1e-5,
    grad_out: Tensor | None = None,
    dtype: torch.dtype | None = None,
    accumulate: torch.dtype | None = None,
    gemm_precision: str | None = None,
) -> ErrorBounds:
    """Bounds on ``|window_merge(...) - reference_window_merge(...)|`` and on the gradients.

    Same arguments as :func:`pm_core.window_merge` (no ``impl``: the bound holds for
    both), plus ``grad_out`` ``(B, *S', O)`` to bound the gradients, and ``dtype``,
    ``accumulate`` and ``gemm_precision`` as in :func:`pm_core.error_bounds`. Returns an
    :class:`~pm_core.bounds.ErrorBounds` of float64 tensors shaped like what they bound:
    ``output`` ``(B, *S', O)``, ``x`` like ``x``, the parameters like theirs. See the
    module docstring for the part of the derivation that is new.
    """
    call = check_window_call(x, reduction_weight, norm_weight, norm_bias, window, layout, norm, eps)
    size = tuple(call.x.shape[1:-1])
    with torch.no_grad():
        x0 = call.x.detach().to(_F64)
        v0 = reference_space_to_depth(x0, call.window, call.layout)
        wb = bounds_on_windows(
            v0, reduction_weight, norm_weight, norm_bias, grad_out, norm=norm, eps=eps,
            dtype=call.x.dtype if dtype is None else dtype, accumulate=accumulate,
            gemm_precision=gemm_precision,
        )  # fmt: skip
        bx = None
        if wb.v is not None:
            assert wb.v_magnitude is not None

            def to_input(t: Tensor) -> Tensor:  # sum over the windows holding each position
                return reference_depth_to_space(t, call.window, call.layout, size)

            per_window = to_input(wb.v)
            if call.window.tiles:
                bx = per_window
            else:
                m = to_input(torch.ones_like(wb.v))  # m_p: windows holding position p
                c = 1.0 if norm == "pre" else call.out_features * wb.ratio * wb.k_in
                extra = (m - 1).clamp(min=0) * wb.u * (c * to_input(wb.v_magnitude) + per_window)
                bx = per_window + extra
    return ErrorBounds(wb.output, bx, wb.reduction_weight, wb.norm_weight, wb.norm_bias, wb.kappa)


__all__ = ["window_error_bounds"]
