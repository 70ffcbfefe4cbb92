from dataclasses import replace
import functools

import numpy as np
import pytest
import torch

from recover_pyro import metrics
from recover_pyro.models.baselines import DeepEnsemble, DeterministicModel, MCDropoutModel, TrainConfig
from recover_pyro.data.featurize import featurize
from recover_pyro.data.screen import Pairs
from recover_pyro.data.synthetic import make_synthetic_screen
from recover_pyro.models.base import SynergyModel
from recover_pyro.models.predictor import DeepSynergyPredictor, RecoverPredictor

SMALL = functools.partial(RecoverPredictor, drug_hidden=(32, 16), merge_dim=16, merge_rank=4, head_hidden=(16,))
CONFIG = TrainConfig(lr=3e-3, epochs=60, batch_size=32, patience=10)
SHORT = TrainConfig(lr=3e-3, epochs=5, batch_size=32, holdout=0.0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    """A 16-drug, 2-cell-line synthetic screen (240 experiments) split 70/15/15 at random."""
    screen = make_synthetic_screen(n_drugs=16, n_cell_lines=2, n_bits=64, noise_sd=0.2, seed=0)
    feats = featurize(screen, cache_dir=None)
    pairs = screen.to_pairs()
    perm = torch.as_tensor(np.random.default_rng(0).permutation(len(pairs)))
    a, b = int(0.7 * len(pairs)), int(0.85 * len(pairs))
    return feats, pairs[perm[:a]], pairs[perm[a:b]], pairs[perm[b:]]


def build(kind, feats, seed=0, training=CONFIG):
    common = dict(predictor=SMALL, training=training, seed=seed)
    if kind == "deterministic":
        return DeterministicModel(feats.drug, feats.cell, **common)
    if kind == "ensemble":
        return DeepEnsemble(feats.drug, feats.cell, n_members=3, **common)
    return MCDropoutModel(feats.drug, feats.cell, dropout=0.1, **common)


@pytest.fixture(scope="module")
def fitted(data):
    """Each kind of baseline fitted once on the training split with early stopping on validation."""
    feats, train, val, _ = data
    out = {}
    for kind in ("deterministic", "ensemble", "mc_dropout"):
        model = build(kind, feats)
        out[kind] = (model, model.fit(train, val))
    return out


KINDS = ("deterministic", "ensemble", "mc_dropout")


@pytest.mark.parametrize("kind", KINDS)
def test_baselines_learn_and_follow_the_protocol(kind, data, fitted):
    _, _, _, test = data
    model, report = fitted[kind]
    assert isinstance(model, SynergyModel)
    pred = model.predict(test, num_samples=20)
    assert metrics.r2_pearson(test.y, pred.mean) > 0.5
    assert pred.f.shape == ((3, len(test)) if kind == "ensemble" else (20, len(test)))
    assert torch.isfinite(pred.f).all()
    assert (pred.noise_scale > 0).all()
    assert len(report.losses) <= CONFIG.epochs and report.losses[-1] < report.losses[0]


def test_deterministic_has_no_spread_and_residual_noise(data, fitted):
    _, _, val, test = data
    model, _ = fitted["deterministic"]
    pred = model.predict(test, num_samples=7)
    assert torch.equal(pred.f, pred.f[:1].expand(7, -1))
    assert torch.equal(pred.epistemic_std, torch.zeros(len(test)))
    assert pred.noise_scale.dim() == 0
    # noise = residual RMS on the validation set, original scale
    val_mean = model.predict(val, 1).mean
    assert float(pred.noise_scale) == pytest.approx(metrics.mse(val.y, val_mean) ** 0.5, rel=1e-5)


def test_early_stopping_restores_best_weights(data, fitted):
    _, _, val, _ = data
    model, report = fitted["deterministic"]
    assert len(report.val_metric) == len(report.losses)
    assert report.best_epoch == int(np.argmin(report.val_metric))
    val_mse = metrics.mse(val.y, model.predict(val, 1).mean)
    assert val_mse == pytest.approx(min(report.val_metric), rel=1e-5)


def test_without_validation_or_holdout_all_epochs_run_and_train_residuals_give_noise(data):
    feats, train, _, _ = data
    model = build("deterministic", feats, training=SHORT)
    report = model.fit(train)
    assert len(report.losses) == SHORT.epochs and report.best_epoch == SHORT.epochs - 1
    assert report.val_metric == []
    residual = metrics.mse(train.y, model.predict(train, 1).mean) ** 0.5
    assert float(model.predict(train, 1).noise_scale) == pytest.approx(residual, rel=1e-5)


@pytest.mark.parametrize("kind", ["deterministic", "ensemble", "mc_dropout"])
def test_without_validation_a_holdout_early_stops_and_sets_the_noise(data, kind):
    """RECOVER's recipe: 10 % of the training set held out for early stopping; the noise is the held-out error
    not explained by the model's spread, at least the training residual variance (models/noise.py)."""
    feats, train, _, _ = data
    model = build(kind, feats, training=replace(CONFIG, holdout=0.1))
    report = model.fit(train)
    assert report.val_metric  # early stopping ran on the held-out 10 %
    mean = model.predict(train, 2).mean if kind == "ensemble" else model.predict_mean(train)
    noise = float(model.predict(train, 2).noise_scale)
    # Held-out error of an early-stopped net exceeds its (90 %) training residual on the whole training set.
    assert noise > metrics.mse(train.y, mean) ** 0.5


def test_targets_are_standardised_on_the_first_fit_only(data):
    feats, train, val, _ = data
    model = build("deterministic", feats, training=SHORT)
    model.fit(train)
    assert model.scaler.loc == pytest.approx(float(train.y.mean()))
    assert model.scaler.scale == pytest.approx(float(train.y.std()))
    model.fit(Pairs.concat([train, val]))  # warm start keeps the scale the weights were trained on
    assert model.scaler.loc == pytest.approx(float(train.y.mean()))
    raw = DeterministicModel(feats.drug, feats.cell, predictor=SMALL, training=SHORT, standardize=False)
    raw.fit(train)
    assert (raw.scaler.loc, raw.scaler.scale) == (0.0, 1.0)


def test_ensemble_members_differ(data, fitted):
    _, _, _, test = data
    model, report = fitted["ensemble"]
    pred = model.predict(test, num_samples=50)
    assert pred.f.shape == (3, len(test))
    assert pred.noise_scale.shape == ()  # one noise for the mixture
    assert not torch.allclose(pred.f[0], pred.f[1]) and not torch.allclose(pred.f[1], pred.f[2])
    assert (pred.epistemic_std > 0).all()
    assert len(model.member_reports) == 3
    assert len(report.losses) == max(len(r.losses) for r in model.member_reports)
    assert report.best_epoch == max(r.best_epoch for r in model.member_reports)


def test_mc_dropout_samples_spread_and_are_reproducible(data, fitted):
    _, _, _, test = data
    model, _ = fitted["mc_dropout"]
    pred = model.predict(test, num_samples=30)
    assert (pred.epistemic_std > 0).all()
    assert len(torch.unique(pred.f[:, 0])) == 30
    assert torch.equal(model.predict(test, num_samples=30).f, pred.f)
    assert model.net.mc_dropout is False  # switched off again after predicting


@pytest.mark.parametrize("kind", KINDS)
def test_drug_order_does_not_matter(kind, data, fitted):
    _, _, _, test = data
    model, _ = fitted[kind]
    assert torch.allclose(model.predict(test, 10).f, model.predict(test.swapped(), 10).f, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_equal_seeds_give_equal_results_without_touching_global_rng(kind, data):
    feats, train, val, test = data
    rng_state = torch.get_rng_state()
    runs = []
    for seed in (0, 0, 1):
        model = build(kind, feats, seed=seed, training=SHORT)
        runs.append((model.fit(train, val).losses, model.predict(test, 5).f))
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])
    assert runs[0][0] != runs[2][0] and not torch.allclose(runs[0][1], runs[2][1])


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip(kind, data, fitted, tmp_path):
    feats, _, _, test = data
    model, _ = fitted[kind]
    torch.save(model.state_dict(), tmp_path / "state.pt")
    restored = build(kind, feats, seed=123)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    expected, got = model.predict(test, 8), restored.predict(test, 8)
    assert torch.equal(expected.f, got.f)
    assert torch.equal(expected.noise_scale, got.noise_scale)


