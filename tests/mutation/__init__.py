"""Mutation testing support: the pytest plugin that orders a mutant's tests, the committed
equivalent-mutant list and the CI smoke sample (see ``nox -s mutants``)."""
