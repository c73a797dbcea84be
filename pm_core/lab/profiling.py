"""torch.profiler traces for TensorBoard, one run per impl x norm x dtype x shape, and an offline summary.

:func:`run_profiles` writes ``<out_root>/<run>/*.pt.trace.json`` through
``tensorboard_trace_handler``: a schedule (wait/warmup/active), ``profile_memory``,
``record_shapes``, ``record_function`` labels per impl and phase, and CUDA activity when
a GPU is present. Run names read naturally in TensorBoard's run list:
``conv-pre-float32-8x56x56x96``. Only the :data:`ACTIVE` steps after the wait and warm-up
are recorded, so the trace's ``ProfilerStep#2`` and ``#3`` (:data:`MEASURED_STEPS`) are
measured steps, never the warm-up.

Python stacks are off by default: the range names ``patch_merge/<impl>/<norm>/forward``
and ``/backward`` already say what ran, while ``with_stack`` adds the report's, the CLI's
and pytest's frames above every op (and the Python tracer's own cost to each op's time).
Turn them on (``with_stack=True``, ``pm-core profile --with-stack``) to see which line of
*your* code launched an op.

The torch-tb-profiler page waits for Google Charts from the internet before it loads any
view, so offline it shows none (``profiles/README.md``). :func:`summarize_trace` reads
the same trace JSON and gives what its Overview, Operator and Memory views show: top ops
by self time, the memory curve and per-op allocations.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile, record_function, schedule

from pm_core import NORMS, REGISTRY, Norm, patch_merge

from .shapes import QUICK_SHAPE, SWIN_T_STAGE1

WAIT, WARMUP, ACTIVE = 1, 1, 2
#: The ``ProfilerStep#N`` names a trace holds: the active steps, after wait and warm-up.
MEASURED_STEPS = tuple(f"ProfilerStep#{i}" for i in range(WAIT + WARMUP, WAIT + WARMUP + ACTIVE))


@dataclass(frozen=True)
class ProfileConfig:
    impl: str
    norm: Norm
    dtype: torch.dtype
    shape: tuple[int, int, int, int]
    backward: bool = True
    with_stack: bool = False

    @property
    def run_name(self) -> str:
        dt = str(self.dtype).removeprefix("torch.")
        return f"{self.impl}-{self.norm}-{dt}-{'x'.join(map(str, self.shape))}"


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def case_inputs(
    shape: tuple[int, int, int, int], norm: Norm, dtype: torch.dtype, device: torch.device | str
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """``(x, weight, norm_weight, norm_bias)`` for one measured case, the same for the
    benchmarks and the profiles: x ~ N(0, 1), weight ~ N(0, 1/4C), LN affine at identity."""
    b, h, w, c = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, h, w, c, generator=gen).to(device, dtype)
    weight = (torch.randn(2 * c, 4 * c, generator=gen) / (4 * c) ** 0.5).to(device, dtype)
    n = 4 * c if norm == "pre" else 2 * c
    nw = None if norm == "none" else torch.ones(n, dtype=dtype, device=device)
    nb = None if norm == "none" else torch.zeros(n, dtype=dtype, device=device)
    return x, weight, nw, nb


def profiler_activities(device: torch.device) -> list[ProfilerActivity]:
    """What torch.profiler records on ``device``: CPU ops always, CUDA kernels on a GPU."""
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    return activities


def profile_one(cfg: ProfileConfig, run_dir: Path, device: torch.device | None = None) -> Path:
    """Profile ``cfg`` into ``run_dir`` (emptied first); returns the trace file written."""
    device = device or _device()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    x, weight, nw, nb = case_inputs(cfg.shape, cfg.norm, cfg.dtype, device)
    params = [t.requires_grad_(cfg.backward) for t in (x, weight, nw, nb) if t is not None]
    activities = profiler_activities(device)
    label = f"patch_merge/{cfg.impl}/{cfg.norm}"
    prof = profile(
        activities=activities,
        schedule=schedule(wait=WAIT, warmup=WARMUP, active=ACTIVE, repeat=1),
        on_trace_ready=torch.profiler.tensorboard_trace_handler(
            str(run_dir), worker_name=cfg.run_name
        ),
        profile_memory=True,
        record_shapes=True,
        with_stack=cfg.with_stack,
    )
    with prof:
        for _ in range(WAIT + WARMUP + ACTIVE):
            for p in params:
                p.grad = None
            with record_function(f"{label}/forward"):
                y = patch_merge(x, weight, nw, nb, norm=cfg.norm, impl=cfg.impl)
            if cfg.backward:
                with record_function(f"{label}/backward"):
                    y.backward(torch.ones_like(y))  # type: ignore[no-untyped-call]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            prof.step()
    traces = sorted(run_dir.glob("*.pt.trace.json"))
    if not traces:
        raise RuntimeError(f"torch.profiler wrote no trace into {run_dir}")
    return traces[-1]


def profile_configs(
    *,
    quick: bool = False,
    impls: Sequence[str] | None = None,
    norms: Sequence[Norm] | None = None,
    dtypes: Sequence[torch.dtype] | None = None,
    shapes: Sequence[tuple[int, int, int, int]] | None = None,
    with_stack: bool = False,
) -> list[ProfileConfig]:
    """The configurations :func:`run_profiles` covers (quick: float32, one small shape)."""
    impls = tuple(impls or REGISTRY)
    norms = tuple(norms or NORMS)
    if dtypes is None:
        dtypes = (torch.float32,) if quick else (torch.float32, torch.bfloat16)
    if shapes is None:
        shapes = (QUICK_SHAPE,) if quick else (SWIN_T_STAGE1,)
    return [
        ProfileConfig(i, n, dt, tuple(s), with_stack=with_stack)  # type: ignore[arg-type]
        for s in shapes
        for dt in dtypes
        for n in norms
        for i in impls
    ]


def run_profiles(
    out_root: Path | str,
    *,
    quick: bool = False,
    impls: Sequence[str] | None = None,
    norms: Sequence[Norm] | None = None,
    dtypes: Sequence[torch.dtype] | None = None,
    shapes: Sequence[tuple[int, int, int, int]] | None = None,
    with_stack: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write one TensorBoard run per impl x norm x dtype x shape under ``out_root``.

    Each run is ``out_root/<impl>-<norm>-<dtype>-<BxHxWxC>/`` holding one
    ``*.pt.trace.json`` (forward + backward, :data:`ACTIVE` profiled steps). Returns
    the run folders. ``progress`` is called with each run name when it is done;
    ``with_stack`` records Python stacks (see the module docstring for when that helps).
    """
    out_root = Path(out_root)
    device = _device()
    runs = []
    configs = profile_configs(
        quick=quick, impls=impls, norms=norms, dtypes=dtypes, shapes=shapes, with_stack=with_stack
    )
    for cfg in configs:
        run_dir = out_root / cfg.run_name
        profile_one(cfg, run_dir, device)
        runs.append(run_dir)
        if progress is not None:
            progress(cfg.run_name)
    return runs


