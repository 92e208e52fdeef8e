"""RealCentricLoss: its state (centre, banks) follows the spec, resets per epoch, survives state_dict, and
the loss it returns is rccl.functional's on that state."""
import pytest
import torch
import torch.nn.functional as F

from rccl.functional import real_centric_loss, update_hard_banks
from rccl.loss import RealCentricLoss


def _batch(n=12, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, d, generator=g), dim=1)
    labels = torch.tensor([0, 1] * (n // 2))
    return z, labels


def test_centre_is_the_normalised_mean_of_every_natural_seen_this_epoch():
    loss = RealCentricLoss(8, bank_size=4, negatives=4)
    z1, y1 = _batch(seed=1)
    z2, y2 = _batch(seed=2)
    loss(z1, y1)
    loss(z2, y2)
    naturals = torch.cat([z1[y1 == 0], z2[y2 == 0]])
    assert torch.allclose(loss.center(), F.normalize(naturals.mean(0), dim=0), atol=1e-6)
    assert int(loss.center_count) == len(naturals)
    loss.reset()
    assert int(loss.center_count) == 0 and int(loss.bank_real_count) == 0 and int(loss.bank_fake_count) == 0
    with pytest.raises(RuntimeError, match="no natural"):
        loss.center()


def test_banks_follow_update_hard_banks_with_the_current_centre():
    k = 3
    loss = RealCentricLoss(8, bank_size=k, negatives=2)
    z1, y1 = _batch(seed=3)
    z2, y2 = _batch(seed=4)
    loss(z1, y1)
    c1 = F.normalize(z1[y1 == 0].mean(0), dim=0)
    r1, f1 = update_hard_banks(z1, y1, c1, torch.zeros(0, 8), torch.zeros(0, 8), k=k, impl="reference")
    loss(z2, y2)
    c2 = F.normalize(torch.cat([z1[y1 == 0], z2[y2 == 0]]).mean(0), dim=0)
    r2, f2 = update_hard_banks(z2, y2, c2, r1, f1, k=k, impl="reference")
    bank_real, bank_fake = loss.banks()
    sort = lambda t: t[torch.argsort(t[:, 0])]  # noqa: E731  (bank order is not part of the contract)
    assert torch.allclose(sort(bank_real), sort(r2), atol=1e-6) and torch.allclose(sort(bank_fake), sort(f2), atol=1e-6)
    assert bank_real.shape[0] == k


def test_loss_is_the_op_on_the_module_state_with_lam_drawn_from_a_u_shaped_beta():
    loss = RealCentricLoss(8, bank_size=4, negatives=5, margin=0.3, temperature=0.2, neighbors=2)
    z, y = _batch(seed=5)
    torch.manual_seed(11)
    value = loss(z, y)
    torch.manual_seed(11)
    u = torch.distributions.Beta(torch.tensor(0.5), torch.tensor(0.5)).sample((5,))
    lam = torch.maximum(u, 1 - u)
    assert (lam >= 0.5).all()
    bank_real, bank_fake = loss.banks()
    expected = real_centric_loss(z, y, loss.center(), bank_real, bank_fake, lam, neighbors=2, temperature=0.2,
                                 margin=0.3, impl="reference")
    assert torch.allclose(value, expected, atol=1e-5)


def test_gradient_reaches_the_features_only():
    loss = RealCentricLoss(8, bank_size=4, negatives=4)
    z, y = _batch(seed=6)
    z.requires_grad_(True)
    loss(z, y).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert all(not b.requires_grad for b in loss.buffers())


def test_supcon_kind_is_plain_supervised_contrastive():
    cfg = {"kind": "supcon", "temperature": 0.1, "bank_size": 16, "negatives": 16, "neighbors": 2, "margin": 0.2,
           "alpha": 0.5, "impl": "reference"}
    loss = RealCentricLoss.from_config(cfg, 8)
    assert (loss.bank_size, loss.negatives, loss.margin) == (0, 0, 0.0)
    z, y = _batch(seed=7)
    empty = torch.zeros(0, 8)
    expected = real_centric_loss(z, y, F.normalize(z[y == 0].mean(0), dim=0), empty, empty, torch.zeros(0),
                                 margin=0.0, impl="reference")
    assert torch.allclose(loss(z, y), expected, atol=1e-6)
    with pytest.raises(ValueError, match="not a contrastive loss"):
        RealCentricLoss.from_config(cfg | {"kind": "ce"}, 8)


def test_state_round_trips_through_state_dict():
    loss = RealCentricLoss(8, bank_size=3, negatives=2)
    z, y = _batch(seed=8)
    loss(z, y)
    other = RealCentricLoss(8, bank_size=3, negatives=2)
    other.load_state_dict(loss.state_dict())
    assert torch.equal(other.center(), loss.center())
    for a, b in zip(other.banks(), loss.banks()):
        assert torch.equal(a, b)


def test_wrong_feature_dimension_is_named():
    with pytest.raises(ValueError, match="dimension 8"):
        RealCentricLoss(16)(*_batch())
