"""Tests of the tests: the property checks must catch deliberately planted bugs."""
