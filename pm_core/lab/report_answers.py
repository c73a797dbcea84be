"""The report's answer to "which is faster here?": the interleaved speed step, rendered.

:func:`section_speed` measures (:func:`~pm_core.lab.speed.measure_speed`), then renders
tables and headline lines from the groups; :func:`verdicts` turns the groups at the
report's first shape into the machine-readable ``"verdicts"`` of ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pm_core import NORMS

from .interleave import MARGIN, RESAMPLES
from .report_base import Report, Tick
from .shapes import QUICK_SHAPE, SWIN_T_STAGES
from .speed import SpeedGroup, measure_speed

#: Interleaved rounds at the first shape (Swin-T stage 1), where summary.json's verdicts
#: are declared: the interval a verdict needs to exclude a tie is narrowest here.
VERDICT_ROUNDS = 21
#: Rounds at the later stages: each cell still carries its interval, about sqrt(21/11),
#: 1.4 times as wide, and the speed step takes about a third less time than at 21 rounds
#: everywhere (the later stages are about half of it).
LATER_ROUNDS = 11


def _ci(v: Sequence[float]) -> str:
    low, est, high = v
    return f"{est:.2f}x [{low:.2f}, {high:.2f}]"


def _verdict_text(g: SpeedGroup) -> str:
    if len(g["fastest"]) == 1:
        assert g["runner_up"] is not None
        return f"**{g['fastest'][0]}** (runner-up {_ci(g['runner_up'])} slower)"
    return "tie: " + ", ".join(f"`{n}`" for n in g["fastest"])


def speed_table(groups: Sequence[SpeedGroup], shape: list[int], dtype: str, mode: str) -> str:
    """One shape x dtype x mode: a row per impl, a column per norm."""
    sel = {
        g["norm"]: g
        for g in groups
        if g["shape"] == shape and g["dtype"] == dtype and g["mode"] == mode
    }
    norms = [n for n in NORMS if n in sel]
    impls = list(dict.fromkeys(k for n in norms for k in sel[n]["vs_slice"]))
    lines = [
        f"**{','.join(map(str, shape))}, {dtype}, {mode}**",
        "",
        "| impl | " + " | ".join(f"`{n}`" for n in norms) + " |",
        "|---|" + "---|" * len(norms),
    ]
    for impl in impls:
        cells = []
        for n in norms:
            g = sel[n]
            cell = (
                f"{g['median_s'][impl] * 1e3:.2f} ms, {_ci(g['vs_slice'][impl])}, "
                f"{g['roofline_fraction'][impl]:.0%}"
            )
            cells.append(f"**{cell}**" if impl in g["fastest"] else cell)
        lines.append(f"| {impl} | " + " | ".join(cells) + " |")
    lines.append(
        "| `auto` | "
        + " | ".join(
            f"ran `{sel[n]['auto_runs']}`: {sel[n]['median_s']['auto'] * 1e3:.2f} ms, "
            f"{_ci(sel[n]['auto_vs_best'])} the fastest's time"
            for n in norms
        )
        + " |"
    )
    lines.append("| fastest | " + " | ".join(_verdict_text(sel[n]) for n in norms) + " |")
    return "\n".join(lines)


def _headline(r: Report, groups: Sequence[SpeedGroup]) -> None:
    if not groups:
        return
    shape = groups[0]["shape"]
    for dtype in dict.fromkeys(g["dtype"] for g in groups):
        for mode in ("fwd", "fwd+bwd"):
            parts = []
            for g in groups:
                if (g["shape"], g["dtype"], g["mode"]) != (shape, dtype, mode):
                    continue
                if len(g["fastest"]) == 1:
                    best = g["fastest"][0]
                    parts.append(
                        f"`{g['norm']}`: **{best}**, {_ci(g['vs_slice'][best])} `slice`'s speed"
                    )
                else:
                    parts.append(f"`{g['norm']}`: tie, " + ", ".join(g["fastest"]))
            if parts:
                r.headline.append(
                    f"- **Fastest exact impl, {dtype} {mode}, ({','.join(map(str, shape))}):** "
                    + "; ".join(parts)
                    + "."
                )


def section_speed(r: Report, tick: Tick) -> None:
    """Every candidate against ``slice``, interleaved, at Swin-T's merge inputs (``--quick``:
    one small shape, float32, fewer rounds)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shapes = [QUICK_SHAPE] if r.quick else list(SWIN_T_STAGES)
    dtypes = (torch.float32,) if r.quick else (torch.float32, torch.bfloat16)
    rounds = [7] if r.quick else [VERDICT_ROUNDS, *[LATER_ROUNDS] * (len(shapes) - 1)]
    groups, roof = measure_speed(shapes, dtypes, device=device, rounds=rounds, tick=tick)
    r.speed = groups
    _headline(r, groups)
    if r.quick:
        over = f"over {rounds[0]} rounds"
    else:
        over = (
            f"over {VERDICT_ROUNDS} rounds at the first shape (the verdicts') and "
            f"{LATER_ROUNDS} at the others"
        )
    tables = [
        speed_table(groups, list(shape), str(dt).removeprefix("torch."), mode)
        for shape in shapes
        for dt in dtypes
        for mode in ("fwd", "fwd+bwd")
    ]
    r.add(
        "Speed",
        f'Every exact impl and `impl="auto"`, timed in this one process on {device.type}, '
        f"alternating {over}, in a rotating order (each round, each impl runs a "
        "block of calls lasting at least 2 ms). Each cell: median time per call; the speed "
        "against `slice` as the median of the per-round ratios `t_slice / t_impl`, with its "
        f"95% bootstrap interval over rounds ({RESAMPLES} resamples: it covers the variation "
        "between rounds of this run, not between runs, which can be larger; see "
        "docs/report.rst); and the fraction of the "
        "roofline (minimum bytes / copy bandwidth, or GEMM FLOPs / peak GEMM rate, whichever "
        "is longer) measured at the start of this step, "
        f"{roof.bandwidth / 1e9:.1f} GB/s and "
        + ", ".join(f"{v / 1e9:.0f} GFLOP/s {k}" for k, v in roof.peak_flops.items())
        + ". **Bold**: the fastest, named only when the runner-up's per-round time ratio to "
        f"it has its interval wholly above {1 + MARGIN:.2f}; otherwise the impls whose "
        f"interval reaches {1 + MARGIN:.2f} tie with it. `pm_core.lab.speed` measures, "
        "`pm_core.lab.interleave` holds the statistics.",
        *tables,
        "![time vs shape](time_vs_shape.png)",
    )


def verdicts(groups: Sequence[SpeedGroup]) -> list[dict[str, object]]:
    """``summary.json``'s verdicts: one per dtype x mode x norm at the first shape measured."""
    if not groups:
        return []
    shape = groups[0]["shape"]
    return [
        {
            "shape": g["shape"],
            "dtype": g["dtype"],
            "mode": g["mode"],
            "norm": g["norm"],
            "fastest": g["fastest"],
            "vs_slice": g["vs_slice"],
        }
        for g in groups
        if g["shape"] == shape
    ]


def plot_rows(groups: Sequence[SpeedGroup]) -> list[dict[str, object]]:
    """The groups as the rows :func:`pm_core.lab.plots.time_vs_shape` draws (every candidate
    is exact: that is what makes it one)."""
    return [
        {
            "impl": impl,
            "norm": g["norm"],
            "dtype": g["dtype"],
            "mode": g["mode"],
            "shape": g["shape"],
            "median": g["median_s"][impl],
            "exact": True,
        }
        for g in groups
        for impl in g["vs_slice"]
    ]


__all__ = ["plot_rows", "section_speed", "speed_table", "verdicts"]
