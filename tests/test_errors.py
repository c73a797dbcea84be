"""Bad input gets a clear error naming the argument, the problem and the fix, at both front
doors (``patch_merge`` and ``window_merge``), in ``Window``, the converters, the oracle and
the bounds; edge inputs have defined results.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

import pm_core
from pm_core import (
    IMPLS,
    Norm,
    Window,
    error_bounds,
    patch_merge,
    reference_patch_merge,
    reference_window_merge,
    space_to_depth,
    window_error_bounds,
    window_merge,
)

#: the entry points that validate a call, given arguments (some deliberately bad) as ``merge(x, w, ...)``
Merge = Callable[..., Any]  # a Tensor, or ErrorBounds for error_bounds
ENTRY_POINTS: dict[str, Merge] = {
    "patch_merge": patch_merge,
    "reference": reference_patch_merge,
    "error_bounds": error_bounds,  # validates like the call it bounds
}


def _args(
    c: int = 4, o: int | None = None, norm: Norm = "pre", dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    o = 2 * c if o is None else o
    n = 4 * c if norm == "pre" else o
    w = torch.randn(o, 4 * c, dtype=dtype)
    params = (
        (torch.randn(n, dtype=dtype), torch.randn(n, dtype=dtype))
        if norm != "none"
        else (None, None)
    )
    return w, *params


@pytest.fixture(params=list(ENTRY_POINTS), ids=list(ENTRY_POINTS))
def merge(request: pytest.FixtureRequest) -> Merge:
    return ENTRY_POINTS[request.param]


BAD_CALLS: list[
    tuple[str, Callable[[], object], dict[str, int], dict[str, Any], type[Exception], str]
] = [
    # (id, x, weight-args kwargs, call kwargs, exception, message fragment)
    ("L != H*W", lambda: torch.randn(2, 10, 4), {}, {"hw": (3, 4)}, ValueError, "L=10"),
    ("(B,L,C) without hw", lambda: torch.randn(2, 12, 4), {}, {}, ValueError, "pass hw"),
    (
        "hw disagrees with 4-D x",
        lambda: torch.randn(2, 4, 4, 4),
        {},
        {"hw": (2, 8)},
        ValueError,
        "disagrees",
    ),
    ("hw not a pair", lambda: torch.randn(2, 12, 4), {}, {"hw": (12,)}, ValueError, "pair"),
    (
        "negative hw",
        lambda: torch.randn(2, 12, 4),
        {},
        {"hw": (-3, -4)},
        ValueError,
        "non-negative",
    ),
    ("rank 2", lambda: torch.randn(16, 4), {}, {}, ValueError, "rank 2"),
    ("rank 5", lambda: torch.randn(1, 2, 4, 4, 4), {}, {}, ValueError, "rank 5"),
    ("C == 0", lambda: torch.randn(2, 4, 4, 0), {"c": 0}, {}, ValueError, "C == 0"),
    ("channel mismatch", lambda: torch.randn(2, 4, 4, 5), {}, {}, ValueError, "C=5"),
    (
        "odd H under odd='error'",
        lambda: torch.randn(1, 5, 4, 4),
        {},
        {"odd": "error"},
        ValueError,
        "(5, 4)",
    ),
    (
        "odd W under odd='error'",
        lambda: torch.randn(1, 4, 3, 4),
        {},
        {"odd": "error"},
        ValueError,
        "(4, 3)",
    ),
    (
        "int dtype",
        lambda: torch.ones(1, 4, 4, 4, dtype=torch.int64),
        {},
        {},
        TypeError,
        "torch.int64",
    ),
    (
        "bool dtype",
        lambda: torch.ones(1, 4, 4, 4, dtype=torch.bool),
        {},
        {},
        TypeError,
        "torch.bool",
    ),
    (
        "complex dtype",
        lambda: torch.ones(1, 4, 4, 4, dtype=torch.complex64),
        {},
        {},
        TypeError,
        "complex64",
    ),
    ("not a tensor", lambda: [[1.0]], {}, {}, TypeError, "list"),
    (
        "unknown norm",
        lambda: torch.randn(1, 4, 4, 4),
        {},
        {"norm": "postnorm"},
        ValueError,
        "'postnorm'",
    ),
    ("unknown odd", lambda: torch.randn(1, 4, 4, 4), {}, {"odd": "crop"}, ValueError, "'crop'"),
    ("negative eps", lambda: torch.randn(1, 4, 4, 4), {}, {"eps": -1e-5}, ValueError, "eps"),
    ("nan eps", lambda: torch.randn(1, 4, 4, 4), {}, {"eps": math.nan}, ValueError, "eps"),
    ("string eps", lambda: torch.randn(1, 4, 4, 4), {}, {"eps": "1e-5"}, TypeError, "eps"),
]


@pytest.mark.parametrize(
    ("make_x", "wkw", "kw", "exc", "fragment"),
    [case[1:] for case in BAD_CALLS],
    ids=[case[0] for case in BAD_CALLS],
)
def test_bad_call_raises_naming_the_problem(
    merge: Merge,
    make_x: Callable[[], object],
    wkw: dict[str, int],
    kw: dict[str, Any],
    exc: type[Exception],
    fragment: str,
) -> None:
    """Each malformed call raises the documented exception type, and the message names the problem."""
    c = wkw.get("c", 4)
    w, nw, nb = _args(c=c) if c else (torch.randn(8, 0), None, None)
    with pytest.raises(exc) as info:
        merge(make_x(), w, nw, nb, **kw)
    assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("which", ["norm_weight", "norm_bias"])
def test_wrong_norm_param_size(merge: Merge, norm: Norm, which: str) -> None:
    """A norm vector of the other mode's size (4C vs O) is rejected, naming the parameter and size."""
    w, nw, nb = _args(norm=norm)
    wrong = torch.randn(16 if norm == "post" else 8)  # the other mode's size, C=4, O=8
    params = {"norm_weight": nw, "norm_bias": nb, which: wrong}
    with pytest.raises(ValueError, match=which) as info:
        merge(torch.randn(1, 4, 4, 4), w, params["norm_weight"], params["norm_bias"], norm=norm)
    expected = 16 if norm == "pre" else 8
    assert f"({expected},)" in str(info.value)


