"""pytest-benchmark matrix: impl x norm x dtype x {fwd, fwd+bwd} x real Swin stage shapes.

Ids start with the impl name and results are grouped by shape, so
``--benchmark-group-by=group`` prints one table per shape with every impl side by side.
``extra_info`` records the bytes moved (:func:`pm_core.lab.traffic.measure_traffic`, counted on the
benchmark device), achieved GB/s and GFLOP/s, the traffic ratio to
:func:`pm_core.lab.traffic.minimum_traffic`, and the roofline fraction (:mod:`pm_core.lab.roofline`).
On CUDA each round is timed with CUDA events after an L2 flush.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from pm_core import (
    NORMS,
    REGISTRY,
    Norm,
    error_bounds,
    gemm_precision,
    patch_merge,
    reference_patch_merge,
)
from pm_core.auto import choose
from pm_core.lab.peers import PEER_FORMS, compile_peer, peer_of
from pm_core.lab.profiling import case_inputs
from pm_core.lab.roofline import Roofline, merge_flops, roofline_fraction
from pm_core.lab.shapes import SWIN_T_STAGES
from pm_core.lab.traffic import measure_traffic, minimum_traffic

from .conftest import bench_device

#: ``impl="auto"``: a row of its own, timed like an impl (its choice comes from the cache
#: ``pm-core tune`` or an earlier run filled, or is measured in the warm-up call).
AUTO = "auto"


def base_impl(impl: str) -> str:
    """The registered impl a row runs: a peer's form; ``auto`` stays ``auto``."""
    peer = peer_of(impl)
    return impl if peer is None else peer[1]


def _peers(*modes: str) -> list[str]:
    return [f"{m}:{f}" for m in modes for f in PEER_FORMS]


def inductor_skip_reason(device: torch.device) -> str | None:
    """Why the compile peers cannot run here, or None: inductor's CPU backend compiles C++."""
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler for inductor's CPU backend (install g++: apt install g++)"
    return None


# Swin stage inputs to the merges: C per model; resolutions 56/28/14 at 224, 96/48/24 at 384
MODELS = {"swin_t": 96, "swin_s": 96, "swin_b": 128, "swin_l": 192}
RESOLUTIONS = {224: (56, 28, 14), 384: (96, 48, 24)}


@dataclass(frozen=True)
class Shape:
    name: str
    b: int
    h: int
    w: int
    c: int

    @property
    def label(self) -> str:
        return f"{self.name} {self.b}x{self.h}x{self.w}x{self.c}"


@dataclass(frozen=True)
class Case:
    impl: str
    norm: Norm
    dtype: torch.dtype
    backward: bool
    shape: Shape

    @property
    def id(self) -> str:
        dt = str(self.dtype).removeprefix("torch.")
        mode = "fwdbwd" if self.backward else "fwd"
        return f"{self.impl}-{self.norm}-{dt}-{mode}-{self.shape.name}"


def stage_shapes(batch_224: int, batch_384: int) -> list[Shape]:
    """Every distinct merge input of Swin-T/S/B/L at 224 and 384 (T and S share shapes)."""
    shapes: dict[tuple[int, int, int, int], Shape] = {}
    for model, c0 in MODELS.items():
        for res, sides in RESOLUTIONS.items():
            b = batch_224 if res == 224 else batch_384
            for stage, side in enumerate(sides, start=1):
                key = (b, side, side, c0 * 2 ** (stage - 1))
                name = f"{model}_{res}_s{stage}"
                if key in shapes:  # swin_s repeats swin_t's shapes
                    old = shapes[key]
                    shapes[key] = Shape(old.name.replace("swin_t", "swin_ts"), *key)
                else:
                    shapes[key] = Shape(name, *key)
    return list(shapes.values())


