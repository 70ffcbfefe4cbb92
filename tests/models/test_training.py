"""Training-loop utilities: the fused Adam against PyTorch's plain per-parameter loop."""

import torch

from recover_pyro.models.predictor import RecoverPredictor
from recover_pyro.models.training import adam


def test_fused_adam_takes_the_steps_of_plain_adam():
    """Ten steps on the same gradients (with weight decay): parameters agree to float32 rounding, and they
    moved (a frozen optimiser would agree trivially)."""
    torch.manual_seed(0)
    nets = [RecoverPredictor(torch.rand(10, 16).round(), torch.eye(3), drug_hidden=(8, 4), merge_dim=4) for _ in "ab"]
    nets[1].load_state_dict(nets[0].state_dict())
    start = {n: p.detach().clone() for n, p in nets[0].named_parameters()}
    fused = adam(nets[0].parameters(), lr=1e-2, weight_decay=1e-2)
    plain = torch.optim.Adam(nets[1].parameters(), lr=1e-2, weight_decay=1e-2, foreach=False, fused=False)
    a, b, c = torch.randint(10, (64,)), torch.randint(10, (64,)), torch.randint(3, (64,))
    y = torch.randn(64)
    for _ in range(10):
        for net, opt in zip(nets, (fused, plain)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(a, b, c), y).backward()
            opt.step()
    for (name, p), q in zip(nets[0].named_parameters(), nets[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.allclose(p, start[name]), name
