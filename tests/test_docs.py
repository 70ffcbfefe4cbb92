"""The API reference covers the package: every public module is rendered by a ``::: module`` block."""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path

import recover_pyro

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_has_an_api_page() -> None:
    modules = {
        m.name
        for m in pkgutil.walk_packages(recover_pyro.__path__, "recover_pyro.")
        if not m.name.rsplit(".", 1)[-1].startswith("_") and not m.ispkg
    }
    rendered = set(
        re.findall(r"^::: (\S+)", "\n".join(p.read_text() for p in (ROOT / "docs" / "api").glob("*.md")), re.M)
    )
    assert modules - rendered == set(), "add these modules to a page in docs/api/"
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(f"api/{p.name}" in nav for p in (ROOT / "docs" / "api").glob("*.md"))
