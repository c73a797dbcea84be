#!/usr/bin/env -S uv run --script
# /// script
# dependencies = ["nox[uv]>=2025.2.9"]
# ///
"""nox sessions: `nox -s tests` is what CI runs; `nox -s report` is the main job.

Each session builds its own virtualenv from the dependency groups in pyproject.toml,
with uv when it is installed (`pip install "nox[uv]"`: much faster on a fresh machine),
else with virtualenv and pip.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"

PYPROJECT = nox.project.load_toml("pyproject.toml")
#: The Python versions CI runs the tests on: the oldest requires-python admits, and the
#: newest torch 2.14.1 ships wheels for.
PYTHONS = ["3.10", "3.14"]


#: Compile bytecode at install, as pip does and uv by default does not. Where the machine sets
#: PYTHONDONTWRITEBYTECODE, nothing else ever writes a .pyc, and every process (each pytest
#: worker, each subprocess a test starts) compiles torch, timm and transformers from source
#: again: about 7 s of every collection on a 2-core machine.
COMPILE = {"UV_COMPILE_BYTECODE": "1"}


def _install(session: nox.Session, *groups: str, extra: tuple[str, ...] = ()) -> None:
    reqs: list[str] = []
    for group in groups:
        reqs += nox.project.dependency_groups(PYPROJECT, group)
    session.install(*dict.fromkeys([*reqs, *extra]), env=COMPILE)
    session.install("--no-deps", "-e", ".")


#: pytest-xdist: a worker per core, at most two (each property test pins one intra-op
#: thread, and tests/conftest.py gives each worker its share of torch's threads);
#: loadgroup keeps an xdist_group (the browser tests) on one worker.
XDIST = ("-n", "auto", "--maxprocesses=2", "--dist", "loadgroup")


@nox.session(default=True)
def tests(session: nox.Session) -> None:
    """The test suite under the derandomised `ci` Hypothesis profile (what CI runs)."""
    _install(session, "test", "models", "profile", "report", "browser")
    session.run("pytest", "--hypothesis-profile=ci", *XDIST, *session.posargs)


@nox.session(python=PYTHONS, default=False)
def tests_matrix(session: nox.Session) -> None:
    """The test suite on the oldest and newest supported Python (the CPU workflow's matrix)."""
    tests(session)


#: The oldest torch the project declares (``dependencies`` in pyproject.toml says the same;
#: tests/project checks they agree): the first with the per-backend ``fp32_precision``
#: flags that pm_core.precision reads is 2.9, and 2.13 is the oldest release tested.
OLDEST_TORCH = "2.13.0"
#: The library's tests: everything but the interop, lab and project tests (which need
#: torchvision, the lab's extras or the checkout's tooling, all pinned to the newest torch).
LIBRARY_TESTS = ("tests", "--ignore=tests/interop", "--ignore=tests/lab", "--ignore=tests/project")


@nox.session(default=False, venv_backend="virtualenv")
def tests_oldest(session: nox.Session) -> None:
    """The library's tests on the oldest declared torch (pip, not uv: pip takes a local
    wheel from find-links where the machine has one)."""
    reqs = [
        r for r in nox.project.dependency_groups(PYPROJECT, "test")
        if not r.startswith(("torch==", "torchvision=="))
    ]  # fmt: skip
    session.install(*reqs, f"torch=={OLDEST_TORCH}")
    session.install("--no-deps", "-e", ".")
    session.run("pytest", "--hypothesis-profile=ci", *XDIST, *LIBRARY_TESTS, *session.posargs)


@nox.session(default=False)
def tests_gpu(session: nox.Session) -> None:
    """Only the CUDA tests; each skips cleanly where torch sees no GPU."""
    _install(session, "test", "models", "profile")
    session.run("pytest", "--hypothesis-profile=ci", "-m", "cuda", *session.posargs)


#: MONAI before and after the legacy 3-D merge's fix (PR #8285, 1.5.0); 1.4.0 declares
#: numpy<2, so its session pins that. SwinUNETR needs einops (a MONAI optional extra).
MONAI = {"1.4.0": ("monai==1.4.0", "numpy<2", "einops"), "1.6.1": ("monai==1.6.1", "einops")}


@nox.session(default=False)
@nox.parametrize("monai", list(MONAI))
def monai(session: nox.Session, monai: str) -> None:
    """tests/interop/test_monai.py against a real MONAI: <= 1.4's legacy merge refused, >= 1.5's adopted."""
    _install(session, "test", extra=MONAI[monai])
    session.run("pytest", "tests/interop/test_monai.py", "-p", "no:cacheprovider", *session.posargs)


@nox.session(default=False)
def thorough(session: nox.Session) -> None:
    """The property suite under the `thorough` profile (10x ci's examples), for nightly runs."""
    _install(session, "test", "models", "profile", "report", "browser")
    session.run("pytest", "--hypothesis-profile=thorough", *XDIST, *session.posargs)


@nox.session(default=True)
def lint(session: nox.Session) -> None:
    """ruff check and format, check-jsonschema, zizmor and codespell: the pre-commit hooks'
    tools at the same pinned versions, run directly (pre-commit fetches hooks from GitHub)."""
    _install(session, "lint")
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")
    workflows = sorted(str(p) for p in Path(".github/workflows").glob("*.yml"))
    session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows)
    session.run(
        "check-jsonschema", "--builtin-schema", "vendor.dependabot", ".github/dependabot.yml"
    )
    session.run("zizmor", "--offline", *workflows)
    session.run(
        "codespell", "pm_core", "tests", "benchmarks", "docs", "README.md", "noxfile.py",
        "--skip", "docs/_build,*.min.js",
    )  # fmt: skip


