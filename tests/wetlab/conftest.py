"""The wet-lab tests use a private fingerprint cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from recover_pyro.data import featurize as fz


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fz.CACHE_ENV, str(tmp_path / "cache"))
