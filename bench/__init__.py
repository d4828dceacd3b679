"""Benchmarks: one command each, run by hand or from the Makefile, never asserted in tests."""
