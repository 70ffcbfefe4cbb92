"""Drug and cell-line features for the models.

Drugs: Morgan (ECFP-like) bit fingerprints of the salt-stripped parent molecule, optionally followed by a
one-hot identity block (RECOVER used both). Synthetic screens carry precomputed drug features that are used
instead of fingerprints. Cell lines: one-hot identity, per-gene z-scored expression (optionally reduced by
PCA), or both.

Shapes: ``D`` drugs (rows in ``Screen.drugs`` order), ``C`` cell lines (``Screen.cell_lines`` order),
``F`` drug features, ``G`` cell features.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import rdkit
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.MolStandardize import rdMolStandardize

from recover_pyro.data.screen import Screen
from recover_pyro.data.validation import parse_smiles
from recover_pyro.errors import InvalidSmilesError, ScreenDataError

log = logging.getLogger(__name__)

CACHE_ENV = "RECOVER_PYRO_CACHE"
CellKind = Literal["onehot", "expression", "both"]


# --- SMILES ------------------------------------------------------------------------------------
def standardize_smiles(smiles: str, drug: str | None = None) -> str:
    """Canonical SMILES of the parent molecule: salts and counter-ions removed, charges neutralised.

    The largest organic fragment is kept (so ``CN(CCCl)CCCl.Cl`` -> ``CN(CCCl)CCCl`` and a tosylate's
    toluenesulfonic acid is dropped), then charges left by the stripped counter-ion are neutralised where
    a neutral form exists (a disodium carboxylate becomes the free acid). Metal complexes written as
    disconnected fragments (carboplatin, oxaliplatin) keep only their largest organic ligand.

    Raises:
        InvalidSmilesError: RDKit cannot parse ``smiles`` or it is empty; names ``drug``.
    """
    if not isinstance(smiles, str) or not smiles.strip():
        raise InvalidSmilesError(f"empty or missing SMILES {smiles!r}", drug=drug)
    # RDKit's own messages: parse warnings would duplicate the error raised below, and the standardiser
    # logs a line per molecule ("Running LargestFragmentChooser") that buries real output.
    mol = parse_smiles(smiles.strip(), drug=drug)  # input limits first: a huge molecule crashes RDKit
    with rdBase.BlockLogs():
        parent = rdMolStandardize.LargestFragmentChooser(preferOrganic=True).choose(mol)
        parent = rdMolStandardize.Uncharger().uncharge(parent)
        return Chem.MolToSmiles(parent)


# --- Morgan fingerprints with a disk cache -------------------------------------------------------
def default_cache_dir() -> Path:
    """``$RECOVER_PYRO_CACHE`` if set, else ``~/.cache/recover_pyro``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "recover_pyro")


def _cache_path(root: Path, smiles: str, radius: int, n_bits: int) -> Path:
    # The RDKit version is part of the key: a generator change between releases must not serve stale bits.
    key = f"{smiles}\t{radius}\t{n_bits}\t{rdkit.__version__}".encode()
    return root / "morgan" / f"r{radius}_b{n_bits}" / f"{hashlib.sha256(key).hexdigest()}.npz"


