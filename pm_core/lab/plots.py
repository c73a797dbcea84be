"""The report's PNG plots (matplotlib, Agg backend; imported only by the report)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pm_core import IMPLS, NORMS

from .records import CheckRecord, oracle_checks
from .traffic_table import TrafficRow

#: 60 distinct colours (tab20, tab20b, tab20c), so no two ops of a plot share one.
_PALETTE: list[tuple[float, ...]] = [
    c
    for name in ("tab20", "tab20b", "tab20c")
    for c in plt.get_cmap(name).colors  # type: ignore[attr-defined]
]


def impl_color(impl: str) -> tuple[float, ...]:
    """A colour per impl, by its place in the registry as it is now (so an impl added by
    ``register`` gets its own), from tab10 while there are at most ten."""
    names = list(IMPLS)
    k = names.index(impl) if impl in names else len(names)
    tab10: list[tuple[float, ...]] = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]
    palette = tab10 if len(names) < len(tab10) else _PALETTE  # room for one unregistered
    return palette[k % len(palette)]


def op_colors(ops: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """A distinct colour per op, in order (distinct for up to 60 ops)."""
    return {op: _PALETTE[k % len(_PALETTE)] for k, op in enumerate(ops)}


def time_vs_shape(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """:func:`time_vs_shape_figure`, saved to ``path``."""
    fig = time_vs_shape_figure(rows)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def time_vs_shape_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Median time per shape, one line per impl, one panel per norm (float32 where present);
    one legend below the panels."""
    dtype = "float32" if any(b["dtype"] == "float32" for b in rows) else rows[0]["dtype"]
    modes = list(dict.fromkeys(b["mode"] for b in rows))
    norms = [n for n in NORMS if any(b["norm"] == n for b in rows)]
    fig, axes = plt.subplots(
        len(modes), len(norms), figsize=(4.2 * len(norms), 3.6 * len(modes)), squeeze=False
    )
    for i, mode in enumerate(modes):
        for j, norm in enumerate(norms):
            ax = axes[i][j]
            sel = [
                b for b in rows if b["dtype"] == dtype and b["mode"] == mode and b["norm"] == norm
            ]
            shapes = list(dict.fromkeys(tuple(b["shape"]) for b in sel))
            labels = ["x".join(map(str, s)) for s in shapes]
            for impl in IMPLS:
                pts = {tuple(b["shape"]): b["median"] * 1e3 for b in sel if b["impl"] == impl}
                if not pts:
                    continue
                exact = next(b["exact"] for b in sel if b["impl"] == impl)
                ax.plot(
                    [labels[shapes.index(s)] for s in shapes if s in pts],
                    [pts[s] for s in shapes if s in pts],
                    marker="o",
                    linestyle="-" if exact else ":",
                    color=impl_color(impl),
                    label=impl if exact else f"{impl} (not exact)",
                )
            ax.set_yscale("log")
            ax.set_title(f"norm={norm!r}, {mode}")
            ax.set_xlabel("input shape B x H x W x C")
            ax.set_ylabel(f"median time, ms ({dtype}, log)")
            ax.tick_params(axis="x", labelrotation=20, labelsize=8)
            ax.grid(True, which="both", alpha=0.3)
    # one legend for every panel, below them, where it covers no line
    entries: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(
        list(entries.values()), list(entries), loc="lower center",
        ncol=min(len(entries), 8), fontsize=8,
    )  # fmt: skip
    fig.suptitle("Patch merging: time per call by input shape (lower is better)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def bytes_per_op(rows: Sequence[TrafficRow], path: Path) -> Path:
    """Stacked bars: MB each aten op reads + writes, per impl, one panel per norm."""
    fig = bytes_per_op_figure(rows)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bytes_per_op_figure(rows: Sequence[TrafficRow]) -> Figure:
    """:func:`bytes_per_op`'s figure, not yet saved: the legend sits below the panels."""
    norms = [n for n in NORMS if any(r["norm"] == n for r in rows)]
    ops = list(dict.fromkeys(r["op"] for r in rows if r["total"]))
    op_color = op_colors(ops)
    ncol = min(len(ops), 6)
    legend_rows = -(-len(ops) // ncol) if ops else 0
    legend_in = 0.25 * legend_rows + 0.2  # inches the legend takes below the panels
    height = 4.2 + legend_in
    fig, axes = plt.subplots(1, len(norms), figsize=(5.2 * len(norms), height), squeeze=False)
    for j, norm in enumerate(norms):
        ax = axes[0][j]
        impls = [i for i in IMPLS if any(r["impl"] == i and r["norm"] == norm for r in rows)]
        for y, impl in enumerate(impls):
            left = 0.0
            sel = [r for r in rows if r["impl"] == impl and r["norm"] == norm and r["total"]]
            for r in sel:
                mb = r["total"] / 1e6
                ax.barh(y, mb, left=left, color=op_color[r["op"]], edgecolor="white", linewidth=0.5)
                left += mb
            minimum = sel[0]["minimum"] if sel else None
            if minimum:
                ax.plot(
                    [minimum / 1e6] * 2,
                    [y - 0.45, y + 0.45],
                    color="black",
                    linewidth=1.5,
                )
        ax.set_yticks(range(len(impls)), impls)
        ax.invert_yaxis()
        ax.set_xlabel("MB read + written (forward)")
        ax.set_title(f"norm={norm!r}  (black tick: analytic minimum)")
        ax.grid(True, axis="x", alpha=0.3)
    handles = [Rectangle((0, 0), 1, 1, color=op_color[op]) for op in ops]
    fig.legend(handles, ops, loc="lower center", ncol=max(ncol, 1), fontsize=8)
    fig.suptitle("Memory traffic per aten op (views are free)")
    # the panels above the legend's rows, so it covers no axis label
    fig.tight_layout(rect=(0, legend_in / height, 1, 1))
    return fig


def error_vs_conditioning(records: Sequence[CheckRecord], path: Path) -> Path:
    """Scatter of every checked example: window conditioning against error / bound."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    markers = {"float64": "o", "float32": "s", "bfloat16": "^", "float16": "v"}
    for impl in IMPLS:
        for dtype, marker in markers.items():
            pts = [
                (r["kappa"], r["bound_ratio"])
                for r in oracle_checks(records)
                if r["impl"] == impl and r["dtype"] == dtype
                and r["kappa"] is not None and r["bound_ratio"] > 0
            ]  # fmt: skip
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(
                    xs,
                    ys,
                    s=10,
                    alpha=0.5,
                    marker=marker,
                    color=impl_color(impl),
                    label=f"{impl} {dtype}",
                )
    ax.axhline(1.0, color="red", linewidth=1, label="bound (fails above)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_yscale("log")
    ax.set_xlabel("worst window |mean| / std in the input (LN conditioning)")
    ax.set_ylabel("max error / error bound")
    ax.set_title("Error against conditioning: every Hypothesis example")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=3, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "bytes_per_op",
    "bytes_per_op_figure",
    "error_vs_conditioning",
    "impl_color",
    "op_colors",
    "time_vs_shape",
    "time_vs_shape_figure",
]