@nox.session(default=True)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on pm_core, tests, benchmarks and this file (python_version 3.10)."""
    _install(session, "typecheck")
    session.run("mypy", *session.posargs)


@nox.session(default=False)
def docs(session: nox.Session) -> None:
    """Build the documentation site into docs/_build/html, with warnings as errors."""
    _install(session, "docs")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html",
        *session.posargs,
    )  # fmt: skip


@nox.session(default=False)
def mutants(session: nox.Session) -> None:
    """Mutation testing of the layer library's core with mutmut (pm_core/lab/mutation.py).

    No arguments: a fresh full run on every core, then the score per module into
    profiles/mutation/summary.json (the session fails if a module is below 90%).
    `-- --smoke`: the fixed CI sample in tests/mutation/smoke.toml, every one of which
    must be killed. `-- --resume`: keep mutants/ and let mutmut rerun only what changed.
    """
    # pm_core itself is not installed: the tests must import mutmut's copy under mutants/
    session.install(*nox.project.dependency_groups(PYPROJECT, "mutants"), env=COMPILE)
    if "--smoke" in session.posargs:
        shutil.rmtree("mutants", ignore_errors=True)
        session.run("python", "-m", "pm_core.lab.mutation", "smoke")
        return
    fresh = "--resume" not in session.posargs
    if fresh:
        shutil.rmtree("mutants", ignore_errors=True)
    start = time.perf_counter()
    session.run("mutmut", "run")
    elapsed = ["--elapsed", f"{time.perf_counter() - start:.0f}"] if fresh else []
    session.run("python", "-m", "pm_core.lab.mutation", "summary", *elapsed)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """The pytest-benchmark matrix (`-- --quick` for a smoke run); JSON under profiles/bench/."""
    _install(session, "test", "models")
    session.run("pm-core", "bench", *session.posargs)


@nox.session(default=False)
def profile(session: nox.Session) -> None:
    """torch.profiler traces, one TensorBoard run per impl x norm x dtype x shape, under profiles/."""
    _install(session, "test", "profile")
    session.run("pm-core", "profile", *session.posargs)


@nox.session(default=False)
def tensorboard(session: nox.Session) -> None:
    """Serve profiles/ in TensorBoard with the torch-tb-profiler plugin (http://localhost:6006)."""
    _install(session, "profile")
    session.run("tensorboard", "--logdir", "profiles", "--bind_all", *session.posargs)


@nox.session(default=False)
def view(session: nox.Session) -> None:
    """Open a trace offline in speedscope (fetched once with npm): `-- <run folder or trace>`."""
    _install(session, "torch")
    session.run("pm-core", "view", *session.posargs)


@nox.session(default=False)
def report(session: nox.Session) -> None:
    """The main job: verify, measure and profile, then write profiles/report/report.md."""
    _install(session, "test", "models", "profile", "report")
    session.run("pm-core", "report", *session.posargs)


if __name__ == "__main__":
    nox.main()
