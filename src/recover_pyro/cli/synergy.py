"""``recover-synergy``: dose-response blocks in, synergy scores out (SynergyFinder's rules), driven by Hydra.

    recover-synergy plates=plate_reader.csv out=scores.csv [convention=drugcomb] [response=viability]

(also ``python -m recover_pyro.cli.synergy``). Writes, next to ``out``:

* ``out``: one row per block in the project's measurement format (``drug_a, drug_b, drug_a_name,
  drug_b_name, cell_line, study, n_replicates, synergy_zip, synergy_bliss, synergy_hsa, synergy_loewe,
  block_id``), which ``recover-recommend measured=[...] score=synergy_zip`` reads as it is;
* ``<stem>.per_dose.csv``: every well's response, each score's reference and synergy (and ZIP's fit);
* ``<stem>.fits.csv``: the single-drug curves that ZIP and Loewe used;
* ``<stem>.summary.txt``: one line per block to scan (also logged), with the blocks that could not be scored;
* ``<stem>_plots/``: per block, the dose-response matrix with the single-drug curves and the synergy maps.

Every file is written atomically; ``out`` is refused if it exists (``overwrite=true`` replaces the outputs).
A bad block stops the command with a named error saying what to fix (``on_bad_block=skip`` reports it in the
summary and the log and scores the rest).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from recover_pyro.cli.builders import CONFIG_DIR
from recover_pyro.cli.errors import reported_errors
from recover_pyro.data.synergy import CONVENTIONS, SynergyResult, score_blocks
from recover_pyro.errors import ConfigValueError
from recover_pyro.logging_utils import cli_logging
from recover_pyro.records.block_plots import write_block_plots
from recover_pyro.records.files import atomic_write_csv, atomic_write_text, check_output_file

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="synergy")
def main(cfg: DictConfig) -> None:
    """``recover-synergy`` / ``python -m recover_pyro.cli.synergy``: block file -> synergy tables and plots."""
    with reported_errors(), cli_logging():
        synergy_from_config(cfg)


def output_paths(out: Path) -> dict[str, Path]:
    """Where each output goes, beside ``out``: ``blocks``, ``per_dose``, ``fits``, ``summary``, ``plots``."""
    stem = out.with_suffix("")
    return {
        "blocks": out,
        "per_dose": stem.with_name(f"{stem.name}.per_dose.csv"),
        "fits": stem.with_name(f"{stem.name}.fits.csv"),
        "summary": stem.with_name(f"{stem.name}.summary.txt"),
        "plots": stem.with_name(f"{stem.name}_plots"),
    }


def _check_options(cfg: DictConfig) -> None:
    if str(cfg.convention).lower() not in CONVENTIONS:
        raise ConfigValueError("convention", f"{cfg.convention!r} is not one of {sorted(set(CONVENTIONS))}")
    if cfg.response not in ("inhibition", "viability"):
        raise ConfigValueError("response", f"{cfg.response!r}: choose inhibition (default) or viability")
    if cfg.on_bad_block not in ("raise", "skip"):
        raise ConfigValueError("on_bad_block", f"{cfg.on_bad_block!r}: choose raise (default) or skip")
    if not Path(str(cfg.plates)).is_file():
        raise ConfigValueError("plates", f"{cfg.plates} is not a file; name the plate reader's block file")


def synergy_from_config(cfg: DictConfig) -> SynergyResult:
    """Check the options and the output file, score every block, write the tables and plots; returns the scores."""
    _check_options(cfg)
    out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir) / "synergy.csv"
    overwrite = bool(cfg.get("overwrite", False))
    check_output_file(out, overwrite)
    paths = output_paths(out)
    result = score_blocks(
        str(cfg.plates),
        convention=str(cfg.convention),
        response=cfg.response,
        on_bad_block=cfg.on_bad_block,
        cell_line=cfg.get("cell_line"),
        unit=cfg.get("unit"),
    )
    atomic_write_csv(paths["blocks"], result.per_block())
    atomic_write_csv(paths["per_dose"], result.per_dose())
    atomic_write_csv(paths["fits"], result.fits())
    summary = result.summary().to_string(index=False, na_rep="")
    atomic_write_text(paths["summary"], summary + "\n")
    if cfg.get("plots", True):
        written = write_block_plots(result.scores, paths["plots"], unit=cfg.get("unit"))
        log.info("%d plots written to %s", len(written), paths["plots"])
    log.info(
        "%d blocks scored (%s rules)%s:\n%s",
        len(result.scores),
        result.convention,
        f", {len(result.problems)} left out" if result.problems else "",
        summary,
    )
    log.info("per-block scores written to %s (per dose: %s)", paths["blocks"], paths["per_dose"])
    return result


if __name__ == "__main__":
    main()
