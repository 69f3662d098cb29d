"""Shared test fixtures: the ../shared data folder and tiny option sets."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> Any:
    """A file of the repository outside the package (scripts/, benchmarks/) imported as a module."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_dir() -> Path:
    return Path(os.environ.get("SPADEGAN_SHARED", REPO.parent / "shared"))


def missing_data(reason: str) -> None:
    """Skip a test whose shared data is absent; under CI (CI set) that is a failure instead:
    CI runs beside ../shared, so a missing fixture there means the parity tests did not run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so missing shared data fails instead of skipping)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared() -> Path:
    d = shared_dir()
    if not d.is_dir():
        missing_data(f"shared test data not found at {d} (set SPADEGAN_SHARED)")
    return d


def fixture_dir(shared: Path, kind: str, name: str) -> Path:
    """../shared/fixtures/<kind>/<name>, or a skip (a failure under CI) when it is absent."""
    d = shared / "fixtures" / kind / name
    if not d.is_dir():
        missing_data(f"{kind} fixture not found at {d}")
    return d


_fixture = fixture_dir


@pytest.fixture(scope="session")
def parity_dir(shared: Path) -> Path:
    """The official implementation's outputs on tiny networks (../shared/README.md)."""
    return _fixture(shared, "official_parity", "ade_small")


@pytest.fixture(scope="session")
def train_fixture_dir(shared: Path) -> Path:
    """Two iterations of the official trainer (../shared/README.md)."""
    return _fixture(shared, "official_train", "ade_tiny")


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    # `spadegan eval` keeps real-image statistics under $XDG_CACHE_HOME; tests must neither
    # read a user's entries nor leave their own behind
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(autouse=True)
def _fresh_messages(monkeypatch):
    # say_once speaks once per process; each test gets its own "once", so a test that checks a
    # message passes whichever tests ran before it
    import spadegan.device

    monkeypatch.setattr(spadegan.device, "_SAID", set())


@pytest.fixture(autouse=True)
def _one_thread():
    # the tests use tiny networks: two OpenMP threads on a shared 2-core machine spin-wait on
    # each other (measured 10-20x slower than one thread under load); SPADEGAN_TEST_THREADS
    # overrides it
    n = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("SPADEGAN_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(n)