def test_second_fit_warm_starts(data):
    feats, train, _, _ = data
    model = build("deterministic", feats, training=SHORT)
    fresh = model.fit(train)
    again = model.fit(train)
    other_fresh = build("deterministic", feats, seed=7, training=SHORT).fit(train)
    assert again.losses[0] < min(fresh.losses[0], other_fresh.losses[0])
    assert again.losses[0] < 1.1 * fresh.losses[-1]  # picks up where the first fit ended


def test_deepsynergy_predictor_plugs_in(data):
    feats, train, _, test = data
    model = DeterministicModel(
        feats.drug, feats.cell, training=SHORT, predictor=functools.partial(DeepSynergyPredictor, hidden=(32,))
    )
    model.fit(train)
    assert torch.allclose(model.predict(test, 2).f, model.predict(test.swapped(), 2).f, atol=1e-5)


def test_clear_errors(data):
    feats, train, _, test = data
    model = build("deterministic", feats, training=SHORT)
    with pytest.raises(RuntimeError, match="before fit"):
        model.predict(test)
    with pytest.raises(ValueError, match="no targets"):
        model.fit(Pairs(train.drug_a, train.drug_b, train.cell))
    bad = train.y.clone()
    bad[3] = float("nan")
    with pytest.raises(ValueError, match="row 3"):
        model.fit(Pairs(train.drug_a, train.drug_b, train.cell, bad))
    with pytest.raises(ValueError, match="dropout"):
        MCDropoutModel(feats.drug, feats.cell, dropout=0.0)
    with pytest.raises(ValueError, match="n_members"):
        DeepEnsemble(feats.drug, feats.cell, n_members=0)
    with pytest.raises(ValueError, match="members"):
        DeepEnsemble(feats.drug, feats.cell, predictor=SMALL, n_members=2).load_state_dict(
            build("ensemble", feats).state_dict()
        )
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
