"""Flowline's benchmarks, each a module run from the repository root (`make bench`, or ``.venv/bin/python -m
bench.http_bench --help``); bench.support holds what they share, and tests.support what they share with the tests."""
