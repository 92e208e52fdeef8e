"""RealCentricLoss: its state (centre, banks) follows the spec, resets per epoch, survives state_dict, and
the loss it returns is the spec's on that state: banks as they stood before the batch, centre with it."""
import pytest
import torch
import torch.nn.functional as F

import rccl
from rccl import reference
from rccl.functional import CompiledUnavailable, real_centric_loss, update_hard_banks
from rccl.loss import LossConfigError, RealCentricLoss
from rccl.train.config import DEFAULTS

IMPLS = ["reference"] + (["compiled"] if rccl.backends()["cpu"] else [])


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


def _draws(seed, negatives, beta=(0.5, 0.5), fold=True, w_slots=0):
    """The module's lam (and w) for a step run right after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    u = torch.distributions.Beta(torch.tensor(float(beta[0])), torch.tensor(float(beta[1]))).sample((negatives,))
    lam = torch.maximum(u, 1 - u) if fold else u
    return lam, torch.rand(w_slots)


@pytest.mark.parametrize("impl", IMPLS)
def test_two_steps_follow_the_spec_banks_before_the_batch_centre_with_it(impl):
    k, m = 3, 4
    module = RealCentricLoss(8, bank_size=k, negatives=m, margin=0.3, temperature=0.2, neighbors=2, impl=impl)
    module.reset()
    (z1, y1), (z2, y2) = _batch(seed=21), _batch(seed=22)
    empty = torch.zeros(0, 8)
    torch.manual_seed(1)
    step1 = module(z1, y1)
    torch.manual_seed(2)
    step2 = module(z2, y2)

    # step 1: the banks are empty (the epoch's first step); the centre holds step 1's naturals
    c1 = F.normalize(z1[y1 == 0].mean(0), dim=0)
    lam1, _ = _draws(1, m)
    expected1 = reference.real_centric_loss(z1, y1, c1, empty, empty, lam1, 2, 0.2, 0.3)
    # the banks after step 1 are updated with step 1's batch against c1 ...
    r1, f1 = reference.update_hard_banks(z1, y1, c1, empty, empty, k)
    # ... and step 2 uses them, with a centre of steps 1 and 2's naturals
    c2 = F.normalize(torch.cat([z1[y1 == 0], z2[y2 == 0]]).mean(0), dim=0)
    lam2, _ = _draws(2, m)
    expected2 = reference.real_centric_loss(z2, y2, c2, r1, f1, lam2, 2, 0.2, 0.3)
    torch.testing.assert_close(step1, expected1, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(step2, expected2, atol=1e-6, rtol=1e-6)
    # the first step's loss did not see its own batch in the banks: it differs from the old order's
    wrong = reference.real_centric_loss(z1, y1, c1, r1, f1, lam1, 2, 0.2, 0.3)
    assert not torch.isclose(step1, wrong)
    # and the banks now hold step 2's update
    r2, f2 = reference.update_hard_banks(z2, y2, c2, r1, f1, k)
    sort = lambda t: t[torch.argsort(t[:, 0])]  # noqa: E731  (bank order is not part of the contract)
    bank_real, bank_fake = module.banks()
    torch.testing.assert_close(sort(bank_real), sort(r2), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sort(bank_fake), sort(f2), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("fusion", ["linear", "linear_smooth"])
def test_linear_fusions_draw_one_uniform_weight_per_slot_of_full_banks(fusion):
    k, q, m = 2, 3, 2
    module = RealCentricLoss(8, bank_size=k, negatives=m, neighbors=1, fusion=fusion, linear_neighbors=q,
                             impl="auto")
    (z1, y1), (z2, y2) = _batch(seed=23), _batch(seed=24)
    module(z1, y1)
    torch.manual_seed(5)
    value = module(z2, y2)
    lam, w = _draws(5, m, w_slots=2 * k * q)
    c1 = F.normalize(z1[y1 == 0].mean(0), dim=0)
    empty = torch.zeros(0, 8)
    r1, f1 = reference.update_hard_banks(z1, y1, c1, empty, empty, k)
    c2 = F.normalize(torch.cat([z1[y1 == 0], z2[y2 == 0]]).mean(0), dim=0)
    expected = reference.real_centric_loss(z2, y2, c2, r1, f1, lam, 1, 0.1, 0.2, fusion=fusion, w=w,
                                           linear_neighbors=q)
    torch.testing.assert_close(value, expected, atol=1e-6, rtol=1e-6)


def test_beta_and_fold_set_the_lam_draw():
    for beta, fold in (((0.5, 0.5), True), ((2, 4), False)):
        module = RealCentricLoss(8, negatives=4000, beta=beta, fold=fold)
        torch.manual_seed(3)
        lam, w = module.draw_mixing("cpu")
        expected, _ = _draws(3, 4000, beta, fold)
        torch.testing.assert_close(lam, expected)
        assert w.numel() == 0
    # Beta(2, 4) unfolded: mean 1/3, most draws below 0.5 (the natural dominates); folded U-shape: all >= 0.5
    assert abs(float(lam.mean()) - 1 / 3) < 0.02 and float((lam < 0.5).float().mean()) > 0.7
    with pytest.raises(LossConfigError, match="beta"):
        RealCentricLoss(8, beta=(0.5, 0))
    with pytest.raises(LossConfigError, match="beta"):
        RealCentricLoss(8, beta=0.5)


def test_a_variant_the_compiled_op_cannot_do_is_refused_under_compiled_and_runs_under_auto():
    z, y = _batch(seed=25)
    with pytest.raises(CompiledUnavailable, match="fusion"):
        RealCentricLoss(8, bank_size=2, fusion="linear", impl="compiled")(z, y)
    with pytest.raises(CompiledUnavailable, match="mixed_as"):
        RealCentricLoss(8, bank_size=2, mixed_as="fakes", impl="compiled")(z, y)
    assert torch.isfinite(RealCentricLoss(8, bank_size=2, mixed_as="fakes", impl="auto")(z, y))


@pytest.mark.skipif(not rccl.backends()["cpu"], reason="the compiled CPU op is not built")
def test_a_step_reads_nothing_back_from_the_features(monkeypatch):
    """With the compiled op (which checks values itself), a step converts no tensor to a Python value:
    the filled bank rows are counted on the host, the centre is a masked sum on the device."""
    module = RealCentricLoss(8, bank_size=3, negatives=2, impl="compiled")
    batches = [_batch(seed=s) for s in (26, 27, 28)]

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor value was read back to the host during a step")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for z, y in batches:
        module(z, y)
    monkeypatch.undo()
    assert [b.shape[0] for b in module.banks()] == [3, 3]


def test_a_batch_of_fakes_first_uses_the_batch_mean_as_centre():
    module = RealCentricLoss(8, bank_size=2, negatives=0)
    z, _ = _batch(seed=29)
    y = torch.ones(len(z), dtype=torch.int64)
    module(z, y)
    c = F.normalize(z.mean(0), dim=0)
    _, f1 = reference.update_hard_banks(z, y, c, torch.zeros(0, 8), torch.zeros(0, 8), 2)
    torch.testing.assert_close(module.banks()[1], f1)
    assert int(module.center_count) == 0


def test_gradient_reaches_the_features_only():
    loss = RealCentricLoss(8, bank_size=4, negatives=4)
    z, y = _batch(seed=6)
    z.requires_grad_(True)
    loss(z, y).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert all(not b.requires_grad for b in loss.buffers())


def test_supcon_kind_is_plain_supervised_contrastive():
    cfg = DEFAULTS["loss"] | {"kind": "supcon", "impl": "reference"}
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
    assert [b.shape[0] for b in other.banks()] == [3, 3]  # the host-side row counts come back with the state
    assert torch.equal(other.center(), loss.center())
    for a, b in zip(other.banks(), loss.banks()):
        assert torch.equal(a, b)


def test_wrong_feature_dimension_is_named():
    with pytest.raises(ValueError, match="dimension 8"):
        RealCentricLoss(16)(*_batch())


@pytest.mark.cuda
@pytest.mark.skipif(not (torch.cuda.is_available() and rccl.backends()["cuda"]), reason="needs a GPU and the CUDA op")
def test_a_cuda_step_with_full_banks_does_not_synchronise():
    """Once the banks are full (their shape no longer depends on the batch), a step on a GPU never waits for
    the device: torch's sync debug mode turns any synchronising call into an error."""
    module = RealCentricLoss(8, bank_size=3, negatives=2, impl="compiled").cuda()
    batches = [tuple(t.cuda() for t in _batch(seed=s)) for s in (30, 31, 32)]
    module(*batches[0])  # fills the banks (3 naturals and 3 fakes a batch)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for z, y in batches[1:]:
            loss = module(z, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss.cpu())
