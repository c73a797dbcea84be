"""The statistics behind every "A vs B" figure: interleaving, intervals, and when a winner
is named."""

from __future__ import annotations

import random

import pytest

from pm_core.lab.interleave import MARGIN, Interval, fastest, ratio_interval, time_interleaved


def test_rounds_rotate_which_callable_goes_first() -> None:
    """Each callable leads some round and follows each other one: no fixed position."""
    order: list[str] = []
    calls = {name: (lambda n=name: order.append(n)) for name in "abc"}
    times = time_interleaved(calls, rounds=6, min_block_s=0.0)
    assert {k: len(v) for k, v in times.items()} == {"a": 6, "b": 6, "c": 6}
    timed = order[6:]  # after two warm-up calls each
    firsts = {timed[3 * i] for i in range(6)}
    assert firsts == {"a", "b", "c"}
    assert all(t > 0 for v in times.values() for t in v)


def test_time_interleaved_refuses_too_few_rounds() -> None:
    with pytest.raises(ValueError, match="at least 3 rounds"):
        time_interleaved({"a": lambda: None}, rounds=2)


def test_ratio_interval_of_an_exact_ratio_is_that_ratio() -> None:
    den = [1.0, 2.0, 0.5, 3.0, 1.5]
    iv = ratio_interval([2 * d for d in den], den)
    assert iv == Interval(2.0, 2.0, 2.0)


def test_ratio_is_per_round_so_a_shared_load_cancels() -> None:
    """A load that doubles both times in some rounds leaves the per-round ratio alone;
    separate medians would not see that the two moved together."""
    base = [1.0, 1.0, 3.0, 3.0, 1.0, 3.0, 1.0]
    iv = ratio_interval([1.25 * b for b in base], base)
    assert iv.low == iv.estimate == iv.high == pytest.approx(1.25)


def test_ratio_interval_is_seeded_and_ordered() -> None:
    rng = random.Random(1)
    a = [1.0 + rng.gauss(0, 0.05) for _ in range(21)]
    b = [1.1 + rng.gauss(0, 0.05) for _ in range(21)]
    iv = ratio_interval(b, a)
    assert iv.low <= iv.estimate <= iv.high
    assert iv == ratio_interval(b, a)
    assert 1.0 < iv.estimate < 1.25


def test_ratio_interval_names_unpaired_rounds() -> None:
    with pytest.raises(ValueError, match="same rounds"):
        ratio_interval([1.0, 2.0, 3.0], [1.0, 2.0])


def test_a_clear_winner_is_declared() -> None:
    rng = random.Random(2)
    times = {
        "fast": [1.0 * rng.uniform(0.98, 1.02) for _ in range(21)],
        "slow": [1.5 * rng.uniform(0.98, 1.02) for _ in range(21)],
    }
    v = fastest(times)
    assert v.fastest == ["fast"]
    assert v.declared
    assert v.margin is not None
    assert v.margin.low > 1 + MARGIN


def test_a_difference_inside_the_margin_is_a_tie() -> None:
    """1% apart, however precisely measured, is not called a win."""
    times = {"a": [1.0] * 21, "b": [1.01] * 21, "c": [2.0] * 21}
    v = fastest(times)
    assert v.fastest == ["a", "b"]
    assert not v.declared


def test_identical_impls_are_rarely_called_different() -> None:
    """Two callables with the same distribution of times (per-round noise of 5%): over 200
    simulated runs, a winner is declared in at most 5% of them (the interval is 95%, and
    the margin only lowers that rate)."""
    rng = random.Random(3)
    declared = 0
    for _ in range(200):
        load = [rng.uniform(1.0, 2.0) for _ in range(21)]  # shared: cancels per round
        times = {k: [ld * rng.lognormvariate(0, 0.05) for ld in load] for k in ("a", "b")}
        declared += fastest(times).declared
    assert declared <= 10, declared
