"""One engine: both front doors reach every registered impl through one dispatch point.

``patch_merge`` is ``window_merge`` over Swin's window in the swin layout; a 2x2 fast
path runs wherever the window is Swin's 2x2 merge, in either front door, and refuses
any other window by name.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import pm_core
from pm_core import SpaceToDepth, Window, WindowMerging, patch_merge, window_merge
from pm_core.layouts import swin_to_unfold
from pm_core.window import SWIN_WINDOW

TWO_BY_TWO = [name for name, spec in pm_core.REGISTRY.items() if spec.windows == "2x2"]

#: Windows that read exactly Swin's 2x2 windows of a map zero-padded at the bottom / right.
SWIN_LIKE = {
    "corner": SWIN_WINDOW,
    "same": Window((2, 2), padding="same"),
    "pad01": Window((2, 2), padding=((0, 1), (0, 1))),
    "nopad": Window((2, 2)),
    "pad00-01": Window((2, 2), stride=2, padding=((0, 0), (0, 1))),
}


def _inputs(h: int, w: int, norm: str) -> tuple[Any, ...]:
    g = torch.Generator().manual_seed(h * 10 + w)
    x = torch.randn(2, h, w, 3, generator=g)
    wt = torch.randn(5, 12, generator=g)
    n = 12 if norm == "pre" else 5
    nw = None if norm == "none" else torch.randn(n, generator=g)
    nb = None if norm == "none" else torch.randn(n, generator=g)
    return x, wt, nw, nb


#: (impl, layout) pairs that run the same arithmetic in both front doors: a 2x2 fast path
#: in either order (the unfold order's parameters are permuted to swin's first), and
#: ``conv``, whose 2x2 path is the same. ``gather`` reads the call's own order, so in the
#: unfold order it sums in another order (the window properties bound it against the oracle).
SAME_ARITHMETIC = [
    (name, layout)
    for name in pm_core.IMPLS
    for layout in ("swin", "unfold")
    if layout == "swin" or name != "gather"
]


@pytest.mark.parametrize("norm", pm_core.NORMS)
@pytest.mark.parametrize("window", list(SWIN_LIKE.values()), ids=list(SWIN_LIKE))
@pytest.mark.parametrize(("impl", "layout"), SAME_ARITHMETIC)
def test_every_impl_runs_swin_windows_in_both_front_doors(
    impl: str, layout: str, window: Window, norm: str
) -> None:
    """``window_merge`` over a window that reads Swin's 2x2 windows equals ``patch_merge``
    of the map those windows cover, bit for bit: the same function runs on the same
    values, whichever front door it came through."""
    for h, w in [(4, 6), (5, 3)]:
        x, wt, nw, nb = _inputs(h, w, norm)
        out = window.output_size((h, w))
        covered = x[:, : min(h, 2 * out[0]), : min(w, 2 * out[1])]
        want = patch_merge(covered, wt, nw, nb, norm=norm, impl=impl)  # type: ignore[arg-type]
        if layout == "unfold":
            wt = swin_to_unfold(wt)
            if norm == "pre":
                nw, nb = swin_to_unfold(nw), swin_to_unfold(nb)
        got = window_merge(x, wt, nw, nb, window=window, layout=layout, norm=norm, impl=impl)  # type: ignore[arg-type]
        assert torch.equal(got, want), (impl, window, layout, norm, (h, w))


#: The 2-D layouts whose order no 2x2 fast path reads: through ``patch_merge`` they run the
#: general impls on the call ``patch_merge`` builds (its padding and output size in closed
#: form), through ``window_merge`` on the one ``Window.pads`` builds.
OTHER_2D_ORDERS = ["focus", "row-major", "timm-s2d"]


@pytest.mark.parametrize("norm", pm_core.NORMS)
@pytest.mark.parametrize("layout", OTHER_2D_ORDERS)
@pytest.mark.parametrize("impl", ["gather", "conv"])
def test_patch_merge_in_any_2d_order_is_window_merge_over_swins_window(
    impl: str, layout: str, norm: str
) -> None:
    """``patch_merge(..., layout=L)`` is ``window_merge`` over Swin's window (zero padding
    at the bottom / right of an odd map) in the order ``L``, bit for bit."""
    for h, w in [(4, 6), (5, 3), (3, 4)]:
        x, wt, nw, nb = _inputs(h, w, norm)
        want = window_merge(x, wt, nw, nb, window=SWIN_WINDOW, layout=layout, norm=norm, impl=impl)  # type: ignore[arg-type]
        got = patch_merge(x, wt, nw, nb, norm=norm, impl=impl, layout=layout)  # type: ignore[arg-type]
        assert got.shape == (2, -(-h // 2), -(-w // 2), 5)
        assert torch.equal(got, want), (impl, layout, norm, (h, w))


@pytest.mark.usefixtures("scratch_registry")
def test_both_front_doors_check_the_layout_before_any_impl_runs() -> None:
    """A layout that is not for the call's window is refused at the front door, by name,
    before a registered impl sees the call (a user's impl need not check it again)."""
    calls: list[str] = []

    def spy(x: Any, w: Any, nw: Any, nb: Any, call: Any, norm: Any, eps: Any) -> Any:
        calls.append(call.layout.name)
        return pm_core.REGISTRY["gather"].fn(x, w, nw, nb, call, norm, eps)  # type: ignore[call-arg]

    pm_core.register("spy", layout="any", summary="records its calls", windows="any")(spy)
    x, wt = torch.randn(1, 4, 4, 2), torch.randn(3, 8)
    match = r"layout 'monai-legacy' is for 3-D windows, got the 2-D Window\(kernel=\(2, 2\)"
    with pytest.raises(ValueError, match=match):
        patch_merge(x, wt, norm="none", impl="spy", layout="monai-legacy")
    with pytest.raises(ValueError, match=match):
        window_merge(x, wt, window=Window((2, 2)), layout="monai-legacy", norm="none", impl="spy")
    assert calls == []
    patch_merge(x, wt, norm="none", impl="spy", layout="focus")
    assert calls == ["focus"]


@pytest.mark.parametrize(
    ("window", "layout"),
    [
        pytest.param(Window((3, 3)), "swin", id="3x3"),
        pytest.param(Window((2, 2), stride=1), "swin", id="overlapping"),
        pytest.param(Window((2, 2), padding=1), "swin", id="pad-before"),
        pytest.param(Window((2, 2), padding=((0, 2), (0, 0))), "swin", id="pad-after-2"),
        pytest.param(Window((2, 2), dilation=2), "swin", id="dilated"),
        pytest.param(Window((2, 2, 2)), "swin", id="3-D"),
        pytest.param(SWIN_WINDOW, "row-major", id="row-major"),
    ],
)
@pytest.mark.parametrize("impl", [*TWO_BY_TWO, "auto"])
def test_a_2x2_fast_path_refuses_other_windows_by_name(
    impl: str, window: Window, layout: str
) -> None:
    """A 2x2 fast path (and ``auto``, which chooses among them) on any other window or
    order raises, naming the impls that compute it, in the function and the module."""
    x = torch.randn(1, *([6] * window.dims), 2)
    wt = torch.randn(3, window.size * 2)
    match = rf"impl '{impl}' computes only Swin's 2x2 merge .* choose one of \('gather', 'conv'\)"
    with pytest.raises(ValueError, match=match):
        window_merge(x, wt, window=window, layout=layout, norm="none", impl=impl)
    with pytest.raises(ValueError, match=match):
        WindowMerging(2, window, layout=layout, impl=impl)


def test_register_rejects_the_name_auto_and_an_unknown_window_kind() -> None:
    """``auto`` is the front doors' choice, never a registered name; ``windows`` is
    ``"2x2"`` or ``"any"``."""

    def fn(*args: Any) -> Any:
        return args[0]

    with pytest.raises(
        ValueError,
        match=r"^'auto' names impl='auto' \(pm_core\.auto\); register under another name$",
    ):
        pm_core.register("auto", layout="swin", summary="s")(fn)
    with pytest.raises(ValueError, match="windows must be '2x2' or 'any'"):
        pm_core.register("x", layout="swin", summary="s", windows="3x3")(fn)  # type: ignore[arg-type]
    assert "x" not in pm_core.REGISTRY


def test_impls_is_live_and_lists_both_kinds() -> None:
    """``IMPLS`` is a view of the one registry: the 2x2 fast paths and the general impls."""
    assert list(pm_core.IMPLS) == list(pm_core.REGISTRY)
    assert {"gather", "conv"} <= {n for n, s in pm_core.REGISTRY.items() if s.windows == "any"}
    assert {"slice", "reshape", "unfold", "pixel_unshuffle"} <= set(TWO_BY_TWO)


def test_space_to_depth_of_an_empty_map_keeps_the_graph() -> None:
    """An empty input's merge is empty and differentiable (a zero gradient of its shape)."""
    x = torch.zeros(0, 4, 6, 3, requires_grad=True)
    y = SpaceToDepth(SWIN_WINDOW)(x)
    assert y.shape == (0, 2, 3, 12)
    y.sum().backward()
    assert x.grad is not None
    assert x.grad.shape == x.shape


@pytest.mark.usefixtures("scratch_registry")
def test_a_registered_general_impl_runs_on_every_window() -> None:
    """``windows="any"`` registers a WindowFn that both front doors run on any window."""
    calls: list[str] = []

    def twice_gather(x: Any, w: Any, nw: Any, nb: Any, call: Any, norm: Any, eps: Any) -> Any:
        calls.append(str(call.window.kernel))
        return 2 * pm_core.REGISTRY["gather"].fn(x, w, nw, nb, call, norm, eps)  # type: ignore[call-arg]

    pm_core.register("twice_gather", layout="any", summary="2x gather", windows="any")(twice_gather)
    assert pm_core.REGISTRY["twice_gather"].windows == "any"
    x, w = torch.randn(1, 6, 6, 2), torch.randn(3, 18)
    want = 2 * window_merge(x, w, window=Window((3, 3)), norm="none", impl="gather")
    got = window_merge(x, w, window=Window((3, 3)), norm="none", impl="twice_gather")
    assert torch.equal(got, want)
    assert calls == ["(3, 3)"]


@pytest.mark.parametrize("norm", pm_core.NORMS)
@pytest.mark.parametrize("impl", pm_core.IMPLS)
def test_run_swin_is_what_patch_merge_runs(impl: str, norm: str) -> None:
    """``impls.run_swin`` (what ``auto`` times) runs any impl, 2x2 or general, on Swin's
    merge of an even map, bit for bit as ``patch_merge`` does."""
    x, wt, nw, nb = _inputs(4, 6, norm)
    spec = pm_core.REGISTRY[impl]
    if norm not in spec.exact_for:
        return
    got = pm_core.impls.run_swin(spec, x, wt, nw, nb, norm, 1e-5)
    want = patch_merge(x, wt, nw, nb, norm=norm, impl=impl)
    assert torch.equal(got, want)


def test_the_defaults_are_the_general_gather_and_swin_v1s_pre_norm() -> None:
    """``window_merge`` without ``impl`` runs the general gather, and both oracles without
    ``norm`` and ``eps`` compute Swin v1's pre-norm with LayerNorm's 1e-5: the same
    results as when passed explicitly."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(1, 4, 6, 3, generator=g), torch.randn(6, 12, generator=g)
    nw, nb = torch.rand(12, generator=g) + 0.5, torch.randn(12, generator=g)
    win = Window((2, 2))
    assert torch.equal(
        window_merge(x, w, nw, nb, window=win),
        window_merge(x, w, nw, nb, window=win, impl="gather"),
    )
    ref = pm_core.reference_window_merge
    explicit = ref(x, w, nw, nb, window=win, norm="pre", eps=1e-5)
    assert torch.equal(ref(x, w, nw, nb, window=win), explicit)
    swin = pm_core.reference_patch_merge
    assert torch.equal(swin(x, w, nw, nb), swin(x, w, nw, nb, norm="pre", eps=1e-5))
    assert not torch.equal(swin(x, w, nw, nb), swin(x, w, None, None, norm="none"))
    from pm_core.oracle import reference_space_to_depth

    assert torch.equal(reference_space_to_depth(x, win), reference_space_to_depth(x, win, "swin"))


@pytest.mark.parametrize("impl", ["slice", "gather", "conv", "auto"])
@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("shape", [(0, 4, 6, 3), (2, 0, 5, 3), (1, 3, 0, 3)])
def test_an_empty_input_gives_an_empty_output_and_every_gradient(
    impl: str, norm: str, shape: tuple[int, int, int, int], tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A merge of an empty map (zero B, H or W) through patch_merge is ``(B, H', W', O)``
    with O the weight's outputs (not its 4C inputs), and it still differentiates into x and
    every parameter (zeros of their shapes): an empty batch must not drop a parameter's
    gradient, which data-parallel training would miss."""
    monkeypatch.setenv("PM_CORE_AUTO_CACHE", str(tmp_path / "auto.json"))
    b, h, w, c = shape
    o = 5  # neither 4C = 12 nor the default 2C
    x = torch.randn(*shape, requires_grad=True)
    weight = torch.randn(o, 4 * c, requires_grad=True)
    n = 4 * c if norm == "pre" else o
    nw, nb = torch.randn(n, requires_grad=True), torch.randn(n, requires_grad=True)
    y = patch_merge(x, weight, nw, nb, norm=norm, impl=impl)  # type: ignore[arg-type]
    assert y.shape == (b, (h + 1) // 2, (w + 1) // 2, o)
    grads = torch.autograd.grad(y.sum(), [x, weight, nw, nb])
    for g, t in zip(grads, (x, weight, nw, nb), strict=True):
        assert g.shape == t.shape
        assert not g.any()


@pytest.mark.parametrize("impl", ["slice", "unfold", "gather", "conv"])
@pytest.mark.parametrize("norm", ["pre", "none"])
def test_patch_merge_reads_weights_in_the_layout_it_is_given(impl: str, norm: str) -> None:
    """``layout="unfold"`` (mmcv's order) on weights and pre-norm vectors in that order
    computes what the swin layout computes on the same weights reordered."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, 3, generator=g, dtype=torch.float64)
    w = torch.randn(7, 12, generator=g, dtype=torch.float64)
    nw, nb = (torch.randn(12, generator=g, dtype=torch.float64) for _ in range(2))
    pre = norm == "pre"
    y = patch_merge(
        x, swin_to_unfold(w), swin_to_unfold(nw) if pre else None,
        swin_to_unfold(nb) if pre else None, norm=norm, impl=impl, layout="unfold",  # type: ignore[arg-type]
    )  # fmt: skip
    want = patch_merge(x, w, nw if pre else None, nb if pre else None, norm=norm, impl=impl)  # type: ignore[arg-type]
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)


def test_check_impl_checks_the_window_only_with_both_window_and_layout() -> None:
    """Given a window and a layout, check_impl asks whether the impl computes that merge;
    given neither, or only one, it checks the name alone."""
    from pm_core.impls import check_impl
    from pm_core.window_layouts import window_layout

    corner3 = Window((2, 2, 2), padding="corner")
    assert check_impl("slice") == "slice"
    assert check_impl("slice", corner3) == "slice"
    assert check_impl("slice", None, window_layout("row-major")) == "slice"
    with pytest.raises(ValueError, match="impl 'slice' computes only Swin's 2x2 merge"):
        check_impl("slice", corner3, window_layout("row-major"))
