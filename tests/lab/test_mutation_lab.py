"""The mutation-testing plumbing: scores from mutmut's results, the triage lists, the report.

mutmut itself runs only in ``nox -s mutants``; these tests feed the reader hand-made
results in mutmut's ``.meta`` format, and check the committed lists are well formed.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pm_core.lab import mutation, report, report_evidence
from tests.mutation import order

ROOT = Path(__file__).resolve().parents[2]
CORE = {
    "pm_core/impls.py", "pm_core/fold.py", "pm_core/functional.py", "pm_core/_checks.py",
    "pm_core/layouts.py", "pm_core/oracle.py", "pm_core/bounds.py", "pm_core/bound_terms.py",
    "pm_core/window_impls.py", "pm_core/window_gather.py",
}  # fmt: skip


def test_exit_codes_map_to_outcomes() -> None:
    """A failing test, a timeout or a crash is a kill; exit 0 survives; 33 is 'no tests'."""
    assert {mutation.status(c) for c in (1, 3, 36, -24, -11, -9)} == {"killed"}
    assert mutation.status(0) == "survived"
    assert mutation.status(33) == mutation.status(5) == "no tests"
    assert mutation.status(None) == mutation.status(2) == mutation.status(35) == "not run"


def _meta(tmp: Path, module: str, codes: dict[str, int | None]) -> None:
    path = tmp / (module + ".meta")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exit_code_by_key": codes, "durations_by_key": {}}))


def test_summary_counts_triage_and_staleness(tmp_path: Path) -> None:
    """Score = killed / (total - equivalent); an equivalent entry counts only while its
    mutant exists and still changes the recorded line; everything else not killed is a gap."""
    _meta(tmp_path, "pm_core/a.py", {"a1": 1, "a2": 0, "a3": 0, "a4": 33, "a5": None, "a6": 36})
    _meta(tmp_path, "pm_core/b.py", {"b1": 1})
    results = mutation.read_results(tmp_path)
    assert set(results) == {"pm_core/a.py", "pm_core/b.py"}
    changes = {"a2": "x = 1", "a3": "y = 2", "a4": "z = 3", "a5": "w = 4"}
    equivalents = {
        "a2": mutation.Equivalent("a2", "x = 1", "rounds once more", "within bound"),
        "a3": mutation.Equivalent("a3", "y = 0", "was another line"),  # stale
        "gone": mutation.Equivalent("gone", "q = 1", "no such mutant"),  # stale
    }
    s = mutation.summarize(results, equivalents, lambda name, _module: changes[name])
    a, b = s.modules
    assert (a.total, a.killed, a.survived, a.no_tests, a.not_run, a.equivalent) == (
        6,
        2,
        2,
        1,
        1,
        1,
    )
    assert a.within_bound == 1
    assert a.score == pytest.approx(2 / 4)  # a5 has no result yet: not in the score
    assert s.not_run == 1
    assert b.score == 1.0
    assert [g[0] for g in s.gaps] == ["a3", "a4"]
    assert dict(s.stale).keys() == {"a3", "gone"}
    assert [m.module for m in s.below(0.9)] == ["pm_core/a.py"]
    out = tmp_path / "summary.json"
    mutation.write_summary(s, out)
    assert mutation.load_summary(out) == s
    assert json.loads(out.read_text())["modules"][0]["score"] == pytest.approx(0.5)
    assert mutation.load_summary(tmp_path / "missing.json") is None
    out.write_text("{")
    assert mutation.load_summary(out) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[[equivalent]]\nmutant = "m"\nchange = "x"\nwhy = ""\n', "non-empty why"),
        ('[[equivalent]]\nmutant = "m"\nwhy = "w"\n', "needs mutant, change"),
        ('[[equivalent]]\nmutant = "m"\nchange = "x"\nwhy = "w"\n' * 2, "listed twice"),
        ('[[equivalent]]\nmutant = "m"\nchange = "x"\nwhy = "w"\nkind = "close"\n', "kind must"),
    ],
)
def test_equivalent_list_rejects_malformed_entries(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "eq.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem):
        mutation.load_equivalents(path)


def test_committed_equivalents_each_give_a_reason() -> None:
    """The committed list parses, and every entry names a core mutant and says why in one line."""
    found = mutation.load_equivalents(ROOT / mutation.EQUIVALENT_FILE)
    for name, entry in found.items():
        module = "pm_core/" + name.split(".")[1] + ".py"
        assert module in CORE, name
        assert "\n" not in entry.why.strip(), f"{name}: one line, please"
        if entry.kind == "within bound":  # it must say what covers the difference
            assert "bound" in entry.why or "fewer roundings" in entry.why, name


def test_smoke_sample_spans_the_core() -> None:
    """About 20 mutants, from every core module, each with test files that exist."""
    sample = mutation.load_smoke(ROOT / mutation.SMOKE_FILE)
    assert 15 <= len(sample) <= 25
    assert {"pm_core/" + s.mutant.split(".")[1] + ".py" for s in sample} == CORE
    assert len({s.mutant for s in sample}) == len(sample)
    for s in sample:
        assert s.tests, s.mutant
        for t in s.tests:
            assert (ROOT / t.split("::")[0]).is_file(), t


def test_mutmut_config_mutates_the_core_with_the_mutation_profile() -> None:
    """pyproject's [tool.mutmut] mutates exactly the core, under the derandomised profile."""
    cfg = mutation.read_toml(ROOT / "pyproject.toml")["tool"]["mutmut"]
    assert set(cfg["only_mutate"]) == CORE
    assert "--hypothesis-profile=mutation" in cfg["pytest_add_cli_args"]
    selection = cfg["pytest_add_cli_args_test_selection"]
    for path in selection:  # a test file, or a deselected test in one
        assert (ROOT / path.removeprefix("--deselect=").split("::")[0]).exists(), path
    # every property runs against the mutants: the engine's general impls are mutated too
    for prop in sorted((ROOT / "tests" / "properties").glob("test_*.py")):
        name = prop.relative_to(ROOT).as_posix()
        assert name in selection, f"{name} is not in the mutation test selection"


