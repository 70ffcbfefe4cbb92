"""Per-command --help: each command lists exactly the config groups it composes and its own presets."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from recover_pyro.cli.builders import CONFIG_DIR

COMMANDS = {"train": "config", "campaign": "campaign", "recommend": "recommend"}


def _help(config_name: str) -> tuple[str, list[str]]:
    """The command's help template and the config groups its root config composes (any order)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name, return_hydra_config=True)
        groups = [g for g in cfg.hydra.runtime.choices if not g.startswith("hydra/")]
        return str(cfg.hydra.help.template), groups


def _section(template: str, title: str) -> list[str]:
    """Non-empty lines of the ``== title ... ==`` section."""
    match = re.search(rf"== {re.escape(title)}[^\n]*==\n(.*?)(?:\n\n|\Z)", template, re.S)
    assert match, f"no '{title}' section"
    return [line for line in match.group(1).splitlines() if line.strip()]


def _preset_kind(path: Path) -> str:
    header = path.read_text().splitlines()[1]
    assert header.startswith(("# Train preset", "# Campaign preset")), f"{path.name}: no preset header line"
    return "train" if header.startswith("# Train preset") else "campaign"


def _names(lines: list[str]) -> set[str]:
    """Preset names listed after 'label:' on each line (parenthesised remarks dropped)."""
    text = " ".join(
        re.sub(r"\(.*?\)", "", line.split(":", 1)[1]) for line in lines if ":" in line and not line.startswith("(")
    )
    return {name for name in re.split(r"[,\s]+", text) if name}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_exactly_the_composed_groups_and_their_options(command: str) -> None:
    template, groups = _help(COMMANDS[command])
    listed = dict(line.split(": ", 1) for line in _section(template, "Configuration groups"))
    assert sorted(listed) == sorted(groups)
    for group, options in listed.items():
        assert options.split(", ") == sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml")), group
    assert template.startswith(f"recover-{command} (python -m recover_pyro.{command}): ")  # what the command does


def test_every_preset_is_a_train_or_a_campaign_preset_and_help_lists_it_once() -> None:
    presets = {p.stem: _preset_kind(p) for p in (CONFIG_DIR / "experiment").glob("*.yaml")}
    train = _names(_section(_help("config")[0], "Train presets"))
    campaign = _names(
        [line for line in _section(_help("campaign")[0], "Campaign presets") if line.startswith(("BNN", "baselines"))]
    )
    assert train == {n for n, kind in presets.items() if kind == "train"}
    assert campaign == {n for n, kind in presets.items() if kind == "campaign"}
    assert _names(_section(_help("recommend")[0], "Model presets")) == train


def test_help_command_prints_the_description_not_other_commands_groups() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "recover_pyro.train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("recover-train (python -m recover_pyro.train): fit one model")
    assert "acquisition:" not in done.stdout and "campaign:" not in done.stdout