def build_cases(config: pytest.Config) -> list[Case]:
    device = bench_device(config)
    cuda = device.type == "cuda"
    impls = tuple(REGISTRY)
    norms = NORMS
    if config.getoption("--quick"):
        shapes = [Shape("swin_t_224_s1_b2", 2, 56, 56, 96), Shape("odd", 1, 15, 9, 32)]
        quick_norms: tuple[Norm, ...] = ("pre", "none")
        return [
            Case(i, n, torch.float32, bwd, s)
            for s in shapes
            for i in (*impls, AUTO)
            for n in quick_norms
            for bwd in (False, True)
        ] + [Case("inductor:conv", "none", torch.float32, False, shapes[1])]
    dtypes = [torch.float32, torch.bfloat16] + ([torch.float16] if cuda else [])
    if config.getoption("--report"):
        shapes = [Shape(f"swin_t_224_s{k}", *s) for k, s in enumerate(SWIN_T_STAGES, 1)]
        dtypes = [torch.float32, torch.bfloat16]
    else:
        shapes = stage_shapes(64, 32) if cuda else stage_shapes(8, 4)
        shapes.append(Shape("odd", 8 if not cuda else 64, 55, 37, 96))
    cases = [
        Case(i, n, dt, bwd, s)
        for s in shapes
        for dt in dtypes
        for bwd in (False, True)
        for n in norms
        for i in (*impls, AUTO)
    ]
    # the peers on the first shape (Swin-T stage 1): inductor in float32 and bfloat16,
    # forward and forward+backward; max-autotune (minutes of compiling) float32 forward
    first = shapes[0]
    for dt in dtypes:
        for bwd in (False, True):
            modes = (
                ("inductor", "inductor-max-autotune")
                if (dt, bwd) == (torch.float32, False)
                else ("inductor",)
            )
            if dt != torch.float32 and bwd:
                continue
            cases += [Case(p, n, dt, bwd, first) for n in norms for p in _peers(*modes)]
    return cases


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        cases = build_cases(metafunc.config)
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


