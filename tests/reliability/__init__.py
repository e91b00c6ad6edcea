"""Fault injection on the whole pipeline: real processes, real servers, faults the test makes.

The fault runs are marked `long` (`make test-long`); the checks they apply are unit-tested in
the default suite (test_checks.py), so a check that cannot fail would show there.
"""
