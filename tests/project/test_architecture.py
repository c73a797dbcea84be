"""The architecture the package docstrings describe, checked from the import statements.

* ``pm_core`` (the layer library) never imports ``pm_core.lab``; ``import pm_core`` loads
  no lab module and none of the lab's heavy dependencies.
* The lab imports the library only through public names: ``pm_core.__all__`` and the
  namespaces' ``__all__``; the top level holds at most 30 names.
* Neither package has an import circle, counting imports inside functions too.
* Nothing imports the CLI.
* No module of the package is over 450 lines.
* Tests and benchmarks import only public names: a module's ``__all__``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pm_core

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pm_core"
#: ``python -m`` entry points: scripts the import system runs, never imports.
ENTRY_POINTS = {"pm_core.__main__", "pm_core.lab.__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> Iterator[tuple[str, tuple[str, ...], int]]:
    """``(imported module, names taken from it, line)`` for every import in the file,
    at any depth (function-level imports count: they hid the old cli <-> report circle)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names = tuple(a.name for a in node.names)
            # `from . import plots` imports the module pm_core.lab.plots
            if node.module is None:
                for n in names:
                    yield f"{target}.{n}", (), node.lineno
            else:
                yield target, names, node.lineno


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for target, _, _ in _imports(m, path):
            if target in mods and target != m:
                graph[m].add(target)
    return graph


