"""Hydra multirun sweeps: the launcher configs in src/recover_pyro/conf/hydra/launcher and scripts/aggregate_sweep.py.

The joblib test runs a real (tiny) 2 experiments x 2 seeds sweep of ``python -m recover_pyro.train`` in parallel
worker processes and aggregates it. The Ray test runs the same sweep on an existing Ray cluster whose address
is in ``$RECOVER_PYRO_RAY_ADDRESS`` (scripts/ci_ray.sh starts one on loopback and sets it).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from script_loader import load_script
from recover_pyro.cli.builders import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[2]
RAY_ADDRESS_VAR = "RECOVER_PYRO_RAY_ADDRESS"
EXPERIMENTS = ("deterministic", "mc_dropout")
SEEDS = (0, 1)
# A sweep small enough for CI: 12 drugs x 3 cell lines, 2 epochs, 10 predictive samples. `++` because the
# sweep's base config (the BNN) has no `training` group; each job's baseline model does.
TINY = ["++model.training.epochs=2", "data.screen.n_drugs=12", "num_samples=10"]
SWEEP = [f"+experiment={','.join(EXPERIMENTS)}", f"seed={','.join(map(str, SEEDS))}", *TINY]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


agg = load_script("aggregate_sweep")


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command with the test's interpreter; fail with its output if it exits non-zero."""
    full_env = {**os.environ, "MPLBACKEND": "Agg", "HYDRA_FULL_ERROR": "1", **(env or {})}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def _run_sweep(
    launcher_overrides: list[str], sweep_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return _run(
        ["-m", "recover_pyro.train", "-m", *launcher_overrides, f"hydra.sweep.dir={sweep_dir}", *SWEEP],
        cwd=sweep_dir.parent,
        env=env,
    )


def _job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    assert len(jobs) == len(EXPERIMENTS) * len(SEEDS), f"jobs in {sweep_dir}: {[p.name for p in jobs]}"
    return jobs


def _launcher_target(job: Path) -> str:
    return yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["launcher"]["_target_"]


def _check_aggregation(sweep_dir: Path, out_dir: Path) -> None:
    """The CLI's table equals mean / sd (ddof 1) over seeds computed here from each job's metrics.json."""
    expected: dict[str, list[float]] = {}
    for job in _job_dirs(sweep_dir):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        experiment = next(o.split("=", 1)[1] for o in overrides if o.startswith("+experiment="))
        expected.setdefault(experiment, []).append(json.loads((job / "metrics.json").read_text())["r2"])

    out = out_dir / "results.csv"
    proc = _run(
        [
            str(ROOT / "scripts" / "aggregate_sweep.py"),
            str(sweep_dir),
            "--metrics",
            "r2",
            "nll",
            "--out",
            str(out),
            "--runs-csv",
            str(out_dir / "runs.csv"),
        ],
        cwd=out_dir,
    )
    table = pd.read_csv(out)
    assert list(table["experiment"]) == sorted(EXPERIMENTS)
    assert (table["n_runs"] == len(SEEDS)).all()
    assert list(table.columns) == ["experiment", "n_runs", "r2_mean", "r2_sd", "nll_mean", "nll_sd"]
    for _, row in table.iterrows():
        values = np.array(expected[row["experiment"]])
        assert row["r2_mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert row["r2_sd"] == pytest.approx(values.std(ddof=1), rel=1e-12)
        # The markdown row shows the same numbers as mean ± sd.
        assert f"| {row['experiment']} | {len(SEEDS)} | {values.mean():.3f} ± {values.std(ddof=1):.3f} |" in proc.stdout
    runs = pd.read_csv(out_dir / "runs.csv")
    assert len(runs) == len(EXPERIMENTS) * len(SEEDS)
    assert sorted(runs["seed"].unique()) == list(SEEDS)


# --- scripts/aggregate_sweep.py on its own ------------------------------------------------------------------


def test_parse_overrides_reads_hydra_override_syntax():
    parsed = agg.parse_overrides(
        [
            "+experiment=laplace",
            "++model.training.epochs=2",
            "seed=3",
            "lr=1e-3",
            "data.cell_lines=[MCF7,'A 549']",
            "name='a,b'",
            "model@other=bnn",
            "~prior",
        ]
    )
    assert parsed == {
        "experiment": "laplace",
        "model.training.epochs": "2",
        "seed": "3",
        "lr": "0.001",
        "data.cell_lines": "[MCF7,'A 549']",
        "name": "a,b",
        "model@other": "bnn",
        "prior": "(deleted)",
    }


def test_summarize_is_mean_and_sample_sd_per_group():
    runs = pd.DataFrame(
        {
            "experiment": ["a", "a", "a", "b"],
            "seed": ["0", "1", "2", "0"],
            "r2": [0.1, 0.2, 0.6, 0.5],
            "nll": [1.0, 2.0, 3.0, 4.0],
        }
    )
    table = agg.summarize(runs, ["experiment"], ["r2", "nll"]).set_index("experiment")
    assert table.loc["a", "n_runs"] == 3 and table.loc["b", "n_runs"] == 1
    assert table.loc["a", "r2_mean"] == pytest.approx(0.3)
    assert table.loc["a", "r2_sd"] == pytest.approx(math.sqrt(((0.2**2) + (0.1**2) + (0.3**2)) / 2))
    assert table.loc["a", "nll_sd"] == pytest.approx(1.0)
    assert math.isnan(table.loc["b", "r2_sd"])  # one run: no spread over seeds
    markdown = agg.to_markdown(table.reset_index(), ["experiment"], ["r2", "nll"], digits=2)
    assert markdown.splitlines() == [
        "| experiment | n | r2 | nll |",
        "|---|---|---|---|",
        "| a | 3 | 0.30 ± 0.26 | 2.00 ± 1.00 |",
        "| b | 1 | 0.50 | 4.00 |",
    ]
    whole = agg.summarize(runs, [], ["nll"])
    assert list(whole.columns) == ["n_runs", "nll_mean", "nll_sd"] and whole.loc[0, "nll_mean"] == 2.5
    with pytest.raises(ValueError, match="unknown column.*'model'"):
        agg.summarize(runs, ["model"], ["r2"])


def _fake_job(root: Path, name: str, overrides: list[str], metrics: dict | None) -> None:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


def test_load_runs_columns_defaults_and_errors(tmp_path, capsys, caplog):
    sweep = tmp_path / "multirun"
    _fake_job(sweep, "0", ["+experiment=a", "seed=0"], {"r2": 0.5, "seed": 0, "model": "M", "n_test": 3})
    _fake_job(sweep, "1", ["+experiment=a", "seed=1"], {"r2": 0.7, "seed": 1, "model": "M", "n_test": 3})
    _fake_job(
        sweep,
        "10",
        ["+experiment=b", "seed=0", "model.n=2"],
        {"r2": 0.1, "seed": 0, "model": "M", "n_test": 3, "pruned_fraction": 0.25},
    )
    _fake_job(sweep, "2", ["+experiment=b", "seed=1"], None)  # a failed job: left out with a warning

    with caplog.at_level("WARNING", logger="recover_pyro.cli.sweep_summary"):
        runs, keys, measured = agg.load_runs([sweep])
    assert "1 job(s) without metrics.json" in caplog.text
    assert [Path(r).name for r in runs["run"]] == ["0", "1", "10"]  # natural order
    assert keys == ["experiment", "seed", "model.n"]
    assert list(runs["model.n"]) == [agg.UNSET, agg.UNSET, "2"]
    assert measured == ["r2", "pruned_fraction"]  # ints (counts, ids) and strings are not averaged
    assert list(runs["metrics.seed"]) == [0, 1, 0]  # a metric named like an override keeps both
    assert agg.default_group_by(runs, keys, "seed") == ["experiment", "model.n"]

    table = agg.main([str(sweep), "--group-by", "experiment", "--out", str(tmp_path / "t.csv")])
    assert list(table["n_runs"]) == [2, 1] and table.loc[0, "r2_mean"] == pytest.approx(0.6)
    assert "| b | 1 | 0.100 | 0.250 |" in capsys.readouterr().out

    with pytest.raises(FileNotFoundError, match="no metrics.json or finished rounds.json below"):
        agg.load_runs([tmp_path / "multirun" / "2"])
    (sweep / "3").mkdir()
    (sweep / "3" / "metrics.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"3 has metrics.json but no .hydra/overrides.yaml"):
        agg.load_runs([sweep])


# --- launcher configs ---------------------------------------------------------------------------------------


def _hydra_cfg(launcher: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True).hydra


def test_ray_cluster_config_joins_an_existing_cluster():
    pytest.importorskip(
        "hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher not installed (pip install -e '.[sweep-ray]')"
    )
    hydra_cfg = _hydra_cfg("ray_cluster")
    assert hydra_cfg.launcher._target_.endswith("RayLauncher")
    init = hydra_cfg.launcher.ray.init
    # Never a private local instance: "auto" (or $RAY_ADDRESS) joins a running cluster or fails.
    assert OmegaConf.to_container(init)["address"] == "${oc.env:RAY_ADDRESS,auto}"
    assert "object_store_memory" in init and init.object_store_memory is None
    assert hydra_cfg.launcher.ray.remote.num_cpus == 1
    # Ray workers run in the cluster's working directory, so the default sweep dir is absolute.
    assert OmegaConf.to_container(hydra_cfg.sweep)["dir"].startswith("${hydra.runtime.cwd}/")


def test_slurm_config_extends_the_submitit_launcher():
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher",
        reason="hydra-submitit-launcher not installed (pip install -e '.[sweep-slurm]')",
    )
    launcher = _hydra_cfg("slurm").launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.cpus_per_task == 4 and launcher.partition is None and launcher.array_parallelism == 32
    assert launcher.setup == [f"export OMP_NUM_THREADS={launcher.cpus_per_task}"]


# --- real sweeps ------------------------------------------------------------------------------------------


def test_joblib_sweep_runs_in_parallel_workers_and_aggregates(tmp_path):
    pytest.importorskip(
        "hydra_plugins.hydra_joblib_launcher",
        reason="hydra-joblib-launcher not installed (pip install -e '.[sweep-joblib]')",
    )
    sweep_dir = tmp_path / "multirun"
    proc = _run_sweep(["hydra/launcher=local_joblib"], sweep_dir)
    assert "Joblib.Parallel(n_jobs=2,backend=loky" in proc.stdout + proc.stderr
    for job in _job_dirs(sweep_dir):
        assert _launcher_target(job).endswith("JoblibLauncher")
        assert json.loads((job / "metrics.json").read_text())["n_test"] > 0
    _check_aggregation(sweep_dir, tmp_path)
    summary = pd.read_csv(sweep_dir / "summary.csv")  # written by the SweepSummary callback at the end
    assert list(summary["experiment"]) == sorted(EXPERIMENTS) and (summary["n_runs"] == len(SEEDS)).all()


@pytest.mark.skipif(
    not os.environ.get(RAY_ADDRESS_VAR),
    reason=f"{RAY_ADDRESS_VAR} is not set: no Ray cluster to join (scripts/ci_ray.sh starts "
    "one on loopback and runs this test)",
)
def test_ray_sweep_runs_as_tasks_on_the_existing_cluster(tmp_path):
    address = os.environ[RAY_ADDRESS_VAR]
    sweep_dir = tmp_path / "multirun"
    env = {"RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    if address.split(":")[0] in ("127.0.0.1", "localhost"):
        # Otherwise Ray swaps a loopback address for this host's network address before connecting.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    proc = _run_sweep(["hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={address}"], sweep_dir, env)
    output = ANSI.sub("", proc.stdout + proc.stderr)

    assert f"Connecting to existing Ray cluster at address: {address}" in output
    assert "Started a local Ray instance" not in output
    assert f"Ray Launcher is launching {len(EXPERIMENTS) * len(SEEDS)} jobs" in output
    # Ray forwards each task's stdout to the driver tagged with the task and its worker process.
    # The driver's own lines carry no such tag, so a tagged "outputs in <job dir>" (logged by train() at the
    # end of each job) shows that the job ran inside a Ray worker process of the cluster.
    ran_in = {Path(d): int(pid) for pid, d in re.findall(r"\(_run_job pid=(\d+)[^)]*\) .*?outputs in (\S+)", output)}
    for job in _job_dirs(sweep_dir):
        assert job in ran_in, f"no Ray task reported {job}:\n{output}"
        assert _launcher_target(job).endswith("RayLauncher")
        assert (job / "metrics.json").is_file()
    _check_aggregation(sweep_dir, tmp_path)


# --- campaign sweeps and the end-of-multirun summary -------------------------------------------------------

CAMPAIGN_TINY = [
    "data.screen.n_drugs=10",
    "data.screen.n_cell_lines=1",
    "campaign.n_initial=5",
    "campaign.n_rounds=2",
    "acquisition.q=4",
    "num_samples=4",
    "inference.epochs=2",
    "campaign.progress=false",
    "model.predictor.drug_hidden=[16,8]",
]


def test_campaign_sweep_writes_a_summary_and_aggregates(tmp_path):
    sweep_dir = tmp_path / "multirun"
    proc = _run(
        [
            "-m",
            "recover_pyro.campaign",
            "-m",
            "+experiment=random,laplace_greedy",
            "seed=0,1",
            f"hydra.sweep.dir={sweep_dir}",
            *CAMPAIGN_TINY,
        ],
        cwd=tmp_path,
    )
    assert "sweep summary: 4 runs in 2 group(s) by ['experiment']" in proc.stdout + proc.stderr
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert list(summary["experiment"]) == ["laplace_greedy", "random"] and (summary["n_runs"] == 2).all()
    finals = {}
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        experiment = next(o.split("=", 1)[1] for o in overrides if o.startswith("+experiment="))
        finals.setdefault(experiment, []).append(pd.read_csv(job / "rounds.csv")["recall_top5pct"].iloc[-1])
    for _, row in summary.iterrows():
        assert row["recall_top5pct_mean"] == pytest.approx(np.mean(finals[row["experiment"]]))
    # random fits no model: no pool metrics, no training time
    random_row = summary.set_index("experiment").loc["random"]
    assert math.isnan(random_row["last_round_r2_mean"]) and random_row["train_s_per_round_mean"] < 0.5
    table = agg.main([str(sweep_dir), "--metrics", "recall_top1pct", "--out", str(tmp_path / "t.csv")])
    assert list(table.columns) == ["experiment", "n_runs", "recall_top1pct_mean", "recall_top1pct_sd"]


def test_unfinished_campaign_is_left_out(tmp_path, caplog):
    def job(name: str, last_round: int) -> None:
        _fake_job(tmp_path, name, ["+experiment=random", f"seed={name}"], None)
        rows = [
            {
                "round": r,
                "n_measured": 5 + 4 * r,
                "recall_top1pct": 0.1 * r,
                "best_found": 1.0,
                "train_s": 0.0,
                "score_s": 0.0,
                "r2": None,
            }
            for r in range(last_round + 1)
        ]
        (tmp_path / name / "rounds.json").write_text(
            json.dumps({"config": {"n_rounds": 2}, "pool_size": 45, "rounds": rows})
        )

    job("0", 2)
    job("1", 1)  # killed after round 1
    with caplog.at_level("WARNING", logger="recover_pyro.cli.sweep_summary"):
        runs, _, measured = agg.load_runs([tmp_path])
    assert [Path(r).name for r in runs["run"]] == ["0"] and "1 job(s) without" in caplog.text
    assert runs.loc[0, "recall_top1pct"] == pytest.approx(0.2) and runs.loc[0, "n_measured"] == 13
    assert "recall_top1pct" in measured and "n_measured" not in measured


def test_optuna_sweep_minimises_the_validation_metric(tmp_path):
    """hydra/sweeper=optuna_val: 2 trials; the best value is the lowest val_nll of the trials, not a test metric."""
    pytest.importorskip(
        "hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper not installed (pip install -e '.[tune]')"
    )
    sweep_dir = tmp_path / "optuna"
    _run(
        [
            "-m",
            "recover_pyro.train",
            "-m",
            "hydra/sweeper=optuna_val",
            "hydra.sweeper.n_trials=2",
            f"hydra.sweep.dir={sweep_dir}",
            "data.screen.n_drugs=12",
            "inference.epochs=choice(3,4)",
            "num_samples=10",
            "fit_progress=false",
        ],
        cwd=tmp_path,
    )
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    trials = [json.loads((job / "metrics.json").read_text()) for job in sorted(sweep_dir.glob("[0-9]*"))]
    assert len(trials) == 2 and set(best["best_params"]) == {
        "inference.lr",
        "inference.epochs",
        "guide.init_scale",
        "model.predictor.gp_lengthscale",
    }
    assert best["best_value"] == pytest.approx(min(t["val_nll"] for t in trials))
    assert (sweep_dir / "summary.csv").is_file()
