"""``error_bounds`` computes the bound its docstring derives, term for term.

The property suite checks that errors stay *below* the bound; nothing there notices a
bound grown looser than its derivation (a ``gamma(L) = L + 3``, a dropped
``(1 + u_in)^2``), which would let a wrong implementation through. Mutation testing
(``nox -s mutants``) showed such changes surviving. So here the derivation in
:mod:`pm_core.bounds` is evaluated a second time, independently: scalar Python floats,
explicit loops over windows, outputs and window entries, its own gather by the index
formula ``k = (2*dw + dh)*C + c``, and the formats' unit roundoffs written out from
IEEE 754 rather than read from torch. Shapes are tiny, so the loops are cheap.

Tolerance: both sides evaluate the same float64 expression of non-negative terms (every
magnitude is an absolute value, every coefficient positive), summed in different orders;
``L`` such terms differ by at most ``L * 2^-53`` relative (Higham sec. 3.1). With at most
a few hundred terms per entry, ``rtol = 1e-12`` holds with margin, while any change to a
coefficient of the derivation moves an entry by far more (``gamma(L)`` changed by one
unit is at least ``1 / (L + 2)``). One input is not such a sum: ``xhat = (x - mu) /
sigma`` subtracts, and a float64 mean of ``n`` entries is off by up to ``n 2^-53
mean|x|``, which moves ``xhat`` by ``n 2^-53 kappa`` (``kappa = |mu| / sigma``, the
window's conditioning; the bound module's own argument, in float64). Each side makes that
error once, so entries may differ by ``2 n 2^-53 kappa`` relative to their ``1 + |xhat|``
factors: the derivation test adds ``4 n 2^-53 (kappa_x + kappa_z)`` to ``rtol`` (``z``:
the post-norm's projected outputs, normalised too), at most ~1e-9 for the drawn means of
up to 1e4, still six orders below a changed coefficient. Zero inputs are drawn too, where
the bound is its underflow term alone.

``window_error_bounds`` is the same per-window bound for every window: (1) on Swin's 2x2
window it *is* ``error_bounds``, bit for bit; (2) where windows overlap, dL/dx's bound is
the module docstring's ``sum_w E_w + (m - 1) u (c sum_w M_w + sum_w E_w)``, evaluated
again with explicit loops over windows, entries and input positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pm_core import Norm, Window, error_bounds, window_error_bounds
from pm_core.bounds import bounds_on_windows, window_conditioning
from pm_core.oracle import gather_windows, reference_space_to_depth
from pm_core.testing import NORMS, examples
from tests.marks import needs_cuda_build

pytestmark = pytest.mark.usefixtures("single_thread")

#: unit roundoff u = 2^-p (p the significand bits with the hidden one) and smallest normal
UNIT = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8,
        torch.float16: 2.0**-11}  # fmt: skip
SMALLEST_NORMAL = {torch.float64: 2.0**-1022, torch.float32: 2.0**-126,
                   torch.bfloat16: 2.0**-126, torch.float16: 2.0**-14}  # fmt: skip
#: a GEMM operand's rounding, one full ulp of the format (the docstring's u_in)
OPERAND_ULP = {"tf32": 2.0**-10, "bf16": 2.0**-7}
RTOL = 1e-12  # both sides sum the same non-negative float64 terms in other orders
EPS = 1e-5
Vec = list[float]


def _mean(v: Vec) -> float:
    return sum(v) / len(v)


@dataclass
class _LN:
    xhat: Vec
    sigma: float
    kappa: float  # |mu| / sigma + 1


def _ln(v: Vec) -> _LN:
    mu = _mean(v)
    sigma = math.sqrt(_mean([(t - mu) ** 2 for t in v]) + EPS)
    return _LN([(t - mu) / sigma for t in v], sigma, abs(mu) / sigma + 1)


def _as_computed(v: Vec, shift: float) -> _LN:
    """The LayerNorm of ``v`` as computed, its spread and centred values off by up to
    ``shift``: the smallest spread, and the largest ``|xhat|``, that can come out."""
    mu = _mean(v)
    spread = math.sqrt(_mean([(t - mu) ** 2 for t in v]))
    sigma_lo = math.sqrt(max(0.0, spread - shift) ** 2 + EPS)
    return _LN([(abs(t - mu) + 2 * shift) / sigma_lo for t in v], sigma_lo, abs(mu) / sigma_lo + 1)


class Derivation:
    """The coefficients of the bounds module's docstring for one dtype and GEMM precision."""

    def __init__(
        self, dtype: torch.dtype, precision: str | None, accumulate: torch.dtype | None = None
    ) -> None:
        half = dtype in (torch.float16, torch.bfloat16)
        acc = accumulate if accumulate is not None else torch.float32 if half else dtype
        u_in = OPERAND_ULP.get(precision or "ieee", 0.0)
        self.u = UNIT[dtype] + UNIT[torch.float64]  # the dtype's, plus the oracle's own
        self.ratio = UNIT[acc] / UNIT[dtype]  # u_acc / u
        self.k_in = (1 + u_in) ** 2
        self.r_in = (2 * u_in + u_in**2) / self.u
        self.tiny = SMALLEST_NORMAL[dtype] * (UNIT[dtype] + u_in)
        self.sub = self.tiny / self.u  # a rounded intermediate's underflow, in units of u

    def gamma(self, length: int) -> float:
        return length * self.ratio + 2

    def gamma_n(self, length: int) -> float:  # reductions over windows: dtype accumulation
        return length + 2.0

    def gemm(self, length: int) -> float:
        return self.gamma(length) * self.k_in + self.r_in

    def gemm_n(self, length: int) -> float:
        return self.gamma_n(length) * self.k_in + self.r_in

    def second_order(self, c: float) -> float:
        return c * (1 + self.u * c)