@pytest.mark.parametrize("which", ["norm_weight", "norm_bias"])
def test_norm_param_not_a_tensor(merge: Merge, which: str) -> None:
    """A norm parameter given as a list is a TypeError naming the parameter and the type."""
    w, nw, nb = _args()
    params = {"norm_weight": nw, "norm_bias": nb, which: [1.0] * 16}
    with pytest.raises(TypeError, match=rf"{which} must be a torch.Tensor or None, got list"):
        merge(torch.randn(1, 4, 4, 4), w, params["norm_weight"], params["norm_bias"])


def test_norm_params_with_norm_none(merge: Merge) -> None:
    """norm='none' with norm parameters is ambiguous, so it raises instead of ignoring them."""
    w, nw, nb = _args()
    with pytest.raises(ValueError, match="norm='none'"):
        merge(torch.randn(1, 4, 4, 4), w, nw, nb, norm="none")


@pytest.mark.parametrize("norm", ["none", "pre", "post"])
def test_zero_outputs(merge: Merge, norm: Norm) -> None:
    """A reduction weight with O == 0 rows is rejected like C == 0: there is no output to
    normalise, and error_bounds has no largest error to take."""
    w, nw, nb = _args(o=0, norm=norm)
    with pytest.raises(ValueError, match="O == 0"):
        merge(torch.randn(1, 4, 4, 4), w, nw, nb, norm=norm)
    with pytest.raises(ValueError, match="O == 0"):
        error_bounds(torch.randn(1, 4, 4, 4), w, nw, nb, norm=norm)


@pytest.mark.parametrize("other", [reference_patch_merge, error_bounds], ids=lambda f: f.__name__)
def test_defaults_are_patch_merges(other: Callable[..., Any]) -> None:
    """The oracle and the bound take patch_merge's defaults (norm, eps, odd, hw): a call
    that leaves them out compares the same layer, not a neighbouring one. Checked by
    signature, and by calling: left out, and given patch_merge's defaults explicitly."""
    mine = inspect.signature(patch_merge).parameters
    theirs = inspect.signature(other).parameters
    shared = {"norm", "eps", "odd", "hw"}
    assert shared <= set(theirs)
    assert all(theirs[name].default == mine[name].default for name in shared)
    x, (w, nw, nb) = torch.randn(1, 5, 4, 4, dtype=torch.float64), _args(dtype=torch.float64)
    explicit = other(x, w, nw, nb, **{name: mine[name].default for name in shared})
    implicit = other(x, w, nw, nb)
    pairs = (
        zip(implicit, explicit, strict=True)
        if isinstance(implicit, tuple)
        else [(implicit, explicit)]
    )  # ErrorBounds is a tuple of tensors (and None for gradients not asked for)
    for a, b in pairs:
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_non_float_x_says_which_dtypes_and_why(merge: Merge) -> None:
    """An integer or complex x is refused with the dtypes that work and the reason."""
    w, nw, nb = _args()
    with pytest.raises(TypeError) as info:
        merge(torch.ones(1, 4, 4, 4, dtype=torch.complex64), w, nw, nb)
    assert "float16, bfloat16, float32 or float64" in str(info.value)
    assert "patch merging normalises and projects real values" in str(info.value)


