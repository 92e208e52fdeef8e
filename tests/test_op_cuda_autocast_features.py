"""The dtype the training step hands the loss op under autocast (rccl.train.stage1.contrastive_step):

- on CUDA, the model's output in the autocast dtype (bfloat16 / float16, normalised in float32 and then
  rounded by Embedder) goes to the compiled op as it is, its tensor-core path
  (rccl.functional.loss_feature_dtype); float32 where the op would not take it natively (the reference,
  the variants the op does not compute, a build without CUDA kernels);
- on the CPU the features stay float32: the CPU kernel computes in float32 whatever it is given.

Without a GPU the CUDA case is emulated: the CPU plays the device whose kernels take half precision, and
the op runs the CUDA kernels' own source (tests/cuda_emulation). Its loss and gradient against the float64
oracle on the unrounded features stay within STYLE.md's bound (rccl.accuracy.within_low_precision_bound:
at most 2x the error of the reference computed from the same rounded features).
"""
from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rccl
from rccl import accuracy, functional
from rccl.loss import RealCentricLoss
from rccl.model import Embedder
from rccl.train.stage1 import contrastive_step

from conftest import make_inputs

B, D = 24, 16  # anchors per view, feature size: 2B = 48 features a step


def _embedder(device: str) -> Embedder:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 32))
    projector = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8))
    return Embedder(encoder, projector).to(device)


class Features(nn.Module):
    """A model whose output is fixed unit features (a parameter) in `dtype`: what Embedder gives under
    autocast on CUDA, with the gradient reaching a leaf we can read."""

    def __init__(self, dtype: torch.dtype, seed: int = 0):
        super().__init__()
        self.z = nn.Parameter(make_inputs(2 * B, D=D, seed=seed, requires_grad=False)["z"])
        self.dtype = dtype

    def forward(self, images):
        return self.z.to(self.dtype)


