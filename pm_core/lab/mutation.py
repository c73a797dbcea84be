"""Mutation testing of the layer library: how many wrong libraries the suite would catch.

``nox -s mutants`` runs `mutmut <https://mutmut.readthedocs.io>`_ over the numerical core
(``[tool.mutmut]`` in ``pyproject.toml``: impls and the fold, ``patch_merge`` and
validation, layouts, the oracle, the bounds). mutmut writes every mutant into a copy of
the package under ``mutants/`` behind a trampoline, records in one unmutated run which
tests call which function, and then runs, per mutant, only those tests, with ``-x``, in
processes forked from a warm server (no interpreter start or ``import torch`` per mutant),
on both cores. ``tests/mutation/order.py`` puts a mutant's tests fastest first.

This module reads mutmut's per-file results (``mutants/<path>.meta``) and turns them into
a score per module, ``killed / (total - equivalent)``:

* **killed** is whatever the suite detected: a failing test, a timeout or a crash;
* **equivalent** mutants no correct test could kill; each is listed, with the changed line
  and a one-line reason, in ``tests/mutation/equivalent.toml``, as one of two kinds:

  - ``same function``: it computes the same values (``strict=None`` for ``strict=True``
    on two sequences of one length);
  - ``within bound``: it rounds differently, and the reason names the term of the
    derived error bound (:mod:`pm_core.bounds`) that covers the difference. The bound
    is the suite's definition of a correct implementation: an implementation within it
    is correct, so a test that failed such a mutant would fail a correct library too.

   An entry whose mutant no
  longer exists, or now changes a different line, is *stale*: it is reported and not
  counted, so an edit to the library cannot silently keep an old excuse;
* a survivor that is not listed, or a mutant no selected test reaches, is a **gap**.

``summary`` writes ``profiles/mutation/summary.json``, which the report shows. ``smoke``
runs the fixed CI sample in ``tests/mutation/smoke.toml`` (each mutant with its own few
test files, after one clean run of them) and fails unless every one is killed.

mutmut's internals (mutant generation, diffs) are imported only here and only inside these
commands; ``pyproject.toml`` pins mutmut, because the ``.meta`` format is not a public API.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .checkout import pytest_command

MUTANTS_DIR = Path("mutants")
EQUIVALENT_FILE = Path("tests/mutation/equivalent.toml")
SMOKE_FILE = Path("tests/mutation/smoke.toml")
SUMMARY_FILE = Path("profiles/mutation/summary.json")
#: The score every core module must reach (the issue's bar; ``summary --min-score``).
MIN_SCORE = 0.9

#: mutmut 3.8.1's exit codes, by what they mean here (``mutmut.stats.status_by_exit_code``).
KILLED_CODES = {1, 3, 24, -24, 152, 255, 36, -11, -9}  # failed, internal error, timeout, crash
SURVIVED_CODES = {0}
NO_TESTS_CODES = {5, 33}


def status(code: int | None) -> str:
    """``killed``, ``survived``, ``no tests`` or ``not run`` for one mutmut exit code."""
    if code is None:
        return "not run"
    if code in KILLED_CODES:
        return "killed"
    if code in SURVIVED_CODES:
        return "survived"
    if code in NO_TESTS_CODES:
        return "no tests"
    return "not run"  # interrupted (2), skipped (34), suspicious (35)


@dataclass(frozen=True)
class Equivalent:
    """A survivor no correct test can kill: which, the line it changes, why, and its kind."""

    mutant: str
    change: str
    why: str
    kind: str = "same function"


#: The kinds of equivalent mutant (see the module docstring).
EQUIVALENT_KINDS = ("same function", "within bound")


def read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the test group installs tomli there
        import tomli as tomllib
    data: dict[str, Any] = tomllib.loads(path.read_text())
    return data


def load_equivalents(path: Path) -> dict[str, Equivalent]:
    """The committed equivalent list; every entry needs ``mutant``, ``change`` and ``why``,
    and may give a ``kind`` (default ``"same function"``)."""
    entries = read_toml(path).get("equivalent", []) if path.is_file() else []
    found: dict[str, Equivalent] = {}
    for i, entry in enumerate(entries):
        missing = {"mutant", "change", "why"} - set(entry)
        if missing or not str(entry.get("why", "")).strip():
            raise ValueError(f"{path}: entry {i} needs mutant, change and a non-empty why")
        if entry["mutant"] in found:
            raise ValueError(f"{path}: {entry['mutant']} is listed twice")
        kind = entry.get("kind", "same function")
        if kind not in EQUIVALENT_KINDS:
            raise ValueError(f"{path}: {entry['mutant']}: kind must be one of {EQUIVALENT_KINDS}")
        found[entry["mutant"]] = Equivalent(entry["mutant"], entry["change"], entry["why"], kind)
    return found


def read_results(mutants_dir: Path = MUTANTS_DIR) -> dict[str, dict[str, int | None]]:
    """``{module path: {mutant name: exit code}}`` from mutmut's ``.meta`` files."""
    results: dict[str, dict[str, int | None]] = {}
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        if codes:
            results[meta.relative_to(mutants_dir).as_posix().removesuffix(".meta")] = codes
    return results