def _loaded_by(statement: str) -> set[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return set(json.loads(out))


def test_import_pm_core_loads_no_lab_and_no_heavy_dependency() -> None:
    """A fresh ``import pm_core`` loads the library and what ``import torch`` loads: no lab
    module, no matplotlib, tensorboard, pytest or Hypothesis. (tqdm is loaded by torch
    itself, through ``torch.hub``, where it is installed; the difference leaves it out.)"""
    added = _loaded_by("import pm_core") - _loaded_by("import torch")
    assert sorted(m for m in added if m.startswith("pm_core.lab")) == []
    heavy = ("matplotlib", "tqdm", "tensorboard", "torch_tb_profiler", "pytest", "hypothesis")
    assert sorted(m for m in added if m.split(".")[0] in heavy) == []
    assert {m.split(".")[0] for m in added} <= {"pm_core"}, sorted(added)


def test_library_never_imports_the_lab() -> None:
    """No module of the layer library imports pm_core.lab (the -m entry point aside)."""
    bad = [
        f"{m}:{line} imports {target}"
        for m, path in _modules().items()
        if not m.startswith("pm_core.lab") and m not in ENTRY_POINTS
        for target, _, line in _imports(m, path)
        if target.startswith("pm_core.lab")
    ]
    assert bad == []


def _public(module: str) -> set[str]:
    """The public names of a library module: ``pm_core``'s, its namespaces' and the
    optional ``pm_core.testing``'s ``__all__``."""
    namespaces = {f"pm_core.{n}" for n in pm_core.NAMESPACES} | {"pm_core.testing"}
    if module != "pm_core" and module not in namespaces:
        return set()
    return set(importlib.import_module(module).__all__)


def test_lab_uses_only_the_library_public_names() -> None:
    """The lab imports the library as ``from pm_core import <name in pm_core.__all__>`` or
    ``from pm_core.<namespace> import <name in its __all__>``."""
    bad: list[str] = []
    for m, path in _modules().items():
        if not m.startswith("pm_core.lab"):
            continue
        for target, names, line in _imports(m, path):
            if not target.startswith("pm_core") or target.startswith("pm_core.lab"):
                continue
            public = _public(target)
            if not public:
                bad.append(f"{m}:{line} imports {target}, not pm_core or a namespace")
            bad += [f"{m}:{line} {target}.{n} is not public" for n in names if n not in public]
    assert bad == []


def test_the_top_level_is_small_and_every_namespace_declares_its_names() -> None:
    """At most 30 names at the top level, none of them a renamed import; each namespace
    is a module with an ``__all__`` whose names all exist."""
    assert len(pm_core.__all__) <= 30, sorted(pm_core.__all__)
    for name in pm_core.__all__:
        obj = getattr(pm_core, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__name__ == name, f"pm_core.{name} renames {obj.__name__}"
    for ns in pm_core.NAMESPACES:
        mod = importlib.import_module(f"pm_core.{ns}")
        assert getattr(pm_core, ns) is mod
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert missing == [], f"pm_core.{ns}"


#: The most lines a module of the package may hold: past it, a module holds more than one
#: concern and is split (the report computes then renders, the fold sits apart, ...).
MAX_MODULE_LINES = 450


def test_no_module_is_over_the_size_limit() -> None:
    long = {
        p.relative_to(ROOT).as_posix(): n
        for p in sorted((ROOT / "pm_core").rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"over {MAX_MODULE_LINES} lines: {long}; split them by concern"


def test_no_import_circle() -> None:
    """The import graph of pm_core and pm_core.lab is acyclic (a circle is printed in full)."""
    graph = _graph()
    # a package's __init__ importing its own modules is the package, not a circle
    for pkg in ("pm_core", "pm_core.lab"):
        graph[pkg] = {t for t in graph[pkg] if not t.startswith(pkg + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                pytest.fail("import circle: " + " -> ".join([*stack[stack.index(t) :], t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_nothing_imports_the_cli() -> None:
    """The CLI is the top of the lab: only the ``python -m`` entry points import it."""
    users = [m for m, deps in _graph().items() if "pm_core.lab.cli" in deps]
    assert sorted(users) == sorted(ENTRY_POINTS)


def _test_files() -> list[Path]:
    return sorted([*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")])


@pytest.mark.parametrize("path", _test_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_tests_use_public_names(path: Path) -> None:
    """Tests and benchmarks import from pm_core modules only the names in their ``__all__``,
    and never from an underscore module."""
    bad: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("pm_core"):
            continue
        mod = node.module or ""
        if any(part.startswith("_") for part in mod.split(".")):
            bad.append(f"line {node.lineno}: {mod} is private")
            continue
        public = set(getattr(importlib.import_module(mod), "__all__", ()))
        for alias in node.names:
            sub = f"{mod}.{alias.name}"
            if alias.name not in public and importlib.util.find_spec(sub) is None:
                bad.append(f"line {node.lineno}: {sub} is not in {mod}.__all__")
    assert bad == []


def test_public_names_resolve() -> None:
    """Every name in ``pm_core.__all__`` exists, and the public types are importable."""
    missing = [n for n in pm_core.__all__ if not hasattr(pm_core, n)]
    assert missing == []
    from pm_core import NORMS
    from pm_core.layouts import LAYOUTS

    assert set(NORMS) == {"pre", "post", "none"}
    assert set(LAYOUTS) == {"swin", "unfold", "conv"}


def test_the_suite_runs_outside_a_checkout(tmp_path: Path) -> None:
    """``pm_core.testing`` needs nothing from ``tests/``: from an empty folder, a property
    on a merge written there (Swin's slice form, by hand) draws cases and passes, and the
    same property on a wrong merge fails with a repro."""
    code = """
import sys, torch
import torch.nn.functional as F
from hypothesis import given, settings
from pm_core.testing import Subject, cases, check_forward

def mine(x, w, nw=None, nb=None, *, hw=None, norm="pre", eps=1e-5, **_):
    x4 = x if hw is None else x.reshape(x.shape[0], *hw, x.shape[-1])
    x4 = F.pad(x4, (0, 0, 0, x4.shape[2] % 2, 0, x4.shape[1] % 2))
    v = torch.cat([x4[:, 0::2, 0::2], x4[:, 1::2, 0::2], x4[:, 0::2, 1::2], x4[:, 1::2, 1::2]], -1)
    v = F.layer_norm(v, v.shape[-1:], nw, nb, eps) if norm == "pre" else v
    y = F.linear(v, w)
    y = F.layer_norm(y, y.shape[-1:], nw, nb, eps) if norm == "post" else y
    return y if hw is None else y.flatten(1, 2)

def wrong(x, w, nw=None, nb=None, **kw):
    return mine(x.transpose(1, 2) if kw.get("hw") is None else x, w, nw, nb, **kw)

for fn in (mine, wrong):
    @settings(max_examples=20, derandomize=True, database=None)
    @given(case=cases(torch.float32))
    def prop(case):
        check_forward(Subject(fn.__name__, fn, fn.__name__), case, norm="pre")
    try:
        prop()
        print(fn.__name__, "passed")
    except AssertionError as e:
        print(fn.__name__, "failed", "repro:" in "".join(getattr(e, "__notes__", [])) + str(e))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["mine passed", "wrong failed True"], out.stdout
