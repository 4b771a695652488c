"""Benchmarks: commands that measure (`cdz bench ...`), with their baselines and sessions."""