@dataclass(frozen=True)
class ModuleScore:
    module: str
    total: int
    killed: int
    survived: int
    no_tests: int
    not_run: int
    equivalent: int
    within_bound: int = 0  # of the equivalent ones, those that round differently

    @property
    def score(self) -> float:
        """``killed / (total - equivalent)`` over the mutants that ran (all of them, in a
        complete run); 1.0 for a module with nothing left to kill."""
        live = self.total - self.equivalent - self.not_run
        if live == 0:
            return math.nan if self.not_run else 1.0  # nothing ran: no score
        return self.killed / live


_COUNTS = ("total", "killed", "survived", "no_tests", "not_run", "equivalent", "within_bound")


@dataclass(frozen=True)
class Summary:
    produced: str  # ISO time the results were read
    elapsed_s: float | None  # the mutmut run's wall time, when the session measured it
    tool: str
    modules: tuple[ModuleScore, ...]
    gaps: tuple[tuple[str, str, str], ...]  # (mutant, status, change) not killed, not triaged
    stale: tuple[tuple[str, str], ...]  # (mutant, reason) equivalent entries that no longer fit

    @property
    def not_run(self) -> int:
        """Mutants without a result: an interrupted (or still running) mutmut run."""
        return sum(m.not_run for m in self.modules)

    def below(self, min_score: float) -> list[ModuleScore]:
        return [m for m in self.modules if m.score < min_score]


def summarize(
    results: dict[str, dict[str, int | None]],
    equivalents: dict[str, Equivalent],
    change_of: Callable[[str, str], str],
    *,
    elapsed_s: float | None = None,
    tool: str = "mutmut",
) -> Summary:
    """Scores per module. ``change_of(mutant, module)`` is the mutated line(s) as the
    equivalent list writes them; an entry applies only while it still matches."""
    modules: list[ModuleScore] = []
    gaps: list[tuple[str, str, str]] = []
    stale: list[tuple[str, str]] = []
    known = {name for codes in results.values() for name in codes}
    stale += [(name, "no such mutant") for name in equivalents if name not in known]
    for module, codes in results.items():
        counts = dict.fromkeys(("killed", "survived", "no tests", "not run"), 0)
        equivalent = within_bound = 0
        for name, code in codes.items():
            st = status(code)
            counts[st] += 1
            if st in ("killed", "not run"):
                continue
            entry = equivalents.get(name)
            if entry is not None:
                now = change_of(name, module)
                if now == entry.change:
                    equivalent += 1
                    within_bound += entry.kind == "within bound"
                    continue
                stale.append((name, f"now changes {now!r}"))
            gaps.append((name, st, change_of(name, module)))
        live = ModuleScore(module, len(codes), counts["killed"], counts["survived"],
                           counts["no tests"], counts["not run"], equivalent,
                           within_bound)  # fmt: skip
        modules.append(live)
    produced = datetime.now().isoformat(timespec="seconds")
    return Summary(produced, elapsed_s, tool, tuple(modules), tuple(gaps), tuple(stale))


