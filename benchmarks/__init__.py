"""Benchmark adapters (registry kind ``benchmark``): one plugin per module."""
