"""The report's speed sections: the layer benchmarks, ``impl="auto"``, the compiled peers,
whole models, profiler traces, screenshots and plots."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import torch

from pm_core import IMPLS, NORMS, REGISTRY

from .bench import LayerTiming, ModelTiming, run_layer_bench, run_model_bench
from .bench import command as bench_command
from .checkout import LAYER_BENCH, MODEL_BENCH
from .peers import (
    CHECK_ROUNDS,
    auto_check_table,
    check_auto,
    check_peers,
    choices_table,
    duel_table,
    peer_check_table,
    peer_table,
    run_tune,
    swin_recompiles,
    use_report_cache,
)
from .profiling import run_profiles, summarize_trace
from .report_answers import plot_rows
from .report_base import Report, Tick
from .roofline import get_roofline
from .shapes import SWIN_T_STAGES
from .terminal import without_kineto_chatter


def section_bench(r: Report, tick: Tick) -> None:
    rows = run_layer_bench(r.out / "bench.json", quick=r.quick, tick=tick)
    r.bench = rows
    body = [
        "pytest-benchmark medians, measured side by side in one run "
        f"(`{_bench_shown(r.quick)}`; raw JSON: "
        "[bench.json](bench.json)). The full matrix (Swin-T/S/B/L at 224 and 384, and an "
        "odd size) is `nox -s bench`.",
        *speed_tables(rows),
        "![time vs shape](time_vs_shape.png)",
    ]
    mem = [b for b in rows if "max_memory_allocated" in b]
    if mem:
        body.append(
            "| impl | norm | dtype | mode | shape | max_memory_allocated (MB) |\n|---|---|---|---|---|---:|\n"
            + "\n".join(
                f"| {b['impl']} | {b['norm']} | {b['dtype']} | {b['mode']} | {b['shape']} | "
                f"{b['max_memory_allocated'] / 1e6:.1f} |"
                for b in mem
            )
        )
    r.add("Speed", *body)


def speed_tables(rows: list[LayerTiming]) -> list[str]:
    out = []
    keyed = {(b["impl"], b["norm"], b["dtype"], b["mode"], tuple(b["shape"])): b for b in rows}
    combos = dict.fromkeys((b["dtype"], b["mode"]) for b in rows)
    for dtype, mode in combos:
        shapes = list(
            dict.fromkeys(
                tuple(b["shape"]) for b in rows if b["dtype"] == dtype and b["mode"] == mode
            )
        )
        lines = [
            f"**{dtype}, {mode}**: median ms of each case's own benchmark run (ratios between "
            "impls are in the Speed section, measured interleaved); "
            "% = fraction of this machine's roofline (minimum bytes / peak bandwidth, or GEMM "
            "FLOPs / peak FLOP/s, whichever is longer). *italic* = not the same function. "
            "`auto` shows the impl it ran; (peer) rows are `torch.compile` of that form.",
            "",
            "| shape (B,H,W,C) | impl | pre | post | none |",
            "|---|---|---|---|---|",
        ]
        for shape in shapes:
            extra = dict.fromkeys(
                b["impl"] for b in rows
                if b["impl"] not in REGISTRY and tuple(b["shape"]) == shape
                and (b["dtype"], b["mode"]) == (dtype, mode)
            )  # fmt: skip
            for impl in (*IMPLS, *extra):
                cells = []
                for norm in NORMS:
                    b = keyed.get((impl, norm, dtype, mode, shape))
                    if b is None:
                        cells.append("-")
                        continue
                    cell = f"{b['median'] * 1e3:.2f}"
                    frac = b.get("roofline_fraction")
                    cell += f" ({frac:.0%})" if frac is not None else ""
                    if impl == "auto":
                        cell = f"`{b['runs']}` {cell}"
                    cells.append(cell if b["exact"] else f"*{cell}*")
                label = f"{impl} (peer)" if impl not in REGISTRY and impl != "auto" else impl
                lines.append(
                    f"| {','.join(map(str, shape))} | {label} | " + " | ".join(cells) + " |"
                )
        out.append("\n".join(lines))
    return out


def section_tune(r: Report, tick: Tick) -> None:
    """Fill impl="auto"'s cache in this process; the benchmarks (another process) time it."""
    path = use_report_cache()
    shapes = [(2, 56, 56, 96), (1, 16, 10, 32)] if r.quick else list(SWIN_T_STAGES)
    dtypes = (torch.float32,) if r.quick else (torch.float32, torch.bfloat16)
    r.auto_tuned = run_tune(shapes, dtypes, tick=tick)
    r.auto_cache = path