def _windows(x: torch.Tensor) -> dict[tuple[int, int, int], Vec]:
    """Every window's 4C vector by the index formula, zero outside the map."""
    b, h, w, c = x.shape
    xs = x.tolist()
    out = {}
    for bi in range(b):
        for i in range(-(-h // 2)):
            for j in range(-(-w // 2)):
                v = [0.0] * (4 * c)
                for dh in range(2):
                    for dw in range(2):
                        for ch in range(c):
                            r, col = 2 * i + dh, 2 * j + dw
                            if r < h and col < w:
                                v[(2 * dw + dh) * c + ch] = xs[bi][r][col][ch]
                out[bi, i, j] = v
    return out


@dataclass
class Expected:
    output: dict[tuple[int, int, int], Vec]
    x: dict[tuple[int, int, int], Vec]  # per window, in window order
    weight: list[Vec]
    norm_weight: Vec
    norm_bias: Vec
    kappa: float
    magnitude: dict[tuple[int, int, int], Vec]  # |dL/dv| per window entry (unscaled by u)


def derive(
    x: torch.Tensor,
    weight: torch.Tensor,
    g: Vec | None,
    b: Vec | None,
    grad: torch.Tensor,
    norm: Norm,
    dtype: torch.dtype,
    precision: str | None,
    accumulate: torch.dtype | None = None,
) -> Expected:
    d = Derivation(dtype, precision, accumulate)
    wins = _windows(x)
    aw = [[abs(t) for t in row] for row in weight.tolist()]
    o, n = len(aw), len(aw[0])
    nwin = len(wins)
    size = n if norm == "pre" else o
    ag = [abs(t) for t in g] if g is not None else [1.0] * size
    gv = g if g is not None else [1.0] * size
    bv = b if b is not None else [0.0] * size
    ab = [abs(t) for t in bv]
    gr = grad.tolist()
    out: dict[tuple[int, int, int], Vec] = {}
    gx: dict[tuple[int, int, int], Vec] = {}
    mags: dict[tuple[int, int, int], Vec] = {}
    gw = [[0.0] * n for _ in range(o)]
    gg = [0.0] * size
    gb = [0.0] * size
    for key, v in wins.items():
        bi, i, j = key
        aG = [abs(t) for t in gr[bi][i][j]]  # |G| of this window
        av = [abs(t) for t in v]
        if norm == "none":
            out[key] = [d.gemm(n) * sum(av[k] * aw[p][k] for k in range(n)) for p in range(o)]
            gx[key] = [d.gemm(o) * sum(aG[p] * aw[p][k] for p in range(o)) for k in range(n)]
            mags[key] = [sum(aG[p] * aw[p][k] for p in range(o)) for k in range(n)]
            for p in range(o):
                for k in range(n):
                    gw[p][k] += d.gemm_n(nwin) * aG[p] * av[k]
        elif norm == "pre":
            exact = _ln(v)
            ax = [abs(t) for t in exact.xhat]
            cond = d.second_order(d.gamma(n) * exact.kappa)
            # the LN as computed: its own mean's error can shrink the spread by u c sigma
            ln = _as_computed(v, d.u * cond * exact.sigma)
            lx = ln.xhat
            a = [ag[k] * ax[k] + ab[k] for k in range(n)]
            e_xhat = [cond * (1 + ax[k]) * exact.sigma / ln.sigma for k in range(n)]
            e_v = [e_xhat[k] * ag[k] + a[k] + d.sub for k in range(n)]
            out[key] = [
                d.gemm(n) * sum(a[k] * aw[p][k] for k in range(n))
                + d.k_in * sum(e_v[k] * aw[p][k] for k in range(n))
                for p in range(o)
            ]
            agw = [sum(aG[p] * aw[p][k] for p in range(o)) for k in range(n)]
            e_gv = [d.gemm(o) * agw[k] + d.sub for k in range(n)]
            for p in range(o):
                for k in range(n):
                    gw[p][k] += d.gemm_n(nwin) * aG[p] * a[k] + d.k_in * aG[p] * e_v[k]
            for k in range(n):
                gg[k] += d.gemm_n(nwin + o) * agw[k] * ax[k] + e_gv[k] * ax[k] + agw[k] * e_xhat[k]
                gb[k] += d.gemm_n(nwin + o) * agw[k] + e_gv[k]
            # LayerNorm backward, on the LN as computed: its own rounding, and the
            # incoming error of g * dL/dxhat
            cond_lo = d.second_order(d.gamma(n) * ln.kappa)
            m_gx = [ag[k] * agw[k] for k in range(n)]
            err_gx = max(ag[k] * e_gv[k] for k in range(n))
            mag = [
                (m_gx[k] + _mean(m_gx) + lx[k] * _mean([m_gx[q] * lx[q] for q in range(n)]))
                / ln.sigma
                for k in range(n)
            ]
            spread = _mean([m_gx[q] * (1 + lx[q]) for q in range(n)]) / ln.sigma
            mags[key] = mag
            gx[key] = [
                cond_lo * (2 * mag[k] + (1 + lx[k]) * spread) + (2 + lx[k]) * err_gx / ln.sigma
                for k in range(n)
            ]
        else:  # post
            z = [sum(v[k] * w_pk for k, w_pk in enumerate(row)) for row in weight.tolist()]
            e_z = [d.gemm(n) * sum(av[k] * aw[p][k] for k in range(n)) + d.sub for p in range(o)]
            exact = _ln(z)
            # the LN of the computed z: its spread can be smaller by up to max|dz|, and by
            # its own mean's error
            own = d.u * d.second_order(d.gamma(o) * exact.kappa) * exact.sigma
            ln = _as_computed(z, d.u * max(e_z) + own)
            az = ln.xhat
            rho = d.second_order(2 * max(e_z) / ln.sigma + d.gamma(o) * ln.kappa)
            e_zhat = [(2 + az[p]) * rho for p in range(o)]
            out[key] = [ag[p] * e_zhat[p] + abs(gv[p] * exact.xhat[p] + bv[p]) for p in range(o)]
            m_g = [ag[p] * aG[p] for p in range(o)]
            mean_gz = _mean([m_g[p] * az[p] for p in range(o)])
            mag = [(m_g[p] + _mean(m_g) + az[p] * mean_gz) / ln.sigma for p in range(o)]
            mean_ge = _mean([m_g[p] * e_zhat[p] for p in range(o)])
            e_gz = [
                (d.gamma(o) + rho) * mag[p]
                + d.sub
                + (e_zhat[p] * mean_gz + az[p] * mean_ge) / ln.sigma
                for p in range(o)
            ]
            mags[key] = [sum(mag[p] * aw[p][k] for p in range(o)) for k in range(n)]
            gx[key] = [
                d.gemm(o) * sum(mag[p] * aw[p][k] for p in range(o))
                + d.k_in * sum(e_gz[p] * aw[p][k] for p in range(o))
                for k in range(n)
            ]
            for p in range(o):
                for k in range(n):
                    gw[p][k] += (d.gemm_n(nwin) * mag[p] + d.k_in * e_gz[p]) * av[k]
                gg[p] += d.gamma_n(nwin) * aG[p] * az[p] + aG[p] * e_zhat[p]
                gb[p] += d.gamma_n(nwin) * aG[p]
    under = d.gamma(n + o) * d.tiny
    kappa = max((_ln(v).kappa - 1 for v in wins.values()), default=0.0)
    return Expected(
        {k: [d.u * t + under for t in row] for k, row in out.items()},
        {k: [d.u * t + under for t in row] for k, row in gx.items()},
        [[d.u * t + d.gamma_n(nwin) * d.tiny for t in row] for row in gw],
        [d.u * t + d.gamma_n(nwin + o) * d.tiny for t in gg],
        [d.u * t + d.gamma_n(nwin + o) * d.tiny for t in gb],
        kappa,
        mags,
    )


def _close(actual: float, expected: float, what: str, rtol: float = RTOL) -> None:
    assert math.isclose(actual, expected, rel_tol=rtol, abs_tol=0.0), (
        f"{what}: error_bounds gives {actual!r}, the derivation {expected!r}"
    )


def _z_conditioning(x: torch.Tensor, weight: torch.Tensor) -> float:
    """The largest ``|mean| / std`` of the projected windows ``z = W v`` (post-norm's LN input)."""
    zs = [[sum(a * b for a, b in zip(row, v, strict=True)) for row in weight.tolist()]
          for v in _windows(x).values()]  # fmt: skip
    return max((abs(_mean(z)) / math.sqrt(_mean([(t - _mean(z)) ** 2 for t in z]) + EPS)
                for z in zs), default=0.0)  # fmt: skip


def _scatter_check(
    bx: torch.Tensor, per_window: dict[tuple[int, int, int], Vec], rtol: float = RTOL
) -> None:
    """Each pixel's dL/dx bound is its window entry's (every pixel is in exactly one)."""
    b, h, w, c = bx.shape
    got = bx.tolist()
    for bi in range(b):
        for r in range(h):
            for col in range(w):
                for ch in range(c):
                    k = (2 * (col % 2) + r % 2) * c + ch
                    want = per_window[bi, r // 2, col // 2][k]
                    _close(got[bi][r][col][ch], want, f"dL/dx bound at {(bi, r, col, ch)}", rtol)


DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


@st.composite
def problems(draw: st.DrawFn) -> tuple[torch.Tensor, ...]:
    b, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    c, o = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    zero = draw(st.integers(0, 4)) == 4  # one draw in five; shrinks to non-zero
    gen = torch.Generator().manual_seed(seed)
    offset = 10.0 ** draw(st.integers(0, 4))  # conditioning: a window mean against spread 1

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    x = randn(b, h, w, c) + offset * randn(b, 1, 1, 1)
    grad = randn(b, -(-h // 2), -(-w // 2), o)
    if zero:  # the bound is then its underflow term alone
        x, grad = torch.zeros_like(x), torch.zeros_like(grad)
    return x, randn(o, 4 * c), randn(4 * c), randn(4 * c), randn(o), randn(o), grad


# norm and affine are parametrized, not drawn: every (norm, affine) pair gets its share of
# examples even under the mutation profile's ten, and a failure's id names the pair
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "neither"])
@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@examples(0.5)
@given(
    problem=problems(),
    dtype=st.sampled_from(DTYPES),
    precision=st.sampled_from([None, "tf32", "bf16"]),
    native=st.booleans(),
    via_dtype=st.booleans(),
)
def test_error_bounds_follow_the_derivation(
    problem: tuple[torch.Tensor, ...], norm: Norm, dtype: torch.dtype, precision: str | None,
    affine: str, native: bool, via_dtype: bool,
) -> None:  # fmt: skip
    """Every entry of every bound ``error_bounds`` returns (output, dL/dx, dL/dW, dL/dg,
    dL/db, and kappa) equals the docstring's derivation evaluated independently.

    ``native``: sums accumulate in the dtype itself (``accumulate=dtype``, as cuBLAS's
    reduced-precision reductions do). ``via_dtype``: the inputs come as float64 holding
    the dtype's values, and ``dtype=`` names the compute dtype, as the report does for a
    device's dtype; the bound is the same."""
    x, weight, g4, b4, go, bo, grad = problem
    if dtype != torch.float32:
        precision = None  # reduced-precision GEMM operands are a float32 mode
    g, b = (g4, b4) if norm == "pre" else (go, bo)
    nw = g if affine in ("both", "weight") and norm != "none" else None
    nb = b if affine in ("both", "bias") and norm != "none" else None
    # the bound is a function of the values the call received: round them to the dtype
    x, weight, grad = (t.to(dtype).double() for t in (x, weight, grad))
    nw, nb = (None if t is None else t.to(dtype).double() for t in (nw, nb))
    accumulate = dtype if native else None

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t if via_dtype else t.to(dtype)

    eb = error_bounds(
        cast(x), cast(weight),
        None if nw is None else cast(nw), None if nb is None else cast(nb),
        norm=norm, grad_out=cast(grad), gemm_precision=precision, accumulate=accumulate,
        dtype=dtype if via_dtype else None,
    )  # fmt: skip
    want = derive(
        x, weight, None if nw is None else nw.tolist(), None if nb is None else nb.tolist(),
        grad, norm, dtype, precision, accumulate,
    )  # fmt: skip
    rtol = RTOL + 4 * x.shape[-1] * 4 * 2.0**-53 * (want.kappa + _z_conditioning(x, weight))
    _close(float(eb.kappa), want.kappa, "kappa", rtol)
    got_out = eb.output.tolist()
    for (bi, i, j), row in want.output.items():
        for p, t in enumerate(row):
            _close(got_out[bi][i][j][p], t, f"output bound at {(bi, i, j, p)}", rtol)
    assert eb.x is not None
    assert eb.reduction_weight is not None
    _scatter_check(eb.x, want.x, rtol)
    # |dL/dv|, which the general merge sums where windows overlap (pm_core.window_bounds)
    wb = bounds_on_windows(
        gather_windows(x), weight, nw, nb, grad, norm=norm, eps=EPS, dtype=dtype,
        accumulate=accumulate, gemm_precision=precision,
    )  # fmt: skip
    assert wb.v_magnitude is not None
    got_mag = wb.v_magnitude.tolist()
    for (bi, i, j), row in want.magnitude.items():
        for k, t in enumerate(row):
            _close(got_mag[bi][i][j][k], t, f"|dL/dv| at {(bi, i, j, k)}", rtol)
    for p, row in enumerate(want.weight):
        for k, t in enumerate(row):
            _close(eb.reduction_weight[p, k].item(), t, f"dL/dW bound at {(p, k)}", rtol)
    for field, got, exp in (
        ("dL/dg", eb.norm_weight, want.norm_weight),
        ("dL/db", eb.norm_bias, want.norm_bias),
    ):
        present = nw is not None if field == "dL/dg" else nb is not None
        assert (got is not None) == present, f"{field} bound given without its parameter"
        if got is not None:
            for k, t in enumerate(exp):
                _close(got[k].item(), t, f"{field} bound at {k}", rtol)


@given(
    problem=problems(),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    flat=st.booleans(),
    eps=st.sampled_from([None, 1e-3, 0.5]),
)
def test_window_conditioning_follows_its_definition(
    problem: tuple[torch.Tensor, ...], dtype: torch.dtype, flat: bool, eps: float | None
) -> None:
    """``window_conditioning`` is ``|mean| / sqrt(var + eps)`` of every window, zero padding
    included, in float64 whatever the input's dtype (the report and failure messages quote
    it), shaped ``(B, H', W')`` for either input form; ``eps`` defaults to 1e-5."""
    x = problem[0].to(dtype)
    b, h, w, c = x.shape
    xin, hw = (x.reshape(b, h * w, c), (h, w)) if flat else (x, None)
    got = (
        window_conditioning(xin, hw=hw) if eps is None else window_conditioning(xin, hw=hw, eps=eps)
    )
    e = EPS if eps is None else eps
    assert got.dtype == torch.float64
    assert tuple(got.shape) == (b, -(-h // 2), -(-w // 2))
    for (bi, i, j), v in _windows(x.double()).items():
        mu = _mean(v)
        want = abs(mu) / math.sqrt(_mean([(t - mu) ** 2 for t in v]) + e)
        _close(float(got[bi, i, j]), want, f"conditioning of window {(bi, i, j)}")


@needs_cuda_build
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_error_bounds_without_affine_stay_on_the_device(norm: Norm) -> None:
    """Without LayerNorm parameters the bound stands in ones and zeros for them, on the
    weight's device: on fake CUDA tensors (no GPU needed) a CPU stand-in would be a
    cross-device op, which raises."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.randn(2, 4, 6, 8, device="cuda")
        w = torch.randn(16, 32, device="cuda")
        eb = error_bounds(x, w, norm=norm, grad_out=torch.randn(2, 2, 3, 16, device="cuda"))
        assert eb.output.device.type == "cuda"
        assert eb.x is not None
        assert eb.x.device.type == "cuda"


@pytest.mark.parametrize("precision", [None, "tf32", "bf16"])
@pytest.mark.parametrize("norm", ["pre", "none"])
def test_error_bounds_of_zero_inputs_are_the_underflow_term(
    norm: Norm, precision: str | None
) -> None:
    """With an all-zero input and weight every output bound of the pre-norm and no-norm
    layers is the underflow term alone (each other term is a multiple of ``|W|``),
    ``gamma(n + O) * tiny`` with ``tiny = smallest_normal * (u + u_in)``: a GEMM whose
    operands round to TF32 or bf16 underflows at their subnormal spacing, not float32's.
    (``post`` keeps its LayerNorm's own rounding of the zero outputs.)"""
    x, w = torch.zeros(1, 2, 2, 3), torch.zeros(5, 12)
    eb = error_bounds(x, w, norm=norm, gemm_precision=precision)
    d = Derivation(torch.float32, precision)
    want = d.gamma(12 + 5) * d.tiny
    for t in eb.output.flatten().tolist():
        _close(t, want, "underflow term")


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_error_bounds_of_an_empty_batch(norm: Norm) -> None:
    """B == 0 (patch_merge gives an empty map) has empty bounds of the right shapes and a
    conditioning of 0: there is no window to be ill-conditioned."""
    c, o = 3, 6
    size = 4 * c if norm == "pre" else o
    g, b = (torch.ones(size), torch.zeros(size)) if norm != "none" else (None, None)
    x, w = torch.randn(0, 4, 6, c), torch.randn(o, 4 * c)
    eb = error_bounds(x, w, g, b, norm=norm, grad_out=torch.randn(0, 2, 3, o))
    assert eb.output.shape == (0, 2, 3, o)
    assert eb.x is not None
    assert eb.x.shape == x.shape
    assert eb.kappa.shape == ()
    assert float(eb.kappa) == 0.0


F64 = torch.float64


def _problem(
    shape: tuple[int, ...], n: int, o: int, norm: Norm, seed: int
) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)

    def randn(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=gen, dtype=F64)

    size = n if norm == "pre" else o
    return randn(*shape) + 3.0, randn(o, n), randn(size), randn(size)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("norm", NORMS)
@given(h=st.integers(1, 5), w=st.integers(1, 5), c=st.integers(1, 3), seed=st.integers(0, 99))
def test_tiling_2x2_bound_is_error_bounds(
    norm: Norm, dtype: torch.dtype, h: int, w: int, c: int, seed: int
) -> None:
    """On ``Window((2, 2), padding="corner")`` in the swin layout every bound
    ``window_error_bounds`` returns equals ``error_bounds``'s exactly."""
    x, wt, g, b = (t.to(dtype) for t in _problem((2, h, w, c), 4 * c, 2 * c, norm, seed))
    nw, nb = (None, None) if norm == "none" else (g, b)
    grad = torch.randn(2, -(-h // 2), -(-w // 2), 2 * c, dtype=F64).to(dtype)
    got = window_error_bounds(
        x, wt, nw, nb, window=Window((2, 2), padding="corner"), norm=norm, grad_out=grad
    )
    want = error_bounds(x, wt, nw, nb, norm=norm, grad_out=grad)
    for field in want._fields:
        a, e = getattr(got, field), getattr(want, field)
        assert (a is None) == (e is None), field
        if e is not None:
            assert torch.equal(a, e), field


Held = dict[tuple[int, ...], list[tuple[tuple[int, ...], int]]]


def _windows_holding(window: Window, size: tuple[int, ...]) -> Held:
    """``position -> [(output index, column offset index)]`` by explicit loops."""
    pads = window.pads(size)
    out = window.output_size(size)
    held: Held = {}
    for o in _grid(out):
        for p, off in enumerate(window.offsets()):
            pos = tuple(
                o[a] * window.stride[a] - pads[a][0] + off[a] * window.dilation[a]
                for a in range(window.dims)
            )
            if all(0 <= pos[a] < size[a] for a in range(window.dims)):
                held.setdefault(pos, []).append((o, p))
    return held


def _grid(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [()]
    for s in shape:
        out = [(*t, i) for t in out for i in range(s)]
    return out


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "window",
    [
        Window((3, 2), stride=1, padding=1),
        Window((2, 2, 2), stride=(1, 2, 1), padding="same"),
        Window((2, 3), stride=2, dilation=(2, 1), padding="corner"),
    ],
    ids=repr,
)
def test_overlapping_dx_bound_follows_the_derivation(
    window: Window, dtype: torch.dtype, norm: Norm
) -> None:
    """Where windows overlap, dL/dx's bound at each input position is the per-window
    bounds ``E`` and magnitudes ``M`` of the windows holding it (row-major layout),
    ``sum E + (m - 1) u (c sum M + sum E)``, ``c = 1`` for pre-norm and
    ``O u_acc/u (1 + u_in)^2`` otherwise."""
    c = 2
    size = tuple(s + 2 for s in window.span)
    n, o = window.size * c, 3
    x, wt, g, b = (t.to(dtype) for t in _problem((2, *size, c), n, o, norm, 7))
    nw, nb = (None, None) if norm == "none" else (g, b)
    out = window.output_size(size)
    grad = torch.randn(2, *out, o, dtype=F64).to(dtype)
    got = window_error_bounds(
        x, wt, nw, nb, window=window, layout="row-major", norm=norm, grad_out=grad
    )
    assert got.x is not None
    v0 = reference_space_to_depth(x.to(F64), window, "row-major")
    wb = bounds_on_windows(
        v0, wt, nw, nb, grad, norm=norm, eps=1e-5, dtype=dtype, accumulate=None,
        gemm_precision=None,
    )  # fmt: skip
    assert wb.v is not None
    assert wb.v_magnitude is not None
    coef = 1.0 if norm == "pre" else o * wb.ratio * wb.k_in
    held = _windows_holding(window, size)
    assert max(len(v) for v in held.values()) > 1, "the window must overlap somewhere"
    got_x = got.x.tolist()
    for bi in range(2):
        for pos in _grid(size):
            for ch in range(c):
                terms = held.get(pos, [])
                at_w = [(bi, *oi, p * c + ch) for oi, p in terms]
                e = [float(wb.v[i]) for i in at_w]
                mag = [float(wb.v_magnitude[i]) for i in at_w]
                m = len(terms)
                want = sum(e) + max(m - 1, 0) * wb.u * (coef * sum(mag) + sum(e))
                at = got_x[bi]
                for i in pos:
                    at = at[i]
                assert math.isclose(at[ch], want, rel_tol=RTOL, abs_tol=0.0), (bi, pos, ch)


@pytest.mark.parametrize(
    ("dtype", "n", "acc"),
    [(torch.float32, 4, torch.float32), (torch.bfloat16, 384, torch.float32),
     (torch.float64, 8, torch.float64), (torch.float16, 384, torch.float32),
     (torch.bfloat16, 16, torch.bfloat16)],
)  # fmt: skip
def test_finite_range_is_the_documented_formula(
    dtype: torch.dtype, n: int, acc: torch.dtype
) -> None:
    """``min(max_dtype, sqrt(max_acc / n) / 2)``: the largest |x| whose squares over n
    entries sum, with the mean's, below the accumulator's largest value ("Range" in the
    bounds docstring); float16 is capped by its own largest value."""
    from pm_core.bounds import finite_range

    want = min(torch.finfo(dtype).max, math.sqrt(torch.finfo(acc).max / n) / 2)
    given = None if acc == torch.promote_types(dtype, torch.float32) else acc
    assert finite_range(dtype, n, given) == want
    if dtype != torch.float16:
        assert want < torch.finfo(dtype).max  # the accumulator's limit is the one that binds


@pytest.mark.parametrize(
    ("dtype", "n", "exc", "message"),
    [
        (
            torch.int32,
            4,
            TypeError,
            "dtype must be one of (torch.float16, torch.bfloat16, torch.float32, "
            "torch.float64), got torch.int32",
        ),
        (torch.float32, 0, ValueError, "n must be a positive window length, got 0"),
    ],
)
def test_finite_range_names_a_bad_argument(
    dtype: torch.dtype, n: int, exc: type[Exception], message: str
) -> None:
    from pm_core.bounds import finite_range

    with pytest.raises(exc) as info:
        finite_range(dtype, n)
    assert str(info.value) == message
