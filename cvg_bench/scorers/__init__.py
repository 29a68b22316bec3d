"""Scorers (registry kind ``scorer``): one plugin per module."""