def _roof_line(rows: list[LayerTiming]) -> str:
    """The roofline's rates, and why a bfloat16 fraction can pass 100%."""
    if not rows:
        return ""
    roof = get_roofline(torch.device(rows[0]["device"]))
    rates = "; ".join(
        f"{dt}: " + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in sorted(per.items()))
        for dt, per in sorted(roof.per_backend.items())
    )
    line = (
        f"The roofline here: copy bandwidth {roof.bandwidth / 1e9:.1f} GB/s; GEMM GFLOP/s by "
        f"backend, {rates}."
    )
    peak = roof.peak_flops
    if peak.get("bfloat16", 0.0) < peak.get("float32", 0.0):
        line += (
            " A bfloat16 fraction over 100% can be real: the roof is priced at this machine's "
            "bfloat16 GEMM rate, which is below its float32 rate, and on a CPU without bf16 "
            "dot-product units `conv_cw` runs its GEMMs in float32."
        )
    return line


def section_peers(r: Report, tick: Tick) -> None:
    rows = r.bench or []
    body = [
        "The fastest exact pm-core impl against `torch.compile` (inductor, `dynamic=False`) "
        "of the slice form, the reshape form and the `conv` impl, measured side by side in "
        'the benchmark run above, on its first shape. *auto* is `impl="auto"`, timed in '
        "that run on the choices the tune step measured in this process before it (a "
        "separate run).",
        duel_table(rows),
        _roof_line(rows),
    ]
    checks = check_peers(rows, tick=tick)
    body.append(
        "**The fastest peer against the fastest exact impl**, recompiled here and timed "
        f"interleaved ({CHECK_ROUNDS} rounds, the same inputs; the ratio `t_peer / t_exact` "
        "is the median per-round ratio with its 95% bootstrap interval: below 1, the peer is "
        "faster):\n\n" + (peer_check_table(checks) if checks else "(no peers ran)")
    )
    body += [
        "**The peers.** Compile time is the first call less a warm call, with dynamo reset "
        "and inductor's FX graph cache off; inductor's on-disk cache of built C++ kernels is "
        "kept, so a machine's first-ever compile of a graph takes longer. Each forward peer "
        "is checked once against the float64 oracle on the benchmark's inputs (error / bound <= 1 is within "
        "`error_bounds`); the property suite does not run them. Their bytes are not counted: "
        "inductor's generated C++ kernels run outside the aten dispatcher that pm-core's "
        "traffic count hooks, and `torch._inductor.metrics.num_bytes_accessed` counts Triton "
        "kernels only (0 on a CPU).",
        peer_table(rows) if any(b["peer"] for b in rows) else "(no peers ran)",
        '**`impl="auto"` against the fastest exact impl**, timed interleaved after the '
        f"benchmarks ({CHECK_ROUNDS} rounds, the same inputs; the ratio is the median "
        "per-round ratio with its 95% bootstrap interval), `auto` reading its choice from the cache file "
        "the tune step wrote:",
        auto_check_table(check_auto(rows, tick=tick)),
        f'**`impl="auto"`\'s choices** on this machine (cache: `{r.auto_cache}`), median ms '
        "of every exact candidate as the tune step measured them:",
        choices_table(),
    ]
    if not r.quick:
        tick("compiled swin_t at 4 input sizes")
        rc = swin_recompiles()
        body.append(
            "**A compiled Swin fed several sizes** (compare pytorch/pytorch#121637): "
            f"torchvision `swin_t` (random weights, batch 1) under `torch.compile` "
            f"(default `dynamic=None`, backend `{rc['backend']}`: dynamo decides the "
            "recompiles whatever the backend, so the count does not wait for inductor to "
            "generate code for a whole Swin at every size) at "
            f"{', '.join(f'{s}x{s}' for s in rc['sizes'])}: {rc['frames']} graphs compiled, "
            f"{rc['recompiles']} recompiles; tracing time per size "
            + ", ".join(f"{t:.1f} s" for t in rc["compile_s"])
            + "."
        )
    r.add('Compile peers and impl="auto"', *body)


def section_models(r: Report, tick: Tick) -> None:
    rows: list[ModelTiming] = run_model_bench(r.out / "models.json", quick=r.quick, tick=tick)
    med = {(b["library"], b["model"], b["impl"], b["dtype"]): b["median"] for b in rows}
    lines = [
        "| library | model | dtype | original (ms) | merges swapped to `conv` (ms) |",
        "|---|---|---|---:|---:|",
    ]
    pairs = 0
    for (lib, model, impl, dtype), t in med.items():
        if impl != "original" or (lib, model, "conv", dtype) not in med:
            continue
        pairs += 1
        swapped = med[lib, model, "conv", dtype]
        lines.append(f"| {lib} | {model} | {dtype} | {t * 1e3:.0f} | {swapped * 1e3:.0f} |")
    batch = 1 if r.quick else 8
    r.add(
        "Whole models: original vs swapped",
        f"Forward at batch {batch}, native resolution, eval mode, random weights; medians of "
        f"{'three' if r.quick else 'five'} warm rounds of `{MODEL_BENCH}` (raw JSON: "
        f"[models.json](models.json)), {pairs} model x dtype pairs. Each median is its own "
        "benchmark case, so no ratio is stated between them: patch merging is a few "
        "percent of a Swin's forward, less than the load moves between separate cases. "
        "The layer's own ratios, measured interleaved, are in Speed.",
        "\n".join(lines),
    )


