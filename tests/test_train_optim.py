"""The engine's after_backward slot: gradient clipping (train.clip_grad) sees the gradients after
backward and before the update, and weight decay groups (train.decay_norm_and_bias) leave norm scales,
shifts and biases undecayed when asked."""
import pytest
import torch

from rccl.train.config import load_config
from rccl.train.engine import HookBase
from rccl.train.optim import param_groups
from rccl.train.runner import train
from tiny_data import make_tiny_manifest, tiny_overrides


class GradientNorms(HookBase):
    """Records the gradients' global L2 norm each step, as the update will see them (after the hooks
    before it: it is given last)."""

    def __init__(self):
        self.norms = []

    def after_backward(self, loop) -> None:
        grads = [p.grad for g in loop.optimizer.param_groups for p in g["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


@pytest.fixture
def manifest(tmp_path):
    return make_tiny_manifest(tmp_path / "data")


def test_clip_grad_bounds_the_gradients_the_update_sees(tmp_path, manifest):
    free, clipped = GradientNorms(), GradientNorms()
    common = {"stage1.epochs": 1, "stage2.epochs": 1}
    train(load_config(None, tiny_overrides(manifest, tmp_path / "a", **common)), hooks=[free])
    train(load_config(None, tiny_overrides(manifest, tmp_path / "b", **common, **{"train.clip_grad": 0.05})),
          hooks=[clipped])
    assert free.norms and len(free.norms) == len(clipped.norms)
    assert max(free.norms) > 0.05  # without clipping the bound is exceeded, so the test can see the clip
    assert all(n <= 0.05 * (1 + 1e-5) for n in clipped.norms), clipped.norms
    assert clipped.norms[0] == pytest.approx(min(free.norms[0], 0.05), rel=1e-5)  # the first step: same weights


def test_weight_decay_groups_leave_norms_and_biases_undecayed_when_asked(tmp_path, manifest):
    cfg = load_config(None, tiny_overrides(manifest, tmp_path / "runs", **{"stage1.epochs": 1,
                                                                            "train.decay_norm_and_bias": "false"}))
    run = train(cfg)
    groups = run.latest_checkpoint(1)["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [cfg["stage1"]["weight_decay"], 0.0]
    weights = [torch.nn.Linear(3, 4).weight, torch.nn.Conv2d(3, 4, 3).weight]
    rest = [torch.nn.Linear(3, 4).bias, torch.nn.BatchNorm2d(4).weight, torch.nn.BatchNorm2d(4).bias]
    decayed, undecayed = param_groups(weights + rest, decay_norm_and_bias=False)
    assert decayed["params"] == weights and undecayed["params"] == rest and undecayed["weight_decay"] == 0.0
    assert param_groups(weights + rest) == weights + rest  # the default: one group, decay on all, as before
