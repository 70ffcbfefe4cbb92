#!/usr/bin/env bash
# Lint and type-check: ruff (pyflakes / pycodestyle rules of pyproject.toml), the ruff formatter in check
# mode, mypy on the package (it ships py.typed) and import-linter's layer contracts (pyproject.toml,
# [tool.importlinter]; the layers of docs/design.md). Needs the `lint` extra:
#   pip install -c constraints/cpu.txt -e ".[lint]" && bash scripts/lint.sh
# Runs every check and fails if any failed (so one run lists all problems).
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
ruff check . || status=1
ruff format --check . || status=1
mypy src/recover_pyro || status=1
lint-imports || status=1
exit "$status"
