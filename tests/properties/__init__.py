"""The equivalence properties: every impl against the float64 oracle, and against each other.

Every comparison these modules make is a record for ``pm-core verify`` (see
``pm_core.testing``); the verification table is built from this folder alone, which
``pm_core.lab.verify`` runs.
"""