MESSAGES: list[tuple[str, Callable[[], tuple[Any, ...]], dict[str, Any], str]] = [
    # (id, args, call kwargs, the sentence the error must contain, case and all)
    ("C == 0", lambda: (torch.randn(1, 4, 4, 0), torch.randn(8, 0)), {},
     "x has C == 0 channels: there is nothing to merge or normalise"),
    ("weight not a tensor", lambda: (torch.randn(1, 4, 4, 4), [[0.0] * 16] * 8), {},
     "reduction_weight must be a torch.Tensor, got list"),
    ("x not a tensor", lambda: ([[0.0] * 4] * 4, torch.randn(8, 16)), {},
     "x must be a torch.Tensor, got list"),
    ("weight for another C", lambda: (torch.randn(1, 4, 4, 4), torch.randn(8, 12)), {},
     "reduction_weight must be [O, 4C] = [O, 16] for x with C=4, got (8, 12)"),
    ("O == 0", lambda: (torch.randn(1, 4, 4, 4), torch.randn(0, 16)), {"norm": "none"},
     "reduction_weight has O == 0 outputs: there is nothing to project to"),
    ("L != H*W", lambda: (torch.randn(1, 10, 4), torch.randn(8, 16)), {"hw": (3, 4)},
     "x has L=10 tokens but hw=(3, 4) needs L == H*W == 12"),
    ("norm weight with norm='none'",
     lambda: (torch.randn(1, 4, 4, 4), torch.randn(8, 16), torch.randn(16)), {"norm": "none"},
     "norm='none' takes no norm_weight/norm_bias; pass None or pick norm='pre'/'post'"),
    ("norm bias with norm='none'",
     lambda: (torch.randn(1, 4, 4, 4), torch.randn(8, 16), None, torch.randn(16)),
     {"norm": "none"},
     "norm='none' takes no norm_weight/norm_bias; pass None or pick norm='pre'/'post'"),
    ("pre norm vector of size O",
     lambda: (torch.randn(1, 4, 4, 4), torch.randn(8, 16), torch.randn(8)), {"norm": "pre"},
     "norm_weight must have shape (16,) (LN over the 4C window), got (8,)"),
    ("eps a string", lambda: (torch.randn(1, 4, 4, 4), torch.randn(8, 16)),
     {"norm": "none", "eps": "1e-5"}, "eps must be a float, got str"),
    ("integer norm weight",
     lambda: (torch.randn(1, 4, 4, 4), torch.randn(8, 16), torch.ones(16, dtype=torch.int64)),
     {"norm": "pre"}, "norm_weight must be a floating-point tensor, got torch.int64"),
    ("complex x", lambda: (torch.ones(1, 4, 4, 4, dtype=torch.complex64), torch.randn(8, 16)),
     {}, "got torch.complex64: patch merging normalises and projects real values"),
    ("post norm vector of size 4C",
     lambda: (torch.randn(1, 4, 4, 4), torch.randn(8, 16), None, torch.randn(16)),
     {"norm": "post"},
     "norm_bias must have shape (8,) (LN over the O outputs), got (16,)"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "kw", "sentence"), [m[1:] for m in MESSAGES],
                         ids=[m[0] for m in MESSAGES])  # fmt: skip
def test_error_message_says_what_and_why(
    merge: Merge, make: Callable[[], tuple[Any, ...]], kw: dict[str, Any], sentence: str
) -> None:
    """Each refusal's message ends with its whole sentence: what is wrong, with the numbers."""
    with pytest.raises((TypeError, ValueError)) as info:
        merge(*make(), **kw)
    assert str(info.value).endswith(sentence), str(info.value)


