"""The docs stay true to the package and its configs: every public module has an API page, every page is in the
site's navigation, links resolve, the configuration page lists every preset with what its file sets, the help
texts state the presets' UCB weights, and the README stays a short front door whose commands and imports work."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path

import pytest
import yaml

import recover_pyro

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONF = ROOT / "src" / "recover_pyro" / "conf"
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_module_has_an_api_page() -> None:
    modules = {
        m.name
        for m in pkgutil.walk_packages(recover_pyro.__path__, "recover_pyro.")
        if not m.name.rsplit(".", 1)[-1].startswith("_") and not m.ispkg
    }
    rendered = set(re.findall(r"^::: (\S+)", "\n".join(p.read_text() for p in (DOCS / "api").glob("*.md")), re.M))
    assert modules - rendered == set(), "add these modules to a page in docs/api/"
    assert {m for m in rendered if importlib.util.find_spec(m) is None} == set(), "API pages name missing modules"


def test_every_page_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.relative_to(DOCS).as_posix() for p in [*DOCS.glob("*.md"), *(DOCS / "api").glob("*.md")]]
    assert [p for p in pages if f": {p}" not in nav] == []


def _links(path: Path) -> list[str]:
    """Relative link targets of a Markdown file (code blocks and inline code left out)."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:|#", t)]


@pytest.mark.parametrize("page", ["README.md", *(p.relative_to(ROOT).as_posix() for p in sorted(DOCS.rglob("*.md")))])
def test_relative_links_resolve(page: str) -> None:
    path = ROOT / page
    assert [t for t in _links(path) if not (path.parent / t).exists()] == []


def _presets() -> dict[str, dict]:
    return {
        p.stem: yaml.safe_load(p.read_text()) | {"_header": p.read_text().splitlines()[1]}
        for p in sorted((CONF / "experiment").glob("*.yaml"))
    }


def _value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return str(value)


def _settings(node: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in node.items():
        if isinstance(value, dict):
            out += _settings(value, f"{prefix}{key}.")
        else:
            out.append(f"`{prefix}{key}={_value(value)}`")
    return out


def _table_rows(text: str, title: str) -> dict[str, list[str]]:
    """``{first cell without backticks: cells}`` of the first table after the heading ``title``."""
    section = text.split(title, 1)[1]
    table = re.search(r"((?:^\|.*\|\n)+)", section, re.M).group(1)
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in table.splitlines()[2:]]
    return {row[0].strip("`"): row for row in rows}


def test_configuration_page_lists_every_preset_with_what_its_file_sets() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    tables = {"train": _table_rows(text, "### Train presets"), "campaign": _table_rows(text, "### Campaign presets")}
    for name, preset in _presets().items():
        kind = "train" if preset.pop("_header").startswith("# Train preset") else "campaign"
        assert name in tables[kind], f"{name}: not in the {kind} presets table of docs/configuration.md"
        _, _, composes, sets = tables[kind][name]
        expected = []
        for entry in preset.pop("defaults", []):
            if isinstance(entry, dict):
                ((key, value),) = entry.items()
                expected.append(f"`{key.replace('override /', '')}={value}`")
            elif entry != "_self_":
                expected.append(f"`{entry}`")
        assert [e for e in expected if e not in composes] == [], name
        assert sorted(s.strip() for s in sets.split(", ") if s.strip()) == sorted(_settings(preset)), name


def test_configuration_page_lists_every_group_option() -> None:
    rows = _table_rows((DOCS / "configuration.md").read_text(encoding="utf-8"), "## Groups and options")
    for group in ("data", "features", "split", "model", "prior", "guide", "inference", "acquisition", "campaign"):
        options = {p.stem for p in (CONF / group).glob("*.yaml")}
        assert set(re.findall(r"`([a-z0-9_]+)`", rows[group][1])) == options, group


def test_campaign_help_states_each_presets_ucb_weight() -> None:
    help_text = (CONF / "hydra" / "help" / "campaign.yaml").read_text()
    default = yaml.safe_load((CONF / "acquisition" / "ucb.yaml").read_text())["kappa"]
    assert re.search(rf"UCB presets use kappa {default:g}\b", help_text)
    for name, preset in _presets().items():
        kappa = preset.get("acquisition", {}).get("kappa")
        if kappa is not None and kappa != default:
            stated = re.search(rf"{name} \(kappa ([\d.]+)", help_text)
            assert stated and float(stated.group(1)) == kappa, f"{name}: kappa {kappa} not stated in --help"


def test_readme_is_a_short_front_door() -> None:
    assert len(README.splitlines()) <= 200
    # no timings in the front door: they belong to a docs page with machine and date
    assert (
        re.findall(r"\b\d+(?:\.\d+)?\s?(?:s|sec|seconds|min)\b|(?<![Ff]ive-)\bminutes?\b|about a minute", README) == []
    )


def test_readme_set_up_commands_are_the_ones_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"^python3 -m venv .venv && .*$", README, re.M)
    assert len(commands) == 2
    assert commands[0].endswith("pip install -c constraints/cpu.txt -e . && recover-train")
    assert commands[1].endswith("&& bash scripts/ci_ray.sh python -m pytest")
    assert "bash scripts/ci_ray.sh python -m pytest" in ci
    extras = re.search(r'-e "\.\[([a-z,]+)\]"', commands[1]).group(1).split(",")
    ci_extras = re.search(r'-e "\.\[([a-z,]+)\]"', ci).group(1).split(",")
    assert set(extras) <= set(ci_extras)


def test_readme_python_imports_exist() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    for node in ast.walk(ast.parse("\n".join(blocks))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recover_pyro"):
            module = importlib.import_module(node.module)
            assert [a.name for a in node.names if not hasattr(module, a.name)] == [], node.module
