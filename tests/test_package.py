"""The installed package: public API at the root, light import, licence and citation files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import recover_pyro

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_installed_distribution_version() -> None:
    from importlib.metadata import version

    assert recover_pyro.__version__ == version("recover_pyro")


@pytest.mark.parametrize("name", [n for n in recover_pyro.__all__ if n != "__version__"])
def test_every_public_name_resolves_to_its_module_object(name: str) -> None:
    obj = getattr(recover_pyro, name)
    module = __import__(recover_pyro._EXPORTS[name], fromlist=[name])
    target = getattr(module, name)
    # recover_pyro.recommend is also the module `python -m` runs: once imported, the name holds that module,
    # which is callable as the function (see recover_pyro/recommend.py).
    assert obj is target or (name in CALLABLE_SHIMS and obj.__wrapped__ is target)


#: Public functions whose name is also a module (`python -m recover_pyro.<name>`), made callable as them.
CALLABLE_SHIMS = {"recommend"}


def test_no_public_name_shadows_a_submodule() -> None:
    """Importing recover_pyro.<name> sets the package attribute <name> to the module, hiding the object; the
    one such module is callable as the object it hides."""
    import importlib
    import pkgutil

    submodules = {m.name for m in pkgutil.iter_modules(recover_pyro.__path__)}
    assert submodules & set(recover_pyro.__all__) == CALLABLE_SHIMS
    for name in CALLABLE_SHIMS:
        module = importlib.import_module(f"recover_pyro.{name}")
        assert callable(module) and module.__wrapped__ is getattr(module, name)


def test_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        recover_pyro.no_such_thing  # noqa: B018


def test_package_import_does_not_import_torch_or_pyro() -> None:
    code = "import sys, recover_pyro; print(sorted(m for m in ('torch', 'pyro', 'rdkit') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_licence_and_citation_files() -> None:
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    citation = (ROOT / "CITATION.cff").read_text()
    assert "cff-version" in citation and "2202.04202" in citation and "Bertin" in citation