def test_hw_may_be_zero_and_may_restate_a_4d_shape(merge: Merge) -> None:
    """hw=(0, W) with L == 0 is an empty map, not an error; hw equal to a (B, H, W, C) x's
    own H, W is accepted."""
    w = torch.randn(8, 16)
    for x, hw, shape in ((torch.randn(2, 0, 4), (0, 4), (2, 0, 8)),
                         (torch.randn(2, 4, 6, 4), (4, 6), (2, 2, 3, 8))):  # fmt: skip
        y = merge(x, w, norm="none", hw=hw)
        out = y.output if isinstance(y, pm_core.bounds.ErrorBounds) else y
        assert out.shape == shape


def test_boundary_values_are_accepted(merge: Merge) -> None:
    """eps == 0 is a LayerNorm without smoothing, and odd='error' takes even sizes: both
    are valid calls, at the edge of what is refused."""
    x, w = torch.randn(1, 4, 6, 4, dtype=torch.float64), torch.randn(8, 16, dtype=torch.float64)
    for kw in ({"eps": 0.0}, {"odd": "error"}, {"eps": 0}):
        merge(x, w, **kw)


def test_mixed_dtypes_on_meta_are_refused(merge: Merge) -> None:
    """A device autocast does not know (meta) is never autocasting: a float64 weight with a
    float32 x is refused there as on the CPU, not passed as if under autocast."""
    x, w = torch.randn(1, 4, 4, 4, device="meta"), torch.randn(8, 16, device="meta").double()
    with pytest.raises(
        TypeError, match=r"reduction_weight is torch\.float64 but x is torch\.float32"
    ):
        merge(x, w, norm="none")


def test_weight_not_2d(merge: Merge) -> None:
    """A conv-shaped weight passed as the reduction weight is rejected, pointing at the [O, 4C] layout."""
    with pytest.raises(ValueError, match=r"\[O, 4C\]"):
        merge(torch.randn(1, 4, 4, 4), torch.randn(8, 4, 2, 2), norm="none")


@pytest.mark.parametrize("which", ["reduction_weight", "norm_weight", "norm_bias"])
def test_mixed_dtypes_outside_autocast(merge: Merge, which: str) -> None:
    """Parameters of another dtype than x raise a TypeError naming the parameter (outside autocast)."""
    w, nw, nb = _args()
    params = {"reduction_weight": w, "norm_weight": nw, "norm_bias": nb}
    p = params[which]
    assert p is not None
    params[which] = p.double()
    with pytest.raises(TypeError, match=which):
        merge(torch.randn(1, 4, 4, 4), *params.values())


@pytest.mark.parametrize("which", ["reduction_weight", "norm_weight", "norm_bias"])
def test_mixed_devices(merge: Merge, which: str) -> None:
    """Parameters on another device than x raise a ValueError naming the parameter and both devices."""
    w, nw, nb = _args()
    params = {"reduction_weight": w, "norm_weight": nw, "norm_bias": nb}
    p = params[which]
    assert p is not None
    params[which] = p.to("meta")
    with pytest.raises(ValueError, match=f"{which} is on meta but x is on cpu"):
        merge(torch.randn(1, 4, 4, 4), *params.values())


def test_unknown_impl() -> None:
    """An unknown impl name is rejected with the list of registered ones."""
    w, nw, nb = _args()
    with pytest.raises(ValueError, match="unknown impl 'slices'") as info:
        patch_merge(torch.randn(1, 4, 4, 4), w, nw, nb, impl="slices")
    assert all(name in str(info.value) for name in IMPLS)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@pytest.mark.parametrize("spread", [1.0, 2.0**-9], ids=["unit", "below-sqrt-eps"])
