"""pm_core.lab: the measurement and reporting side of pm-core.

The layer library (``pm_core``) answers "what is this layer and is this form of it
right?"; the lab answers "how fast is it here, where do its bytes go, and what does the
evidence say?". It is a separate package with one rule each way:

* the lab imports the library only through public names: ``from pm_core import ...``
  (``pm_core.__all__``) or ``from pm_core.<namespace> import ...`` (a namespace in
  ``pm_core.NAMESPACES``, a name in its ``__all__``);
* nothing in the library imports the lab, so ``import pm_core`` loads none of this,
  nor matplotlib, tqdm or tensorboard.

Inside the lab, modules import in one direction, from the leaves up::

    shapes, records, terminal, checkout, roofline, monai_legacy
      ->  traffic, profiling, verify, bench  ->  traffic_table, family, gpu_model
      ->  plots, report_base  ->  report_evidence, report_speed  ->  report  ->  cli

Nothing imports :mod:`pm_core.lab.cli`. ``tests/project/test_architecture.py`` checks every
rule above by reading the import statements of both packages.

The lab measures a *source checkout*: ``verify`` runs the property suite in ``tests/``
and ``bench`` the matrix in ``benchmarks/``. :mod:`pm_core.lab.checkout` is the one
place that finds them (``$PM_CORE_CHECKOUT``, else the checkout this package sits in).
"""
