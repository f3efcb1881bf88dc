"""Benchmarks: commands that print figures (a short table, and JSON on request). Never tests."""