def _views_and_labels():
    labels = torch.tensor([0, 1] * (B // 2))
    return torch.zeros(B, 1), torch.zeros(B, 1), labels


class OpSpy:
    """Wraps rccl.functional._call_kernel: records the dtype of z each compiled op receives, and, when
    given EmulatedOps, runs the CUDA kernels' emulated source in place of the CPU kernels."""

    def __init__(self, emulated_ops=None):
        self.received: list[tuple[str, torch.dtype]] = []
        self.emulated = emulated_ops
        self.real_call = functional._call_kernel

    def __call__(self, op, *args):
        name = op._qualified_op_name if hasattr(op, "_qualified_op_name") else str(op)
        self.received.append((name, args[0].dtype))
        if self.emulated is None:
            return self.real_call(op, *args)
        if op is torch.ops.rccl.real_centric_loss:
            return (_EmulatedLoss.apply(self.emulated, *args),)
        return self.emulated.update_hard_banks(*args)


class _EmulatedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ops, z, labels, center, bank_real, bank_fake, lam, neighbors, temperature, margin):
        loss, extra, extra_labels, lse = ops.real_centric_loss(z, labels, center, bank_real, bank_fake, lam,
                                                               neighbors, temperature, margin)
        ctx.save_for_backward(z, labels, extra, extra_labels, lse)
        ctx.ops, ctx.options = ops, (temperature, margin)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        z, labels, extra, extra_labels, lse = ctx.saved_tensors
        grad = ctx.ops.backward(grad_loss.double(), z, labels, extra, extra_labels, lse, *ctx.options)
        return None, grad, *([None] * 8)


def _step(net, loss_fn, steps=2):
    """Two steps (the second with filled banks) from a fresh epoch and fixed draws: (loss, grad of the
    model's output) of the second."""
    torch.manual_seed(7)
    loss_fn.reset()
    v1, v2, labels = _views_and_labels()
    for _ in range(steps):
        net.zero_grad()
        loss, _ = contrastive_step(net, loss_fn, v1, v2, labels, contextlib.nullcontext())
        loss.backward()
    return loss.detach().double(), net.z.grad.double().clone()


needs_cpu_kernels = pytest.mark.skipif(not rccl.backends()["cpu"], reason="rccl._C was built without the CPU kernels")


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


@pytest.mark.parametrize("device,impl,fusion,mixed_as,built,expected", [
    ("cuda", "auto", "smooth", "negatives", True, torch.bfloat16),      # the paper's loss on the CUDA op
    ("cuda", "compiled", "smooth", "negatives", True, torch.bfloat16),
    ("cuda", "reference", "smooth", "negatives", True, torch.float32),  # the reference computes in float32
    ("cuda", "auto", "linear", "negatives", True, torch.float32),       # variants run on the reference
    ("cuda", "auto", "smooth", "fakes", True, torch.float32),
    ("cuda", "auto", "smooth", "negatives", False, torch.float32),      # no CUDA kernels in this build
    ("cpu", "auto", "smooth", "negatives", True, torch.float32),        # the CPU kernel converts anyway
])
def test_which_dtype_the_loss_is_handed(monkeypatch, device, impl, fusion, mixed_as, built, expected):
    monkeypatch.setattr(functional.ops, "has_backend", lambda kind: built)
    assert functional.loss_feature_dtype(device, torch.bfloat16, impl, fusion, mixed_as) == expected
    assert functional.loss_feature_dtype(device, torch.float32, impl, fusion, mixed_as) == torch.float32
    assert functional.loss_feature_dtype(device, torch.float64, impl, fusion, mixed_as) == torch.float64


@needs_cpu_kernels
def test_cpu_training_step_hands_the_op_float32_and_is_unchanged(monkeypatch):
    # bfloat16 model output on the CPU: the op gets float32, and the step's loss and gradient are those of
    # the float32 features (what `gather_with_grad(z.float())` gave before)
    spy = OpSpy()
    monkeypatch.setattr(functional, "_call_kernel", spy)
    loss, grad = _step(Features(torch.bfloat16), RealCentricLoss(D, bank_size=4, negatives=4, impl="compiled"))
    assert spy.received and all(dtype == torch.float32 for _, dtype in spy.received), spy.received

    class AsFloat32(Features):
        def forward(self, images):
            return self.z.to(torch.bfloat16).float()

    expected = _step(AsFloat32(torch.bfloat16), RealCentricLoss(D, bank_size=4, negatives=4, impl="compiled"))
    assert torch.equal(loss, expected[0]) and torch.equal(grad, expected[1])


def test_the_loss_module_takes_bfloat16_features():
    # what the training step hands the loss on CUDA under autocast: z in bfloat16, float32 buffers
    x = make_inputs(24, D=8, K=0, M=0, dtype=torch.bfloat16, seed=5, requires_grad=True)
    loss_fn = RealCentricLoss(8, bank_size=4, negatives=4, impl="reference")
    loss = loss_fn(x["z"], x["labels"])
    loss.backward()
    assert torch.isfinite(loss) and x["z"].grad.dtype == torch.bfloat16
    assert loss_fn.banks()[0].dtype == torch.float32


@pytest.fixture(scope="module")
def emulated_ops():
    emulated = pytest.importorskip("cuda_emulation.emulated")
    from test_op_cuda_emulated import _compiler_problem

    problem = _compiler_problem()
    if problem:
        pytest.skip(problem)
    return emulated.EmulatedOps(emulated.build())


@needs_cpu_kernels  # the op's dispatch on this device must exist for rccl.functional to pick "compiled"
@pytest.mark.slow  # one g++ build of the emulation (cached across the test session)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_emulated_cuda_step_hands_the_op_the_autocast_dtype(monkeypatch, emulated_ops, dtype):
    # the CPU plays CUDA: a device whose compiled op takes half precision, running the CUDA kernels' source
    monkeypatch.setattr(functional, "NATIVE_HALF_PRECISION_DEVICES", ("cpu",))
    spy = OpSpy(emulated_ops)
    monkeypatch.setattr(functional, "_call_kernel", spy)
    loss_fn = RealCentricLoss(D, bank_size=4, negatives=4, impl="auto")
    ours = _step(Features(dtype), loss_fn)
    names = {name for name, _ in spy.received}
    assert names == {"rccl::real_centric_loss", "rccl::update_hard_banks"}, names
    assert all(received == dtype for _, received in spy.received), spy.received
    assert loss_fn.banks()[0].shape[0] == 4 and loss_fn.banks()[0].dtype == torch.float32  # banks filled, float32

    # against the float64 oracle on the unrounded features, next to the reference fed the same rounded ones
    class ReferenceInLowPrecision(RealCentricLoss):
        def feature_dtype(self, z):  # the reference on the rounded features as they are (grad in dtype)
            return z.dtype

    oracle = _step(Features(torch.float64), RealCentricLoss(D, bank_size=4, negatives=4, impl="reference"))
    low = _step(Features(dtype), ReferenceInLowPrecision(D, bank_size=4, negatives=4, impl="reference"))
    loss_errors = [abs(x[0] - oracle[0]).item() / abs(oracle[0]).item() for x in (ours, low)]
    grad_errors = [((x[1] - oracle[1]).norm() / oracle[1].norm()).item() for x in (ours, low)]
    assert accuracy.within_low_precision_bound(*loss_errors), loss_errors
    assert accuracy.within_low_precision_bound(*grad_errors), grad_errors
    assert grad_errors[0] > 0  # the half-precision path really ran (float32 would agree to ~1e-7)


@pytest.mark.cuda  # tests/conftest.py skips it without a GPU; bench/gpu_check.sh runs `-m cuda`
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_step_hands_the_op_the_autocast_dtype(monkeypatch, dtype):
    net = _embedder("cuda")
    images = torch.rand(2 * B, 3, 4, 4, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        features = net.projector(net.encoder(images))
        z = net(images)
    assert z.dtype == dtype
    torch.testing.assert_close(z, F.normalize(features.float(), dim=1).to(dtype))
    if not functional.ops.has_backend("cuda"):
        pytest.skip("this build has no CUDA kernels: the loss gets float32 (the reference)")
    spy = OpSpy()
    monkeypatch.setattr(functional, "_call_kernel", spy)
    loss_fn = RealCentricLoss(8, bank_size=4, negatives=4, impl="auto").cuda()
    labels = torch.tensor([0, 1] * (B // 2), device="cuda")
    loss, _ = contrastive_step(net, loss_fn, images[:B], images[B:], labels, torch.autocast("cuda", dtype=dtype))
    loss.backward()
    assert torch.isfinite(loss)
    assert spy.received and all(received == dtype for _, received in spy.received), spy.received
