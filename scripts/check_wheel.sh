#!/usr/bin/env bash
# Build the wheel, install it (not editable) into a fresh virtual environment with the CPU torch of
# constraints/cpu.txt, and run recover-train, recover-campaign and recover-recommend from an empty directory
# on tiny settings; each must exit 0, write its outputs and a log that holds its results. Prints timings.
#   bash scripts/check_wheel.sh [work dir, default: a new temporary directory]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
mkdir -p "$work/dist" "$work/empty"
python="${PYTHON:-python3}"
SECONDS=0
"$python" -m pip wheel --no-deps -q -w "$work/dist" "$repo"
echo "wheel built: $(ls "$work/dist") (${SECONDS} s)"
SECONDS=0
"$python" -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
pip install -q -c "$repo/constraints/cpu.txt" "$(ls "$work"/dist/recover_pyro-*.whl)"
echo "installed into a fresh venv (${SECONDS} s): $(python -c 'import recover_pyro, torch; print("recover_pyro", recover_pyro.__version__, "torch", torch.__version__)')"

cd "$work/empty"  # nothing of the checkout here: configs must come from the installed package
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
tiny=(data.screen.n_drugs=12 data.screen.n_cell_lines=3 num_samples=10)

SECONDS=0
recover-train "${tiny[@]}" inference.epochs=5 hydra.run.dir=train > /dev/null 2>&1
grep -q "test: r2" train/train.log && test -s train/metrics.json
echo "recover-train ok (${SECONDS} s)"

SECONDS=0
recover-campaign "${tiny[@]}" +experiment=laplace_ucb inference.epochs=3 campaign.n_initial=10 \
    campaign.n_rounds=2 acquisition.q=5 hydra.run.dir=campaign > /dev/null 2>&1
grep -q "after 20 experiments: recall_top1pct" campaign/campaign.log && test -s campaign/rounds.csv
echo "recover-campaign ok (${SECONDS} s)"

SECONDS=0
python - <<'PY'
# Eight small molecules and 15 measured pairs in one cell line: the files a lab would hand in.
import itertools

import numpy as np
import pandas as pd

smiles = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "CCCl", "c1ccncc1", "CC(C)O", "OC1CCCCC1"]
pd.DataFrame({"drug_id": [f"d{i}" for i in range(8)], "name": [f"drug {i}" for i in range(8)],
              "smiles": smiles}).to_csv("drugs.csv", index=False)
pairs = list(itertools.combinations(range(8), 2))[:15]
rng = np.random.default_rng(0)
pd.DataFrame({"drug_a": [f"d{a}" for a, _ in pairs], "drug_b": [f"d{b}" for _, b in pairs],
              "cell_line": "MCF7", "synergy": rng.normal(size=len(pairs))}).to_csv("round0.csv", index=False)
PY
recover-recommend measured=[round0.csv] smiles=drugs.csv cell_lines=[MCF7] score=synergy \
    +experiment=deterministic model.training.epochs=5 acquisition.q=5 num_samples=10 out=plate1.csv \
    hydra.run.dir=recommend > /dev/null 2>&1
grep -q "next batch written" recommend/recommend.log && test "$(wc -l < plate1.csv)" -eq 6
echo "recover-recommend ok (${SECONDS} s)"
recover-train --help | head -1
echo "all entry points ran from $work/empty"
