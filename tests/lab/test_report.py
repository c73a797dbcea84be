"""The report's promises that don't need a full run: atomic replacement and the README block."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pm_core.lab import noise, report, report_base, report_speed
from pm_core.lab.bench import LayerTiming


def _no_step(r: report.Report, tick: report_base.Tick) -> None:
    return None


@pytest.fixture
def fast_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_report with every measuring step stubbed out (they have their own tests)."""
    stubbed = tuple(
        s if s.name == "environment" else report.Step(s.name, _no_step, s.full_only)
        for s in report.STEPS
    )
    monkeypatch.setattr(report, "STEPS", stubbed)
    monkeypatch.setattr(
        noise, "reference_rates", lambda: {"gemm_flops": 1.0, "copy_bytes_per_s": 1.0}
    )
    # other tests share the machine (pytest-xdist): only the rates may flag a stubbed run
    monkeypatch.setattr(noise, "_machine_cpu_s", lambda: None)


def test_crash_mid_report_leaves_previous_report_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_report: None
) -> None:
    """A step that raises leaves the last complete report in place, byte for byte."""
    out = tmp_path / "report"
    assert report.build_report(out)
    first = (out / "report.md").read_text()

    def boom(r: report.Report, tick: report_base.Tick) -> None:
        raise RuntimeError("benchmark died")

    steps = tuple(report.Step(s.name, boom) if s.name == "speed" else s for s in report.STEPS)
    monkeypatch.setattr(report, "STEPS", steps)
    with pytest.raises(RuntimeError, match="benchmark died"):
        report.build_report(out)
    assert (out / "report.md").read_text() == first
    assert not (tmp_path / "report.old").exists()


def test_rebuild_replaces_everything(tmp_path: Path, fast_report: None) -> None:
    """A rebuild starts empty: a stale file from an earlier run does not survive."""
    out = tmp_path / "report"
    report.build_report(out)
    (out / "stale.png").write_text("old plot")
    report.build_report(out)
    assert not (out / "stale.png").exists()
    assert (out / "report.md").is_file()


def test_browser_screenshots_survive_a_rebuild_and_are_linked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_report: None
) -> None:
    """The browser test's screenshots are not the report's to delete: a rebuild keeps
    them and links each one; without any, the section says how to take them."""
    steps = tuple(
        report.Step(s.name, report_speed.section_screenshots) if s.name == "screenshots" else s
        for s in report.STEPS  # fast_report's stubs, but the real screenshots step
    )
    monkeypatch.setattr(report, "STEPS", steps)
    out = tmp_path / "report"
    report.build_report(out)
    assert "No screenshots yet" in (out / "report.md").read_text()
    (out / report_speed.SCREENSHOTS).mkdir()
    (out / report_speed.SCREENSHOTS / "tensorboard-trace-conv.png").write_bytes(b"png")
    report.build_report(out)
    assert (out / report_speed.SCREENSHOTS / "tensorboard-trace-conv.png").read_bytes() == b"png"
    assert "(browser/tensorboard-trace-conv.png)" in (out / "report.md").read_text()


def test_update_readme_touches_only_the_findings_block(tmp_path: Path) -> None:
    """Only the text between the findings markers changes; no markers, no change."""
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# t\n\nbefore\n{report_base.README_START}\nold\n{report_base.README_END}\nafter\n"
    )
    assert report.update_readme("- new finding", readme)
    text = readme.read_text()
    assert (
        text
        == f"# t\n\nbefore\n{report_base.README_START}\n- new finding\n{report_base.README_END}\nafter\n"
    )
    plain = tmp_path / "PLAIN.md"
    plain.write_text("# no markers\n")
    assert not report.update_readme("x", plain)
    assert plain.read_text() == "# no markers\n"


def _timing(
    impl: str,
    median: float,
    *,
    exact: bool,
    roofline_fraction: float,
    runs: str = "",
    peer: bool = False,
) -> LayerTiming:
    """A pre-norm float32 forward row at shape (1, 2, 2, 1); its byte counts, device and
    GEMM precision do not reach the speed table."""
    return LayerTiming(
        impl=impl, runs=runs or impl, norm="pre", dtype="float32", mode="fwd", shape=[1, 2, 2, 1],
        exact=exact, bytes=0, min_bytes=0, device="cpu", gemm_precision="ieee", median=median,
        roofline_fraction=roofline_fraction, peer=peer,
    )  # fmt: skip


