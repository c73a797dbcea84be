"""pm-core's property suite as a library: Hypothesis strategies, the bound-based checks,
and their failure reports, for any registered impl or any merge function.

Needs ``hypothesis`` and ``pytest`` (``pip install "pm-core[testing]"``); ``import
pm_core`` does not load this package. Every check compares against the float64 oracle
(:func:`pm_core.reference_patch_merge`, :func:`pm_core.reference_window_merge`) within
the derived bound (:func:`pm_core.error_bounds`, :func:`pm_core.window_error_bounds`);
nothing here has a tolerance of its own.

* A *subject* is what is checked: :func:`merge_for` names a registered impl behind
  :func:`pm_core.patch_merge`, :func:`window_merge_for` one behind
  :func:`pm_core.window_merge` (a :class:`Subject`: a name for reports, the merge, and
  the code that rebuilds it). Any function with either front door's signature (minus
  ``impl``) can be wrapped in one.
* A *case* is one drawn input, a frozen ``repr``-able description: :func:`cases` draws
  a :class:`Case` of Swin's 2x2 merge in :func:`pm_core.patch_merge`'s calling
  convention, :func:`window_cases` a :class:`WindowCase` for any :class:`pm_core.Window`
  in :func:`pm_core.window_merge`'s. ``case.build(norm)`` makes the tensors,
  deterministically, and the case names the oracle and the bound that judge them.
* A *check* runs a subject on a case of either kind and fails with the subject, the
  input's shape, strides and values, the worst error against its bound, and a
  one-line ``repro``: :func:`check_forward`, :func:`check_grads`,
  :func:`check_gradcheck`, :func:`check_finite`, :func:`check_pair`,
  :func:`check_differs`, :func:`check_output_meta`; and, for the gather alone,
  :func:`check_window_gather` and :func:`check_depth_to_space_inverts`.

A property is a Hypothesis test that draws a case and runs a check::

    from hypothesis import given
    from pm_core.testing import cases, check_forward, merge_for
    import torch

    @given(case=cases(torch.float32))
    def test_slice_matches_the_oracle(case):
        check_forward(merge_for("slice"), case, norm="pre")

Every check's outcome also goes to the functions in :data:`RECORDERS` (none by default).
"""

from __future__ import annotations

from .assertions import (
    AUTO,
    GRAD_INPUTS,
    GRAD_NAMES,
    AnyCase,
    Merge,
    Subject,
    assert_within_bound,
    check_depth_to_space_inverts,
    check_differs,
    check_forward,
    check_gradcheck,
    check_grads,
    check_output_meta,
    check_pair,
    check_window_gather,
    merge_for,
    precision_for,
    window_merge_for,
)
from .check import Cell, NotEquivalent, Verdict, check_merge, load, subject_for
from .failures import (
    RECORDERS,
    Comparison,
    Kind,
    add_note,
    add_note_to_message,
    compare,
    describe,
    fail,
    index_of,
    record,
)
from .finite import assert_finite, check_finite, differentiate
from .params import (
    active_settings,
    device_params,
    dtype_params,
    exact_combos,
    examples,
    general_impls,
    inexact_combos,
    pair_combos,
)
from .strategies import (
    DTYPES,
    EPS,
    FORMS,
    GRADCHECK_MAX_C,
    GRADCHECK_MAX_NUMEL,
    MAX_DECADE,
    MAX_NUMEL,
    MEMORY,
    NORMS,
    VALUE_KINDS,
    Case,
    Door,
    Inputs,
    Values,
    as_norm,
    build_inputs,
    cases,
    dtype_name,
    edge_magnitude,
    edge_values,
    memories,
    randomise_params,
    shapes,
    values,
)
from .window_strategies import (
    WINDOW_MAX_GATHERED,
    WINDOW_MAX_NUMEL,
    WindowCase,
    layouts_for,
    window_cases,
    window_shapes,
    windows,
)

__all__ = [
    "AUTO",
    "DTYPES",
    "EPS",
    "FORMS",
    "GRADCHECK_MAX_C",
    "GRADCHECK_MAX_NUMEL",
    "GRAD_INPUTS",
    "GRAD_NAMES",
    "MAX_DECADE",
    "MAX_NUMEL",
    "MEMORY",
    "NORMS",
    "RECORDERS",
    "VALUE_KINDS",
    "WINDOW_MAX_GATHERED",
    "WINDOW_MAX_NUMEL",
    "AnyCase",
    "Case",
    "Cell",
    "Comparison",
    "Door",
    "Inputs",
    "Kind",
    "Merge",
    "NotEquivalent",
    "Subject",
    "Values",
    "Verdict",
    "WindowCase",
    "active_settings",
    "add_note",
    "add_note_to_message",
    "as_norm",
    "assert_finite",
    "assert_within_bound",
    "build_inputs",
    "cases",
    "check_depth_to_space_inverts",
    "check_differs",
    "check_finite",
    "check_forward",
    "check_gradcheck",
    "check_grads",
    "check_merge",
    "check_output_meta",
    "check_pair",
    "check_window_gather",
    "compare",
    "describe",
    "device_params",
    "differentiate",
    "dtype_name",
    "dtype_params",
    "edge_magnitude",
    "edge_values",
    "exact_combos",
    "examples",
    "fail",
    "general_impls",
    "index_of",
    "inexact_combos",
    "layouts_for",
    "load",
    "memories",
    "merge_for",
    "pair_combos",
    "precision_for",
    "randomise_params",
    "record",
    "shapes",
    "subject_for",
    "values",
    "window_cases",
    "window_merge_for",
    "window_shapes",
    "windows",
]
