"""Flowline's test suite: a package so that test files of one name in two folders (unit/ and api/, api/ and e2e/...)
are distinct modules (tests.unit.test_formatter, tests.api.test_formatter), with no pytest configuration needed."""
