"""Bad arguments to the general merge fail with an error that names the argument and the fix."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pm_core import (
    Window,
    reference_window_merge,
    space_to_depth,
    window_error_bounds,
    window_merge,
)


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


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (
            lambda: window_merge(X, W, window=(2, 2)),  # type: ignore[arg-type]
            TypeError,
            "window must be a pm_core.Window",
        ),
        (
            lambda: window_merge(X, W, window=Window((2, 2, 2))),
            ValueError,
            r"x must be \(B, D, H, W, C\) for a 3-D window",
        ),
        (
            lambda: window_merge(X, torch.zeros(4, 9), window=Window((2, 2)), norm="none"),
            ValueError,
            r"reduction_weight must be \[O, prod\(kernel\)\*C\] = \[O, 8\]",
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
            "x must be float16, bfloat16, float32 or float64",
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
            "layout must be a layout name or a pm_core.window_layouts.WindowLayout",
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
        (torch.zeros(3), torch.zeros(8), r"norm_weight must have shape \(8,\)"),
        (torch.zeros(8), torch.zeros(3), r"norm_bias must have shape \(8,\)"),
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
