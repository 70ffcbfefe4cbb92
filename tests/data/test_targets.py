import pytest
import torch

from recover_pyro.data.targets import TargetScaler


def test_fit_standardises_and_round_trips():
    y = torch.tensor([-120.0, -30.0, -24.0, 0.0, 15.0, 280.0])
    scaler = TargetScaler().fit(y)
    assert scaler.loc == pytest.approx(float(y.mean()))
    assert scaler.scale == pytest.approx(float(y.std()))
    z = scaler.transform(y)
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(z.std()) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(scaler.inverse(z), y)


def test_inverse_applies_to_sample_batches_and_scales_sds():
    scaler = TargetScaler(loc=-20.0, scale=40.0)
    z = torch.tensor([[0.0, 1.0], [-1.0, 2.5]])  # (S, N)
    torch.testing.assert_close(scaler.inverse(z), torch.tensor([[-20.0, 20.0], [-60.0, 80.0]]))
    # A standard deviation is scaled but not shifted.
    torch.testing.assert_close(scaler.inverse_scale(torch.tensor([0.5, 1.0])), torch.tensor([20.0, 40.0]))
    # Samples of a shifted/scaled variable have sd multiplied by scale.
    samples = torch.randn(4000, generator=torch.Generator().manual_seed(0)) * 0.3
    assert float(scaler.inverse(samples).std()) == pytest.approx(float(scaler.inverse_scale(samples.std())), rel=1e-5)


def test_identity_when_not_standardising():
    y = torch.tensor([1.0, 5.0, 9.0])
    scaler = TargetScaler(standardize=False).fit(y)
    assert (scaler.loc, scaler.scale) == (0.0, 1.0)
    torch.testing.assert_close(scaler.transform(y), y)
    torch.testing.assert_close(scaler.inverse(y), y)


@pytest.mark.parametrize("y", [torch.tensor([3.0]), torch.tensor([2.0, 2.0, 2.0])])
def test_degenerate_targets_keep_unit_scale(y):
    scaler = TargetScaler().fit(y)
    assert scaler.scale == 1.0
    assert scaler.loc == pytest.approx(float(y.mean()))
    torch.testing.assert_close(scaler.inverse(scaler.transform(y)), y)


def test_state_dict_rebuilds_the_same_map():
    scaler = TargetScaler().fit(torch.tensor([0.0, 10.0, 50.0]))
    rebuilt = TargetScaler(**scaler.state_dict())
    z = torch.tensor([-1.0, 0.0, 2.0])
    torch.testing.assert_close(rebuilt.inverse(z), scaler.inverse(z))
