"""Datasets, label palettes and the procedural landscapes generator."""

from .semantics import get_edges, to_semantics

__all__ = ["to_semantics", "get_edges"]
