"""DDP on the CPU (gloo, 2 processes): a 2-rank stage-1 step gives the loss and the gradients of one
process on the concatenated batch, and leaves the same centre and banks on every rank."""
import contextlib
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rccl.loss import RealCentricLoss
from rccl.model import build_model
from rccl.train.config import load_config
from rccl.train.stage1 import contrastive_step

WORLD = 2
PER_RANK = 4
SIZE = 16


def _model():
    torch.manual_seed(0)
    cfg = load_config(None, ["model.encoder=test_byobnet", f"data.image_size={SIZE}", "model.proj_hidden=32",
                             "model.proj_dim=16", "model.pretrained=false", "model.allow_scratch=true"])
    model = build_model(cfg)
    # Batch-norm statistics are per rank without train.sync_bn: compare with fixed ones (sync_bn in training
    # mode: tests/test_train_ranks.py).
    model.eval()
    return model.embedder()


def _data():
    g = torch.Generator().manual_seed(1)
    v1 = torch.randn(WORLD, PER_RANK, 3, SIZE, SIZE, generator=g)
    v2 = torch.randn(WORLD, PER_RANK, 3, SIZE, SIZE, generator=g)
    labels = torch.tensor([0, 1] * (PER_RANK // 2)).repeat(WORLD, 1)
    return v1, v2, labels


def _loss():
    return RealCentricLoss(16, bank_size=3, negatives=4, margin=0.2, impl="reference")


def _rank_step(rank, init_file, out_dir):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        net = torch.nn.parallel.DistributedDataParallel(_model())
        loss_fn = _loss()
        v1, v2, labels = _data()
        torch.manual_seed(123)
        loss, _ = contrastive_step(net, loss_fn, v1[rank], v2[rank], labels[rank], contextlib.nullcontext())
        loss.backward()
        grads = {n: p.grad.clone() for n, p in net.module.named_parameters() if p.grad is not None}
        torch.save({"loss": loss.detach(), "grads": grads, "buffers": dict(loss_fn.state_dict())},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")
def test_two_rank_step_equals_one_process_on_the_concatenated_batch(tmp_path):
    mp.start_processes(_rank_step, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True,
                       start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    net = _model()
    loss_fn = _loss()
    v1, v2, labels = _data()
    # one process on the global batch: every rank's first views, then every rank's second views
    images = torch.cat([v1.flatten(0, 1), v2.flatten(0, 1)])
    all_labels = torch.cat([labels.flatten(), labels.flatten()])
    torch.manual_seed(123)
    loss = loss_fn(net(images), all_labels)
    loss.backward()

    for r, got in enumerate(ranks):
        assert torch.allclose(got["loss"], loss.detach(), rtol=1e-5, atol=1e-6), f"rank {r} loss"
        for name, p in net.named_parameters():
            if p.grad is None:
                continue
            assert torch.allclose(got["grads"][name], p.grad, rtol=1e-4, atol=1e-6), f"rank {r}: gradient of {name}"
        for key, value in loss_fn.state_dict().items():
            assert torch.allclose(got["buffers"][key].to(value.dtype), value, atol=1e-6), f"rank {r}: loss buffer {key}"
    for key in ranks[0]["buffers"]:
        assert torch.equal(ranks[0]["buffers"][key], ranks[1]["buffers"][key]), f"{key} differs between ranks"


def test_the_device_is_set_before_the_process_group_forms(monkeypatch):
    """NCCL maps a rank to the current device when the group forms: set_device must come first."""
    import rccl.train.runner as runner
    from rccl.train.distributed import DistInfo

    calls = []
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(runner, "resolve_device", lambda choice: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", str(device))))
    monkeypatch.setattr(runner, "init_from_env", lambda kind: calls.append(("init_process_group", kind)) or DistInfo())
    device, _ = runner._start_processes(load_config(None, []))
    assert calls == [("set_device", "cuda:1"), ("init_process_group", "cuda")] and str(device) == "cuda:1"
