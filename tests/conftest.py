"""Shared fixtures: the real screen data folder (tests that need it skip when it is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recover_pyro.data import paths

# The nets under test are small: one intra-op thread is faster than two fighting over a 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data folder (``$RECOVER_PYRO_DATA`` or ``../shared/data``); skips the test if absent."""
    root = paths.data_root()
    if not root.is_dir():
        pytest.skip(f"shared data folder not found at {root}; set {paths.ENV_VAR}")
    return root


@pytest.fixture(scope="session")
def almanac(data_root: Path):
    """The full ALMANAC screen from the shared data (read once per session; tests must not modify it)."""
    from recover_pyro.data.loaders import load_almanac

    return load_almanac(data_root)
