"""A user's impl in pm-core's own tables, through ``$PM_CORE_IMPLS`` / ``--impl``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pm_core
from pm_core.lab.user_impls import ENV, load_user_impls

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.usefixtures("scratch_registry")
def test_a_module_and_a_function_entry_both_register() -> None:
    """A module registers on import; a module:attr function is registered as attr."""
    added = load_user_impls("tests.lab.user_impl_example, tests.lab.user_impl_example:my_slice")
    assert set(added) >= {"my_slice"}
    assert "my_registered_slice" in pm_core.REGISTRY
    assert pm_core.REGISTRY["my_slice"].summary.startswith("user impl")
    assert load_user_impls("tests.lab.user_impl_example:my_slice") == []  # loaded once


def test_an_entry_that_cannot_be_imported_says_how_to_fix_it() -> None:
    with pytest.raises(ImportError, match=r"PM_CORE_IMPLS entry 'no_such_pkg:f'.*PYTHONPATH"):
        load_user_impls("no_such_pkg:f")


def test_the_suite_collects_a_users_impl_beside_pm_cores() -> None:
    """With the variable set, the properties are parametrized over the user's impl too."""
    env = {**os.environ, ENV: "tests.lab.user_impl_example:my_slice"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/properties/test_forward_oracle.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "test_forward_matches_oracle[my_slice-pre-float32-cpu]" in out
    assert "test_forward_matches_oracle[slice-pre-float32-cpu]" in out
