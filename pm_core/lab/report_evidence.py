"""The report's evidence sections: the machine, equivalence against the float64 oracle,
the mutation score, the naive conv's mismatch, memory traffic and the GPU model."""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pm_core import NORMS, Norm, patch_merge, reference_patch_merge

from . import gpu_model as gm
from .checkout import CheckoutNotFound, checkout_root
from .mutation import MIN_SCORE, SUMMARY_FILE, load_summary, score_table
from .report_base import Report, Tick
from .shapes import QUICK_SHAPE, SWIN_T_STAGE1
from .traffic_table import render_traffic, traffic_rows
from .verify import format_table, run_verify


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
        else "- **Equivalence:** no records (is tests/conftest.py installing the recorder?)"
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


@dataclass(frozen=True)
class ChannelNormRow:
    """Relative errors against the float64 oracle of the pre-norm layer, on one input."""

    label: str
    naive: float  # conv_channel_norm: LN over C per pixel, then the conv
    folded: float  # conv: the window LN folded into the conv


def channel_norm_rows(shape: tuple[int, int, int, int] = SWIN_T_STAGE1) -> list[ChannelNormRow]:
    """How far the naive 'LN over C, then conv' and the folded conv are from the real
    pre-norm layer, on N(0, 1) input and with per-pixel offsets (seeded)."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for label, offset in (("N(0, 1) activations", 0.0), ("per-pixel offsets N(0, 3)", 3.0)):
        b, h, w, c = shape
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
        rows.append(ChannelNormRow(f"{label}, {shape} fp32", errs[0], errs[1]))
    return rows


def section_channel_norm(r: Report, _tick: Tick) -> None:
    """How far the naive 'LN over C, then conv' is from the real pre-norm layer."""
    rows = channel_norm_rows()
    lines = [
        "| input | relative error of `conv_channel_norm` | relative error of `conv` |",
        "|---|---:|---:|",
        *(f"| {row.label} | {row.naive:.3g} | {row.folded:.2g} |" for row in rows),
    ]
    r.headline.append(
        f"- **The naive conv is a different function:** `conv_channel_norm` (LN over C per pixel, "
        f"then the conv) is off by {rows[0].naive:.2f} (relative) on N(0, 1) input and "
        f"{rows[1].naive:.2f} with per-pixel offsets; the folded `conv` by {rows[1].folded:.1g}."
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
    rows = traffic_rows(shape, backward=False)
    both = traffic_rows(shape, backward=True)
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
        render_traffic(rows, shape, backward=False),
        render_traffic(both, shape, backward=True),
        "![bytes per op](traffic.png)",
    )


Key = tuple[str, str, str, str, str]  # gpu, impl, norm, dtype, mode


def _gpu_cell(preds: dict[Key, float], gpu: str, dtype: str, mode: str) -> str:
    parts = []
    for norm in NORMS:
        conv = preds.get((gpu, "conv", norm, dtype, mode))
        sl = preds.get((gpu, "slice", norm, dtype, mode))
        parts.append("-" if conv is None or sl is None else f"{sl / conv:.2f}")
    return " / ".join(parts)


@dataclass(frozen=True)
class Favoured:
    """The impl a GPU would favour per norm (pre / post / none) for one dtype and mode."""

    gpu: str
    dtype: str
    mode: str
    best: list[str]
    times: list[float]  # seconds, each best's
    fused: list[float]  # seconds, the fused single-pass minimum
    kernels: list[int]


@dataclass(frozen=True)
class GpuAnswer:
    """The GPU model's predictions at one shape: what the report's GPU section renders."""

    shape: tuple[int, int, int, int]
    times: dict[Key, float]
    ieee: dict[tuple[str, Norm], float]  # (gpu, norm): the conv's time with every GEMM at IEEE
    precision: dict[tuple[str, str], str]  # (impl, dtype): its GEMM precision
    favoured: list[Favoured]


def gpu_answer(shape: tuple[int, int, int, int] = gm.GPU_STAGES[0]) -> GpuAnswer:
    """Predict every impl on every modelled GPU at ``shape`` (a model, not a measurement)."""
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
    exact = sorted({p.impl for p in preds})
    favoured = []
    for g in gm.GPUS:
        for dtype in ("float32", "bfloat16"):
            for mode in ("fwd", "fwd+bwd"):
                best = [
                    min(exact, key=lambda i, n=n: t[g.name, i, n, dtype, mode])  # type: ignore[misc]
                    for n in NORMS
                ]
                fused = [
                    gm.fused_minimum(
                        n, getattr(torch, dtype), shape, mode == "fwd+bwd", g,
                        prec["conv", dtype],
                    )
                    for n in NORMS
                ]  # fmt: skip
                pairs = list(zip(best, NORMS, strict=True))
                favoured.append(
                    Favoured(
                        g.name, dtype, mode, best,
                        [t[g.name, b, n, dtype, mode] for b, n in pairs], fused,
                        [launches[b, n, dtype, mode] for b, n in pairs],
                    )
                )  # fmt: skip
    return GpuAnswer(shape, t, ieee, prec, favoured)


def section_gpu_model(r: Report, _tick: Tick) -> None:
    """The GPU answer as a roofline model from byte and FLOP counts: not a measurement."""
    ans = gpu_answer()
    shape, t, ieee, prec = ans.shape, ans.times, ans.ieee, ans.precision
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
    favour += [
        f"| {f.gpu} | {f.dtype}, {f.mode} | {' / '.join(f.best)} | "
        + " / ".join(f"{x * 1e6:.0f}" for x in f.times)
        + " | "
        + " / ".join(f"{x * 1e6:.0f}" for x in f.fused)
        + " | "
        + " / ".join(f"{n} ({n * gm.LAUNCH_S * 1e6:.1f})" for n in f.kernels)
        + " |"
        for f in ans.favoured
    ]
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


def machine_identity() -> dict[str, object]:
    """The machine and versions, as ``summary.json`` records them (``--merge`` labels its
    columns with ``label``)."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    cpu = _cpu_name()
    return {
        "label": gpu or f"{cpu} ({os.cpu_count()} cores)",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "summary": machine_summary(),
    }


def machine_summary() -> str:
    """One line naming the hardware and the versions the figures came from."""
    cpu = f"{_cpu_name()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}"
    versions = f"torch {torch.__version__}, Python {platform.python_version()}"
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}); host {cpu}; {versions}"
    return f"CPU only: {cpu}; {versions}"


__all__ = [
    "machine_identity",
    "machine_summary",
    "section_channel_norm",
    "section_environment",
    "section_gpu_model",
    "section_mutation",
    "section_traffic",
    "section_verify",
]
