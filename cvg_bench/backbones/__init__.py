"""Frozen backbones of CVG's classifier (registry kind ``backbone``)."""
