"""Shared test fixtures: the ../shared data folder and tiny option sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("SPADEGAN_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    d = shared_dir()
    if not d.is_dir():
        pytest.skip(f"shared test data not found at {d} (set SPADEGAN_SHARED)")
    return d


@pytest.fixture(scope="session")
def parity_dir(shared: Path) -> Path:
    d = shared / "fixtures" / "official_parity" / "ade_small"
    if not d.is_dir():
        pytest.skip(f"official parity fixture not found at {d}")
    return d


@pytest.fixture(autouse=True)
def _small_threads():
    # tests are tiny; extra threads only add contention on the 2-core CI machine
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)