def test_speed_table_marks_inexact_cells_and_states_no_ratio() -> None:
    """Medians of separate benchmark runs, with no ratio between them (the Speed section
    measures ratios interleaved); an impl not exact for a norm is italic."""
    rows = [
        _timing("slice", 2e-3, exact=True, roofline_fraction=0.5),
        _timing("conv_channel_norm", 1e-3, exact=False, roofline_fraction=1.0),
    ]
    (table,) = report_speed.speed_tables(rows)
    assert "| 1,2,2,1 | slice | 2.00 (50%) |" in table
    assert "*1.00 (100%)*" in table
    assert "x," not in table


def test_speed_table_shows_auto_and_peers_beside_the_impls() -> None:
    """auto's row names the impl it ran; a compile peer is marked, after the impls."""
    rows = [
        _timing("slice", 2e-3, exact=True, roofline_fraction=0.5),
        _timing("auto", 1e-3, exact=True, roofline_fraction=1.0, runs="conv_cw"),
        _timing("inductor:slice", 4e-3, exact=True, roofline_fraction=0.25, peer=True),
    ]
    (table,) = report_speed.speed_tables(rows)
    assert "| 1,2,2,1 | auto | `conv_cw` 1.00 (100%) |" in table
    assert "| 1,2,2,1 | inductor:slice (peer) | 4.00 (25%) |" in table
    assert (
        table.index("| slice |")
        < table.index("| auto |")
        < table.index("| inductor:slice (peer) |")
    )


def test_peer_duel_picks_own_best_exact_and_best_peer() -> None:
    """The duel's best is pm-core's fastest *exact* impl (never auto, a peer or an inexact
    impl); the peer column is the fastest peer."""
    from pm_core.lab.peers import duel_table, duels

    rows = [
        _timing("slice", 2e-3, exact=True, roofline_fraction=0.5),
        _timing("conv", 1.5e-3, exact=True, roofline_fraction=0.6),
        _timing("conv_channel_norm", 0.5e-3, exact=False, roofline_fraction=1.0),
        _timing("auto", 1.4e-3, exact=True, roofline_fraction=0.7, runs="conv"),
        _timing("inductor:slice", 3e-3, exact=True, roofline_fraction=0.3, peer=True),
        _timing("inductor:conv", 1.8e-3, exact=True, roofline_fraction=0.5, peer=True),
    ]
    (d,) = duels(rows)
    assert d["best"]["impl"] == "conv"
    assert d["peer"] is not None
    assert d["peer"]["impl"] == "inductor:conv"
    table = duel_table(rows)
    assert "| `conv` 1.50 (60%) | `inductor:conv` 1.80 (50%) | `conv` 1.40 |" in table
    assert "x |" not in table  # separate cases: no ratio between them


def test_findings_block_names_the_machine_and_shows_the_picture() -> None:
    block = report.findings_block(["- a finding"], picture=True)
    first = block.splitlines()[0]
    assert first.startswith("Measured on ")
    assert "torch " in first
    assert "Python " in first
    assert f"]({report.README_PICTURE.as_posix()})" in block
    assert block.endswith("- a finding")
    assert "![" not in report.findings_block(["- a finding"], picture=False)


