"""Datasets, label palettes and the procedural landscapes generator."""
