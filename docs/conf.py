"""Sphinx configuration for the pm-core docs (``nox -s docs``).

From the repository root, with warnings as errors:

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import sphinx

# autodoc imports pm_core: take it from this checkout, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

project = "pm-core"
author = "pm-core contributors"
copyright = "pm-core contributors"
# the version is written once, in pyproject.toml (a regex: tomllib is 3.11+)
_pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
_version = re.search(r'^version = "([^"]+)"$', _pyproject, re.M)
assert _version is not None, "pyproject.toml has no version line"
release = _version[1]

extensions = [
    "sphinx.ext.autodoc",  # the API pages come from the docstrings
    "sphinx.ext.napoleon",  # which use Google-style Args: / Returns: / Raises: sections
]
napoleon_numpy_docstring = False  # Google style only

autodoc_member_order = "bysource"
autodoc_typehints = "signature"  # hints in the signature only, not repeated in the text
autodoc_preserve_defaults = True  # show defaults as written (norm="pre"), not repr'd
# Name the library's type aliases in signatures instead of expanding them to Literal[...].
autodoc_type_aliases = {
    "Norm": "pm_core.Norm",
    "Odd": "pm_core.functional.Odd",
    "Layout": "pm_core.layouts.Layout",
    "ImplFn": "pm_core.impls.ImplFn",
    "WindowFn": "pm_core.impls.WindowFn",
    "Windows": "pm_core.impls.Windows",
    "GemmBackend": "pm_core.impls.GemmBackend",
}
python_use_unqualified_type_names = True  # "Norm", not "pm_core.Norm", where it links

# No intersphinx: the docs build offline, so names from torch and the standard library
# cannot link. Nitpicky mode ignores them, and the few library internals the public
# docstrings mention but the site does not document.
nitpick_ignore = [
    ("py:class", name)
    for name in (
        "Tensor",
        "torch.Tensor",
        "torch.device",
        "torch.dtype",
        "torch.nn.modules.module.Module",
        "collections.abc.Callable",
        "collections.abc.Mapping",
        "collections.abc.Sequence",
        "pathlib.Path",
        "pm_core.adopt.Known",
        "pm_core.recognition.Known",
        # the validated call a general impl receives, documented as pm_core.impls.WindowCall
        "pm_core._checks.WindowCall",
        "Pads",  # its padding field's type: a tuple of (before, after) pairs
        "F",  # register's decorator returns the function it was given
        # Hypothesis documents its strategies on its own site, not through intersphinx here
        "hypothesis.strategies.SearchStrategy",
        "st.SearchStrategy",
    )
] + [
    ("py:data", "KNOWN"),  # pm_core.adopt.KNOWN: the table from_module recognises
    ("py:mod", "pm_core.lab.cli"),
    ("py:mod", "pm_core.lab.checkout"),
    # from_module's return type, the alias Adopted (a union), which autodoc renders as
    # this forward-reference class name rather than the union
    ("py:class", "TypeAliasForwardRef"),
]
if sphinx.version_info < (9,):
    # Sphinx < 9 cannot link a type hint (a class reference) to a type alias documented
    # as data; 9 can, and checks these links too.
    aliases = (
        "Norm", "functional.Odd", "layouts.Layout", "impls.ImplFn", "impls.WindowFn",
        "impls.Windows", "impls.GemmBackend",
    )  # fmt: skip
    nitpick_ignore += [("py:class", n) for a in aliases for n in (a, f"pm_core.{a}")]

exclude_patterns = ["_build"]
nitpicky = True  # every cross-reference must resolve (a warning, so an error under -W)

# furo when installed (the docs dependency group has it), else Sphinx's built-in theme.
html_theme = "furo" if importlib.util.find_spec("furo") else "alabaster"
html_title = "pm-core"