def write_summary(summary: Summary, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(summary)
    for row, module in zip(data["modules"], summary.modules, strict=True):
        row["score"] = module.score
    path.write_text(json.dumps(data, indent=2) + "\n")


def load_summary(path: Path) -> Summary | None:
    """The summary at ``path``, or None when there is none (or it does not parse)."""
    try:
        data = json.loads(path.read_text())
        modules = tuple(
            ModuleScore(**{k: v for k, v in m.items() if k != "score"}) for m in data["modules"]
        )
        return Summary(
            data["produced"], data["elapsed_s"], data["tool"], modules,
            tuple((str(m), str(st), str(c)) for m, st, c in data["gaps"]),
            tuple((str(m), str(why)) for m, why in data["stale"]),
        )  # fmt: skip
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _percent(score: float) -> str:
    return "not run" if math.isnan(score) else f"{score:.1%}"


def score_table(summary: Summary) -> str:
    """The per-module scores as a markdown table."""
    rows = [
        "| module | mutants | killed | survived | no tests | equivalent (within bound) "
        "| not run | score |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows += [
        f"| `{m.module}` | {m.total} | {m.killed} | {m.survived} | {m.no_tests} | "
        f"{m.equivalent} ({m.within_bound}) | {m.not_run} | {_percent(m.score)} |"
        for m in summary.modules
    ]
    every = ModuleScore("all", *(sum(getattr(m, f) for m in summary.modules) for f in _COUNTS))
    rows.append(
        f"| all | {every.total} | {every.killed} | {every.survived} | {every.no_tests} | "
        f"{every.equivalent} ({every.within_bound}) | {every.not_run} | {_percent(every.score)} |"
    )
    return "\n".join(rows)


# --- mutmut's internals: only in the commands below, which run in the mutants session ---


def _mutmut_change(mutant: str, module: str) -> str:
    """The lines a mutant adds, stripped and joined with `` / ``, from mutmut's own diff."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(mutant, path=Path(module))
    added = [
        line[1:].strip() for line in diff.splitlines() if line.startswith("+") and line[1:].strip()
    ]
    return " / ".join(line for line in added if not line.startswith("++"))


def _generate_mutants() -> None:
    """mutmut's own generation step (``mutmut run`` begins with it), without the run."""
    from mutmut.__main__ import create_mutants
    from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir

    MUTANTS_DIR.mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    create_mutants(2)


@dataclass(frozen=True)
class SmokeMutant:
    """One mutant of the CI sample: its name, the line it changes, the tests that kill it."""

    mutant: str
    change: str
    tests: tuple[str, ...]


def load_smoke(path: Path = SMOKE_FILE) -> list[SmokeMutant]:
    entries = read_toml(path)["mutant"]
    return [SmokeMutant(e["mutant"], e["change"], tuple(e["tests"])) for e in entries]


def _pytest(tests: Iterable[str], mutant: str) -> tuple[int, float]:
    cmd = pytest_command("-x", "-q", "--hypothesis-profile=mutation", *tests)
    env = {**os.environ, "MUTANT_UNDER_TEST": mutant}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=MUTANTS_DIR, env=env, capture_output=True, check=False)
    return done.returncode, time.perf_counter() - start


def stale_entries(
    entries: Sequence[tuple[str, str]],
    module_of: Mapping[str, str],
    change_of: Callable[[str, str], str] = _mutmut_change,
) -> list[str]:
    """The ``(mutant, recorded change)`` entries that no longer describe that mutant: it is
    gone, or mutmut renumbered and it now changes another line. A code change above a
    mutant shifts the numbers, so the smoke checks the sample and the equivalents alike."""
    out = []
    for mutant, change in entries:
        if mutant not in module_of:
            out.append(f"{mutant} does not exist any more")
        elif (now := change_of(mutant, module_of[mutant])) != change:
            out.append(f"{mutant} now changes {now!r}, not {change!r}")
    return out


