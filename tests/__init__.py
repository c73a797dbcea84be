"""pm-core's test suite: property tests over every registered implementation."""
