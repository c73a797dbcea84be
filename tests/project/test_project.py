"""Project-level promises: the README and CI agree, and the CLI's usage errors exit 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pm_core import IMPLS
from pm_core.lab.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run's last command is, verbatim, the README's test command."""
    lines = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines()]
    last = [ln for ln in lines if ln and not ln.startswith(("#", "set ", "cd "))][-1]
    assert last in (ROOT / "README.md").read_text()


def test_readme_lists_every_impl() -> None:
    """Adding an impl to the registry without documenting it fails here."""
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in IMPLS if f"| `{name}` |" not in readme]
    assert not missing, f"README's impl table lacks {missing}"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["verify", "--profile", "nightly"],
        ["traffic", "--shape", "8,56,56"],
        ["traffic", "--dtype", "int8"],
        ["report", "--quick", "--nope"],
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Bad arguments exit with code 2 and say what is wrong on stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: pm-core" in err
    assert "error:" in err


def test_cli_traffic_prints_a_table() -> None:
    """`python -m pm_core traffic` runs end to end and prints the conv path at ratio 1.00 for norm none."""
    out = subprocess.run(
        [sys.executable, "-m", "pm_core", "traffic", "--shape", "1,8,6,4"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    row = next(line for line in out.splitlines() if line.startswith("| none | conv |"))
    assert "| 1.00 |" in row


@pytest.mark.models
def test_readme_python_examples_run() -> None:
    """Every ```python block in the README runs as written (so the documented API cannot drift)."""
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    assert len(blocks) >= 2
    swapped: list[object] = []
    for block in blocks:
        namespace: dict[str, object] = {}
        exec(compile(block, "README.md", "exec"), namespace)
        if "n" in namespace:
            swapped.append(namespace["n"])
    assert swapped == [3]  # the model example swapped all three merges


def test_precommit_revs_match_the_lint_pins() -> None:
    """`nox -s lint` runs the pre-commit hooks' tools at the revs .pre-commit-config.yaml pins
    (pyproject's lint group ``tool==version``), so the two cannot drift apart."""
    # regexes, not tomllib/yaml: tomllib is 3.11+ and PyYAML is not a test dependency
    group = re.search(r"^lint = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.M)
    assert group is not None, "pyproject.toml has no one-line lint group"
    pins = dict(re.findall(r'"([a-z-]+)==([0-9.]+)"', group[1]))
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    revs = {
        url.rsplit("/", 1)[1]: rev.lstrip("v")
        for url, rev in re.findall(r"- repo: (\S+)\s+rev: (\S+)", config)
    }
    hook_repo = {
        "ruff": "ruff-pre-commit",
        "check-jsonschema": "check-jsonschema",
        "zizmor": "zizmor-pre-commit",
        "codespell": "codespell",
    }
    assert set(pins) == set(hook_repo)
    assert {tool: revs.get(repo) for tool, repo in hook_repo.items()} == pins


def test_the_version_is_written_once() -> None:
    """pyproject.toml holds the version; the docs read it from there, and no other tracked
    file assigns it."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    found = re.search(r'^version = "([^"]+)"$', pyproject, re.M)
    assert found is not None
    version = found[1]
    tracked = subprocess.run(
        ["git", "ls-files", "*.py", "*.toml", "*.cfg", "*.rst"], capture_output=True, text=True,
        cwd=ROOT, check=True,
    ).stdout.split()  # fmt: skip
    pattern = re.compile(rf"""(version|release)\s*=\s*["']{re.escape(version)}["']""")
    others = [
        f for f in tracked if f != "pyproject.toml" and pattern.search((ROOT / f).read_text())
    ]
    assert others == []


def test_the_lab_extra_declares_what_the_lab_imports() -> None:
    """Every third-party package pm_core.lab imports is torch, torchvision (the models
    group, imported only where a model is built), mutmut (the mutants session's own), or
    in the ``lab`` extra, which a wheel publishes."""
    import ast

    from pm_core.lab.mutation import read_toml

    cfg = read_toml(ROOT / "pyproject.toml")
    extra = cfg["project"]["optional-dependencies"]
    declared = {
        re.split(r"[<>=;\[ ]", req, maxsplit=1)[0].replace("-", "_")
        for req in [*extra["lab"], *extra["testing"]]
    }
    imported: set[str] = set()
    for path in (ROOT / "pm_core" / "lab").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"pm_core", "torch"}
    assert third_party - {"torchvision", "mutmut"} <= declared, sorted(third_party - declared)


def test_the_declared_torch_floor_is_the_tested_one() -> None:
    """pyproject's ``torch>=X`` is the torch ``nox -s tests_oldest`` installs, and CI runs
    that session: a floor nothing tests would be a claim nothing checks."""
    from pm_core.lab.mutation import read_toml

    deps = read_toml(ROOT / "pyproject.toml")["project"]["dependencies"]
    floor = next(d.removeprefix("torch>=") for d in deps if d.startswith("torch>="))
    noxfile = (ROOT / "noxfile.py").read_text()
    assert re.search(rf'^OLDEST_TORCH = "{re.escape(floor)}(\.0)?"$', noxfile, re.M), floor
    assert "tests_oldest" in (ROOT / ".ci/run").read_text()
    assert "tests_oldest" in (ROOT / ".github/workflows/ci.yml").read_text()


def test_every_picture_and_file_the_readme_links_is_committed() -> None:
    """A fresh clone renders the README whole: every relative link and image it names is
    tracked (the report folder is not, so the picture lives under docs/)."""
    readme = (ROOT / "README.md").read_text()
    targets = {
        t.split("#")[0]
        for t in re.findall(r"\]\(([^)\s]+)\)", readme)
        if not t.startswith(("http://", "https://", "#", "mailto:"))
    }
    tracked = set(
        subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    )
    missing = sorted(t for t in targets if t not in tracked)
    assert missing == [], f"README links files a clone lacks: {missing}"
    assert "docs/images/time_vs_shape.png" in targets
