"""Hypothesis settings profiles for the suite; pick one with ``--hypothesis-profile``.

* ``dev`` (the default when no profile is given): few examples, quick feedback.
* ``ci``: derandomised and deadline-free, what ``nox -s tests`` and ``.ci/run`` use.
  Its example count keeps the property suite within about 90 s on a 2-core CPU.
* ``thorough``: ten times ci's examples, randomised, for nightly or manual runs
  (``nox -s thorough``).
* ``mutation``: ci with a fifth of its examples, for ``nox -s mutants``, which runs up
  to ~600 tests per mutant over ~2000 mutants. A mutant that survives 10 examples but
  not 50 counts as a survivor, so the score it gives is a lower bound on ci's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import cast

import pytest
import torch
from hypothesis import HealthCheck, settings

import pm_core
from pm_core.lab import records
from pm_core.lab.user_impls import load_user_impls
from pm_core.testing import RECORDERS

CI_EXAMPLES = 50

settings.register_profile("dev", max_examples=5, deadline=None, print_blob=True)
settings.register_profile(
    "ci",
    max_examples=CI_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "mutation",
    max_examples=CI_EXAMPLES // 5,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=10 * CI_EXAMPLES,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# Under pytest-xdist every worker would start torch with one intra-op thread per core,
# oversubscribing the machine by the worker count; give each its share of the cores, and
# each process a test starts (the benchmark smoke, the CLI, the suite run outside a
# checkout) the same share through OMP_NUM_THREADS, which torch reads at start-up.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, torch.get_num_threads() // _WORKERS))
    os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())

# `pm-core verify` runs this suite with $PM_CORE_RECORD set: every check's outcome goes
# there as one JSON line, through the lab's writer (which validates the schema).
if os.environ.get(records.ENV_VAR):
    RECORDERS.append(lambda rec: records.append(cast(records.CheckRecord, rec)))

# a user's impls ($PM_CORE_IMPLS, `pm-core verify --impl`), registered before the test
# modules are imported, so every property is parametrized over them too
load_user_impls()

# The hypothesis pytest plugin loads --hypothesis-profile in pytest_configure, which runs
# after this conftest is imported, so this only sets the default.
settings.load_profile("dev")


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One intra-op thread for a module of tiny-tensor tests.

    Property tests run thousands of ops on tensors of a few hundred elements, where
    thread hand-off costs more than the op: on a busy 2-core machine a 100-element
    conv2d takes 12 ms with two threads and 0.5 ms with one. Opt in per module with
    ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def scratch_registry() -> Iterator[None]:
    """Registrations made in the test are gone afterwards."""
    saved = dict(pm_core.REGISTRY)
    yield
    pm_core.REGISTRY.clear()
    pm_core.REGISTRY.update(saved)
