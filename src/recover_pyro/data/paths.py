"""Where the shared, read-only screen data lives.

The data is never copied into the repository. It is found, in order of precedence, at

1. the folder named by the environment variable ``RECOVER_PYRO_DATA``;
2. ``<repo root>/../shared/data``, the repo root being found from this file's location
   (``<repo root>/src/recover_pyro/data/paths.py``);
3. ``<current directory>/../shared/data`` (for a non-editable install, run from the checkout).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "RECOVER_PYRO_DATA"


def _candidates() -> list[Path]:
    repo_root = Path(__file__).resolve().parents[3]
    return [repo_root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]


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
    """``data_root() / subdir``, or :class:`FileNotFoundError` saying where it was looked for."""
    path = data_root() / subdir
    if not path.exists():
        source = (
            f"${ENV_VAR}={os.environ[ENV_VAR]}"
            if os.environ.get(ENV_VAR)
            else f"default location; set ${ENV_VAR} to override"
        )
        raise FileNotFoundError(f"screen data not found at {path} ({source})")
    return path
