"""Run the benchmark modules of the checkout and read their results as typed rows.

The benchmarks (``benchmarks/``) record what they measured in pytest-benchmark's
``extra_info``; :func:`run_layer_bench` and :func:`run_model_bench` run one module through
:func:`pm_core.lab.checkout.benchmark_command` and return one typed row per case, with the
median time added.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from .checkout import LAYER_BENCH, MODEL_BENCH, benchmark_command, stream


class _LayerTimingRequired(TypedDict):
    impl: str  # a registered impl, "auto", or a compile peer "<peer>:<form>"
    runs: str  # the registered impl it runs: auto's choice, a peer's form
    norm: str
    dtype: str
    mode: str  # "fwd" or "fwd+bwd"
    shape: list[int]  # (B, H, W, C)
    exact: bool  # what it runs is exact for this norm (otherwise a different function)
    min_bytes: int  # the analytic minimum
    device: str
    gemm_precision: str
    median: float  # seconds
    peer: bool  # a torch.compile peer, not a pm-core impl


class LayerTiming(_LayerTimingRequired, total=False):
    """One case of ``benchmarks/test_patch_merge_bench.py``."""

    bytes: int  # bytes moved, counted at the aten dispatcher; absent for compile peers
    roofline_fraction: float  # roofline time / median; absent when timing was off
    max_memory_allocated: int  # CUDA only
    compile_s: float  # compile peers: the first call's time less a warm call's
    error_bound_ratio: float  # compile peers, forward: max |compiled - oracle| / bound


class ModelTiming(TypedDict):
    """One case of ``benchmarks/test_models_bench.py``: a whole model's forward."""

    library: str
    model: str
    impl: str  # "original", or the impl its merges were swapped to
    dtype: str
    median: float  # seconds


def command(module: str, json_path: Path, *, quick: bool) -> list[str]:
    """The command :func:`run_layer_bench` / :func:`run_model_bench` run for ``module``:
    its report subset (``--quick``: its smoke subset), results as JSON in ``json_path``."""
    subset = "--quick" if quick else "--report"
    return benchmark_command(module, subset=subset, json_path=json_path, verbose=True)


def _run(
    module: str, json_path: Path, quick: bool, tick: Callable[[str], None]
) -> list[dict[str, Any]]:
    # absolute: the benchmarks run in the checkout, which need not be the working directory
    json_path = json_path.resolve()
    done = stream(
        command(module, json_path, quick=quick),
        on_line=lambda line: tick(line) if "::" in line else None,
    )
    if done.returncode != 0 or not json_path.is_file():
        raise RuntimeError(f"benchmark run {module} failed:\n" + "\n".join(done.tail[-40:]))
    data = json.loads(json_path.read_text())
    return [{**b["extra_info"], "median": b["stats"]["median"]} for b in data["benchmarks"]]


def run_layer_bench(
    json_path: Path, *, quick: bool, tick: Callable[[str], None] = lambda _line: None
) -> list[LayerTiming]:
    """The layer matrix's report subset (``--quick``: the smoke subset); JSON to ``json_path``."""
    rows = _run(LAYER_BENCH, json_path, quick, tick)
    out: list[LayerTiming] = []
    for b in rows:
        row = LayerTiming(
            impl=str(b["impl"]),
            runs=str(b.get("runs", b["impl"])),
            norm=str(b["norm"]),
            dtype=str(b["dtype"]),
            mode=str(b["mode"]),
            shape=[int(s) for s in b["shape"]],
            exact=bool(b["exact"]),
            min_bytes=int(b["min_bytes"]),
            device=str(b["device"]),
            gemm_precision=str(b["gemm_precision"]),
            median=float(b["median"]),
            peer=bool(b.get("peer", False)),
        )
        if "bytes" in b:
            row["bytes"] = int(b["bytes"])
        for key in ("roofline_fraction", "compile_s", "error_bound_ratio"):
            if key in b:
                row[key] = float(b[key])
        if "max_memory_allocated" in b:
            row["max_memory_allocated"] = int(b["max_memory_allocated"])
        out.append(row)
    return out


def run_model_bench(
    json_path: Path, *, quick: bool, tick: Callable[[str], None] = lambda _line: None
) -> list[ModelTiming]:
    """Whole models before and after the swap (``--quick``: batch 1); JSON to ``json_path``."""
    return [
        ModelTiming(
            library=str(b["library"]),
            model=str(b["model"]),
            impl=str(b["impl"]),
            dtype=str(b["dtype"]),
            median=float(b["median"]),
        )
        for b in _run(MODEL_BENCH, json_path, quick, tick)
    ]


__all__ = ["LayerTiming", "ModelTiming", "command", "run_layer_bench", "run_model_bench"]