def test_a_busy_machine_is_flagged_in_the_headline_and_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_report: None
) -> None:
    """The reference rates halve mid-run: the headline opens with the flag and its reason,
    and summary.json says noisy; a steady run says quiet."""
    monkeypatch.setattr(report, "PROBE_AFTER_S", 1e6)  # no step lasts that: start and end only
    out = tmp_path / "report"
    assert report.build_report(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["noisy"] is False
    assert summary["headline"][0].startswith("- **Quiet machine:**")
    assert (
        "probed 2 times (start, after each step of 1000000 s or more, end)"
        in (summary["headline"][0])
    )
    assert {"label", "cpu", "torch", "python"} <= set(summary["machine"])
    assert summary["verdicts"] == []  # the speed step was stubbed

    rates = iter([2.0, 1.0] * 50)
    monkeypatch.setattr(noise, "reference_rates", lambda: {"gemm_flops": next(rates)})
    assert report.build_report(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["noisy"] is True
    head = summary["headline"][0]
    assert head.startswith("- **Noisy run: the speed figures may not hold.**")
    assert "may not hold.** The reference gemm rate moved 100%" in head
    assert head in (out / "report.md").read_text()


def test_the_default_run_leaves_the_slow_steps_to_full(tmp_path: Path, fast_report: None) -> None:
    out = tmp_path / "report"
    report.build_report(out)
    text = (out / "report.md").read_text()
    assert "Steps left to `--full`: benchmarks, compile peers, whole models, family." in text
    report.build_report(out, full=True)
    timings = json.loads((out / "summary.json").read_text())["timings"]
    assert {"benchmarks", "compile peers", "whole models", "family", "speed"} <= set(timings)
    assert "Steps left" not in (out / "report.md").read_text()


def test_auto_check_times_auto_beside_the_best_with_an_interval() -> None:
    from pm_core.lab.peers import auto_check_table, check_auto

    rows = [
        _timing("slice", 2e-3, exact=True, roofline_fraction=0.5),
        _timing("reshape", 1e-3, exact=True, roofline_fraction=0.6),
    ]
    rows = [LayerTiming(**{**r, "shape": [1, 4, 4, 8]}) for r in rows]
    (c,) = check_auto(rows, rounds=3)
    assert c["best"] == "reshape"
    low, est, high = c["ratio"]
    assert 0 < low <= est <= high
    table = auto_check_table([c])
    assert f"| {c['best_s'] * 1e3:.2f} | {est:.2f}x [{low:.2f}, {high:.2f}] |" in table


def test_peer_check_times_the_best_peer_beside_the_best_impl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fastest peer of the benchmark run is built again and timed interleaved with the
    fastest exact impl; its ratio carries an interval. The compile is stood in for by the
    eager form it would compile (the bench smoke test compiles a real peer)."""
    from pm_core import Norm, patch_merge
    from pm_core.lab import peers

    built: list[tuple[str, str]] = []

    def eager(name: str, norm: Norm) -> Any:
        built.append((name, norm))
        form = name.partition(":")[2]
        return lambda *args: patch_merge(*args, norm=norm, impl=form)

    monkeypatch.setattr(peers, "compile_peer", eager)
    from pm_core.lab.interleave import time_interleaved as timed

    def peer_twice_as_slow(calls: Any, **kw: Any) -> dict[str, list[float]]:
        times = timed(calls, **kw)  # every call really runs; the times are then set
        return {k: [2e-3 if k.startswith("inductor") else 1e-3] * len(v) for k, v in times.items()}

    monkeypatch.setattr(peers, "time_interleaved", peer_twice_as_slow)
    rows = [
        _timing("slice", 2e-3, exact=True, roofline_fraction=0.5),
        _timing("reshape", 1e-3, exact=True, roofline_fraction=0.6),
        _timing("inductor:conv", 3e-3, exact=True, roofline_fraction=0.3, peer=True),
        _timing("inductor:slice", 1.5e-3, exact=True, roofline_fraction=0.4, peer=True),
    ]
    rows = [LayerTiming(**{**r, "shape": [1, 4, 4, 8]}) for r in rows]
    (c,) = peers.check_peers(rows, rounds=3)
    assert built == [("inductor:slice", "pre")]
    assert (c["best"], c["peer"]) == ("reshape", "inductor:slice")
    assert c["ratio"] == [2.0, 2.0, 2.0]  # t_peer / t_exact: the peer took twice as long
    assert (c["best_s"], c["peer_s"]) == (1e-3, 2e-3)
    assert "| 1.00 | 2.00 | 2.00x [2.00, 2.00] |" in peers.peer_check_table([c])
    assert peers.check_peers(rows[:2]) == []  # no peer ran: nothing to time


def test_a_peer_name_is_mode_and_form() -> None:
    from pm_core.lab.peers import PEER_FORMS, compile_peer, peer_of

    assert peer_of("inductor:conv") == ("default", "conv")
    assert peer_of("inductor-max-autotune:slice") == ("max-autotune-no-cudagraphs", "slice")
    assert peer_of("conv") is None
    assert "reshape" in PEER_FORMS
    with pytest.raises(ValueError, match="not a compile peer"):
        compile_peer("conv", "pre")
