"""The lab's plumbing: progress without a terminal, finding the checkout, the records' schema."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import pytest

from pm_core.lab import checkout, records
from pm_core.lab.terminal import Progress

ROOT = Path(__file__).resolve().parents[2]


def test_progress_prints_one_plain_line_per_step_off_a_terminal() -> None:
    """Off a terminal each finished step is one line with its elapsed time; ticks print nothing."""
    out = io.StringIO()
    p = Progress("report", total=2, stream=out)
    p.step("verify")
    p.tick("tests/test_x.py::test_y PASSED")
    p.step("benchmarks")
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\[report\] verify: done in \d+\.\d s", lines[0])
    assert re.fullmatch(r"\[report\] benchmarks: done in \d+\.\d s", lines[1])


def test_checkout_is_found_from_the_package_and_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without $PM_CORE_CHECKOUT the checkout is the one the package sits in; with it, that one."""
    monkeypatch.delenv(checkout.ENV_VAR, raising=False)
    assert checkout.checkout_root() == ROOT
    monkeypatch.setenv(checkout.ENV_VAR, str(ROOT))
    assert checkout.checkout_root() == ROOT


def test_a_wrong_checkout_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """$PM_CORE_CHECKOUT pointing elsewhere raises, naming the variable and the folder."""
    monkeypatch.setenv(checkout.ENV_VAR, str(tmp_path))
    with pytest.raises(checkout.CheckoutNotFound, match=r"PM_CORE_CHECKOUT=.* is not a pm-core"):
        checkout.checkout_root()


def test_the_benchmark_command_is_built_in_one_place() -> None:
    """Autosave for `pm-core bench`; a JSON file for the report; the subset flag passed on."""
    save = checkout.benchmark_command("benchmarks", subset="--quick")
    assert "--benchmark-autosave" in save
    assert f"--benchmark-storage={checkout.BENCH_STORAGE}" in save
    assert save[-1] == "--quick"
    to_json = checkout.benchmark_command(checkout.LAYER_BENCH, json_path=Path("b.json"))
    assert "--benchmark-json=b.json" in to_json
    assert "--benchmark-autosave" not in to_json


def _record(**over: object) -> records.CheckRecord:
    rec = records.CheckRecord(
        test="tests/test_x.py::test_y", impl="conv", norm="pre", dtype="float32", device="cpu",
        gemm_precision="ieee", kind="forward", shape=[1, 2, 2, 3], max_abs_err=1e-7,
        bound_ratio=0.25, kappa=1.5, passed=True, expect="agree",
    )  # fmt: skip
    rec.update(over)  # type: ignore[typeddict-item]
    return rec


def test_records_round_trip_and_keep_json_finite(tmp_path: Path) -> None:
    """What append writes, read returns; an infinite ratio is stored as the largest float."""
    path = tmp_path / "r.jsonl"
    records.append(_record(), path)
    records.append(_record(bound_ratio=math.inf, passed=False), path)
    got = records.read(path)
    assert got[0] == _record()
    assert got[1]["bound_ratio"] == 1.7976931348623157e308
    assert all(math.isfinite(json.loads(s)["bound_ratio"]) for s in path.read_text().splitlines())


def test_a_malformed_record_names_the_line_and_the_field(tmp_path: Path) -> None:
    """A line missing a field, or with an unknown kind, is rejected with its line number."""
    path = tmp_path / "r.jsonl"
    bad = dict(_record())
    del bad["kappa"]
    path.write_text(json.dumps(dict(_record())) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"r\.jsonl:2: record lacks \['kappa'\]"):
        records.read(path)
    path.write_text(json.dumps(dict(_record(kind="backward"))) + "\n")
    with pytest.raises(ValueError, match="kind must be one of"):
        records.read(path)


def test_help_says_which_commands_need_a_checkout() -> None:
    """The wheel ships the CLI, but verify, bench and report run tests/ and benchmarks/:
    their help says so, and the epilog says where the checkout is looked for."""
    from pm_core.lab.cli import build_parser

    text = " ".join(build_parser().format_help().split())  # help lines wrap
    commands = ["verify", "bench", "traffic", "profile", "view", "tune", "report"]
    listing = text[text.index(" verify ") : text.index(" options: ")]
    for cmd, nxt in zip(commands, [*commands[1:], None], strict=True):
        start = listing.index(f" {cmd} ")
        entry = listing[start : listing.index(f" {nxt} ", start) if nxt else None]
        assert ("needs a checkout" in entry) == (cmd in ("verify", "bench", "report")), entry
    assert "$PM_CORE_CHECKOUT" in text


#: What writes a verification record: pm_core.testing's ``record`` itself, the bound check
#: that calls it, and the checks that go through that bound check.
RECORDING = ("record", "assert_within_bound", "check_forward", "check_grads", "check_pair")


def test_verify_runs_exactly_the_property_modules_that_fill_its_table() -> None:
    """A property module that records oracle comparisons is run by ``pm-core verify`` (and
    the report): a new one left out would leave its cells out of the table. A module that
    records none is not run there: it would only lengthen the report."""
    import inspect

    import pm_core.testing
    from pm_core.lab.verify import ORACLE_MODULES, PROPERTIES

    # the names above are the ones that record: each check reaches the bound check,
    # and the bound check calls record
    source = {name: inspect.getsource(getattr(pm_core.testing, name)) for name in RECORDING[1:]}
    assert "record(" in source["assert_within_bound"]
    assert all("assert_within_bound(" in source[name] for name in RECORDING[2:])
    folder = Path(__file__).resolve().parents[2] / PROPERTIES
    calls = re.compile(r"\b(" + "|".join(RECORDING) + r")\(")
    compares = {
        f.name for f in folder.glob("test_*.py") if calls.search(f.read_text(encoding="utf-8"))
    }
    assert compares == set(ORACLE_MODULES)
