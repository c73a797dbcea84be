"""Speed ratios measured interleaved, with bootstrap confidence intervals, and the verdict
"which is fastest" drawn from them.

Separate runs of A and B see different loads: on a shared machine the load moves more
between one benchmark case and the next than the differences between impls. So every
ratio here comes from one process that alternates the callables over ``rounds`` rounds,
rotating which goes first, and the ratio is taken *per round* (A's time in round ``i``
over B's time in round ``i``), so a load that shifts between rounds cancels.

* :func:`time_interleaved` times the callables: per round, each runs ``reps`` times in a
  block (``reps`` sized in a warm-up so a block lasts at least ``min_block_s``).
* :func:`ratio_interval` gives the median per-round ratio and its percentile-bootstrap
  interval over rounds (rounds resampled with replacement; the median of each resample).
* :func:`fastest` names the fastest callable only when its interval against the runner-up
  lies wholly above ``1 + margin``; otherwise it names every callable that ties with it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

#: Rounds of the interleaved timing, and how many bootstrap resamples an interval takes.
ROUNDS = 21
RESAMPLES = 4000
#: Differences smaller than this fraction are not called a win but a tie. Within one run
#: the bootstrap over rounds sees only round-to-round noise; between two processes on the
#: same machine, allocation addresses, thread placement and clock state shift a ratio
#: too, and a within-run interval cannot see that.
MARGIN = 0.02


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval: ``low <= estimate <= high``."""

    low: float
    estimate: float
    high: float

    def excludes(self, value: float) -> bool:
        return not self.low <= value <= self.high

    def as_list(self) -> list[float]:
        return [self.low, self.estimate, self.high]

    def __str__(self) -> str:
        return f"{self.estimate:.2f}x [{self.low:.2f}, {self.high:.2f}]"


def time_interleaved(
    calls: Mapping[str, Callable[[], object]],
    *,
    rounds: int = ROUNDS,
    min_block_s: float = 2e-3,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, list[float]]:
    """Seconds per call of each callable, one figure per round, the callables alternating.

    Round ``i`` runs the callables in the order rotated by ``i``, so none is always first
    (after an idle gap) or always after the same neighbour. ``sync`` waits for queued work
    (``torch.cuda.synchronize`` on a GPU) and is called before and after each block."""
    if rounds < 3:
        raise ValueError(f"rounds={rounds}: an interval needs at least 3 rounds; pass more")
    names = list(calls)
    if not names:
        raise ValueError("time_interleaved needs at least one callable")
    reps: dict[str, int] = {}
    for name in names:  # warm-up (first-call allocation, lazy init), then size the block
        calls[name]()
        sync()
        t0 = time.perf_counter()
        calls[name]()
        sync()
        once = max(time.perf_counter() - t0, 1e-7)
        reps[name] = max(1, math.ceil(min_block_s / once))
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            fn, n = calls[name], reps[name]
            sync()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            sync()
            times[name].append((time.perf_counter() - t0) / n)
    return times


def _median(values: torch.Tensor) -> torch.Tensor:
    """The median along the last dim, the mean of the middle two for an even count."""
    s = values.sort(dim=-1).values
    n = s.shape[-1]
    return (s[..., (n - 1) // 2] + s[..., n // 2]) / 2


def ratio_interval(
    numerator: Sequence[float],
    denominator: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval:
    """The median of the per-round ratios ``numerator[i] / denominator[i]`` and its
    percentile-bootstrap ``confidence`` interval, resampling rounds (seeded: the same
    times give the same interval)."""
    if len(numerator) != len(denominator):
        raise ValueError(
            f"{len(numerator)} rounds against {len(denominator)}: a per-round ratio needs "
            "both timed in the same rounds (time_interleaved gives that)"
        )
    if len(numerator) < 3:
        raise ValueError(f"{len(numerator)} rounds: an interval needs at least 3")
    r = torch.tensor(numerator, dtype=torch.float64) / torch.tensor(
        denominator, dtype=torch.float64
    )
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(r), (resamples, len(r)), generator=g)
    boot = _median(r[idx])
    alpha = (1 - confidence) / 2
    low, high = torch.quantile(boot, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return Interval(float(low), float(_median(r)), float(high))


@dataclass(frozen=True)
class Verdict:
    """Which callable is fastest: one name when a winner is declared, else the ties."""

    fastest: list[str]
    #: the runner-up's time over the fastest's, per round (> 1: the fastest is faster)
    margin: Interval | None

    @property
    def declared(self) -> bool:
        return len(self.fastest) == 1


def fastest(
    times: Mapping[str, Sequence[float]], *, margin: float = MARGIN, seed: int = 0
) -> Verdict:
    """The fastest of ``times`` (from :func:`time_interleaved`), declared only when the
    runner-up's per-round time ratio to it has its interval wholly above ``1 + margin``.
    Otherwise every callable whose interval reaches down to ``1 + margin`` ties with it."""
    if not times:
        raise ValueError("fastest() needs at least one timed callable")
    med = {k: float(_median(torch.tensor(v, dtype=torch.float64))) for k, v in times.items()}
    order = sorted(med, key=med.__getitem__)
    best = order[0]
    if len(order) == 1:
        return Verdict([best], None)
    slower = {k: ratio_interval(times[k], times[best], seed=seed) for k in order[1:]}
    ties = [k for k in order[1:] if slower[k].low <= 1 + margin]
    return Verdict([best, *ties], slower[order[1]])


__all__ = [
    "MARGIN",
    "RESAMPLES",
    "ROUNDS",
    "Interval",
    "Verdict",
    "fastest",
    "ratio_interval",
    "time_interleaved",
]