def _inputs(
    case: Case, device: torch.device | str, requires_grad: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    args = case_inputs(
        (case.shape.b, case.shape.h, case.shape.w, case.shape.c),
        case.norm,
        case.dtype,
        device,
    )
    if requires_grad:
        for t in args:
            if t is not None:
                t.requires_grad_()
    return args


@functools.cache
def _traffic(case: Case, device: torch.device) -> tuple[int | None, int, int]:
    """(bytes this impl moves, the analytic minimum, the GEMM FLOPs), counted on ``device``
    (kernels' output layouts, and so later copies, can differ on meta). A compile peer's
    bytes are None: inductor's generated C++ kernels run outside the aten dispatcher the
    count hooks (only its extern GEMM calls pass through it), and
    ``torch._inductor.metrics.num_bytes_accessed`` counts only Triton kernels (0 on CPU)."""
    args = _inputs(case, device, False)
    minimum = minimum_traffic(*args, norm=case.norm, backward=case.backward)
    s = case.shape
    flops = merge_flops(s.b, s.h, s.w, s.c, 2 * s.c, backward=case.backward)
    if peer_of(case.impl) is not None:
        return None, minimum, flops
    t = measure_traffic(patch_merge, *args, norm=case.norm, impl=case.impl, backward=case.backward)
    return t.total, minimum, flops


def _resolved(case: Case, device: torch.device) -> str:
    """The registered impl a row runs: ``auto``'s choice for the case, a peer's form."""
    if case.impl != AUTO:
        return base_impl(case.impl)
    x, w, nw, nb = _inputs(case, device, case.backward)
    with torch.set_grad_enabled(case.backward):
        return choose(x, w, nw, nb, case.norm, 1e-5)


class _L2Flush:
    """Overwrites a buffer larger than the GPU's L2 before each timed round."""

    def __init__(self, device: torch.device) -> None:
        props = torch.cuda.get_device_properties(device)
        size = max(2 * getattr(props, "L2_cache_size", 0), 256 << 20)
        self.buf = torch.empty(size // 4, dtype=torch.int32, device=device)

    def __call__(self) -> None:
        self.buf.zero_()


#: Each peer case's compiled function, for its one check against the oracle.
_COMPILED: dict[Case, Callable[..., torch.Tensor]] = {}


def _compiled(case: Case) -> Callable[..., torch.Tensor]:
    torch._dynamo.reset()  # a cold compile: no earlier peer's graphs to reuse,
    torch._inductor.config.fx_graph_cache = False  # nor an earlier run's on disk
    return compile_peer(case.impl, case.norm)


def _runner(case: Case, device: torch.device) -> Callable[[], object]:
    args = _inputs(case, device, case.backward)
    impl = case.impl
    if peer_of(impl) is not None:
        compiled = _COMPILED[case] = _compiled(case)

        def merge() -> torch.Tensor:
            return compiled(*args)

    else:

        def merge() -> torch.Tensor:
            return patch_merge(*args, norm=case.norm, impl=impl)

    if not case.backward:

        def fwd() -> object:
            with torch.no_grad():
                return merge()

        return fwd
    grad = torch.ones_like(merge())
    params = [t for t in args if t is not None]

    def fwd_bwd() -> object:
        for p in params:
            p.grad = None
        y = merge()
        torch.autograd.backward(y, grad)
        return y

    return fwd_bwd


def test_patch_merge(
    benchmark: Any,
    request: pytest.FixtureRequest,
    case: Case,
    device: torch.device,
    roofline: Roofline | None,
) -> None:
    """Time one impl x norm x dtype x mode x shape; record traffic and roofline figures."""
    if case.dtype == torch.float16 and device.type == "cpu":
        pytest.skip("float16 is benchmarked on GPU only")
    peer = peer_of(case.impl) is not None
    if peer and (reason := inductor_skip_reason(device)) is not None:
        pytest.skip(reason)
    t_build = time.perf_counter()
    fn = _runner(case, device)
    if peer:  # the first call compiles; the compile time is that call less a warm call
        fn()
        first = time.perf_counter() - t_build
    benchmark.group = case.shape.label
    cuda = device.type == "cuda"
    event_times: list[float] = []
    if cuda:
        flush = _L2Flush(device)
        torch.cuda.reset_peak_memory_stats(device)

        def timed() -> None:
            # torch leaves cuda.Event's constructor unannotated
            start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            start.record()
            fn()
            end.record()
            end.synchronize()
            event_times.append(start.elapsed_time(end) / 1e3)

        setup: Callable[[], None] | None = flush
        target: Callable[[], object] = timed
    else:
        setup = None
        target = fn
    # one warm-up call sizes the number of rounds to the time budget
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    cfg = request.config
    quick = cfg.getoption("--quick") or cfg.getoption("benchmark_disable")
    budget = 0.05 if quick else 0.25 if cfg.getoption("--report") else 0.5
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    once = max(time.perf_counter() - t0, 1e-6)
    rounds = int(min(max(budget / once, 3), 200))
    benchmark.pedantic(target, setup=setup, rounds=rounds, warmup_rounds=1, iterations=1)

    nbytes, minimum, flops = _traffic(case, device)
    runs = _resolved(case, device)
    info = benchmark.extra_info
    info.update(
        impl=case.impl,
        norm=case.norm,
        dtype=str(case.dtype).removeprefix("torch."),
        mode="fwd+bwd" if case.backward else "fwd",
        shape=[case.shape.b, case.shape.h, case.shape.w, case.shape.c],
        exact=case.norm in REGISTRY[runs].exact_for,
        runs=runs,
        min_bytes=minimum,
        flops=flops,
        device=str(device),
        gemm_precision=gemm_precision(runs, device, case.dtype),
    )
    if nbytes is not None:
        info.update(bytes=nbytes, traffic_ratio=nbytes / minimum)
    if peer:
        info.update(compile_s=max(first - once, 0.0), peer=True)
        if not case.backward:  # the same forward graph serves fwd+bwd
            info["error_bound_ratio"] = _peer_error_ratio(case, device)
    stats = getattr(benchmark, "stats", None)
    if stats is None or roofline is None:
        return
    median = sorted(event_times)[len(event_times) // 2] if event_times else stats.stats.median
    roof = roofline.time(minimum, flops, case.dtype)
    info.update(
        median_s=median,
        gflops=flops / median / 1e9,
        **({} if nbytes is None else {"gbps": nbytes / median / 1e9}),
        roofline_s=roof,
        roofline_fraction=roofline_fraction(median, roof),
    )
    if nbytes is not None:
        info["roofline_fraction_own_bytes"] = roofline_fraction(
            median, roofline.time(nbytes, flops, case.dtype)
        )
    if cuda:
        info["max_memory_allocated"] = torch.cuda.max_memory_allocated(device)


def _peer_error_ratio(case: Case, device: torch.device) -> float:
    """max |compiled - oracle| / bound on the benchmark's inputs: the property suite does
    not run the peers, so each is checked here against the float64 oracle once."""
    x, w, nw, nb = _inputs(case, device, False)
    with torch.no_grad():
        y = _COMPILED.pop(case)(x, w, nw, nb)
    ref = reference_patch_merge(x, w, nw, nb, norm=case.norm)
    bound = error_bounds(x, w, nw, nb, norm=case.norm).output
    return float(((y.double() - ref).abs() / bound).max())