def test_autocast_follows_linear_and_conv_policy(impl: str, norm: Norm, spread: float) -> None:
    """Under CPU autocast, fp32 x and weights run like nn.LayerNorm + nn.Linear: a bfloat16 result.

    Also on windows whose spread (2^-9, variance ~4e-6) is below sqrt(eps): there eps
    dominates rstd, and the folded pre-norm's power-of-two scale ``p`` (~2^8) no longer
    cancels, so a fold that applies ``p`` the wrong way round or scales eps by the wrong
    power of it is off by orders of magnitude, where on unit-spread windows p = 1 hides it."""
    w, nw, nb = _args(c=8, norm=norm)
    x = (
        torch.randn(2, 6, 5, 8, generator=torch.Generator().manual_seed(0)) * spread
    ).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = patch_merge(x, w, nw, nb, norm=norm, impl=impl)
        mixed = patch_merge(x.bfloat16(), w, nw, nb, norm=norm, impl=impl)  # bf16 x, fp32 weights
    assert y.dtype == mixed.dtype == torch.bfloat16
    torch.autograd.backward(y.float().square().sum())  # mixed-precision training runs backward too
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    ref = reference_patch_merge(x.detach(), w, nw, nb, norm=norm)
    if norm in pm_core.REGISTRY[impl].exact_for:
        # bf16 unit roundoff 2^-8 on inputs, weights and output: a loose, still-failable check
        # that autocast ran the same function (a wrong order gives O(1) relative errors).
        err = (y.double() - ref).norm() / ref.norm()
        assert err < 0.05, f"{impl}/{norm}: relative error {err:.3g} under autocast"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(0, 4, 4, 3), (2, 0, 4, 3), (2, 3, 0, 3), (0, 0, 0, 3)])