def _item(nodeid: str) -> Any:
    return SimpleNamespace(nodeid=nodeid)


def test_order_plugin_runs_fastest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a mutant, tests run by mutmut's measured duration, unknown ones last; in
    mutmut's own stats run (or outside mutmut) the order is untouched."""
    (tmp_path / "mutmut-stats.json").write_text(
        json.dumps({"duration_by_test": {"slow": 3.0, "fast": 0.1, "mid": 1.0}})
    )
    config: Any = SimpleNamespace(rootpath=tmp_path)
    names = ["unknown", "slow", "fast", "mid"]
    for env, expected in [
        ("pm_core.impls.x_f__mutmut_1", ["fast", "mid", "slow", "unknown"]),
        ("stats", names),
        ("", names),
    ]:
        monkeypatch.setenv("MUTANT_UNDER_TEST", env)
        items = [_item(n) for n in names]
        order.pytest_collection_modifyitems(config, items)
        assert [i.nodeid for i in items] == expected, env
    (tmp_path / "mutmut-stats.json").write_text("not json")
    assert order.durations(tmp_path) == {}


def test_report_shows_scores_or_says_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_evidence, "checkout_root", lambda: tmp_path)
    r = report.Report(tmp_path / "out", quick=True)
    report_evidence.section_mutation(r, lambda _line: None)
    assert "nox -s mutants" in r.sections[-1]
    assert r.headline == []
    _meta(tmp_path / "mutants", "pm_core/a.py", {"a1": 1, "a2": 0})
    s = mutation.summarize(
        mutation.read_results(tmp_path / "mutants"), {}, lambda *_: "x = 1", elapsed_s=600
    )
    mutation.write_summary(s, tmp_path / mutation.SUMMARY_FILE)
    report_evidence.section_mutation(r, lambda _line: None)
    assert "| `pm_core/a.py` | 2 | 1 | 1 | 0 | 0 (0) | 0 | 50.0% |" in r.sections[-1]
    assert "in 10 min" in r.sections[-1]
    assert "below 90%" in r.headline[-1]


def test_stale_entries_name_renumbered_and_vanished_mutants() -> None:
    """A mutant number that now changes another line, or no longer exists, is reported;
    one that still changes its recorded line is not."""
    module_of = {"m.x_f__mutmut_1": "pm_core/m.py", "m.x_f__mutmut_2": "pm_core/m.py"}
    changes = {"m.x_f__mutmut_1": "a = 2", "m.x_f__mutmut_2": "b = None"}
    entries = [("m.x_f__mutmut_1", "a = 2"), ("m.x_f__mutmut_2", "c = 3"), ("m.gone_9", "d")]
    stale = mutation.stale_entries(entries, module_of, lambda name, _mod: changes[name])
    assert stale == [
        "m.x_f__mutmut_2 now changes 'b = None', not 'c = 3'",
        "m.gone_9 does not exist any more",
    ]
