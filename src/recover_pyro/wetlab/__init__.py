"""The real loop a wet lab runs: measured results so far -> the next plate (library code, no Hydra).

    from recover_pyro import recommend, save_drug_table, save_measurements_csv

The package follows the loop's seams: :mod:`~recover_pyro.wetlab.measured` (measured files in, one reader
per format, merged rounds, the scale and size checks), :mod:`~recover_pyro.wetlab.candidates` (which pairs
a plate may hold: candidate and exclude files, drugs left out, measured and tried pairs, one molecule under
two ids) and :mod:`~recover_pyro.wetlab.plate` (:func:`recommend`: fit, score, choose, the
:class:`Recommendation`). The measurement writers of :mod:`recover_pyro.data.loaders` are re-exported: they
turn a loaded screen into a drug table and a measured round. The command line is
:mod:`recover_pyro.cli.recommend` (``recover-recommend``); the recipe is in ``docs/wetlab.md``.
"""

from recover_pyro.data.loaders import save_drug_table, save_measurements_csv
from recover_pyro.wetlab.candidates import CandidateRules, Pool, build_pool, check_same_molecules, read_pairs
from recover_pyro.wetlab.library import Scoring
from recover_pyro.wetlab.measured import (
    FEW_MEASUREMENTS,
    MAX_SCALE_RATIO,
    MIN_MEASUREMENTS,
    check_enough,
    check_scales,
    load_measured,
    measured_format,
    merge_measurements,
    tried_pairs,
)
from recover_pyro.wetlab.plate import PLATE_COLUMNS, Recommendation, candidate_screen, check_cell_lines, recommend

__all__ = [
    "Scoring",
    "FEW_MEASUREMENTS",
    "MAX_SCALE_RATIO",
    "MIN_MEASUREMENTS",
    "PLATE_COLUMNS",
    "CandidateRules",
    "Pool",
    "Recommendation",
    "build_pool",
    "candidate_screen",
    "check_cell_lines",
    "check_enough",
    "check_same_molecules",
    "check_scales",
    "load_measured",
    "measured_format",
    "merge_measurements",
    "read_pairs",
    "recommend",
    "save_drug_table",
    "save_measurements_csv",
    "tried_pairs",
]