def _load_cached(path: Path, smiles: str, n_bits: int) -> np.ndarray | None:
    """The cached ``(n_bits,)`` 0/1 bits of ``smiles``, or ``None`` (absent, other molecule or damaged).

    The cache is derivable, so a damaged entry or one of the wrong shape / dtype is never used: it is
    reported, deleted and recomputed.
    """
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["smiles"]) != smiles:
                return None
            packed = z["bits"]
        expected = ((n_bits + 7) // 8,)
        if packed.dtype != np.uint8 or packed.shape != expected:
            raise ValueError(f"bits have dtype {packed.dtype} and shape {packed.shape}, expected uint8 {expected}")
        return np.unpackbits(packed)[:n_bits]
    except Exception as err:  # noqa: BLE001 - any damage (zip, EOF, header, shape) means "recompute"
        log.warning("discarding damaged fingerprint cache file %s (%s: %s); recomputing", path, type(err).__name__, err)
        path.unlink(missing_ok=True)
        return None


def _save_cached(path: Path, smiles: str, bits: np.ndarray) -> None:
    """Write atomically: a temporary file in the same folder, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, smiles=np.array(smiles), bits=np.packbits(bits))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _morgan_bits(smiles: str, radius: int, n_bits: int) -> np.ndarray:
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    return generator.GetFingerprintAsNumPy(Chem.MolFromSmiles(smiles)).astype(np.uint8)


def morgan_fingerprints(
    smiles: Sequence[str],
    radius: int = 2,
    n_bits: int = 1024,
    cache_dir: str | Path | None = "default",
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """Morgan bit fingerprints of the salt-stripped parents of ``smiles``.

    Args:
        smiles: ``D`` SMILES strings.
        radius: Morgan radius (2 gives ECFP4-like bits).
        n_bits: fingerprint length.
        cache_dir: ``"default"`` uses :func:`default_cache_dir`, ``None`` disables the cache; otherwise a
            folder. Entries are keyed by (standardised SMILES, radius, n_bits, RDKit version).
        names: ``D`` drug names used in error messages (default: the position in ``smiles``).

    Returns:
        ``(D, n_bits)`` uint8 array of 0/1.
    """
    if radius < 0 or n_bits < 1:
        raise ValueError(f"need radius >= 0 and n_bits >= 1, got radius={radius}, n_bits={n_bits}")
    if names is not None and len(names) != len(smiles):
        raise ValueError(f"{len(names)} names for {len(smiles)} SMILES")
    labels = [str(n) for n in names] if names is not None else [f"#{i}" for i in range(len(smiles))]
    root = None if cache_dir is None else default_cache_dir() if cache_dir == "default" else Path(cache_dir)
    out = np.zeros((len(smiles), n_bits), dtype=np.uint8)
    done: dict[str, np.ndarray] = {}
    for i, (s, label) in enumerate(zip(smiles, labels)):
        parent = standardize_smiles(s, drug=label)
        if parent not in done:
            path = None if root is None else _cache_path(root, parent, radius, n_bits)
            bits = None if path is None else _load_cached(path, parent, n_bits)
            if bits is None:
                bits = _morgan_bits(parent, radius, n_bits)
                if path is not None:
                    _save_cached(path, parent, bits)
            done[parent] = bits
        out[i] = done[parent]
    return out


# --- per-screen feature matrices -----------------------------------------------------------------
def drug_features(
    screen: Screen,
    radius: int = 2,
    n_bits: int = 1024,
    one_hot: bool = True,
    cache_dir: str | Path | None = "default",
) -> torch.Tensor:
    """``(D, F)`` float drug features in ``screen.drugs`` row order.

    ``F = n_bits (+ D if one_hot)``: Morgan bits of each drug's SMILES, or ``screen.drug_features`` when
    the screen carries precomputed features (then ``radius``/``n_bits`` are unused), followed by the
    ``(D, D)`` identity when ``one_hot``.
    """
    ids = list(screen.drugs.index)
    if screen.drug_features is not None:
        missing = [d for d in ids if d not in screen.drug_features.index]
        if missing:
            raise ScreenDataError(f"{screen.name}: precomputed drug features lack drugs {missing}")
        base = screen.drug_features.loc[ids].to_numpy(dtype=np.float32)
    else:
        if "smiles" not in screen.drugs:
            raise ScreenDataError(
                f"{screen.name}: the drug table has no 'smiles' column and no precomputed drug features"
            )
        names = [f"{screen.drugs.at[d, 'name']} ({d})" if "name" in screen.drugs else d for d in ids]
        base = morgan_fingerprints(screen.drugs["smiles"].tolist(), radius, n_bits, cache_dir, names)
        base = base.astype(np.float32)
    blocks = [base, np.eye(len(ids), dtype=np.float32)] if one_hot else [base]
    return torch.as_tensor(np.concatenate(blocks, axis=1))


def standardize_columns(x: np.ndarray) -> np.ndarray:
    """Z-score each column over the rows (population sd); constant columns become 0. ``(C, G) -> (C, G)``."""
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    z[:, sd == 0] = 0.0
    return z


def pca_scores(x: np.ndarray, n_components: int) -> np.ndarray:
    """Principal-component scores of column-centred ``x`` ``(C, G)`` -> ``(C, n_components)``.

    With :math:`X - \\bar X = U S V^T`, the scores are :math:`U_{:k} S_{:k}` (decreasing variance).
    Each component's sign is fixed so that its largest-magnitude loading is positive (reproducible).
    """
    n, g = x.shape
    if not 1 <= n_components <= min(n, g):
        raise ValueError(
            f"pca={n_components} components impossible for {n} cell lines x {g} features; choose 1..{min(n, g)}"
        )
    centred = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    sign = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    sign[sign == 0] = 1.0
    return (u * s * sign)[:, :n_components]


def _expression(screen: Screen, lines: list[str], pca: int | None) -> np.ndarray:
    """Standardised (and optionally PCA-reduced) expression for ``lines`` (all must have features)."""
    assert screen.cell_features is not None
    frame = screen.cell_features.loc[lines]
    try:
        x = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ScreenDataError(f"{screen.name}: non-numeric cell-line features ({err})") from err
    bad = frame.index[~np.isfinite(x).all(axis=1)].tolist()
    if bad:
        raise ScreenDataError(f"{screen.name}: NaN or infinite cell-line features for {bad}")
    z = standardize_columns(x)
    return z if pca is None else pca_scores(z, pca)


def cell_features(screen: Screen, kind: CellKind = "onehot", pca: int | None = None) -> torch.Tensor:
    """``(C, G)`` float cell-line features in ``screen.cell_lines`` row order.

    Args:
        kind: ``"onehot"`` (``G = C``); ``"expression"``: ``screen.cell_features`` z-scored per gene over
            this screen's cell lines (constant genes -> 0); ``"both"``: one-hot, then expression (zero
            rows for lines without features, z-scored over those with features), then a 0/1 column
            flagging lines without features.
        pca: reduce the expression block to this many principal components (after z-scoring).
    """
    lines = list(screen.cell_lines.index)
    onehot = np.eye(len(lines))
    if kind == "onehot":
        return torch.as_tensor(onehot, dtype=torch.float32)
    if kind not in ("expression", "both"):
        raise ValueError(f"unknown cell feature kind {kind!r}; choose 'onehot', 'expression' or 'both'")
    if screen.cell_features is None:
        raise ScreenDataError(
            f"{screen.name}: cell features kind={kind!r} requested but the screen has no "
            "cell-line features; use kind='onehot'"
        )
    has = [c in screen.cell_features.index for c in lines]
    missing = [c for c, h in zip(lines, has) if not h]
    if kind == "expression":
        if missing:
            raise ScreenDataError(
                f"{screen.name}: no expression features for cell lines {missing}; "
                "use kind='both' (zeros + a missing flag) or kind='onehot'"
            )
        return torch.as_tensor(_expression(screen, lines, pca), dtype=torch.float32)
    present = [c for c, h in zip(lines, has) if h]
    if not present:
        raise ScreenDataError(
            f"{screen.name}: none of the cell lines {lines} has expression features; use kind='onehot'"
        )
    expr_present = _expression(screen, present, pca)
    expr = np.zeros((len(lines), expr_present.shape[1]))
    expr[np.flatnonzero(has)] = expr_present
    flag = (~np.asarray(has)).astype(np.float64)[:, None]
    return torch.as_tensor(np.concatenate([onehot, expr, flag], axis=1), dtype=torch.float32)


@dataclass
class Features:
    """Model inputs for one screen.

    Attributes:
        drug: ``(D, F)`` drug features, rows in ``drug_ids`` order (= ``Screen.drugs``).
        cell: ``(C, G)`` cell-line features, rows in ``cell_lines`` order (= ``Screen.cell_lines``).
    """

    drug: torch.Tensor
    cell: torch.Tensor
    drug_ids: list[str]
    cell_lines: list[str]


def featurize(
    screen: Screen,
    radius: int = 2,
    n_bits: int = 1024,
    one_hot: bool = True,
    cell: CellKind = "onehot",
    pca: int | None = None,
    cache_dir: str | Path | None = "default",
) -> Features:
    """Drug and cell-line features of ``screen``; see :func:`drug_features` and :func:`cell_features`."""
    return Features(
        drug=drug_features(screen, radius=radius, n_bits=n_bits, one_hot=one_hot, cache_dir=cache_dir),
        cell=cell_features(screen, kind=cell, pca=pca),
        drug_ids=list(screen.drugs.index),
        cell_lines=list(screen.cell_lines.index),
    )
