"""interop tests."""
