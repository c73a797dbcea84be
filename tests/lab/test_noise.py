"""A busy machine is detected: reference rates that move, and CPU other processes took."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pm_core.lab import noise
from pm_core.lab.noise import OTHERS_SHARE, RATE_SPREAD, LoadMonitor


def _rates(values: list[float]) -> Iterator[dict[str, float]]:
    for v in values:
        yield {"gemm_flops": v, "copy_bytes_per_s": 1.0}


def test_a_reference_rate_that_moves_flags_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    rates = _rates([100.0, 98.0, 60.0, 99.0])
    monkeypatch.setattr(noise, "reference_rates", lambda: next(rates))
    m = LoadMonitor()
    m.start()
    m.probe("a")
    m.probe("b")
    m.stop()
    assert m.spread()["gemm_flops"] == pytest.approx(100 / 60 - 1)
    assert m.spread()["copy_bytes_per_s"] == 0
    (reason,) = [r for r in m.reasons() if "gemm" in r]
    assert "67%" in reason
    assert "slowest b, fastest start" in reason
    assert f"{RATE_SPREAD:.0%}" in reason
    assert m.as_dict()["noisy"] is True


def test_steady_rates_do_not_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    rates = _rates([100.0, 95.0, 100.0])
    monkeypatch.setattr(noise, "reference_rates", lambda: next(rates))
    monkeypatch.setattr(noise, "_machine_cpu_s", lambda: None)  # as off Linux
    m = LoadMonitor()
    m.start()
    m.probe("a")
    m.stop()
    assert m.reasons() == []
    assert m.others_share() is None
    assert m.as_dict()["noisy"] is False


def test_others_share_is_the_machine_cpu_not_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    """2 cores for 10 s is 20 CPU-seconds; the machine used 9, we used 5: others took 20%."""
    monkeypatch.setattr(noise, "reference_rates", lambda: {"gemm_flops": 1.0})
    monkeypatch.setattr(noise, "_cores", lambda: 2)
    machine, own, clock = iter([100.0, 109.0]), iter([1.0, 6.0]), iter([50.0, 60.0])
    monkeypatch.setattr(noise, "_machine_cpu_s", lambda: next(machine))
    monkeypatch.setattr(noise, "_own_cpu_s", lambda: next(own))
    monkeypatch.setattr(noise, "perf_counter", lambda: next(clock))
    m = LoadMonitor()
    m.start()
    m.stop()
    assert m.others_share() == pytest.approx(0.2)
    assert any("20%" in r for r in m.reasons())


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux's /proc/stat")
def test_a_cpu_hog_beside_the_run_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second process spinning on a core for the whole window: steady, so the reference
    rates need not move, but its CPU time shows (it is not a child we have waited for,
    so none of it counts as ours)."""
    monkeypatch.setattr(noise, "reference_rates", lambda: {"gemm_flops": 1.0})
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # the hog is running
        m = LoadMonitor()
        m.start()
        time.sleep(1.5)
        m.stop()
    finally:
        hog.kill()
        hog.wait()
    share = m.others_share()
    assert share is not None
    assert share > OTHERS_SHARE, share
    assert m.as_dict()["noisy"] is True


def test_a_burst_slowed_for_a_moment_does_not_set_the_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A core taken away during the first burst doubles that burst's times; the probe
    still reports the later bursts' time, as it would on a quiet machine."""
    clock = [0.0]
    calls = [0]

    def fn() -> None:  # 4 calls a burst (a warm-up, 3 timed): 2 s each in the first
        clock[0] += 2.0 if calls[0] < 4 else 1.0
        calls[0] += 1

    slept: list[float] = []
    monkeypatch.setattr(noise, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(noise, "sleep", slept.append)
    assert noise._fastest(fn, bursts=3, reps=3, gap_s=0.05) == 1.0
    assert calls[0] == 12
    assert slept == [0.05, 0.05]  # the bursts are spread in time: a gap between each two


def test_the_probe_runs_on_one_thread_and_restores_the_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rates are one thread's, whatever the process's thread count, which is left
    as it was."""
    seen: list[int] = []

    def fastest(fn: object, **kw: object) -> float:
        seen.append(torch.get_num_threads())
        return 1.0

    monkeypatch.setattr(noise, "_fastest", fastest)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rates = noise.reference_rates()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1]
    assert rates == {"gemm_flops": 2 * noise.GEMM_N**3, "copy_bytes_per_s": 2 * noise.COPY_BYTES}
