"""The report's plots: every op and impl its own colour, and a legend clear of the axes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from pm_core import IMPLS
from pm_core.lab import plots
from pm_core.lab.plots import bytes_per_op_figure, impl_color, op_colors, time_vs_shape_figure
from pm_core.lab.traffic_table import TrafficRow


def _rows(n_ops: int) -> list[TrafficRow]:
    return [
        TrafficRow(
            impl=impl,
            norm=norm,
            phase="forward",
            op=f"aten::op{k}_",
            calls=1,
            read=10**6,
            written=10**6,
            total=2 * 10**6,
            impl_total=2 * 10**6 * n_ops,
            minimum=10**6,
            ratio=2.0 * n_ops,
        )
        for impl in ("slice", "conv")
        for norm in ("pre", "post", "none")
        for k in range(n_ops)
    ]


def test_ops_get_distinct_colours_past_twenty() -> None:
    """tab20 alone repeats after 20 ops (``cat`` and ``add_`` once shared a colour)."""
    colours = op_colors([f"op{k}" for k in range(60)]).values()
    assert len(set(colours)) == 60


def test_impls_get_distinct_colours_from_the_live_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Distinct for the registry as it is, and still when it grows past tab10's ten (an
    unregistered name gets the next colour, not an IndexError)."""
    assert len({impl_color(i) for i in IMPLS}) == len(IMPLS)
    grown = {f"impl{k}": None for k in range(10)}
    monkeypatch.setattr(plots, "IMPLS", grown.keys())
    assert len({impl_color(i) for i in [*grown, "unregistered"]}) == 11


def test_the_traffic_legend_covers_no_axis_label() -> None:
    """With 25 ops the legend takes five rows; none of them may overlap a panel's x label
    or tick labels."""
    fig = bytes_per_op_figure(_rows(25))
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        (legend,) = fig.legends
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            label = ax.xaxis.get_label().get_window_extent(renderer)
            ticks = ax.xaxis.get_tightbbox(renderer)
            assert not box.overlaps(label), "the legend covers an x label"
            assert ticks is not None
            assert not box.overlaps(ticks), "the legend covers tick labels"
    finally:
        plt.close(fig)


def test_the_time_legend_covers_no_panel() -> None:
    """One legend for the six panels, below them: it overlaps no panel (axes, labels and
    ticks)."""
    rows = [
        {"impl": impl, "norm": norm, "dtype": "float32", "mode": mode, "shape": shape,
         "median": 1e-3 * (k + 1) * (j + 1), "exact": True}
        for k, impl in enumerate(IMPLS)
        for norm in ("pre", "post", "none")
        for mode in ("fwd", "fwd+bwd")
        for j, shape in enumerate(([8, 56, 56, 96], [8, 28, 28, 192]))
    ]  # fmt: skip
    fig = time_vs_shape_figure(rows)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        (legend,) = fig.legends
        box = legend.get_window_extent(renderer)
        assert len(legend.get_texts()) == len(IMPLS)
        for ax in fig.axes:
            panel = ax.get_tightbbox(renderer)
            assert panel is not None
            assert not box.overlaps(panel), f"the legend covers panel {ax.get_title()!r}"
    finally:
        plt.close(fig)
