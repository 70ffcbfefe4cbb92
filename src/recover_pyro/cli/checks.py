"""Early checks shared by the entry points (``train``, ``campaign``, ``recommend``).

:func:`validate_config` runs before any data is loaded or model fitted, so that ``inference.epochs=abc`` or
``acquisition.q=ten`` fail at once with a :class:`ConfigValueError` naming the option, instead of a bare
``TypeError`` deep inside a fit (or after it). Types come from the annotations of each node's ``_target_``
(one mechanism for every config group), plus the root keys in :data:`ROOT_TYPES`. A required option left
unset (``???``, e.g. ``data.screen.path`` of ``data=csv``) is named with an example value.

:func:`check_cell_lines` guards ``recommend``: a plate is proposed only in cell lines that have
measurements, spelled as in the measured files.
"""

from __future__ import annotations

import inspect
import logging
import math
import types
import typing
from pathlib import Path
from typing import Any, Sequence

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from recover_pyro.errors import ConfigValueError, EmptySelectionError

log = logging.getLogger(__name__)

# Root options (no _target_) and the Python types they need.
ROOT_TYPES: dict[str, type] = {
    "seed": int,
    "num_samples": int,
    "resume": bool,
    "device": str,
    "overwrite": bool,
    "check_scale": bool,
    "max_per_drug": int,
}
# Root options with a fixed set of values.
ROOT_CHOICES: dict[str, tuple[str, ...]] = {
    "on_duplicate": ("mean", "raise"),
    "on_invalid": ("raise", "drop"),
    "on_unknown_drug": ("raise", "drop"),
}
# Options that must be >= 1 wherever they appear (checked before the fit, not after it).
POSITIVE_INTS = ("num_samples", "q", "epochs", "batch_size", "n_members", "n_bits", "n_initial", "max_per_drug")
# Options naming input files, checked to exist before anything runs (the path is in the message).
FILE_OPTIONS = ("path", "smiles_path", "summary_path", "measured", "smiles", "candidates", "exclude")
# Example values for required options (``???``) in the message naming them; others get ``<value>``.
EXAMPLES = {
    "measured": "[round0.csv]",
    "smiles": "drugs.csv",
    "cell_lines": "[MCF7]",
    "path": "measurements.csv",
    "smiles_path": "drugs.csv",
    "summary_path": "summary.csv",
}
_SKIP = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")


def validate_config(cfg: DictConfig) -> None:
    """Check types, ranges and input files of ``cfg``; :class:`ConfigValueError` names the first bad option.

    Interpolated values (``${seed}``) are checked where they are defined; a mandatory value (``???``) left
    unset raises :class:`ConfigValueError` with an example (``option measured: required: set it, e.g.
    measured=[round0.csv]``).
    """
    for key, expected in ROOT_TYPES.items():
        if key in cfg and not OmegaConf.is_missing(cfg, key):
            _check_value(key, cfg[key], expected)
    for key, choices in ROOT_CHOICES.items():
        if key in cfg and cfg[key] not in choices:
            raise ConfigValueError(key, f"expected one of {list(choices)}, got {cfg[key]!r}")
    if "seed" in cfg and cfg.seed < 0:
        raise ConfigValueError("seed", f"must be a non-negative integer, got {cfg.seed}")
    if "device" in cfg:
        _check_device(str(cfg.device))
    _walk(cfg, "")


