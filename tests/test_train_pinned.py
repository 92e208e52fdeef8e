"""A tiny run's first batch and first losses, pinned to the values dce32d1 gave: the one-process data path
(sampler, per-item seeds, self-blending, the JPEG distortion, the model's initialisation) draws what it drew
then, so the recorded benchmarks (bench/results) stay what they were (the scale-out work of issue 27 moved
these draws to the global batch; at world size 1 they must not move)."""
import pytest
import torch

from rccl.data.loaders import build_train_loader
from rccl.data.pairing import ForgeryPairSampler
from rccl.train.config import load_config
from rccl.train.engine import HookBase
from rccl.train.runner import train, training_records
from tiny_data import make_tiny_manifest, tiny_overrides

# (first batch's anchor indices, sum of its view1, of its view2, the first three losses), at dce32d1
PINNED = {
    "real": ([4, 31, 19, 36, 6, 24, 2, 27], -2427.553, -4279.17, [9.219576, 8.501854, 7.844793]),
    "sbi": ([4, 24, 19, 39, 6, 26, 2, 22], -4883.031, -6347.865, [9.834868, 9.830479, 9.53143]),
}


class _Stop(Exception):
    pass


class FirstLosses(HookBase):
    def __init__(self):
        self.losses = []

    def after_loss(self, loop, loss) -> None:
        self.losses.append(loss.item())
        if len(self.losses) == 3:
            raise _Stop


@pytest.mark.parametrize("fakes", sorted(PINNED))
def test_one_process_draws_what_dce32d1_drew(tmp_path, fakes):
    indices, view1, view2, losses = PINNED[fakes]
    manifest = make_tiny_manifest(tmp_path / "data", landmarks=True)
    cfg = load_config(None, tiny_overrides(manifest, tmp_path / "runs", **{"data.fakes": fakes,
                                                                            "data.augment.jpeg_p": 0.5}))
    records = training_records(cfg).records
    sampler = ForgeryPairSampler(records, 8, cfg["data"]["pairing"], cfg["train"]["seed"])
    sampler.set_epoch(0)
    batch = next(iter(build_train_loader(cfg, records, sampler)))
    assert batch["index"].tolist() == indices
    assert float(batch["view1"].double().sum()) == pytest.approx(view1, rel=1e-6)
    assert float(batch["view2"].double().sum()) == pytest.approx(view2, rel=1e-6)
    hook = FirstLosses()
    with pytest.raises(_Stop):
        train(cfg, hooks=[hook])
    assert hook.losses == pytest.approx(losses, rel=1e-5)