# ---------------------------------------------------------------- offline summary


@dataclass(frozen=True)
class OpTime:
    name: str
    calls: int
    self_us: float
    total_us: float


@dataclass(frozen=True)
class OpAlloc:
    name: str
    allocations: int
    allocated_bytes: int


@dataclass(frozen=True)
class TraceSummary:
    """What TensorBoard's Overview, Operator and Memory views show, from the trace JSON.

    ``top_ops``: aten/user ops by self time (descending). ``memory_curve``:
    ``(time_us from trace start, total allocated bytes)`` after each allocation event,
    per device. ``allocations``: bytes allocated inside each op (innermost op
    enclosing the allocation), descending. ``peak_bytes``: per device. ``steps``: the
    ``ProfilerStep#N`` names in time order (:data:`MEASURED_STEPS` for our runs).
    """

    path: Path
    step_us: float
    top_ops: tuple[OpTime, ...]
    memory_curve: dict[str, tuple[tuple[float, int], ...]]
    allocations: tuple[OpAlloc, ...]
    peak_bytes: dict[str, int]
    labels: dict[str, float]
    steps: tuple[str, ...]


def trace_file(path: Path) -> Path:
    """``path`` itself, or the latest ``*.pt.trace.json`` in the run folder ``path``."""
    if path.is_dir():
        traces = sorted(path.glob("*.pt.trace.json"))
        if not traces:
            raise FileNotFoundError(f"no *.pt.trace.json under {path}")
        return traces[-1]
    return path


def trace_events(path: Path) -> list[dict[str, Any]]:
    """The events of a Chrome trace file: its ``traceEvents``, or the bare array form."""
    data = json.loads(path.read_text())
    events: list[dict[str, Any]] = data if isinstance(data, list) else data.get("traceEvents", [])
    return events


