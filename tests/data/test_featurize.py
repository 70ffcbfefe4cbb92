from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

import recover_pyro.data.featurize as fz
from recover_pyro.errors import InvalidSmilesError, ScreenDataError
from recover_pyro.data.featurize import (
    cell_features,
    drug_features,
    featurize,
    morgan_fingerprints,
    pca_scores,
    standardize_smiles,
)
from recover_pyro.data.synthetic import make_synthetic_screen

MECHLORETHAMINE = "CN(CCCl)CCCl"
SORAFENIB = "CNC(=O)C1=NC=CC(=C1)OC2=CC=C(C=C2)NC(=O)NC3=CC(=C(C=C3)Cl)C(F)(F)F"
TOSYLATE = "CC1=CC=C(C=C1)S(=O)(=O)O"


@pytest.fixture(autouse=True)
def private_default_cache(tmp_path, monkeypatch):
    """Keep ``cache_dir="default"`` away from the user's home during tests."""
    monkeypatch.setenv(fz.CACHE_ENV, str(tmp_path / "default-cache"))


def _rdkit_bits(smiles: str, radius: int = 2, n_bits: int = 1024) -> np.ndarray:
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    return gen.GetFingerprintAsNumPy(Chem.MolFromSmiles(smiles))


# --- SMILES standardisation ------------------------------------------------------------------------
def test_standardize_strips_salts_and_neutralises():
    assert standardize_smiles(MECHLORETHAMINE + ".Cl") == Chem.CanonSmiles(MECHLORETHAMINE)
    assert standardize_smiles(f"{TOSYLATE}.{SORAFENIB}") == Chem.CanonSmiles(SORAFENIB)
    # A disodium dicarboxylate is the free diacid once the sodium ions are gone.
    assert standardize_smiles("OC(=O)CCC(=O)[O-].[Na+]") == Chem.CanonSmiles("OC(=O)CCC(=O)O")
    # Canonical: two spellings of one molecule agree.
    assert standardize_smiles("c1ccccc1O") == standardize_smiles("Oc1ccccc1")


@pytest.mark.parametrize("bad", ["C1CC(", "not a smiles", "", "   "])
def test_invalid_smiles_names_the_drug(bad):
    with pytest.raises(InvalidSmilesError, match="Fakeomycin") as info:
        standardize_smiles(bad, drug="Fakeomycin")
    assert info.value.drug == "Fakeomycin"


# --- fingerprints ------------------------------------------------------------------------------------
def test_fingerprints_match_rdkit_on_the_parent_and_respect_sizes(tmp_path):
    smiles = [MECHLORETHAMINE, SORAFENIB, "CC(=O)Oc1ccccc1C(=O)O"]
    for radius, n_bits in [(2, 1024), (1, 256), (3, 2048)]:
        fp = morgan_fingerprints(smiles, radius=radius, n_bits=n_bits, cache_dir=tmp_path)
        assert fp.shape == (3, n_bits) and fp.dtype == np.uint8
        for row, s in zip(fp, smiles):
            np.testing.assert_array_equal(row, _rdkit_bits(s, radius, n_bits))
    # Morgan bits of radius r include those of every smaller radius (same folding).
    r0 = morgan_fingerprints(smiles, radius=0, n_bits=1024, cache_dir=None)
    r2 = morgan_fingerprints(smiles, radius=2, n_bits=1024, cache_dir=None)
    assert (r2 >= r0).all() and (r2.sum(1) > r0.sum(1)).all()


def test_fingerprints_are_salt_free():
    fp = morgan_fingerprints(
        [MECHLORETHAMINE + ".Cl", MECHLORETHAMINE, f"{TOSYLATE}.{SORAFENIB}", SORAFENIB], cache_dir=None
    )
    np.testing.assert_array_equal(fp[0], fp[1])
    np.testing.assert_array_equal(fp[2], fp[3])
    assert not np.array_equal(fp[0], fp[2])


