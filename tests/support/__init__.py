"""Importable task functions and values for the test suite (workers import them by reference)."""
