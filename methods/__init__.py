"""Guidance methods (registry kind ``method``): one plugin per module."""
