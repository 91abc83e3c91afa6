"""Benchmarks and upstream simulators; run against a live server, never part of the test suite timing."""
