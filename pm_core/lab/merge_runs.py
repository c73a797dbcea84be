"""``pm-core report --merge DIR...``: several runs' ``summary.json`` side by side.

Each run (a CPU laptop, CI on two GPU kinds) writes ``profiles/report/summary.json``;
this reads them and writes one table per question, with a column per machine:

* is it the same function (the verification verdict);
* which exact impl is fastest, per dtype x mode x norm at the first shape measured;
* each impl's speed against ``slice`` with its 95% interval.

It needs only the standard library, so a CI job can run it on the artifacts without
installing torch: ``python pm_core/lab/merge_runs.py DIR... [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, Any]:
    """A run's summary: ``path`` is its ``summary.json`` or the folder holding it."""
    file = path / "summary.json" if path.is_dir() else path
    try:
        data: dict[str, Any] = json.loads(file.read_text())
    except FileNotFoundError:
        raise SystemExit(
            f"{file}: no summary.json; pass a report folder (pm-core report --out DIR)"
        ) from None
    if "verdicts" not in data or "machine" not in data:
        raise SystemExit(
            f"{file}: a summary.json without 'verdicts' and 'machine' (written by an older "
            "pm-core report); regenerate it with pm-core report"
        )
    data["_source"] = str(file)
    return data


def _labels(runs: list[dict[str, Any]]) -> list[str]:
    labels: list[str] = []
    for run in runs:
        label = str(run["machine"].get("label", "?"))
        if run.get("noisy"):
            label += " (noisy)"
        n = sum(1 for earlier in labels if earlier.split(" #")[0] == label)
        labels.append(f"{label} #{n + 1}" if n else label)
    return labels


def _ci(v: list[float]) -> str:
    low, est, high = v
    return f"{est:.2f} [{low:.2f}, {high:.2f}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def merge(runs: list[dict[str, Any]]) -> str:
    """The merged tables, as markdown."""
    labels = _labels(runs)
    keyed = [{(v["dtype"], v["mode"], v["norm"]): v for v in run["verdicts"]} for run in runs]
    keys = list(dict.fromkeys(k for kv in keyed for k in kv))
    fastest = []
    for key in keys:
        cells = []
        for kv in keyed:
            v = kv.get(key)
            if v is None:
                cells.append("-")
            elif len(v["fastest"]) == 1:
                cells.append(f"**{v['fastest'][0]}**")
            else:
                cells.append("tie: " + ", ".join(v["fastest"]))
        fastest.append([*key, *cells])
    impls = list(dict.fromkeys(i for kv in keyed for v in kv.values() for i in v["vs_slice"]))
    ratios = []
    for key in keys:
        for impl in impls:
            cells = [
                _ci(kv[key]["vs_slice"][impl]) if key in kv and impl in kv[key]["vs_slice"] else "-"
                for kv in keyed
            ]
            ratios.append([*key, impl, *cells])
    same = [
        [
            "verification",
            *("passed" if run.get("ok") else "**FAILED**" for run in runs),
        ]
    ]
    shapes = {
        ",".join(map(str, v["shape"])) for run in runs for v in run["verdicts"] if "shape" in v
    }
    sources = "\n".join(
        f"- **{label}**: {run['machine'].get('summary', '')} (`{run.get('command', '?')}`, "
        f"{run['_source']}){'; flagged noisy: ' + '; '.join(run['noise']['reasons']) if run.get('noisy') else ''}"
        for label, run in zip(labels, runs, strict=True)
    )
    return "\n\n".join(
        [
            "# pm-core reports side by side",
            sources,
            "## Are they the same function?",
            _table(["", *labels], same),
            f"## Fastest exact impl (shape {', '.join(sorted(shapes)) or '?'})",
            "One name: declared fastest, its interval against the runner-up clear of a tie; "
            "several: they tie on that machine.",
            _table(["dtype", "mode", "norm", *labels], fastest),
            "## Speed against `slice`",
            "`t_slice / t_impl`, median of per-round ratios [95% interval]; > 1 is faster "
            "than `slice`.",
            _table(["dtype", "mode", "norm", "impl", *labels], ratios),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="merge_runs", description="Several pm-core reports' summary.json side by side."
    )
    p.add_argument("runs", nargs="+", type=Path, help="report folders or summary.json files")
    p.add_argument("--out", type=Path, help="write the markdown here (default: stdout)")
    args = p.parse_args(argv)
    text = merge([load(path) for path in args.runs]) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


__all__ = ["load", "main", "merge"]

if __name__ == "__main__":
    raise SystemExit(main())
