"""The compile peers, ``impl="auto"``'s choices, and a compiled Swin fed several sizes.

* :func:`run_tune` fills the ``impl="auto"`` cache for the report's classes (the bench,
  a separate process, then times ``auto`` against what it measured: the "second run").
* :func:`peer_rows` and :func:`auto_rows` read the benchmark rows: per dtype, mode and
  norm, pm-core's best exact impl against the best ``torch.compile`` peer, and ``auto``
  against the best impl measured beside it.
* :func:`check_peers` recompiles the best peer and times it interleaved with the best
  exact impl: the ratio with its interval that the benchmark's separate cases cannot give.
* :func:`swin_recompiles` compiles torchvision's ``swin_t`` and feeds it several input
  sizes, counting graph compilations (compare pytorch/pytorch#121637, where a compiled
  Swin recompiled on every new size).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypedDict

import torch
from torch import Tensor

from pm_core import NORMS, REGISTRY, Norm, patch_merge
from pm_core.auto import cached_choices, tune

from .bench import LayerTiming
from .interleave import Interval, ratio_interval, time_interleaved
from .shapes import SWIN_T_STAGES
from .speed import auto_runs, merge_call

#: torch.compile peers: ``"<peer>:<form>"`` compiles ``patch_merge(..., impl=form)`` with
#: ``dynamic=False`` in the peer's mode. Not pm-core impls: shown beside them, marked.
PEER_MODES = {"inductor": "default", "inductor-max-autotune": "max-autotune-no-cudagraphs"}
PEER_FORMS = ("slice", "reshape", "conv")


def peer_of(impl: str) -> tuple[str, str] | None:
    """``(torch.compile mode, form)`` for a peer's name, None for an impl or ``auto``."""
    peer, _, form = impl.partition(":")
    return (PEER_MODES[peer], form) if form else None


def compile_peer(name: str, norm: Norm) -> Callable[..., Tensor]:
    """The peer ``name`` (``"inductor:slice"``, ...): ``torch.compile`` of
    ``patch_merge(..., norm=norm, impl=form)`` with ``dynamic=False`` in the peer's mode,
    called as ``fn(x, weight, norm_weight, norm_bias)``. It compiles on its first call."""
    peer = peer_of(name)
    if peer is None:
        raise ValueError(f"{name!r} is not a compile peer: peers are named '<peer>:<form>'")
    mode, form = peer

    def merge(*args: Tensor | None) -> Tensor:
        return patch_merge(*args, norm=norm, impl=form)  # type: ignore[arg-type]

    fn: Callable[..., Tensor] = torch.compile(merge, dynamic=False, mode=mode)
    return fn


#: Where the report keeps ``impl="auto"``'s cache (beside the roofline's), unless
#: ``PM_CORE_AUTO_CACHE`` says otherwise.
REPORT_AUTO_CACHE = Path("profiles/.cache/auto.json")


def use_report_cache() -> Path:
    """Point ``impl="auto"`` at the report's cache unless the environment already chose one;
    child processes (the benchmarks) inherit it."""
    os.environ.setdefault("PM_CORE_AUTO_CACHE", str(REPORT_AUTO_CACHE.resolve()))
    return Path(os.environ["PM_CORE_AUTO_CACHE"])


def run_tune(
    shapes: Sequence[tuple[int, int, int, int]] = SWIN_T_STAGES,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16),
    *,
    device: str = "cpu",
    tick: Callable[[str], None] = lambda _m: None,
) -> list[dict[str, object]]:
    """Measure ``auto``'s choice for every class: each shape x dtype x norm, fwd and fwd+bwd."""
    return tune(list(shapes), dtypes=tuple(dtypes), device=device, tick=tick)


class Duel(TypedDict):
    """One dtype x mode x norm: pm-core's best exact impl against the best compile peer."""

    dtype: str
    mode: str
    norm: str
    best: LayerTiming
    peer: LayerTiming | None
    auto: LayerTiming | None


