"""lab tests."""
