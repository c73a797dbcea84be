"""The offline viewer's trace conversion: a Kineto trace becomes a speedscope file whose
every thread is a well-nested sequence of open/close events (speedscope refuses any other)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pm_core.lab.profiling import MEASURED_STEPS, run_profiles
from pm_core.lab.trace_viewer import SCHEMA, ViewerUnavailable, fetch_speedscope, to_speedscope


def _assert_well_nested(doc: dict[str, Any]) -> None:
    """Each profile: times never go back, every close matches the innermost open frame,
    and nothing is left open."""
    __tracebackhide__ = True
    n_frames = len(doc["shared"]["frames"])
    for prof in doc["profiles"]:
        stack: list[int] = []
        last = float("-inf")
        for ev in prof["events"]:
            assert ev["at"] >= last, f"{prof['name']}: time goes back at {ev}"
            last = ev["at"]
            assert 0 <= ev["frame"] < n_frames
            if ev["type"] == "O":
                stack.append(ev["frame"])
            else:
                assert ev["type"] == "C", ev
                assert stack, f"{prof['name']}: closes {ev} with nothing open"
                top = stack.pop()
                assert top == ev["frame"], f"{prof['name']}: closes {ev} while {top} is innermost"
        assert not stack, f"{prof['name']}: frames left open: {stack}"
        assert prof["startValue"] <= prof["endValue"]


def _trace(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"traceEvents": events}))
    return path


intervals = st.lists(
    st.tuples(st.integers(0, 12), st.integers(0, 12), st.sampled_from([1, 2])),
    min_size=1,
    max_size=25,
)


@given(intervals)
def test_any_interval_soup_becomes_well_nested(
    tmp_path_factory: pytest.TempPathFactory, spans: list[tuple[int, int, int]]
) -> None:
    """Overlapping, tied and zero-length ranges on two threads (Kineto's python frames
    can outlive their op) convert to well-nested events, one open per range."""
    events = [
        {"ph": "X", "cat": "cpu_op", "name": f"op{i}", "pid": 1, "tid": tid, "ts": ts, "dur": dur}
        for i, (ts, dur, tid) in enumerate(spans)
    ]
    path = _trace(tmp_path_factory.mktemp("t") / "t.json", events)
    doc = to_speedscope(path)
    _assert_well_nested(doc)
    opens = sum(ev["type"] == "O" for p in doc["profiles"] for ev in p["events"])
    assert opens == len(spans)


def test_kineto_span_and_metadata_are_dropped_and_names_kept(tmp_path: Path) -> None:
    """The whole-trace span (pid "Spans") that makes speedscope's own importer fail is
    left out; frames carry the op name alone, threads their Kineto names."""
    events = [
        {"ph": "M", "name": "thread_name", "pid": 7, "tid": 7, "args": {"name": "main"}},
        {"ph": "X", "cat": "Trace", "name": "PyTorch Profiler (0)", "pid": "Spans",
         "tid": "PyTorch Profiler", "ts": 0, "dur": 100},
        {"ph": "X", "cat": "cpu_op", "name": "aten::cat", "pid": 7, "tid": 7, "ts": 10,
         "dur": 5, "args": {"External id": 3}},
    ]  # fmt: skip
    doc = to_speedscope(_trace(tmp_path / "k.json", events))
    assert doc["$schema"] == SCHEMA
    assert [f["name"] for f in doc["shared"]["frames"]] == ["aten::cat"]
    assert [p["name"] for p in doc["profiles"]] == ["main (pid 7, tid 7)"]


def test_a_trace_without_thread_events_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no complete"):
        to_speedscope(_trace(tmp_path / "e.json", [{"ph": "M", "name": "process_name"}]))


def test_a_real_profile_converts_with_its_steps_and_ranges(tmp_path: Path) -> None:
    """A pm-core profile run converts whole: the measured steps and the impl's ranges are
    frames, and the busiest thread (where they ran) opens first."""
    (run,) = run_profiles(
        tmp_path, impls=["reshape"], norms=["post"], dtypes=[torch.float32],
        shapes=[(1, 4, 4, 8)],
    )  # fmt: skip
    doc = to_speedscope(run)
    _assert_well_nested(doc)
    names = [f["name"] for f in doc["shared"]["frames"]]
    assert set(MEASURED_STEPS) <= set(names)
    assert {"patch_merge/reshape/post/forward", "patch_merge/reshape/post/backward"} <= set(names)
    first = {names[ev["frame"]] for ev in doc["profiles"][0]["events"]}
    assert set(MEASURED_STEPS) <= first


def test_no_npm_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without npm (and no cached copy) the viewer says what to install."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ViewerUnavailable, match="apt-get install npm"):
        fetch_speedscope(tmp_path / "cache")