def test_real_almanac_salts_give_the_parent_fingerprint(almanac):
    drugs = almanac.drugs
    salted = drugs[drugs["smiles"].str.contains(".", regex=False)]
    assert len(salted) >= 10
    by_name = drugs.set_index(drugs["name"].str.strip().str.lower())["smiles"]
    parents = {"mechlorethamine hydrochloride": MECHLORETHAMINE, "sorafenib tosylate": SORAFENIB}
    fp = morgan_fingerprints([by_name[n] for n in parents] + list(parents.values()), cache_dir=None)
    np.testing.assert_array_equal(fp[:2], fp[2:])
    # Every salted drug is reduced to a single fragment before fingerprinting.
    for smiles in salted["smiles"]:
        assert "." not in standardize_smiles(smiles)


def test_cache_hit_equals_miss_and_is_used(tmp_path, monkeypatch):
    smiles = [MECHLORETHAMINE + ".Cl", SORAFENIB, MECHLORETHAMINE]
    miss = morgan_fingerprints(smiles, cache_dir=tmp_path)
    files = sorted(tmp_path.rglob("*.npz"))
    assert len(files) == 2  # one entry per distinct parent molecule
    assert not list(tmp_path.rglob(".tmp-*"))  # atomic writes leave no temporary files

    def fail(*args):
        raise AssertionError("fingerprint recomputed despite a cache entry")

    monkeypatch.setattr(fz, "_morgan_bits", fail)
    hit = morgan_fingerprints(smiles, cache_dir=tmp_path)
    np.testing.assert_array_equal(hit, miss)
    monkeypatch.undo()

    # Another (radius, n_bits) is another key; a corrupt file is recomputed and rewritten.
    assert morgan_fingerprints(smiles, radius=1, n_bits=512, cache_dir=tmp_path).shape == (3, 512)
    assert len(list(tmp_path.rglob("*.npz"))) == 4
    files[0].write_bytes(b"garbage")
    np.testing.assert_array_equal(morgan_fingerprints(smiles, cache_dir=tmp_path), miss)
    np.testing.assert_array_equal(morgan_fingerprints(smiles, cache_dir=tmp_path), miss)


def test_default_cache_comes_from_the_environment_and_none_disables(tmp_path, monkeypatch):
    monkeypatch.setenv(fz.CACHE_ENV, str(tmp_path / "env"))
    morgan_fingerprints([SORAFENIB], cache_dir=None)
    assert not (tmp_path / "env").exists()
    morgan_fingerprints([SORAFENIB], cache_dir="default")
    assert len(list((tmp_path / "env").rglob("*.npz"))) == 1


def test_fingerprint_errors_name_the_drug():
    with pytest.raises(InvalidSmilesError, match="Brokenib"):
        morgan_fingerprints([SORAFENIB, "C1CC("], names=["Sorafenib", "Brokenib"], cache_dir=None)
    with pytest.raises(ValueError, match="names"):
        morgan_fingerprints([SORAFENIB], names=["a", "b"], cache_dir=None)


# --- drug feature matrices ---------------------------------------------------------------------------
def test_drug_features_on_almanac(almanac):
    d = almanac.n_drugs
    feats = drug_features(almanac, n_bits=512, cache_dir=None)
    assert feats.shape == (d, 512 + d) and feats.dtype == torch.float32
    fp = morgan_fingerprints(almanac.drugs["smiles"].tolist(), n_bits=512, cache_dir=None)
    np.testing.assert_array_equal(feats[:, :512].numpy(), fp)
    np.testing.assert_array_equal(feats[:, 512:].numpy(), np.eye(d))
    assert drug_features(almanac, n_bits=512, one_hot=False, cache_dir=None).shape == (d, 512)
    # Rows follow the drug table's order.
    flipped = replace(almanac, drugs=almanac.drugs.iloc[::-1])
    np.testing.assert_array_equal(drug_features(flipped, n_bits=512, one_hot=False, cache_dir=None).numpy(), fp[::-1])


def test_drug_features_error_names_the_drug():
    screen = make_synthetic_screen(n_drugs=4, n_cell_lines=1, seed=0)
    drugs = pd.DataFrame(
        {
            "name": ["Aspirin", "Brokenib", "Caffeine", "Dapsone"],
            "smiles": [
                "CC(=O)Oc1ccccc1C(=O)O",
                "C1CC(",
                "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
                "Nc1ccc(cc1)S(=O)(=O)c1ccc(N)cc1",
            ],
        },
        index=screen.drugs.index,
    )
    with pytest.raises(InvalidSmilesError, match=r"Brokenib \(drug_1\)"):
        drug_features(replace(screen, drugs=drugs, drug_features=None), cache_dir=None)


