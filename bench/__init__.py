"""Benchmarks run by `make bench`: they print tables, they assert nothing about time."""