def test_empty_input_gives_empty_output(impl: str, shape: tuple[int, int, int, int]) -> None:
    """B, H or W of zero gives an empty output of shape (B, ceil(H/2), ceil(W/2), O), like the oracle."""
    w, nw, nb = _args(c=3)
    x = torch.randn(shape, requires_grad=True)
    y = patch_merge(x, w, nw, nb, impl=impl)
    b, h, wd, _ = shape
    assert y.shape == (b, -(-h // 2), -(-wd // 2), 6)
    assert y.shape == reference_patch_merge(x, w, nw, nb).shape
    torch.autograd.backward(y.sum())
    assert x.grad is not None
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_stays_in_its_window(impl: str, norm: Norm, bad: float) -> None:
    """A NaN/inf pixel makes its own output window non-finite and leaves every other window exact."""
    torch.manual_seed(0)
    w, nw, nb = _args(c=4, norm=norm, dtype=torch.float64)
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    x[1, 3, 2, 1] = bad  # window (i, j) = (1, 1) of batch 1
    y = patch_merge(x, w, nw, nb, norm=norm, impl=impl)
    hit = torch.zeros(y.shape[:3], dtype=torch.bool)
    hit[1, 1, 1] = True
    assert not torch.isfinite(y[hit]).all(), f"{impl}/{norm}: the {bad} window came out finite"
    if norm in pm_core.REGISTRY[impl].exact_for:
        clean = x.clone()
        clean[1, 3, 2, 1] = 0.0
        ref = reference_patch_merge(clean, w, nw, nb, norm=norm)
        # float64, C=4: rounding is ~1e-15 here; 1e-12 cannot hide a leaked NaN or a
        # mixed-up window, which are O(1).
        torch.testing.assert_close(y[~hit], ref[~hit], rtol=1e-12, atol=1e-12)
    else:
        assert torch.isfinite(y[~hit]).all()


@pytest.mark.parametrize("module", [pm_core.PatchMerging, pm_core.ConvPatchMerging])
@pytest.mark.parametrize("dim", [0, -2, True, 2.0, "8", None])
def test_module_rejects_a_bad_dim(module: type[torch.nn.Module], dim: object) -> None:
    """A module's ``dim`` (input channels) is a positive int; anything else is named."""
    with pytest.raises(ValueError) as info:
        module(dim)
    message = str(info.value)
    assert message.startswith("dim must be a positive int"), message
    assert repr(dim) in message, message


@pytest.mark.parametrize("module", [pm_core.PatchMerging, pm_core.ConvPatchMerging])
def test_module_accepts_one_channel(module: type[torch.nn.Module]) -> None:
    """dim=1 is the smallest valid map: the check stops at zero, not at one."""
    y = module(1)(torch.randn(1, 2, 2, 1))
    assert y.shape == (1, 1, 1, 2)


def _twice_slice(
    x: Tensor, w: Tensor, nw: Tensor | None, nb: Tensor | None, norm: Norm, eps: float
) -> Tensor:
    return 2 * pm_core.patch_merge(x, w, nw, nb, norm=norm, eps=eps, impl="slice")


@pytest.mark.usefixtures("scratch_registry")
def test_register_adds_an_impl_patch_merge_runs() -> None:
    """register returns the function, records every field it was given (gemm defaults to
    the matmul backend, exact_for to every norm), and patch_merge(impl=name) runs it."""
    assert (
        pm_core.register("twice", layout="swin", summary="2x slice")(_twice_slice) is _twice_slice
    )
    assert pm_core.impls.get_impl("twice") == pm_core.impls.Impl(
        "twice", _twice_slice, frozenset(pm_core.NORMS), "swin", "2x slice", "matmul"
    )
    pm_core.register("twice_conv", layout="conv", summary="s", gemm="conv", exact_for=("none",))(
        _twice_slice
    )
    spec = pm_core.impls.get_impl("twice_conv")
    assert (spec.gemm, spec.exact_for, spec.layout) == ("conv", frozenset({"none"}), "conv")
    assert list(pm_core.IMPLS)[-2:] == ["twice", "twice_conv"]  # a live view: never stale
    x, w = torch.randn(1, 4, 6, 3), torch.randn(6, 12)
    torch.testing.assert_close(
        patch_merge(x, w, norm="none", impl="twice"), 2 * patch_merge(x, w, norm="none")
    )


@pytest.mark.usefixtures("scratch_registry")
@pytest.mark.parametrize(
    ("name", "gemm", "starts", "names"),
    [("slice", "matmul", "implementation 'slice'", "already registered"),
     ("fresh", "cuda", "gemm must be", "'cuda'")],
    ids=["duplicate", "unknown backend"],
)  # fmt: skip
def test_register_rejects_a_clash_or_an_unknown_backend(
    name: str, gemm: Any, starts: str, names: str
) -> None:
    """A taken name or a GEMM backend other than matmul/conv is refused, and nothing is added."""
    before = dict(pm_core.REGISTRY)
    with pytest.raises(ValueError) as info:
        pm_core.register(name, layout="swin", summary="s", gemm=gemm)(_twice_slice)
    assert str(info.value).startswith(starts), info.value
    assert names in str(info.value)
    assert before == pm_core.REGISTRY


def test_token_form_reads_rows_then_columns() -> None:
    """(B, L, C) with hw=(H, W), H != W, is the row-major flattening of (B, H, W, C):
    the same merge as the 4-D call, flattened, not a map read with H and W swapped."""
    w, nw, nb = _args(c=2)
    x = torch.randn(2, 4, 6, 2)
    flat = patch_merge(x.flatten(1, 2), w, nw, nb, hw=(4, 6))
    assert flat.shape == (2, 2 * 3, 4)
    torch.testing.assert_close(flat, patch_merge(x, w, nw, nb).flatten(1, 2), rtol=0, atol=0)


_W = pm_core.Window((2, 2))
#: every weight converter, called with a module where its weight belongs, and the name of
#: the parameter it was passed as
CONVERTERS: dict[str, tuple[Callable[[Any], object], str]] = {
    "linear_to_conv": (pm_core.layouts.linear_to_conv, "w"),
    "conv_to_linear": (pm_core.layouts.conv_to_linear, "wc"),
    "swin_to_unfold": (pm_core.layouts.swin_to_unfold, "t"),
    "unfold_to_swin": (pm_core.layouts.unfold_to_swin, "t"),
    "focus_to_conv": (pm_core.focus.focus_to_conv, "w"),
    "conv_to_focus": (pm_core.focus.conv_to_focus, "wc"),
    "convert_window_layout": (
        lambda m: pm_core.layouts.convert_window_layout(m, _W, "swin", "unfold"),
        "t",
    ),
    "window_to_conv": (lambda m: pm_core.layouts.window_to_conv(m, _W, "swin"), "w"),
    "conv_to_window": (lambda m: pm_core.layouts.conv_to_window(m, _W, "swin"), "wc"),
}


@pytest.mark.parametrize("name", list(CONVERTERS))
def test_converters_refuse_a_module_and_say_to_pass_its_weight(name: str) -> None:
    """A layer passed where its weight belongs is a TypeError naming the argument, the
    module's class and the fix, not an AttributeError from inside the converter."""
    fn, param = CONVERTERS[name]
    fix = r"\(a module: pass its weight, e\.g\. `linear\.weight`\)$"
    with pytest.raises(TypeError, match=rf"^{param} must be a torch\.Tensor, got Linear " + fix):
        fn(torch.nn.Linear(8, 4))


@pytest.mark.parametrize(
    ("args", "kw", "exc", "match"),
    [
        ((2,), {}, TypeError, "kernel must be a sequence of 2 or 3 positive ints"),
        (((2,),), {}, ValueError, r"kernel must have 2 \(kh, kw\) or 3"),
        (((2, 2, 2, 2),), {}, ValueError, "kernel must have 2"),
        (((2, 0),), {}, ValueError, "kernel entries must be positive"),
        (((2, True),), {}, TypeError, "kernel must hold ints"),
        (((2, 2),), {"stride": 0}, ValueError, "stride entries must be positive"),
        (((2, 2),), {"stride": (1, 1, 1)}, ValueError, r"stride must have one entry per spatial"),
        (((2, 2),), {"dilation": (1, 0)}, ValueError, "dilation entries must be positive"),
        (((2, 2),), {"padding": -1}, ValueError, "padding entries must be >= 0"),
        (((2, 2),), {"padding": "valid"}, ValueError, r"padding must be .*\('corner', 'same'\)"),
        (((2, 2),), {"padding": ((0, 1),)}, ValueError, r"one \(before, after\) pair per spatial"),
        (((2, 2),), {"padding": ((0, 1, 2), (0, 0))}, ValueError, "padding must have one entry"),
        (((2, 2),), {"stride": 1.5}, TypeError, "stride must be an int or a sequence of 2 ints"),
    ],
)
def test_window_rejects(args: tuple[Any, ...], kw: dict[str, Any], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        Window(*args, **kw)


def test_window_too_small_input_names_the_dim() -> None:
    with pytest.raises(ValueError, match=r"spatial dim 1 has size 2 \(padded 2\), smaller than"):
        Window((3, 3)).output_size((5, 2))


X = torch.zeros(1, 4, 4, 2)
W = torch.zeros(4, 8)


def _whole(message: str) -> str:
    """A ``match`` pattern for exactly ``message``."""
    return f"^{re.escape(message)}$"


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (
            lambda: window_merge(X, W, window=(2, 2)),  # type: ignore[arg-type]
            TypeError,
            _whole("window must be a pm_core.Window, e.g. Window((2, 2)), got tuple"),
        ),
        (
            lambda: window_merge(X, W, window=Window((2, 2, 2))),
            ValueError,
            r"x must be \(B, D, H, W, C\) for a 3-D window",
        ),
        (
            lambda: window_merge(X[None], W, window=Window((2, 2))),
            ValueError,
            _whole("x must be (B, H, W, C) for a 2-D window, got shape (1, 1, 4, 4, 2)"),
        ),
        (
            lambda: window_merge(X, torch.zeros(4, 9), window=Window((2, 2)), norm="none"),
            ValueError,
            _whole(
                "reduction_weight must be [O, prod(kernel)*C] = [O, 8] for x with C=2 and "
                "kernel (2, 2), got (4, 9)"
            ),
        ),
        (
            lambda: window_merge(X, W, torch.ones(4), window=Window((2, 2))),
            ValueError,
            r"norm_weight must have shape \(8,\) \(LN over the prod\(kernel\)\*C window\)",
        ),
        (
            lambda: window_merge(X, W, torch.ones(8), window=Window((2, 2)), norm="none"),
            ValueError,
            "norm='none' takes no norm_weight",
        ),
        (
            lambda: window_merge(X, W.double(), window=Window((2, 2)), norm="none"),
            TypeError,
            "reduction_weight is torch.float64 but x is torch.float32",
        ),
        (
            lambda: window_merge(X.long(), W, window=Window((2, 2)), norm="none"),
            TypeError,
            _whole(
                "x must be float16, bfloat16, float32 or float64, got torch.int64: a merge "
                "normalises and projects real values"
            ),
        ),
        (
            lambda: window_merge(X[..., :0], W[:, :0], window=Window((2, 2)), norm="none"),
            ValueError,
            "x has C == 0 channels",
        ),
        (
            lambda: window_merge(X, W[:0], window=Window((2, 2)), norm="none"),
            ValueError,
            "reduction_weight has O == 0 outputs",
        ),
        (
            lambda: window_merge(X, W, None, torch.zeros(3), window=Window((2, 2))),
            ValueError,
            r"norm_bias must have shape \(8,\)",
        ),
        (
            lambda: window_merge(X, W, window=Window((2, 2)), impl="fast"),
            ValueError,
            r"unknown impl 'fast'; choose one of \('slice', ",
        ),
        (
            lambda: window_merge(X, W, window=Window((2, 2)), layout=3),  # type: ignore[arg-type]
            TypeError,
            _whole(
                "layout must be a layout name or a pm_core.window_layouts.WindowLayout, got int"
            ),
        ),
        (
            lambda: window_merge(X, W, window=Window((2, 2)), layout="monai-legacy"),
            ValueError,
            "layout 'monai-legacy' is for 3-D windows",
        ),
        (
            lambda: window_merge(X, W, window=Window((2, 2)), eps=-1.0),
            ValueError,
            "eps must be finite and >= 0",
        ),
        (
            lambda: window_merge(X, W, window=Window((2, 2)), norm="after"),  # type: ignore[arg-type]
            ValueError,
            "norm must be one of",
        ),
        (
            lambda: window_merge(X, torch.zeros(4, 50), window=Window((5, 5)), norm="none"),
            ValueError,
            "spatial dim 0 has size 4",
        ),
    ],
)
def test_window_merge_rejects(call: Any, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("fn", [reference_window_merge, window_error_bounds])
def test_oracle_and_bounds_validate_the_same_way(fn: Any) -> None:
    """The oracle and the bound take the call's arguments and reject them alike."""
    with pytest.raises(ValueError, match=r"reduction_weight must be \[O, prod\(kernel\)\*C\]"):
        fn(X, torch.zeros(4, 9), window=Window((2, 2)), norm="none")


@pytest.mark.parametrize("fn", [reference_window_merge, window_error_bounds])
@pytest.mark.parametrize(
    ("nw", "nb", "match"),
    [
        (torch.zeros(3), torch.zeros(8), r"norm_weight must have shape \(8,\)"),
        (torch.zeros(8), torch.zeros(3), r"norm_bias must have shape \(8,\)"),
    ],
)
def test_oracle_and_bounds_check_the_norm_vectors(
    fn: Any, nw: torch.Tensor, nb: torch.Tensor, match: str
) -> None:
    """The LayerNorm vectors are validated too, each named: the oracle would otherwise
    broadcast a wrong-sized one, or fail with torch's shape message."""
    with pytest.raises(ValueError, match=match):
        fn(X, W, nw, nb, window=Window((2, 2)))


@pytest.mark.parametrize(
    ("nw", "nb", "match"),
    [
        (torch.zeros(3), torch.zeros(8), r"^norm_weight must have shape \(8,\) \(LN over the 4C "),
        (torch.zeros(8), torch.zeros(3), r"^norm_bias must have shape \(8,\) \(LN over the 4C "),
    ],
)
def test_swin_oracle_checks_the_norm_vectors(
    nw: torch.Tensor, nb: torch.Tensor, match: str
) -> None:
    from pm_core import reference_patch_merge

    with pytest.raises(ValueError, match=match):
        reference_patch_merge(X, W, nw, nb)


def test_the_gather_oracles_check_the_layout_against_the_window() -> None:
    from pm_core.oracle import reference_depth_to_space, reference_space_to_depth

    with pytest.raises(ValueError, match="layout 'monai-legacy' is for 3-D windows"):
        reference_depth_to_space(torch.zeros(1, 2, 2, 8), Window((2, 2)), "monai-legacy", (4, 4))
    with pytest.raises(ValueError, match="layout 'monai-legacy' is for 3-D windows"):
        reference_space_to_depth(X, Window((2, 2)), "monai-legacy")


def test_space_to_depth_rejects_a_non_tensor() -> None:
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got list"):
        space_to_depth([1.0], Window((2, 2)))  # type: ignore[arg-type]


@pytest.mark.parametrize("impl", ["gather", "conv"])
@pytest.mark.parametrize("shape", [(0, 4, 4, 2), (2, 0, 4, 2), (1, 0, 3, 3, 2)])
def test_empty_inputs_give_empty_outputs(impl: str, shape: tuple[int, ...]) -> None:
    """An empty batch or spatial dim gives an empty output of the right shape."""
    window = Window((2,) * (len(shape) - 2), padding="corner")
    x = torch.zeros(shape)
    w = torch.zeros(4, window.size * 2)
    y = window_merge(x, w, window=window, norm="none", impl=impl)
    assert y.shape == (shape[0], *window.output_size(shape[1:-1]), 4)