def _check_device(device: str) -> None:
    """``device`` parses as a torch device and, for CUDA, one is present (else every fit would fail late)."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ConfigValueError("device", f"not a device: {device!r} (use cpu, cuda or cuda:<index>)") from None
    if parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()):
        raise ConfigValueError(
            "device",
            f"{device} is not available on this machine ({torch.cuda.device_count()} CUDA device(s)); use device=cpu",
        )


def _walk(node: DictConfig, prefix: str) -> None:
    hints = _target_hints(node.get("_target_")) if "_target_" in node else {}
    for key in node:
        key = str(key)
        dotted = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key) and not prefix.startswith("hydra."):
            raise ConfigValueError(
                dotted,
                f"required, and not set: give it on the command line, e.g. {dotted}={EXAMPLES.get(key, '<value>')}",
            )
        if key in _SKIP or OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key):
            continue
        value = node[key]
        if isinstance(value, DictConfig):
            _walk(value, f"{dotted}.")
            continue
        if key in hints:
            _check_value(dotted, value, hints[key])
        if key in POSITIVE_INTS and not isinstance(value, (bool, str)) and isinstance(value, int) and value < 1:
            raise ConfigValueError(dotted, f"must be >= 1, got {value}")
        if key in FILE_OPTIONS and value is not None and not prefix.startswith("hydra."):
            for path in value if isinstance(value, ListConfig) else [value]:
                if isinstance(path, str) and not Path(path).is_file():
                    raise ConfigValueError(dotted, f"file not found: {path} (relative paths start at {Path.cwd()})")


def _target_hints(target: Any) -> dict[str, Any]:
    """Parameter annotations of ``target`` (a dotted name); ``{}`` when they cannot be resolved."""
    try:
        obj = get_object(str(target))
        func = obj.__init__ if inspect.isclass(obj) else obj
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - an unresolvable annotation only means "not checked here"
        return {}
    hints.pop("return", None)
    return hints


def _check_value(key: str, value: Any, annotation: Any) -> None:
    """Raise :class:`ConfigValueError` if ``value`` cannot be of type ``annotation`` (simple types only)."""
    allowed = _allowed(annotation)
    if allowed is None or value is None and type(None) in allowed:
        return
    if isinstance(value, bool):
        ok = bool in allowed
    elif isinstance(value, int):
        ok = int in allowed or float in allowed
    elif isinstance(value, float):
        ok = float in allowed
    elif isinstance(value, str):
        ok = str in allowed
    elif isinstance(value, ListConfig):
        ok = list in allowed
    else:
        ok = True
    if not ok:
        names = sorted(t.__name__ if t is not type(None) else "null" for t in allowed)
        raise ConfigValueError(key, f"expected {' or '.join(names)}, got {value!r}")
    literal = [a for a in _union_args(annotation) if typing.get_origin(a) is typing.Literal]
    if literal and not any(value in typing.get_args(a) for a in literal):
        choices = [c for a in literal for c in typing.get_args(a)]
        raise ConfigValueError(key, f"expected one of {choices}, got {value!r}")


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _allowed(annotation: Any) -> set[type] | None:
    """The plain types an annotation admits, or ``None`` if it admits something this check cannot judge."""
    allowed: set[type] = set()
    for arg in _union_args(annotation):
        origin = typing.get_origin(arg)
        if arg is type(None) or arg in (int, float, bool, str):
            allowed.add(arg)
        elif origin is typing.Literal:
            allowed.update(type(v) for v in typing.get_args(arg))
        elif origin in (list, tuple, Sequence, typing.Sequence) or arg in (list, tuple):
            allowed.add(list)
        else:
            return None
    return allowed


#: Fewest test experiments on which ``train`` reports metrics (R², Spearman and coverage on fewer are noise
#: or NaN).
MIN_TEST_POINTS = 10


#: Largest test fraction advised: above it too little is left to train on.
MAX_TEST_FRACTION = 0.5


def check_test_size(n_test: int, n_screen: int) -> None:
    """Raise :class:`EmptySelectionError` when the test split is too small for meaningful metrics.

    The advice is computed from the numbers: the ``split.test`` fraction that would hold
    :data:`MIN_TEST_POINTS` experiments of this screen (a random split's fraction of pairs; rounded up to 0.05),
    or, when that would leave too little to train on, a larger screen (and ``recover-recommend``, which needs
    no test split, for a lab's few measurements).
    """
    if n_test >= MIN_TEST_POINTS:
        return
    needed = math.ceil(20 * MIN_TEST_POINTS / n_screen - 1e-9) / 20 if n_screen else math.inf
    if needed <= MAX_TEST_FRACTION:
        advice = (
            f"Set split.test={needed:.2f} (a random split's fraction of pairs; unseen_drug: of drugs), or use a "
            "larger screen (more cell lines / studies)"
        )
    else:
        advice = (
            f"The screen is too small to hold out {MIN_TEST_POINTS} experiments and still train (that would take "
            f"split.test={needed:.2f}): use a screen of at least {math.ceil(MIN_TEST_POINTS / MAX_TEST_FRACTION)} "
            "experiments, more for useful metrics; to choose the next plate from a few measurements, "
            "recover-recommend needs no test split"
        )
    raise EmptySelectionError(
        f"the test split holds {n_test} experiment(s) of {n_screen}; metrics need at least "
        f"{MIN_TEST_POINTS} (MIN_TEST_POINTS). {advice}"
    )