def run_smoke(sample: Sequence[SmokeMutant], *, workers: int = 2) -> bool:
    """Generate the mutants, check the sample still names them, run a clean baseline of
    the sample's tests, then each mutant against its tests. True when all are killed."""
    _generate_mutants()
    results = read_results()
    module_of = {name: module for module, codes in results.items() for name in codes}
    stale = [
        f"smoke sample: {p}; pick another"
        for p in stale_entries([(s.mutant, s.change) for s in sample], module_of)
    ] + [
        f"{EQUIVALENT_FILE}: {p}; renumber or re-triage it"
        for p in stale_entries(
            [(e.mutant, e.change) for e in load_equivalents(EQUIVALENT_FILE).values()],
            module_of,
        )
    ]
    for line in stale:
        print(line)
    if stale:
        return False
    tests = sorted({t for s in sample for t in s.tests})
    code, seconds = _pytest(tests, "")
    print(f"clean run of the sample's tests: exit {code} in {seconds:.0f} s")
    if code != 0:
        print("the unmutated library fails its own tests: no mutant result would mean anything")
        return False
    with ThreadPoolExecutor(workers) as pool:
        outcomes = list(pool.map(lambda s: _pytest(s.tests, s.mutant), sample))
    for s, (code, seconds) in zip(sample, outcomes, strict=True):
        verdict = "killed" if code == 1 else f"NOT KILLED (pytest exit {code})"
        print(f"{verdict:>28}  {seconds:5.1f} s  {s.mutant}  [{s.change}]")
    killed = sum(c == 1 for c, _ in outcomes)
    print(f"{killed}/{len(sample)} smoke mutants killed")
    return killed == len(sample)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pm_core.lab.mutation", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_sum = sub.add_parser("summary", help="scores per module from mutants/, for the report")
    p_sum.add_argument("--elapsed", type=float, default=None, help="the run's wall time, s")
    p_sum.add_argument("--min-score", type=float, default=MIN_SCORE)
    p_sum.add_argument("--out", type=Path, default=SUMMARY_FILE)
    sub.add_parser("smoke", help="the fixed CI sample; fails unless every mutant is killed")
    args = parser.parse_args(argv)
    if args.command == "smoke":
        return 0 if run_smoke(load_smoke()) else 1
    results = read_results()
    if not results:
        print(f"no mutmut results under {MUTANTS_DIR}/: run `nox -s mutants` first")
        return 1
    from importlib.metadata import version

    summary = summarize(
        results, load_equivalents(EQUIVALENT_FILE), _mutmut_change,
        elapsed_s=args.elapsed, tool=f"mutmut {version('mutmut')}",
    )  # fmt: skip
    write_summary(summary, args.out)
    print(score_table(summary))
    for name, st, change in summary.gaps:
        print(f"gap ({st}): {name}: {change}")
    for name, why in summary.stale:
        print(f"stale equivalent entry: {name}: {why}")
    if summary.not_run:
        print(f"incomplete: {summary.not_run} mutants have no result (scores are over the rest)")
    low = summary.below(args.min_score)
    for m in low:
        print(f"{m.module}: score {m.score:.1%} is below {args.min_score:.0%}")
    print(f"wrote {args.out}")
    return 1 if low or summary.not_run else 0


__all__ = [
    "EQUIVALENT_FILE",
    "EQUIVALENT_KINDS",
    "MIN_SCORE",
    "SMOKE_FILE",
    "SUMMARY_FILE",
    "Equivalent",
    "ModuleScore",
    "SmokeMutant",
    "Summary",
    "load_equivalents",
    "load_smoke",
    "load_summary",
    "read_results",
    "read_toml",
    "run_smoke",
    "score_table",
    "stale_entries",
    "status",
    "summarize",
    "write_summary",
]

if __name__ == "__main__":
    sys.exit(main())