# --- cell features -----------------------------------------------------------------------------------
def test_onehot_cell_features(almanac):
    np.testing.assert_array_equal(cell_features(almanac).numpy(), np.eye(almanac.n_cell_lines))


def test_expression_is_standardised_per_gene(almanac):
    x = cell_features(almanac, kind="expression").double().numpy()
    assert x.shape == (55, 651)
    np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(x.std(0), 1.0, atol=1e-5)
    raw = almanac.cell_features.loc[almanac.cell_lines.index].to_numpy()
    np.testing.assert_allclose(x, (raw - raw.mean(0)) / raw.std(0), atol=1e-5)
    # Standardised over the screen's own cell lines: a sub-screen is re-standardised.
    sub = almanac.select(cell_lines=["MCF7", "T47D", "A549"])
    np.testing.assert_allclose(cell_features(sub, kind="expression").double().numpy().std(0), 1.0, atol=1e-5)


def test_constant_genes_become_zero():
    screen = make_synthetic_screen(n_drugs=5, n_cell_lines=3, seed=0)
    features = screen.cell_features.copy()
    features["gene_0"] = 7.0
    x = cell_features(replace(screen, cell_features=features), kind="expression").numpy()
    np.testing.assert_array_equal(x[:, 0], 0.0)
    np.testing.assert_allclose(x[:, 1:].std(0), 1.0, atol=1e-5)


def test_pca_shape_ordering_and_closed_form(almanac):
    z = cell_features(almanac, kind="expression").double().numpy()
    scores = cell_features(almanac, kind="expression", pca=10).double().numpy()
    assert scores.shape == (55, 10)
    var = scores.var(0)
    assert (np.diff(var) <= 1e-6).all()
    # Full-rank PCA is a rotation: total variance and the Gram matrix of centred rows are preserved.
    full = pca_scores(z, 55)
    np.testing.assert_allclose(full.var(0).sum(), z.var(0).sum(), rtol=1e-8)
    np.testing.assert_allclose(full @ full.T, z @ z.T, atol=1e-6)
    np.testing.assert_allclose(full[:, :10], scores, atol=1e-4)
    with pytest.raises(ValueError, match="pca=60"):
        cell_features(almanac, kind="expression", pca=60)


def test_missing_expression_lists_lines_and_both_flags_them(almanac):
    sub = almanac.select(cell_lines=["MCF7", "T47D", "A549", "SR"])
    partial = replace(sub, cell_features=sub.cell_features.drop(index=["SR", "A549"]))
    with pytest.raises(ScreenDataError, match=r"\['A549', 'SR'\].*kind='both'"):
        cell_features(partial, kind="expression")
    both = cell_features(partial, kind="both", pca=2).numpy()
    lines = list(partial.cell_lines.index)
    assert both.shape == (4, 4 + 2 + 1)
    np.testing.assert_array_equal(both[:, :4], np.eye(4))
    missing = np.array([c in ("A549", "SR") for c in lines])
    np.testing.assert_array_equal(both[:, -1], missing.astype(np.float32))
    np.testing.assert_array_equal(both[missing, 4:6], 0.0)
    present = partial.select(cell_lines=["MCF7", "T47D"])
    np.testing.assert_allclose(both[~missing, 4:6], cell_features(present, kind="expression", pca=2).numpy())
    with pytest.raises(ScreenDataError, match="onehot"):
        cell_features(replace(sub, cell_features=None), kind="both")
    with pytest.raises(ValueError, match="unknown cell feature kind"):
        cell_features(sub, kind="rna")


def test_featurize_bundles_both(almanac):
    sub = almanac.select(cell_lines=["MCF7", "T47D"])
    feats = featurize(sub, n_bits=256, cell="both", pca=None, cache_dir=None)
    assert feats.drug_ids == list(sub.drugs.index) and feats.cell_lines == ["MCF7", "T47D"]
    assert feats.drug.shape == (sub.n_drugs, 256 + sub.n_drugs)
    assert feats.cell.shape == (2, 2 + 651 + 1)