def duels(rows: Sequence[LayerTiming]) -> list[Duel]:
    """On the first shape of ``rows`` (Swin-T stage 1 in the report), per dtype, mode, norm."""
    if not rows:
        return []
    s1 = rows[0]["shape"]
    out: list[Duel] = []
    combos = dict.fromkeys((b["dtype"], b["mode"]) for b in rows)
    for dtype, mode in combos:
        for norm in NORMS:
            cell = [
                b for b in rows
                if (b["dtype"], b["mode"], b["norm"]) == (dtype, mode, norm) and b["shape"] == s1
            ]  # fmt: skip
            # pm-core's own impls exact in every norm (conv_channel_norm is the foil; in
            # post and none it *is* conv, so listing it would only add noise)
            own = [
                b for b in cell
                if b["impl"] in REGISTRY and len(REGISTRY[b["impl"]].exact_for) == len(NORMS)
            ]  # fmt: skip
            if not own:
                continue
            peers = [b for b in cell if b["peer"]]
            auto = next((b for b in cell if b["impl"] == "auto"), None)
            best = min(own, key=lambda b: b["median"])
            peer = min(peers, key=lambda b: b["median"]) if peers else None
            out.append(Duel(dtype=dtype, mode=mode, norm=norm, best=best, peer=peer, auto=auto))
    return out


def _ms(b: LayerTiming) -> str:
    frac = b.get("roofline_fraction")
    return f"{b['median'] * 1e3:.2f}" + (f" ({frac:.0%})" if frac is not None else "")


def duel_table(rows: Sequence[LayerTiming]) -> str:
    """Markdown: best exact impl, best peer, and auto, per dtype x mode x norm: the medians
    of separate benchmark cases, side by side and not divided (the ratios with intervals
    are measured interleaved: the report's Speed section, :func:`check_auto` and
    :func:`check_peers`)."""
    lines = [
        "| dtype | mode | norm | best exact pm-core impl, ms (% roofline) "
        "| best compile peer, ms (% roofline) | `auto` chose, ms |",
        "|---|---|---|---|---|---|",
    ]
    for d in duels(rows):
        peer, auto = d["peer"], d["auto"]
        pcell = f"`{peer['impl']}` {_ms(peer)}" if peer else "-"
        acell = f"`{auto['runs']}` {auto['median'] * 1e3:.2f}" if auto else "-"
        lines.append(
            f"| {d['dtype']} | {d['mode']} | {d['norm']} | `{d['best']['impl']}` "
            f"{_ms(d['best'])} | {pcell} | {acell} |"
        )
    return "\n".join(lines)


def peer_table(rows: Sequence[LayerTiming]) -> str:
    """Markdown: every compile peer's run time, compile time and error against the oracle."""
    peers = [b for b in rows if b["peer"]]
    lines = [
        "| peer | dtype | mode | norm | run ms (% roofline) | compile s | error / bound |",
        "|---|---|---|---|---|---:|---:|",
    ]
    for b in peers:
        ratio = b.get("error_bound_ratio")
        lines.append(
            f"| `{b['impl']}` | {b['dtype']} | {b['mode']} | {b['norm']} | {_ms(b)} "
            f"| {b.get('compile_s', float('nan')):.1f} | "
            + (f"{ratio:.3f}" if ratio is not None else "(fwd's graph)")
            + " |"
        )
    return "\n".join(lines)


