"""Datasets, label palettes and the procedural landscapes generator."""

from .semantics import get_edges, instance_map, to_semantics

__all__ = ["to_semantics", "get_edges", "instance_map"]

from .datasets import PairedDataset, create_dataset, resolve_dataset_options  # noqa: E402
from .validate import DatasetReport, validate_dataset  # noqa: E402

__all__ += ["create_dataset", "resolve_dataset_options", "validate_dataset", "DatasetReport", "PairedDataset"]