def summarize_trace(path: Path | str, *, top: int = 15) -> TraceSummary:
    """Summarise one trace file (or a run folder's latest trace) without TensorBoard."""
    path = trace_file(Path(path))
    events = trace_events(path)
    ops = [e for e in events if e.get("ph") == "X" and e.get("cat") == "cpu_op"]
    labels = {
        e["name"]: float(e["dur"])
        for e in events
        if e.get("ph") == "X" and e.get("cat") == "user_annotation"
    }
    step_events = sorted(
        (e for e in events if str(e.get("name", "")).startswith("ProfilerStep#")),
        key=lambda e: float(e["ts"]),
    )
    step_us = sum(float(e["dur"]) for e in step_events) / max(len(step_events), 1)
    # self time: subtract the time of directly nested ops on the same thread
    by_tid: dict[Any, list[dict[str, Any]]] = {}
    for e in ops:
        by_tid.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    self_us: dict[int, float] = {}
    for evs in by_tid.values():
        evs.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack: list[dict[str, Any]] = []
        for e in evs:
            ts = float(e["ts"])
            while stack and float(stack[-1]["ts"]) + float(stack[-1]["dur"]) <= ts:
                stack.pop()
            self_us[id(e)] = float(e["dur"])
            if stack:
                self_us[id(stack[-1])] -= float(e["dur"])
            stack.append(e)
    agg: dict[str, list[float]] = {}
    for e in ops:
        row = agg.setdefault(e["name"], [0, 0.0, 0.0])
        row[0] += 1
        row[1] += max(self_us[id(e)], 0.0)
        row[2] += float(e["dur"])
    top_ops = sorted(
        (OpTime(n, int(r[0]), r[1], r[2]) for n, r in agg.items()), key=lambda o: -o.self_us
    )[:top]
    # memory: instant events named [memory]
    mem = sorted(
        (e for e in events if e.get("name") == "[memory]" and e.get("ph") == "i"),
        key=lambda e: float(e["ts"]),
    )
    t0 = min((float(e["ts"]) for e in events if "ts" in e), default=0.0)
    curve: dict[str, list[tuple[float, int]]] = {}
    peak: dict[str, int] = {}
    alloc: dict[str, list[int]] = {}
    for m in mem:
        args = m.get("args", {})
        dev = "cuda" if int(args.get("Device Type", 0)) == 1 else "cpu"
        total = int(args.get("Total Allocated", 0))
        curve.setdefault(dev, []).append((float(m["ts"]) - t0, total))
        peak[dev] = max(peak.get(dev, 0), total)
        nbytes = int(args.get("Bytes", 0))
        if nbytes > 0:
            owner = _innermost(by_tid.get((m.get("pid"), m.get("tid")), []), float(m["ts"]))
            row2 = alloc.setdefault(owner, [0, 0])
            row2[0] += 1
            row2[1] += nbytes
    allocations = sorted(
        (OpAlloc(n, r[0], r[1]) for n, r in alloc.items()), key=lambda a: -a.allocated_bytes
    )
    return TraceSummary(
        path=path,
        step_us=step_us,
        top_ops=tuple(top_ops),
        memory_curve={d: tuple(c) for d, c in curve.items()},
        allocations=tuple(allocations),
        peak_bytes=peak,
        labels=labels,
        steps=tuple(str(e["name"]) for e in step_events),
    )


def _innermost(evs: Iterable[dict[str, Any]], ts: float) -> str:
    best: dict[str, Any] | None = None
    for e in evs:
        start = float(e["ts"])
        if start <= ts <= start + float(e["dur"]) and (
            best is None or float(e["dur"]) <= float(best["dur"])
        ):
            best = e
    return "(outside any op)" if best is None else str(best["name"])


def format_summary(s: TraceSummary, *, top: int = 10) -> str:
    """A plain-text rendering of a :class:`TraceSummary` (markdown tables)."""
    lines = [
        f"trace {s.path.name}: {s.step_us / 1e3:.2f} ms per profiled step",
        "",
        "| op | calls | self ms | total ms |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {o.name} | {o.calls} | {o.self_us / 1e3:.3f} | {o.total_us / 1e3:.3f} |"
        for o in s.top_ops[:top]
    ]
    lines += ["", "| op (allocations) | count | MB allocated |", "|---|---:|---:|"]
    lines += [
        f"| {a.name} | {a.allocations} | {a.allocated_bytes / 1e6:.2f} |"
        for a in s.allocations[:top]
    ]
    peaks = ", ".join(f"{d}: {b / 1e6:.1f} MB" for d, b in s.peak_bytes.items())
    lines += ["", f"peak allocated: {peaks or 'n/a'}"]
    return "\n".join(lines)


__all__ = [
    "ACTIVE",
    "MEASURED_STEPS",
    "OpAlloc",
    "OpTime",
    "ProfileConfig",
    "TraceSummary",
    "case_inputs",
    "format_summary",
    "profile_configs",
    "profile_one",
    "profiler_activities",
    "run_profiles",
    "summarize_trace",
    "trace_events",
    "trace_file",
]
