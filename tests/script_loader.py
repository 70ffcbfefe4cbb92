"""Import ``scripts/<name>.py`` in tests (scripts are not part of the package).

A module of its own, not ``conftest``: a test directory may have its own ``conftest.py``, and ``from conftest
import ...`` then finds whichever was imported last.
"""

from __future__ import annotations

import sys
from pathlib import Path


def load_script(name: str):
    """Import ``scripts/<name>.py`` as a module (scripts are not part of the package)."""
    import importlib.util

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    if str(scripts) not in sys.path:  # scripts import each other as `python scripts/<name>.py` lets them
        sys.path.insert(0, str(scripts))
    path = scripts / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would: dataclasses and pickling look their module up there
    spec.loader.exec_module(module)
    return module
