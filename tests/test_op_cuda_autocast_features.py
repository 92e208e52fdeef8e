"""Embedder.forward under autocast: on CUDA the loss gets the features in the model's dtype (bfloat16 /
float16, normalised in float32 and then rounded), which the CUDA op takes directly; on the CPU they stay
float32. The error of feeding the op bf16/fp16 features is measured by bench/cuda_low_precision_error.py
(docs/cuda.md, "Accuracy")."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rccl import functional
from rccl.loss import RealCentricLoss
from rccl.model import Embedder

from conftest import make_inputs


def _embedder(device: str) -> Embedder:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 32))
    projector = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8))
    return Embedder(encoder, projector).to(device)


def test_cpu_features_stay_float32_under_autocast():
    net = _embedder("cpu")
    images = torch.rand(6, 3, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net.projector(net.encoder(images)).dtype == torch.bfloat16  # autocast is on
        z = net(images)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=1), torch.ones(6))


def test_cpu_features_without_autocast_are_unchanged():
    net = _embedder("cpu")
    images = torch.rand(6, 3, 4, 4)
    expected = F.normalize(net.projector(net.encoder(images)), dim=1)
    assert torch.equal(net(images), expected)


def test_the_loss_module_takes_bfloat16_features():
    # what the training step hands the loss on CUDA under autocast: z in bfloat16, float32 buffers
    x = make_inputs(24, D=8, K=0, M=0, dtype=torch.bfloat16, seed=5, requires_grad=True)
    loss_fn = RealCentricLoss(8, bank_size=4, negatives=4, impl="reference")
    loss = loss_fn(x["z"], x["labels"])
    loss.backward()
    assert torch.isfinite(loss) and x["z"].grad.dtype == torch.bfloat16
    assert loss_fn.banks()[0].dtype == torch.float32


@pytest.mark.cuda  # tests/conftest.py skips it without a GPU; bench/gpu_check.sh runs `-m cuda`
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_features_arrive_in_the_autocast_dtype(dtype):
    net = _embedder("cuda")
    images = torch.rand(6, 3, 4, 4, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        features = net.projector(net.encoder(images))
        z = net(images)
    assert z.dtype == dtype
    torch.testing.assert_close(z, F.normalize(features.float(), dim=1).to(dtype))
    if functional.ops.has_backend("cuda"):
        loss_fn = RealCentricLoss(8, bank_size=4, negatives=4, impl="compiled").cuda()
        labels = torch.tensor([0, 1, 0, 1, 0, 1], device="cuda")
        loss = loss_fn(z, labels)
        loss.backward()
        assert torch.isfinite(loss)
