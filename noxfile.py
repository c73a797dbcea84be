"""nox sessions: `nox -s tests` is what CI runs; `nox -s report` is the main job."""

from __future__ import annotations

import nox

nox.needs_version = ">=2024.4.15"
nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _install(session: nox.Session, *groups: str) -> None:
    reqs: list[str] = []
    for group in groups:
        reqs += nox.project.dependency_groups(PYPROJECT, group)
    session.install(*dict.fromkeys(reqs))
    session.install("--no-deps", "-e", ".")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite under the derandomised `ci` Hypothesis profile (what CI runs)."""
    _install(session, "test", "models", "profile", "report")
    session.run("pytest", "--hypothesis-profile=ci", *session.posargs)


@nox.session(default=False)
def tests_gpu(session: nox.Session) -> None:
    """Only the CUDA tests; each skips cleanly where torch sees no GPU."""
    _install(session, "test", "models", "profile")
    session.run("pytest", "--hypothesis-profile=ci", "-m", "cuda", *session.posargs)


@nox.session(default=False)
def thorough(session: nox.Session) -> None:
    """The property suite under the `thorough` profile (10x ci's examples), for nightly runs."""
    _install(session, "test", "models", "profile", "report")
    session.run("pytest", "--hypothesis-profile=thorough", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check + format check, and the GitHub workflows through check-jsonschema and zizmor."""
    _install(session, "lint")
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")
    workflows = sorted(
        str(p) for p in __import__("pathlib").Path(".github/workflows").glob("*.yml")
    )
    if workflows:
        session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows)
        session.run("zizmor", "--offline", *workflows)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on pm_core."""
    _install(session, "typecheck")
    session.run("mypy", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """The pytest-benchmark matrix (`-- --quick` for a smoke run); JSON under profiles/bench/."""
    _install(session, "test", "models")
    session.run(
        "pytest", "benchmarks", "--benchmark-only", "--benchmark-enable",
        "--benchmark-autosave", "--benchmark-storage=profiles/bench",
        "--benchmark-group-by=group", "-p", "no:cacheprovider", *session.posargs,
    )  # fmt: skip


@nox.session(default=False)
def profile(session: nox.Session) -> None:
    """torch.profiler traces, one TensorBoard run per impl x norm x dtype x shape, under profiles/."""
    _install(session, "test", "profile")
    session.run("python", "-m", "pm_core", "profile", *session.posargs)


@nox.session(default=False)
def tensorboard(session: nox.Session) -> None:
    """Serve profiles/ in TensorBoard with the torch-tb-profiler plugin (http://localhost:6006)."""
    _install(session, "profile")
    session.run("tensorboard", "--logdir", "profiles", "--bind_all", *session.posargs)


@nox.session(default=False)
def report(session: nox.Session) -> None:
    """The main job: verify, measure and profile, then write profiles/report/report.md."""
    _install(session, "test", "models", "profile", "report")
    session.run("python", "-m", "pm_core", "report", *session.posargs)
