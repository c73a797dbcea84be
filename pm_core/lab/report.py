"""``pm-core report``: the answer to "are they the same, and which is faster here?" in one folder.

The report is a table of steps (:data:`STEPS`), each a function that measures one thing
and adds its section and headline lines to a :class:`Report`; :func:`build_report` runs
them in order. It is rebuilt from scratch on every run into a sibling ``<out>.partial/``
folder and swapped in only when complete, so a crash mid-run leaves the previous report
whole.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from pm_core import IMPLS, NORMS, REGISTRY, patch_merge, reference_patch_merge

from . import gpu_model as gm
from .bench import LayerTiming, ModelTiming, run_layer_bench, run_model_bench
from .bench import command as bench_command
from .checkout import LAYER_BENCH, MODEL_BENCH, CheckoutNotFound, checkout_root
from .family import section_family
from .mutation import MIN_SCORE, SUMMARY_FILE, load_summary, score_table
from .peers import (
    auto_check_table,
    check_auto,
    choices_table,
    duel_table,
    duels,
    peer_table,
    run_tune,
    swin_recompiles,
    use_report_cache,
)
from .profiling import run_profiles, summarize_trace
from .roofline import get_roofline
from .shapes import QUICK_SHAPE, SWIN_T_STAGE1, SWIN_T_STAGES
from .terminal import Progress, without_kineto_chatter
from .traffic import TrafficRow, traffic_rows, traffic_table
from .verify import Verification, format_table, run_verify

README_START = "<!-- findings:start -->"
README_END = "<!-- findings:end -->"

#: A step's progress callback: called with each line of work it finishes.
Tick = Callable[[str], None]


@dataclass
class Report:
    """What the steps build up: sections and headline lines, and what later steps read."""

    out: Path
    quick: bool
    sections: list[str] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)
    ok: bool = True
    timings: dict[str, float] = field(default_factory=dict)
    verification: Verification | None = None  # set by the verify step
    traffic: list[TrafficRow] | None = None  # set by the traffic step
    bench: list[LayerTiming] | None = None  # set by the benchmarks step
    auto_tuned: list[dict[str, object]] | None = None  # set by the auto tune step
    auto_cache: Path | None = None  # set by the auto tune step

    def add(self, title: str, *body: str) -> None:
        self.sections.append("\n\n".join([f"## {title}", *body]))


@dataclass(frozen=True)
class Step:
    """One step of the report: a name for progress and timings, and what it runs."""

    name: str
    run: Callable[[Report, Tick], None]


def section_environment(r: Report, _tick: Tick) -> None:
    pkgs = [
        "torch",
        "torchvision",
        "timm",
        "transformers",
        "hypothesis",
        "pytest-benchmark",
        "torch-tb-profiler",
    ]
    rows = [f"| {p} | {_package_version(p)} |" for p in pkgs]
    r.add(
        "Machine and versions",
        f"- Machine: {machine_summary()}\n- Python {platform.python_version()} on {platform.platform()}\n"
        f"- Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `pm-core report{' --quick' if r.quick else ''}`",
        "| package | version |\n|---|---|\n" + "\n".join(rows),
    )


def section_verify(r: Report, tick: Tick) -> None:
    profile = "dev" if r.quick else "ci"
    v = run_verify(profile, progress=tick)
    r.verification = v
    r.ok &= v.ok
    exact = [row for row in v.rows if row.exact]
    worst = max(exact, key=lambda row: row.max_ratio, default=None)
    checks = sum(row.forward_checks + row.grad_checks for row in v.rows)
    r.headline.append(
        f"- **Equivalence:** {sum(row.status == 'pass' for row in exact)}/{len(exact)} exact "
        f"impl x norm x dtype cells pass against the float64 oracle ({checks} checked outputs and "
        f"gradients, Hypothesis profile `{profile}`); worst error is {worst.max_ratio:.2f}x its bound "
        f"({worst.impl}/{worst.norm}/{worst.dtype})."
        if worst
        else "- **Equivalence:** no records (is tests/assertions.py recording?)"
    )
    r.add(
        "Verification: every impl against the float64 oracle",
        f"Hypothesis profile `{profile}`: {v.summary} in {v.seconds:.0f} s. Each cell counts the "
        "checked examples (outputs; gradients w.r.t. x, the weight and the norm parameters), the "
        "largest error as a multiple of its error bound (`pm_core.bounds`; at most 1 passes) and "
        "the worst window conditioning |mean|/std met.",
        format_table(v.rows),
    )


def section_mutation(r: Report, _tick: Tick) -> None:
    """Read, not run: ``nox -s mutants`` takes most of an hour, so it is its own job."""
    try:
        summary = load_summary(checkout_root() / SUMMARY_FILE)
    except CheckoutNotFound:
        summary = None
    if summary is None:
        r.add(
            "How much the suite catches: mutation score",
            f"No mutation results in `{SUMMARY_FILE}`: `python -m nox -s mutants` produces "
            "them (a full mutmut run of the layer library; see the README for its time).",
        )
        return
    low = summary.below(MIN_SCORE)
    took = "" if summary.elapsed_s is None else f", in {summary.elapsed_s / 60:.0f} min"
    if summary.not_run:
        took += f"; **incomplete: {summary.not_run} mutants not run**, scores are over the rest"
    r.add(
        "How much the suite catches: mutation score",
        f"{summary.tool} mutated the layer library's numerical core and ran the library's "
        f"tests against each mutant (`nox -s mutants`; results of {summary.produced}{took}). "
        "Score = killed / (mutants - equivalent). Equivalent mutants are those no correct "
        "test can kill: they compute the same function, or (in brackets) they round "
        "differently within the derived error bound, which is the suite's definition of "
        "correct. Each is listed with its reason in `tests/mutation/equivalent.toml`.",
        score_table(summary),
        f"Not killed and not triaged: {len(summary.gaps)}"
        + "".join(f"\n- `{name}` ({st}): `{change}`" for name, st, change in summary.gaps[:20])
        + ("\n- ..." if len(summary.gaps) > 20 else ""),
        *(
            [f"Stale equivalent entries (not counted): {len(summary.stale)}"]
            if summary.stale
            else []
        ),
    )
    scored = [m for m in summary.modules if not math.isnan(m.score)] or list(summary.modules)
    worst = min(scored, key=lambda m: m.score)
    r.headline.append(
        f"- Mutation score (mutmut, {summary.produced[:10]}): lowest module `{worst.module}` "
        f"at {worst.score:.1%}"
        + (f"; **below {MIN_SCORE:.0%}: {', '.join(m.module for m in low)}**" if low else "")
    )


def section_channel_norm(r: Report, _tick: Tick) -> None:
    """How far the naive 'LN over C, then conv' is from the real pre-norm layer."""
    g = torch.Generator().manual_seed(0)
    lines = [
        "| input | relative error of `conv_channel_norm` | relative error of `conv` |",
        "|---|---:|---:|",
    ]
    errs_all: list[list[float]] = []
    for label, offset in (("N(0, 1) activations", 0.0), ("per-pixel offsets N(0, 3)", 3.0)):
        b, h, w, c = SWIN_T_STAGE1
        x = torch.randn(b, h, w, c, generator=g)
        if offset:
            x = x + offset * torch.randn(b, h, w, 1, generator=g)
        weight = torch.randn(2 * c, 4 * c, generator=g) / (4 * c) ** 0.5
        nw = 1 + 0.1 * torch.randn(4 * c, generator=g)
        nb = 0.1 * torch.randn(4 * c, generator=g)
        ref = reference_patch_merge(x, weight, nw, nb)
        errs = []
        for impl in ("conv_channel_norm", "conv"):
            y = patch_merge(x, weight, nw, nb, impl=impl).double()
            errs.append(((y - ref).norm() / ref.norm()).item())
        lines.append(f"| {label}, {SWIN_T_STAGE1} fp32 | {errs[0]:.3g} | {errs[1]:.2g} |")
        errs_all.append(errs)
    r.headline.append(
        f"- **The naive conv is a different function:** `conv_channel_norm` (LN over C per pixel, "
        f"then the conv) is off by {errs_all[0][0]:.2f} (relative) on N(0, 1) input and "
        f"{errs_all[1][0]:.2f} with per-pixel offsets; the folded `conv` by {errs_all[1][1]:.1g}."
    )
    r.add(
        "The naive conv is not the pre-norm layer",
        "`conv_channel_norm` normalises each pixel over its C channels (the 4C affine split by "
        "window position) and then applies the conv: what you get from 'just use a conv'. Swin v1 "
        "normalises over the whole 4C window. The two agree only when the four pixels of a window "
        "share one mean and variance. `conv` folds the real window LN into the conv instead.",
        "\n".join(lines),
    )


def section_traffic(r: Report, _tick: Tick) -> None:
    shape = QUICK_SHAPE if r.quick else SWIN_T_STAGE1
    fwd = traffic_table(shape, backward=False)
    both = traffic_table(shape, backward=True)
    rows = traffic_rows(shape, backward=False)
    r.traffic = rows
    ratio = {(t["impl"], t["norm"]): t["ratio"] for t in rows}
    r.headline.append(
        f"- **Traffic, forward, shape {shape}** (bytes moved / analytic minimum): "
        + "; ".join(
            f"`{norm}`: conv {ratio['conv', norm]:.2f}x, slice {ratio['slice', norm]:.2f}x, "
            f"reshape {ratio['reshape', norm]:.2f}x, unfold {ratio['unfold', norm]:.2f}x"
            for norm in NORMS
        )
        + ". The conv reads the channels-last view in place: no copy op."
    )
    r.add(
        "Traffic: where the bytes go",
        "Counted at the aten dispatcher (`pm_core.lab.traffic.measure_traffic`): every op's distinct "
        "input bytes read and output bytes written; views cost nothing. `ratio` is against "
        "the analytic minimum (`pm_core.lab.traffic.minimum_traffic`): read x and the parameters once, "
        "write the output once (and for backward: read the output gradient, x and the "
        "parameters, write their gradients). Deterministic and machine-independent.",
        fwd,
        both,
        "![bytes per op](traffic.png)",
    )


def _gpu_cell(
    preds: dict[tuple[str, str, str, str, str], float], gpu: str, dtype: str, mode: str
) -> str:
    parts = []
    for norm in NORMS:
        conv = preds.get((gpu, "conv", norm, dtype, mode))
        sl = preds.get((gpu, "slice", norm, dtype, mode))
        parts.append("-" if conv is None or sl is None else f"{sl / conv:.2f}")
    return " / ".join(parts)


def section_gpu_model(r: Report, _tick: Tick) -> None:
    """The GPU answer as a roofline model from byte and FLOP counts: not a measurement."""
    shape = gm.GPU_STAGES[0]
    preds = gm.predict(shapes=[shape])
    t = {(p.gpu, p.impl, p.norm, p.dtype, p.mode): p.time_s for p in preds}
    launches = {(p.impl, p.norm, p.dtype, p.mode): p.launches for p in preds}
    prec = {(p.impl, p.dtype): p.precision for p in preds}
    # the same counts with every GEMM at IEEE: what TF32 alone buys the conv form
    ieee = {
        (g.name, norm): gm.predict_time(
            gm.count("conv", norm, torch.float32, shape, False), g, "ieee"
        )
        for g in gm.GPUS
        for norm in NORMS
    }
    specs = [
        "| GPU | compute capability | bandwidth (GB/s) | FP32 | TF32 | BF16 (dense TFLOP/s) | source |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    specs += [
        f"| {g.name} | {g.capability} | {g.bandwidth / 1e9:.0f} | {g.fp32 / 1e12:g} | "
        f"{'-' if g.tf32 is None else f'{g.tf32 / 1e12:g}'} | {g.bf16 / 1e12:g} | "
        f"{g.source}{'; ' + g.note if g.note else ''} |"
        for g in gm.GPUS
    ]
    speed = [
        "| GPU | fp32 fwd (defaults: conv TF32, slice IEEE) | fp32 fwd, TF32 off | bf16 fwd "
        "| fp32 fwd+bwd | bf16 fwd+bwd |",
        "|---|---|---|---|---|---|",
    ]
    favour = [
        "| GPU | dtype, mode | favoured impl, pre / post / none | its time (us) | fused "
        "single-pass minimum (us) | kernels (launch overhead, us) |",
        "|---|---|---|---|---|---|",
    ]
    exact = sorted({p.impl for p in preds})
    for g in gm.GPUS:
        off = " / ".join(
            f"{t[g.name, 'slice', n, 'float32', 'fwd'] / ieee[g.name, n]:.2f}" for n in NORMS
        )
        speed.append(
            f"| {g.name} | {_gpu_cell(t, g.name, 'float32', 'fwd')} | {off} | "
            f"{_gpu_cell(t, g.name, 'bfloat16', 'fwd')} | "
            f"{_gpu_cell(t, g.name, 'float32', 'fwd+bwd')} | "
            f"{_gpu_cell(t, g.name, 'bfloat16', 'fwd+bwd')} |"
        )
        for dtype in ("float32", "bfloat16"):
            for mode in ("fwd", "fwd+bwd"):
                best = [
                    min(exact, key=lambda i, n=n: t[g.name, i, n, dtype, mode])  # type: ignore[misc]
                    for n in NORMS
                ]
                times = [t[g.name, b, n, dtype, mode] for b, n in zip(best, NORMS, strict=True)]
                fused = [
                    gm.fused_minimum(
                        n, getattr(torch, dtype), shape, mode == "fwd+bwd", g,
                        prec["conv", dtype],
                    )
                    for n in NORMS
                ]  # fmt: skip
                k = [launches[b, n, dtype, mode] for b, n in zip(best, NORMS, strict=True)]
                favour.append(
                    f"| {g.name} | {dtype}, {mode} | {' / '.join(best)} | "
                    + " / ".join(f"{x * 1e6:.0f}" for x in times)
                    + " | "
                    + " / ".join(f"{x * 1e6:.0f}" for x in fused)
                    + " | "
                    + " / ".join(f"{n} ({n * gm.LAUNCH_S * 1e6:.1f})" for n in k)
                    + " |"
                )
    h100 = "H100 SXM"
    r.headline.append(
        "- **On a GPU (model, not a measurement), shape "
        f"{shape}:** under PyTorch's defaults cuDNN runs the fp32 conv form in TF32 and "
        "cuBLAS the slice form in IEEE fp32, so on a GPU they are *not the same fp32 "
        f"function* (pm_core bounds each at its own precision). H100 conv-over-slice, "
        f"pre / post / none: fp32 fwd {_gpu_cell(t, h100, 'float32', 'fwd')} with the "
        "defaults, "
        + " / ".join(f"{t[h100, 'slice', n, 'float32', 'fwd'] / ieee[h100, n]:.2f}" for n in NORMS)
        + f" with TF32 off; bf16 fwd {_gpu_cell(t, h100, 'bfloat16', 'fwd')}."
    )
    r.add(
        "On a GPU (model, not a measurement)",
        "No GPU ran any of this. Each impl's ops are counted as a GPU would run them "
        "(`pm_core.lab.gpu_model.count`: the forward on fake CUDA tensors, so the CUDA "
        "kernels' own layouts and copies; forward+backward on the meta device, since the "
        "autograd engine cannot run fake CUDA tensors), and each op takes "
        "`max(bytes / bandwidth, FLOPs / peak)` at the dense datasheet rate of the "
        "precision its GEMM runs in under PyTorch's default flags "
        f"(`pm_core.gemm_precision`: {', '.join(sorted(f'{i} {d}: {p}' for (i, d), p in prec.items()))}). "
        "Kernel launches are counted apart at "
        f"{gm.LAUNCH_S * 1e6:.1f} us each, the exposed per-kernel launch cost NVIDIA "
        f"measured with back-to-back launches ({gm.LAUNCH_SOURCE}); eager PyTorch's host "
        f"dispatch comes on top. Shape {shape}: Swin-T stage 1 at batch 64.",
        "\n".join(specs),
        "**Predicted conv-over-slice speedup** (slice time / conv time; pre / post / none). "
        "'TF32 off' runs the conv's GEMM at the IEEE fp32 rate "
        '(`torch.backends.cudnn.conv.fp32_precision = "ieee"`): the difference between '
        "the two columns is the TF32 default, not the layout.",
        "\n".join(speed),
        "**Which impl each GPU would favour**, its predicted time, the fused minimum (one "
        "kernel that reads x and the weights once and writes y once, at the conv's GEMM "
        "precision) and the number of kernels launched (pre / post / none).",
        "\n".join(favour),
    )


def section_bench(r: Report, tick: Tick) -> None:
    rows = run_layer_bench(r.out / "bench.json", quick=r.quick, tick=tick)
    r.bench = rows
    _headline_speed(r, rows)
    body = [
        "pytest-benchmark medians, measured side by side in one run "
        f"(`{_bench_shown(r.quick)}`; raw JSON: "
        "[bench.json](bench.json)). The full matrix (Swin-T/S/B/L at 224 and 384, and an "
        "odd size) is `nox -s bench`.",
        *_speed_tables(rows),
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


def _speed_tables(rows: list[LayerTiming]) -> list[str]:
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
            f"**{dtype}, {mode}**: median ms; x = speedup against `slice` in the same column; "
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
                    base = keyed.get(("slice", norm, dtype, mode, shape))
                    if b is None:
                        cells.append("-")
                        continue
                    cell = f"{b['median'] * 1e3:.2f}"
                    if base is not None:
                        cell += f" ({base['median'] / b['median']:.2f}x"
                        frac = b.get("roofline_fraction")
                        cell += f", {frac:.0%})" if frac is not None else ")"
                    if impl == "auto":
                        cell = f"`{b['runs']}` {cell}"
                    cells.append(cell if b["exact"] else f"*{cell}*")
                label = f"{impl} (peer)" if impl not in REGISTRY and impl != "auto" else impl
                lines.append(
                    f"| {','.join(map(str, shape))} | {label} | " + " | ".join(cells) + " |"
                )
        out.append("\n".join(lines))
    return out


def _headline_speed(r: Report, rows: list[LayerTiming]) -> None:
    s1 = tuple(rows[0]["shape"]) if rows else ()
    for mode in ("fwd", "fwd+bwd"):
        parts = []
        for norm in NORMS:
            # candidates: impls exact in every norm mode (conv_channel_norm is a foil; for
            # post/none it *is* conv, so listing it would only add noise)
            cell = [
                b for b in rows
                if b["norm"] == norm and b["mode"] == mode and b["dtype"] == "float32"
                and tuple(b["shape"]) == s1 and b["impl"] in REGISTRY
                and len(REGISTRY[b["impl"]].exact_for) == len(NORMS)
            ]  # fmt: skip
            base = next((b for b in cell if b["impl"] == "slice"), None)
            if not cell or base is None:
                continue
            best = min(cell, key=lambda b: b["median"])
            frac = best.get("roofline_fraction")
            parts.append(
                f"`{norm}`: **{best['impl']}** {best['median'] * 1e3:.2f} ms, "
                f"{base['median'] / best['median']:.2f}x `slice` ({base['median'] * 1e3:.2f} ms)"
                + (f", {frac:.0%} of roofline" if frac is not None else "")
            )
        if parts:
            shape = ",".join(map(str, s1))
            r.headline.append(
                f"- **Fastest exact impl, float32 {mode}, shape ({shape}):** "
                + "; ".join(parts)
                + "."
            )


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
    verdicts = []
    for d in duels(rows):
        if d["dtype"] != "float32" or d["mode"] != "fwd":
            continue
        frac = d["best"].get("roofline_fraction")
        peer = d["peer"]
        if peer is None:
            versus = ""
        elif d["best"]["median"] <= peer["median"]:
            versus = f"; the best peer `{peer['impl']}` takes {peer['median'] / d['best']['median']:.2f}x its time"
        else:
            versus = f"; **slower** than the best peer `{peer['impl']}` ({d['best']['median'] / peer['median']:.2f}x the peer's time)"
        verdicts.append(
            f"- `{d['norm']}`: best exact `{d['best']['impl']}`"
            + (f" at {frac:.0%} of the roofline" if frac is not None else "")
            + versus
            + "."
        )
    if verdicts:
        body.append("**float32 forward:**\n\n" + "\n".join(verdicts))
    body += [
        "**The peers.** Compile time is the first call less a warm call, with dynamo reset "
        "and inductor's FX graph cache off; inductor's on-disk cache of built C++ kernels is "
        "kept, so a machine's first-ever compile of a graph takes longer (15 s for the slice "
        "form's pre-norm forward here). Each forward peer is checked once "
        "against the float64 oracle on the benchmark's inputs (error / bound <= 1 is within "
        "`error_bounds`); the property suite does not run them. Their bytes are not counted: "
        "inductor's generated C++ kernels run outside the aten dispatcher that pm-core's "
        "traffic count hooks, and `torch._inductor.metrics.num_bytes_accessed` counts Triton "
        "kernels only (0 on a CPU).",
        peer_table(rows) if any(b["peer"] for b in rows) else "(no peers ran)",
        '**`impl="auto"` against the fastest exact impl**, timed interleaved after the '
        "benchmarks (15 rounds each, medians, the same inputs), `auto` reading its choice "
        "from the cache file the tune step wrote. Separate benchmark cases move by more than "
        "10% between neighbours on a shared machine, so the comparison is made here:",
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
            "recompiles whatever the backend, and inductor's code generation for a whole "
            "Swin takes over 10 minutes on this 2-core CPU) at "
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
        "| library | model | dtype | original (ms) | merges swapped to `conv` (ms) | original / swapped |",
        "|---|---|---|---:|---:|---:|",
    ]
    ratios = []
    for (lib, model, impl, dtype), t in med.items():
        if impl != "original" or (lib, model, "conv", dtype) not in med:
            continue
        swapped = med[lib, model, "conv", dtype]
        ratios.append(t / swapped)
        lines.append(
            f"| {lib} | {model} | {dtype} | {t * 1e3:.0f} | {swapped * 1e3:.0f} | {t / swapped:.2f} |"
        )
    if ratios:
        r.headline.append(
            f"- **Whole models** ({len(ratios)} model x dtype pairs, `swap_patch_merging(model, "
            f"'conv')`): original / swapped forward time {min(ratios):.2f} to {max(ratios):.2f}; "
            "patch merging is a few percent of a Swin's forward, so the layer's speedup barely shows."
        )
    batch = 1 if r.quick else 8
    r.add(
        "Whole models: original vs swapped",
        f"Forward at batch {batch}, native resolution, eval mode, random weights; medians of "
        f"{'three' if r.quick else 'five'} warm rounds of `{MODEL_BENCH}` (raw JSON: "
        "[models.json](models.json)); the ratios move by a few percent between runs, so "
        "read 0.97 to 1.03 as no difference.",
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


#: Where the browser test (tests/test_browser.py) leaves its screenshots, in the report folder.
SCREENSHOTS = "browser"


def section_screenshots(r: Report, _tick: Tick) -> None:
    shots = sorted((r.out / SCREENSHOTS).glob("*.png"))
    if not shots:
        r.add(
            "The profiler UI in a browser",
            "No screenshots yet: `tests/test_browser.py` takes them when Chromium is installed "
            "(`apt-get install chromium`, then `python -m nox -s tests -- tests/test_browser.py`).",
        )
        return
    taken = datetime.fromtimestamp(max(p.stat().st_mtime for p in shots)).strftime("%Y-%m-%d %H:%M")
    r.add(
        "The profiler UI in a browser",
        f"Taken by `tests/test_browser.py` (headless Chromium, no network; last at {taken}) on "
        "its own small runs. `tensorboard-offline`: what a user sees with no internet, the "
        "pickers and a spinner. `tensorboard-operator-*` and `tensorboard-trace-*`: the same "
        "page with Google Charts and the web-components polyfill stood in (charts blank, "
        "tables and the trace timeline drawn). `speedscope-*`: the offline viewer.",
        "\n".join(f"- [{p.stem}]({SCREENSHOTS}/{p.name})" for p in shots),
    )


def section_plots(r: Report, _tick: Tick) -> None:
    from . import plots  # matplotlib: loaded by the one step that draws

    if r.bench is not None:
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


#: The report, in order. A step reads only what the steps before it set on the Report.
STEPS: tuple[Step, ...] = (
    Step("environment", section_environment),
    Step("verify", section_verify),
    Step("mutation score", section_mutation),
    Step("channel norm", section_channel_norm),
    Step("traffic", section_traffic),
    Step("gpu model", section_gpu_model),
    Step("auto tune", section_tune),
    Step("benchmarks", section_bench),
    Step("compile peers", section_peers),
    Step("whole models", section_models),
    Step("family", section_family),
    Step("profiles", section_profiles),
    Step("screenshots", section_screenshots),
    Step("plots", section_plots),
)


def build_report(out: Path, *, quick: bool = False, update_readme_file: bool = False) -> bool:
    """Build the report into ``out``; returns False when an expected equivalence failed."""
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if (out / SCREENSHOTS).is_dir():  # the browser test's, not the report's: keep them
        shutil.copytree(out / SCREENSHOTS, tmp / SCREENSHOTS)
    r = Report(tmp, quick)
    progress = Progress("report", total=len(STEPS))
    try:
        for step in STEPS:
            progress.step(step.name)
            start = time.perf_counter()
            try:
                step.run(r, progress.tick)
            finally:
                r.timings[step.name] = time.perf_counter() - start
    finally:
        progress.close()
    total = sum(r.timings.values())
    body = [
        "# pm-core report",
        "Are Swin's PatchMerging implementations and the Conv2d(k=2, s=2) form the same function, "
        "which is fastest on this machine, and where do the bytes go? Regenerate with "
        f"`pm-core report{' --quick' if quick else ''}` (or `nox -s report`).",
        "## Headline\n\n" + "\n".join(r.headline),
        *r.sections,
        "## How long each step took\n\n"
        + "\n".join(f"- {k}: {v:.0f} s" for k, v in r.timings.items())
        + f"\n- total: {total:.0f} s",
    ]
    (tmp / "report.md").write_text("\n\n".join(body) + "\n")
    (tmp / "headline.md").write_text(
        f"## pm-core report\n\nMeasured on {machine_summary()}:\n\n" + "\n".join(r.headline) + "\n"
    )
    (tmp / "summary.json").write_text(
        json.dumps({"headline": r.headline, "ok": r.ok, "timings": r.timings}, indent=2)
    )
    _swap_in(tmp, out)
    if update_readme_file:
        update_readme(
            f"Measured on {machine_summary()} by `pm-core report`:\n\n" + "\n".join(r.headline)
        )
    print(f"wrote {out / 'report.md'} ({total:.0f} s){'' if r.ok else ' -- with FAILURES'}")
    return r.ok


def _bench_shown(quick: bool) -> str:
    """The layer benchmark command the report ran, as a reader would type it (from pytest on)."""
    cmd = bench_command(LAYER_BENCH, Path("bench.json"), quick=quick)
    return " ".join(cmd[2:])


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_summary() -> str:
    """One line naming the hardware the figures came from."""
    cpu = f"{_cpu_name()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}"
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}); host {cpu}"
    return f"CPU only: {cpu}"


def _swap_in(tmp: Path, out: Path) -> None:
    old = out.with_name(out.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)


def update_readme(findings: str, readme: Path = Path("README.md")) -> bool:
    """Replace the block between the findings markers in README.md; False if there is none."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{findings.strip()}\n{README_END}{tail}")
    return True


__all__ = ["STEPS", "Report", "Step", "build_report", "machine_summary", "update_readme"]
