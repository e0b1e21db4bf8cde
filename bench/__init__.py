"""Benchmarks (``make bench``): each compares within one run, against a floor measured in it."""