def choices_table(device: str = "cpu") -> str:
    """Markdown: the ``auto`` cache's choices on this machine, with every candidate's median."""
    table = cached_choices(device)
    if not table:
        return "(no cached choices)"
    names = sorted({n for e in table.values() for n in e.get("medians", {})})
    lines = [
        "| class (dtype, norm, mode, windows, C) | chose | " + " | ".join(names) + " |",
        "|---|---|" + "---:|" * len(names),
    ]
    for key, e in sorted(table.items()):
        med = e.get("medians", {})
        cells = [f"{med[n] * 1e3:.2f}" if n in med else "-" for n in names]
        lines.append(
            f"| {key.replace('|', ', ')} | `{e.get('impl')}` | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


class AutoCheck(TypedDict):
    """``impl="auto"`` against the impl the benchmark found fastest, timed interleaved."""

    dtype: str
    mode: str
    norm: str
    best: str  # the fastest exact impl in the benchmark run
    runs: str  # what auto ran
    auto_s: float  # median seconds
    best_s: float  # median seconds
    ratio: list[float]  # t_auto / t_best per round: [low, estimate, high], 95% interval


#: Interleaved rounds of the report's ``auto`` and peer checks.
CHECK_ROUNDS = 15


def _time_beside_best(
    d: Duel, impls: dict[str, str | Callable[..., Tensor]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds per round of each of ``impls`` (name -> registered impl or compiled function)
    on the duel's case, on the device its rows ran on, interleaved; and their medians."""
    norm: Norm = d["norm"]  # type: ignore[assignment]
    b, h, w, c = d["best"]["shape"]
    device = torch.device(d["best"]["device"])
    call = merge_call(
        (b, h, w, c), getattr(torch, d["dtype"]), norm, d["mode"] == "fwd+bwd", device
    )
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    calls = {name: functools.partial(call, impl) for name, impl in impls.items()}
    times = time_interleaved(calls, rounds=rounds, sync=sync)
    return times, {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def check_auto(
    rows: Sequence[LayerTiming],
    rounds: int = CHECK_ROUNDS,
    tick: Callable[[str], None] = lambda _m: None,
) -> list[AutoCheck]:
    """For each dtype x mode x norm on the benchmark's first shape: ``rounds`` interleaved
    calls of ``impl="auto"`` (from the cache on disk: re-read, not this process's memory)
    and of the fastest exact impl the benchmark measured, on the same inputs; medians and
    the per-round ratio with its 95% interval."""
    cached_choices()  # re-reads the cache file: auto then runs what is on disk
    out: list[AutoCheck] = []
    for d in duels(rows):
        best = d["best"]["impl"]
        norm: Norm = d["norm"]  # type: ignore[assignment]
        tick(f"auto vs {best} {d['dtype']} {d['mode']} {norm}")
        times, med = _time_beside_best(d, {"auto": "auto", best: best}, rounds)
        b, h, w, c = d["best"]["shape"]
        dtype, device = getattr(torch, d["dtype"]), torch.device(d["best"]["device"])
        runs = auto_runs((b, h, w, c), dtype, norm, d["mode"] == "fwd+bwd", device)
        check = AutoCheck(
            dtype=d["dtype"], mode=d["mode"], norm=norm, best=best, runs=str(runs),
            auto_s=med["auto"], best_s=med[best],
            ratio=ratio_interval(times["auto"], times[best]).as_list(),
        )  # fmt: skip
        out.append(check)
    return out


class PeerCheck(TypedDict):
    """The best compile peer against the fastest exact impl, timed interleaved."""

    dtype: str
    mode: str
    norm: str
    best: str  # the fastest exact impl in the benchmark run
    peer: str  # the fastest compile peer in the benchmark run
    best_s: float  # median seconds
    peer_s: float  # median seconds
    ratio: list[float]  # t_peer / t_best per round: [low, estimate, high], 95% interval


def check_peers(
    rows: Sequence[LayerTiming],
    rounds: int = CHECK_ROUNDS,
    tick: Callable[[str], None] = lambda _m: None,
) -> list[PeerCheck]:
    """For each dtype x mode x norm on the benchmark's first shape that has a peer: the
    fastest exact impl and the fastest compile peer of the benchmark run, the peer
    recompiled here, timed interleaved over ``rounds`` on the same inputs on the device
    the rows ran on; medians and the per-round ratio ``t_peer / t_best`` with its 95%
    interval. The benchmark ranks (separate cases); this states the ratio."""
    out: list[PeerCheck] = []
    for d in duels(rows):
        if d["peer"] is None:
            continue
        best, peer = d["best"]["impl"], d["peer"]["impl"]
        norm: Norm = d["norm"]  # type: ignore[assignment]
        tick(f"{peer} vs {best} {d['dtype']} {d['mode']} {norm}")
        torch.compiler.reset()  # each peer's own graphs: no cache-size fallback to eager
        # the interleaving's warm-up call compiles the peer
        times, med = _time_beside_best(d, {best: best, peer: compile_peer(peer, norm)}, rounds)
        check = PeerCheck(
            dtype=d["dtype"], mode=d["mode"], norm=norm, best=best, peer=peer,
            best_s=med[best], peer_s=med[peer],
            ratio=ratio_interval(times[peer], times[best]).as_list(),
        )  # fmt: skip
        out.append(check)
    return out


def _check_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Markdown for a check: its text columns, then two medians in ms and the ratio."""
    align = ["---"] * (len(head) - 3) + ["---:"] * 3
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def peer_check_table(checks: Sequence[PeerCheck]) -> str:
    head = ["dtype", "mode", "norm", "fastest exact", "fastest peer", "exact ms", "peer ms"]
    rows = [
        [c["dtype"], c["mode"], c["norm"], f"`{c['best']}`", f"`{c['peer']}`",
         f"{c['best_s'] * 1e3:.2f}", f"{c['peer_s'] * 1e3:.2f}", str(Interval(*c["ratio"]))]
        for c in checks
    ]  # fmt: skip
    return _check_table([*head, "peer / exact [95%]"], rows)


def auto_check_table(checks: Sequence[AutoCheck]) -> str:
    head = ["dtype", "mode", "norm", "fastest exact in the bench", "`auto` ran", "auto ms"]
    rows = [
        [c["dtype"], c["mode"], c["norm"], f"`{c['best']}`", f"`{c['runs']}`",
         f"{c['auto_s'] * 1e3:.2f}", f"{c['best_s'] * 1e3:.2f}", str(Interval(*c["ratio"]))]
        for c in checks
    ]  # fmt: skip
    return _check_table([*head, "fastest ms", "auto / fastest [95%]"], rows)


class Recompiles(TypedDict):
    sizes: list[int]
    frames: int  # graph compilations dynamo reports
    recompiles: int  # compilations after the first
    compile_s: list[float]  # first call at each size, less a warm call
    dynamic: str
    backend: str


def swin_recompiles(
    sizes: Sequence[int] = (224, 256, 288, 320),
    *,
    dynamic: bool | None = None,
    backend: str = "eager",
) -> Recompiles:
    """Compile torchvision's ``swin_t`` (random weights) and feed it ``sizes`` x ``sizes``
    images at batch 1, counting the graphs dynamo compiles. ``dynamic=None`` is
    torch.compile's default: static first, then dynamic shapes on a size change.

    Whether a new size recompiles is dynamo's decision (its guards), the same whatever
    backend compiles the graphs; ``backend="eager"`` runs them uncompiled, so the count
    takes seconds. With ``"inductor"`` each graph is also code-generated, minutes per
    size for a whole Swin on a small CPU, so the report counts with ``"eager"``."""
    from torch._dynamo.utils import counters
    from torchvision.models import swin_t

    torch._dynamo.reset()
    counters.clear()
    model = swin_t().eval()
    fn = torch.compile(model, dynamic=dynamic, backend=backend)
    times: list[float] = []
    with torch.no_grad():
        for s in sizes:
            x = torch.randn(1, 3, s, s)
            t0 = time.perf_counter()
            fn(x)  # type: ignore[no-untyped-call]
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            fn(x)  # type: ignore[no-untyped-call]
            times.append(max(first - (time.perf_counter() - t0), 0.0))
    frames = int(counters["stats"]["unique_graphs"])
    return Recompiles(
        sizes=list(sizes),
        frames=frames,
        recompiles=max(frames - 1, 0),
        compile_s=times,
        dynamic=str(dynamic),
        backend=backend,
    )


__all__ = [
    "CHECK_ROUNDS",
    "PEER_FORMS",
    "PEER_MODES",
    "REPORT_AUTO_CACHE",
    "AutoCheck",
    "Duel",
    "PeerCheck",
    "Recompiles",
    "auto_check_table",
    "check_auto",
    "check_peers",
    "choices_table",
    "compile_peer",
    "duel_table",
    "duels",
    "peer_check_table",
    "peer_of",
    "peer_table",
    "run_tune",
    "swin_recompiles",
    "use_report_cache",
]
