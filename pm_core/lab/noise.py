"""Is the machine quiet enough for the speed figures? Two independent signals.

* **The reference kernels' rates move.** :func:`reference_rates` times a fixed GEMM and a
  fixed copy on one thread. The report probes them at the start, between steps and at the
  end; a spread (fastest probe over slowest, less one) above :data:`RATE_SPREAD` means the
  machine's speed changed while the figures were taken.
* **Other processes used the CPU.** Over the run, the CPU time every process on the
  machine used (``/proc/stat``) less the CPU time this process and its finished children
  used (``getrusage``) is what others took. Above :data:`OTHERS_SHARE` of the machine's
  capacity (wall time x cores), the run shared the machine, even if the load was steady
  from start to end and the reference rates did not move. Where ``/proc/stat`` does not
  exist (not Linux) this signal is left out and the report says so.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from time import perf_counter, sleep

import torch

#: A run is flagged when the reference rates' spread exceeds this (0.25: 25%). Each rate is
#: one thread's best over a few bursts (:func:`reference_rates`), so what moves it is a
#: lasting change of the machine: its clock, or memory bandwidth taken by other work. A
#: steady process on the cores need not move it (a thread that wakes for a short burst is
#: scheduled ahead of one that has been running): :data:`OTHERS_SHARE` catches that.
RATE_SPREAD = 0.25
#: ...or when other processes used more than this share of the machine's CPU capacity.
OTHERS_SHARE = 0.10
_PROC_STAT = Path("/proc/stat")
#: The GEMM's size (n x n x n, float32): about a millisecond on one core, in cache.
GEMM_N = 384
#: The copy's source size, float32. Source and destination together are 128 MiB, four
#: times a 32 MiB last-level cache: on a CPU with up to 32 MiB of it, the copy streams
#: from memory rather than from cache.
COPY_BYTES = 64 << 20


def _fastest(fn: Callable[[], object], *, bursts: int, reps: int, gap_s: float) -> float:
    """The shortest time of ``fn`` over ``bursts`` bursts of ``reps`` calls, ``gap_s`` apart
    (each burst after one warm-up call). Bursts spread the probe over time, so a core that
    is descheduled for part of it (a virtual machine's vCPU, briefly) slows one burst, not
    the probe; a load that lasts slows every burst."""
    best = float("inf")
    for burst in range(bursts):
        if burst:
            sleep(gap_s)
        fn()
        for _ in range(reps):
            t0 = perf_counter()
            fn()
            best = min(best, perf_counter() - t0)
    return best


@cache
def _operands() -> tuple[torch.Tensor, ...]:
    """The probe's tensors, made once and held for the process's life (about 128 MiB): a
    fresh allocation each probe would add page faults and a changing huge-page state to
    what is measured."""
    n = GEMM_N
    src = torch.randn(COPY_BYTES // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch every page now, not in the first probe
    return torch.randn(n, n), torch.randn(n, n), src, dst


def reference_rates(*, bursts: int = 4, reps: int = 3, gap_s: float = 0.05) -> dict[str, float]:
    """FLOP/s of a :data:`GEMM_N` cubed float32 GEMM and bytes/s (read plus write) of a
    :data:`COPY_BYTES` float32 copy on the CPU, each :func:`_fastest` over ``bursts``.

    On one thread: a rate over every core moves whenever any one core is briefly taken,
    while one thread's rate moves only when the core it runs on is shared for the whole
    probe. The torch thread count is restored afterwards. About 0.5 s.
    """
    a, b, src, dst = _operands()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gemm = (
            2 * GEMM_N**3 / _fastest(lambda: torch.mm(a, b), bursts=bursts, reps=reps, gap_s=gap_s)
        )
        copy_s = _fastest(lambda: dst.copy_(src), bursts=bursts, reps=reps, gap_s=gap_s)
    finally:
        torch.set_num_threads(threads)
    return {"gemm_flops": gemm, "copy_bytes_per_s": 2 * COPY_BYTES / copy_s}


def _machine_cpu_s() -> float | None:
    """CPU seconds every process on the machine has used since boot (all cores), or None."""
    try:
        first = _PROC_STAT.read_text().splitlines()[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: busy = all but idle, iowait
    ticks = [int(v) for v in first[1:]]
    busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def _cores() -> int:
    return os.cpu_count() or 1


def _own_cpu_s() -> float:
    """CPU seconds this process (every thread) and its finished children have used."""
    return sum(
        r.ru_utime + r.ru_stime
        for r in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
    )


@dataclass
class LoadMonitor:
    """Probes the reference kernels at named points and accounts for others' CPU time."""

    probes: list[tuple[str, dict[str, float]]] = field(default_factory=list)
    _start: tuple[float, float | None, float] = field(default=(0.0, None, 0.0))
    _end: tuple[float, float | None, float] | None = None

    def start(self) -> None:
        self._start = (perf_counter(), _machine_cpu_s(), _own_cpu_s())
        self.probe("start")

    def probe(self, label: str) -> None:
        self.probes.append((label, reference_rates()))

    def stop(self) -> None:
        self.probe("end")
        self._end = (perf_counter(), _machine_cpu_s(), _own_cpu_s())

    def spread(self) -> dict[str, float]:
        """Per reference kernel: fastest probe's rate over the slowest's, less one."""
        out = {}
        for key in self.probes[0][1] if self.probes else ():
            rates = [p[key] for _, p in self.probes]
            out[key] = max(rates) / min(rates) - 1
        return out

    def others_share(self) -> float | None:
        """Share of the machine's CPU capacity other processes used, or None if unknown."""
        end = self._end
        if end is None or end[1] is None or self._start[1] is None:
            return None
        wall = end[0] - self._start[0]
        others = (end[1] - self._start[1]) - (end[2] - self._start[2])
        return max(others, 0.0) / (wall * _cores()) if wall > 0 else None

    def reasons(self) -> list[str]:
        """Why the run is flagged as noisy; empty when it is not."""
        out = []
        for key, s in self.spread().items():
            if s > RATE_SPREAD:
                slowest = min(self.probes, key=lambda p: p[1][key])[0]
                fastest = max(self.probes, key=lambda p: p[1][key])[0]
                out.append(
                    f"the reference {key.split('_')[0]} rate moved {s:.0%} between probes, "
                    f"slowest {slowest}, fastest {fastest} (threshold {RATE_SPREAD:.0%})"
                )
        share = self.others_share()
        if share is not None and share > OTHERS_SHARE:
            out.append(
                f"other processes used {share:.0%} of the machine's CPU "
                f"(threshold {OTHERS_SHARE:.0%})"
            )
        return out

    def as_dict(self) -> dict[str, object]:
        return {
            "noisy": bool(self.reasons()),
            "reasons": self.reasons(),
            "rate_spread": self.spread(),
            "others_cpu_share": self.others_share(),
            "thresholds": {"rate_spread": RATE_SPREAD, "others_cpu_share": OTHERS_SHARE},
            "probes": [{"at": label, **rates} for label, rates in self.probes],
        }


__all__ = ["COPY_BYTES", "GEMM_N", "OTHERS_SHARE", "RATE_SPREAD", "LoadMonitor", "reference_rates"]
