"""Shared fixtures for the op tests. `make_inputs` is importable (`from conftest import make_inputs`) by
every test module under tests/, including the CUDA tests, so all backends are tested on the same inputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


def make_inputs(N, D=16, K=4, M=4, dtype=torch.float32, device="cpu", *, seed=0, n_fake=None, K_fake=None,
                duplicates=0, requires_grad=True):
    """Seeded random inputs of real_centric_loss, as a dict of its argument names (z, labels, center,
    bank_real, bank_fake, lam), so `real_centric_loss(**make_inputs(...))` works.

    N batch size; D feature size; K rows of bank_real (and of bank_fake unless K_fake is given); M mixing
    coefficients. n_fake: how many fakes (default: a random count with both classes when N >= 2; 0 or N
    makes a class absent). duplicates: copy that many batch rows onto others, so that dot products tie
    exactly and the lowest-index tie-break is exercised. z, banks and center are unit vectors; z gets
    requires_grad when asked. Everything is generated in float64 on the CPU, then cast and moved, so the
    same seed gives the same values on every device.
    """
    g = torch.Generator().manual_seed(seed)
    K_fake = K if K_fake is None else K_fake
    z = F.normalize(torch.randn(N, D, generator=g, dtype=torch.float64), dim=1)
    if duplicates and N >= 2:
        src = torch.randint(0, N, (duplicates,), generator=g)
        dst = torch.randint(0, N, (duplicates,), generator=g)
        z[dst] = z[src]
    if n_fake is None:
        n_fake = int(torch.randint(1, N, (), generator=g)) if N >= 2 else int(torch.randint(0, 2, (), generator=g))
    labels = torch.zeros(N, dtype=torch.int64)
    labels[torch.randperm(N, generator=g)[:n_fake]] = 1
    center = F.normalize(torch.randn(D, generator=g, dtype=torch.float64), dim=0)
    bank_real = F.normalize(torch.randn(K, D, generator=g, dtype=torch.float64), dim=1)
    bank_fake = F.normalize(torch.randn(K_fake, D, generator=g, dtype=torch.float64), dim=1)
    lam = torch.rand(M, generator=g, dtype=torch.float64)

    def put(t, float_dtype):
        return t.to(device=device, dtype=float_dtype)

    z = put(z, dtype).requires_grad_(requires_grad)
    return dict(z=z, labels=labels.to(device), center=put(center, dtype), bank_real=put(bank_real, dtype),
                bank_fake=put(bank_fake, dtype), lam=put(lam, dtype))


@pytest.fixture
def inputs_factory():
    """The `make_inputs` factory as a fixture."""
    return make_inputs


def pytest_collection_modifyitems(config, items):
    # tests marked cuda need a GPU: skip them with a reason instead of failing
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
