"""Datasets, label palettes and the procedural landscapes generator."""

from .semantics import get_edges, instance_map, to_semantics

__all__ = ["to_semantics", "get_edges", "instance_map"]

from .datasets import (  # noqa: E402
    DatasetReport,
    PairedDataset,
    create_dataset,
    resolve_dataset_options,
    validate_dataset,
)

__all__ += ["create_dataset", "resolve_dataset_options", "validate_dataset",
            "DatasetReport", "PairedDataset"]
