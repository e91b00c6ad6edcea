"""Benchmarks: each module prints figures beside a baseline measured in the same run.

`bench/run` runs the whole pipeline's figures in one go and prints one table (bench/README.md).
"""