def section_profiles(r: Report, tick: Tick) -> None:
    root = r.out.parent  # profiles/: the TensorBoard logdir
    with without_kineto_chatter():
        runs = run_profiles(root, quick=True, progress=tick)
    lines = [
        "| run | ms / step | top 3 ops by self time | peak memory (MB) |",
        "|---|---:|---|---:|",
    ]
    for run in runs:
        s = summarize_trace(run)
        top = ", ".join(f"{o.name} {o.self_us / 1e3:.2f} ms" for o in s.top_ops[:3])
        peak = max(s.peak_bytes.values(), default=0) / 1e6
        lines.append(
            f"| [{run.name}](../{run.name}/) | {s.step_us / 1e3:.2f} | {top} | {peak:.1f} |"
        )
    r.add(
        "Profiles",
        f"{len(runs)} TensorBoard runs (forward + backward, one per impl x norm x dtype x "
        "shape) under `profiles/`, each holding only the measured steps (`ProfilerStep#2` "
        "and `#3`; the wait and warm-up steps are not recorded). Open them in TensorBoard "
        "with `python -m nox -s tensorboard` (PyTorch Profiler tab; its views need the "
        "internet, see `profiles/README.md`), or offline in speedscope with "
        "`python -m nox -s view -- profiles/<run>`. The numbers TensorBoard's charts would "
        "show are here, read from the same files (`pm_core.lab.profiling.summarize_trace`).",
        "\n".join(lines),
    )


#: Where the browser test (tests/lab/test_browser.py) leaves its screenshots, in the report folder.
SCREENSHOTS = "browser"


def section_screenshots(r: Report, _tick: Tick) -> None:
    shots = sorted((r.out / SCREENSHOTS).glob("*.png"))
    if not shots:
        r.add(
            "The profiler UI in a browser",
            "No screenshots yet: `tests/lab/test_browser.py` takes them when Chromium is installed "
            "(`apt-get install chromium`, then `python -m nox -s tests -- tests/lab/test_browser.py`).",
        )
        return
    taken = datetime.fromtimestamp(max(p.stat().st_mtime for p in shots)).strftime("%Y-%m-%d %H:%M")
    r.add(
        "The profiler UI in a browser",
        f"Taken by `tests/lab/test_browser.py` (headless Chromium, no network; last at {taken}) on "
        "its own small runs. `tensorboard-offline`: what a user sees with no internet, the "
        "pickers and a spinner. `tensorboard-operator-*` and `tensorboard-trace-*`: the same "
        "page with Google Charts and the web-components polyfill stood in (charts blank, "
        "tables and the trace timeline drawn). `speedscope-*`: the offline viewer.",
        "\n".join(f"- [{p.stem}]({SCREENSHOTS}/{p.name})" for p in shots),
    )


def section_plots(r: Report, _tick: Tick) -> None:
    from . import plots  # matplotlib: loaded by the one step that draws

    if r.speed:
        plots.time_vs_shape(plot_rows(r.speed), r.out / "time_vs_shape.png")
    elif r.bench is not None:
        plots.time_vs_shape(r.bench, r.out / "time_vs_shape.png")
    if r.traffic is not None:
        plots.bytes_per_op(r.traffic, r.out / "traffic.png")
    if r.verification is not None:
        plots.error_vs_conditioning(r.verification.records, r.out / "error_vs_conditioning.png")
        r.add(
            "Error against conditioning",
            "Every checked example of the sweep: the worst window's |mean|/std (x) against the "
            "largest error as a multiple of its bound (y). Points stay below 1 however "
            "ill-conditioned the windows get because the bound carries the LN amplification.",
            "![error vs conditioning](error_vs_conditioning.png)",
        )


def _bench_shown(quick: bool) -> str:
    """The layer benchmark command the report ran, as a reader would type it (from pytest on)."""
    cmd = bench_command(LAYER_BENCH, Path("bench.json"), quick=quick)
    return " ".join(cmd[2:])


__all__ = [
    "SCREENSHOTS",
    "section_bench",
    "section_models",
    "section_peers",
    "section_plots",
    "section_profiles",
    "section_screenshots",
    "section_tune",
    "speed_tables",
]
