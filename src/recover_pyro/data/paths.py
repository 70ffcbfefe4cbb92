"""Where the shared, read-only screen data lives.

The data is never copied into the repository (nor into an installed package). It is found, in order of
precedence, at

1. the folder named by the environment variable ``RECOVER_PYRO_DATA`` (the way to point an installed
   package, a wheel or ``pip install .``, at the data: ``export RECOVER_PYRO_DATA=/data/screens``; on the
   command line ``data_root=/data/screens`` does the same for one run);
2. ``<repo root>/../shared/data`` when the package runs from a source checkout (an editable install), the
   repo root being found from this file's location (``<repo root>/src/recover_pyro/data/paths.py``);
3. ``<current directory>/../shared/data`` (for an installed package run from a checkout).

The folder holds one subfolder per screen (``almanac/``, ``oneil/``, ...) in the layout that
:mod:`recover_pyro.data.loaders` documents.
"""

from __future__ import annotations

import os
from pathlib import Path

from recover_pyro.errors import DataNotFoundError, option

ENV_VAR = "RECOVER_PYRO_DATA"


def _source_checkout() -> Path | None:
    """The repository root when this file runs from a source checkout (``src/recover_pyro/data/paths.py``),
    else ``None`` (an installed package lives in ``site-packages``, beside no data)."""
    here = Path(__file__).resolve()
    repo = here.parents[3]
    if here.parents[2].name == "src" and (repo / "pyproject.toml").is_file():
        return repo
    return None


def _candidates() -> list[Path]:
    repo = _source_checkout()
    beside_cwd = Path.cwd().parent / "shared" / "data"
    return [repo.parent / "shared" / "data", beside_cwd] if repo is not None else [beside_cwd]


def data_root() -> Path:
    """The shared data folder (it may not exist: see :func:`require_data`)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    candidates = _candidates()
    for path in candidates:
        if path.is_dir():
            return path
    return candidates[0]


def require_data(subdir: str | os.PathLike[str] = "") -> Path:
    """``data_root() / subdir``, or :class:`~recover_pyro.errors.DataNotFoundError` (a
    :class:`FileNotFoundError`) saying where it was looked for and how to point at the data."""
    path = data_root() / subdir
    if not path.exists():
        if os.environ.get(ENV_VAR):
            source = f"from ${ENV_VAR}={os.environ[ENV_VAR]}"
        else:
            source = f"${ENV_VAR} is not set; looked in {', '.join(str(p) for p in _candidates())}"
        spelled = option("root", "/path/to/data")
        raise DataNotFoundError(
            f"screen data not found at {path} ({source}); set the environment variable {ENV_VAR} to the folder "
            f"that holds {Path(subdir).as_posix() or 'the screens'}/" + (f", or set {spelled}" if spelled else "")
        )
    return path
