"""The CUDA kernels of the rccl ops (csrc/cuda) against the spec (rccl/reference.py).

Every test here needs an NVIDIA GPU and a build with the CUDA backend; without either the whole module is
skipped with the reason. Values and gradients are checked against the float64 reference on the same
(rounded) inputs; the half-precision kernels against the reference computed from the same half-precision
inputs (its error against float64 is the yardstick: ours may be at most 2x it). The checks that read
values (labels, finite z, lam) are device-side asserts on CUDA: they run in a subprocess, because a
triggered assert leaves the process's CUDA context unusable.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import rccl
from conftest import make_inputs
from rccl import accuracy, reference
from rccl.functional import real_centric_loss, update_hard_banks

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)"),
    pytest.mark.skipif(
        not rccl.backends()["cuda"],
        reason=f"this build has no CUDA kernels (rccl.backends() = {rccl.backends()}); "
        "rebuild with nvcc and a CUDA torch: pip install --no-build-isolation -e .",
    ),
]

CUDA = "cuda"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = dict(neighbors=2, temperature=0.1, margin=0.2)
SIZES = [  # (N, D, K, M, n_fake, neighbors): odd sizes, absent classes, empty banks, M > fakes, ...
    (1, 16, 4, 4, None, 2),
    (2, 16, 4, 4, 1, 2),
    (47, 16, 4, 4, None, 2),
    (47, 3, 0, 0, None, 2),
    (47, 130, 3, 5, None, 2),  # D over one 128-feature block of the backward
    (64, 16, 4, 20, 5, 2),  # M larger than the fakes
    (64, 16, 4, 4, 0, 2),  # no fakes
    (64, 16, 4, 4, 64, 2),  # no naturals: no mixed negatives
    (33, 16, 4, 4, 3, 10),  # neighbors larger than the fakes
    (40, 16, 2, 2, None, 0),  # no neighbours: the positive is the bank row itself
    (256, 128, 16, 16, None, 2),
    (1100, 64, 16, 16, None, 2),  # several row tiles and several slices of the nearest-natural search
]


def _cuda_inputs(N, D, K, M, n_fake, dtype, seed=0, **kw):
    return make_inputs(N, D=D, K=K, M=M, dtype=dtype, device=CUDA, seed=seed, n_fake=n_fake, **kw)


def _op(inputs, neighbors=2, temperature=0.1, margin=0.2):
    x = inputs
    return torch.ops.rccl.real_centric_loss(
        x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], x["lam"], neighbors, temperature, margin
    )


def _reference64(inputs, **options):
    """The spec's four outputs in float64 on the same (already rounded) inputs, and grad z of the loss."""
    x = {k: (v.detach().double().requires_grad_(k == "z") if v.is_floating_point() else v) for k, v in inputs.items()}
    loss, extra, extra_labels, lse = reference.real_centric_loss_outputs(
        x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], x["lam"], options["neighbors"],
        options["temperature"], options["margin"],
    )
    (grad,) = torch.autograd.grad(loss, x["z"], allow_unused=True)
    return loss.detach(), extra, extra_labels, lse, (grad if grad is not None else torch.zeros_like(x["z"]))


def _relative(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp(min=1e-12)).item()


def _assert_lse_close(lse, expected, rtol):
    assert torch.equal(torch.isinf(lse), torch.isinf(expected)), "lse: -inf where A(i) is empty, finite elsewhere"
    finite = torch.isfinite(expected)
    torch.testing.assert_close(lse[finite].double(), expected[finite], rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N,D,K,M,n_fake,neighbors", SIZES)
def test_forward_and_backward_match_reference(N, D, K, M, n_fake, neighbors, dtype):
    inputs = _cuda_inputs(N, D, K, M, n_fake, dtype, seed=N + D)
    options = dict(OPTIONS, neighbors=neighbors)
    loss, extra, extra_labels, lse = _op(inputs, **options)
    grad_out = torch.tensor(0.7, device=CUDA, dtype=loss.dtype)
    (grad,) = torch.autograd.grad(loss, inputs["z"], grad_out)
    ref_loss, ref_extra, ref_labels, ref_lse, ref_grad = _reference64(inputs, **options)

    # float32: far under the 1e-3; float64: rounding only
    tol, grad_tol = (2e-5, 1e-4) if dtype == torch.float32 else (1e-10, 1e-9)
    assert loss.dtype == dtype and loss.shape == ()
    assert extra.dtype == dtype and extra.shape == (2 * K + M, D)
    assert torch.equal(extra_labels, ref_labels), "the same rows are present, with the same roles"
    torch.testing.assert_close(extra.double(), ref_extra, rtol=tol, atol=tol)
    _assert_lse_close(lse, ref_lse, tol)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=tol, atol=tol)
    assert grad.dtype == dtype and grad.shape == (N, D)
    if ref_grad.abs().max() == 0:
        assert grad.abs().max() == 0
    else:
        assert _relative(grad, 0.7 * ref_grad) < grad_tol


def test_exact_ties_go_to_the_lowest_index():
    # Distinct rows whose dot products are exactly equal: h_real . z0 == h_real . z1 == 0.6 (neighbors = 1
    # must take z0), h_fake . z2 == h_fake . z3 and center . z2 == center . z3 == 0.6 (z2 ranks first).
    z = torch.tensor([[0.6, 0.8], [0.6, -0.8], [0.8, 0.6], [-0.8, 0.6], [0.0, -1.0]], device=CUDA)
    labels = torch.tensor([0, 0, 1, 1, 1], device=CUDA)
    inputs = dict(z=z, labels=labels, center=torch.tensor([0.0, 1.0], device=CUDA),
                  bank_real=torch.tensor([[1.0, 0.0]], device=CUDA), bank_fake=torch.tensor([[0.0, 1.0]], device=CUDA),
                  lam=torch.tensor([0.25, 0.5, 0.75], device=CUDA))
    _, extra, extra_labels, _ = _op(inputs, neighbors=1)
    _, ref_extra, ref_labels, _, _ = _reference64(inputs, **dict(OPTIONS, neighbors=1))
    assert torch.equal(extra_labels, ref_labels)
    torch.testing.assert_close(extra.double(), ref_extra, rtol=1e-6, atol=1e-6)
    normalize = lambda v: F.normalize(v, dim=0)  # noqa: E731
    expected = [normalize(inputs["bank_real"][0] + z[0]), normalize(inputs["bank_fake"][0] + z[2]),
                normalize(0.25 * z[2] + 0.75 * z[0]), normalize(0.5 * z[3] + 0.5 * z[0]),
                normalize(0.75 * z[4] + 0.25 * z[1])]
    torch.testing.assert_close(extra, torch.stack(expected), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("N,D,K,M,n_fake,neighbors", [SIZES[2], SIZES[4], SIZES[10], SIZES[11]])
def test_half_precision_error_is_at_most_twice_the_reference_in_that_dtype(N, D, K, M, n_fake, neighbors, dtype):
    exact = _cuda_inputs(N, D, K, M, n_fake, torch.float64, seed=N)
    low = {k: (v.detach().to(dtype).requires_grad_(k == "z") if v.is_floating_point() else v) for k, v in exact.items()}
    options = dict(OPTIONS, neighbors=neighbors)
    truth_loss, _, _, _, truth_grad = _reference64(exact, **options)

    loss = _op(low, **options)[0]
    (grad,) = torch.autograd.grad(loss, low["z"])
    ref_loss = reference.real_centric_loss(**low, **options)
    (ref_grad,) = torch.autograd.grad(ref_loss, low["z"])

    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert accuracy.within_low_precision_bound(abs(loss.double() - truth_loss).item(),
                                               abs(ref_loss.double() - truth_loss).item())
    assert accuracy.within_low_precision_bound(_relative(grad, truth_grad), _relative(ref_grad, truth_grad))


def test_gradcheck_float64():
    # The synthesized rows are detached by the spec while finite differences would see them move with z:
    # gradcheck applies to the loss without banks and mixing (K = M = 0). With them, the float64 gradient
    # is checked against the reference's autograd above.
    for seed, (N, n_fake) in enumerate([(6, 3), (9, 2), (5, 0), (7, 6)]):
        inputs = _cuda_inputs(N, 5, 0, 0, n_fake, torch.float64, seed=seed)
        rest = {k: v for k, v in inputs.items() if k != "z"}

        def loss_of(z):
            return real_centric_loss(z, **rest, impl="compiled", **OPTIONS)

        assert torch.autograd.gradcheck(loss_of, (inputs["z"],))


def test_opcheck():
    for inputs in (_cuda_inputs(47, 16, 4, 4, None, torch.float32), _cuda_inputs(20, 8, 0, 3, 4, torch.float64)):
        x = inputs
        args = (x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], x["lam"], 2, 0.1, 0.2)
        torch.library.opcheck(torch.ops.rccl.real_centric_loss.default, args)
        loss, extra, extra_labels, lse = torch.ops.rccl.real_centric_loss(*args)
        grad = torch.tensor(1.3, device=CUDA, dtype=loss.dtype)
        torch.library.opcheck(
            torch.ops.rccl._real_centric_loss_backward.default,
            (grad, x["z"].detach(), x["labels"], extra, extra_labels, lse, 0.1, 0.2),
        )
        # full banks: the output shape is k whatever the batch
        banks = (x["z"].detach(), x["labels"], x["center"], x["bank_real"], x["bank_fake"], x["bank_real"].shape[0])
        torch.library.opcheck(torch.ops.rccl.update_hard_banks.default, banks)


def test_torch_compile_matches_eager():
    inputs = _cuda_inputs(47, 16, 4, 4, None, torch.float32)
    rest = {k: v for k, v in inputs.items() if k != "z"}

    def through_op(z):
        return _op(dict(rest, z=z))[0]

    def through_api(z):
        return real_centric_loss(z, **rest, impl="compiled", **OPTIONS)

    z = inputs["z"]
    eager_loss = through_op(z)
    (eager_grad,) = torch.autograd.grad(eager_loss, z)
    for compiled in (torch.compile(through_op, fullgraph=True), torch.compile(through_api)):
        loss = compiled(z)
        (grad,) = torch.autograd.grad(loss, z)
        torch.testing.assert_close(loss, eager_loss)
        torch.testing.assert_close(grad, eager_grad)


def test_cuda_graph_replay_equals_eager():
    shapes = (256, 32, 8, 8, None, torch.float32)
    static = _cuda_inputs(*shapes, seed=1)
    rest = {k: v for k, v in static.items() if k != "z"}
    z = static["z"]

    def step():
        return real_centric_loss(z, **rest, impl="compiled", **OPTIONS)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm-up outside the capture
            z.grad = None
            step().backward()
    torch.cuda.current_stream().wait_stream(side)
    z.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = step()
        loss.backward()

    for seed in (2, 3):
        fresh = _cuda_inputs(*shapes, seed=seed)
        with torch.no_grad():
            for name, tensor in static.items():
                tensor.copy_(fresh[name])
        graph.replay()
        torch.cuda.synchronize()
        expected = real_centric_loss(fresh["z"], **{k: v for k, v in fresh.items() if k != "z"}, impl="compiled",
                                     **OPTIONS)
        (expected_grad,) = torch.autograd.grad(expected, fresh["z"])
        torch.testing.assert_close(loss.detach(), expected.detach())
        torch.testing.assert_close(z.grad, expected_grad)


def test_forward_backward_and_full_bank_update_never_synchronise():
    inputs = _cuda_inputs(300, 32, 8, 8, None, torch.float32)
    x = inputs
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = _op(inputs)[0]
        (grad,) = torch.autograd.grad(loss, x["z"])
        banks = torch.ops.rccl.update_hard_banks(x["z"].detach(), x["labels"], x["center"], x["bank_real"],
                                                 x["bank_fake"], 8)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert grad.shape == x["z"].shape and banks[0].shape == (8, 32) and banks[1].shape == (8, 32)


def test_runs_on_the_current_stream_and_is_reproducible():
    inputs = _cuda_inputs(1100, 64, 16, 16, None, torch.float32)
    first = _op(inputs)
    (first_grad,) = torch.autograd.grad(first[0], inputs["z"])
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        second = _op(inputs)
        (second_grad,) = torch.autograd.grad(second[0], inputs["z"])
    torch.cuda.current_stream().wait_stream(stream)
    for a, b in zip(first, second):
        assert torch.equal(a, b), "the forward is bit-identical on every run (no atomics in any of its sums)"
    # the backward's transpose fold accumulates with float atomics: the summation order may differ
    # between runs (docs/cuda.md), so the gradients agree to float32 rounding, not bit for bit
    torch.testing.assert_close(second_grad, first_grad, rtol=1e-5, atol=1e-6 * float(first_grad.abs().max()))


def test_memory_stays_linear_in_n():
    # an N x (N + E) float32 matrix at N = 4096 would be 64 MiB; the kernels keep O(N·D)
    N, D = 4096, 128
    inputs = _cuda_inputs(N, D, 16, 16, None, torch.float32)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    loss = _op(inputs)[0]
    (grad,) = torch.autograd.grad(loss, inputs["z"])
    torch.cuda.synchronize()
    extra_bytes = torch.cuda.max_memory_allocated() - before
    assert extra_bytes < 8 * N * D * 4, f"peak extra memory {extra_bytes / 2**20:.1f} MiB"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("N,K_old,k,n_fake", [(47, 16, 16, None), (47, 4, 16, None), (5, 2, 16, 2), (30, 8, 0, 10),
                                              (30, 8, 4, 0), (0, 6, 4, 0), (0, 0, 3, 0)])
def test_update_hard_banks_matches_reference(N, K_old, k, n_fake, dtype):
    inputs = make_inputs(N, D=24, K=K_old, M=0, dtype=dtype, device=CUDA, seed=N + k, n_fake=n_fake,
                         requires_grad=False)
    x = inputs
    new_real, new_fake = update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], k=k,
                                           impl="compiled")
    ref_real, ref_fake = reference.update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], k)
    for got, expected in ((new_real, ref_real), (new_fake, ref_fake)):
        assert got.dtype == reference.accumulation_dtype(dtype)
        assert got.shape == expected.shape
        # the same candidates, hardest first: exact copies of the chosen rows
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


BAD_SHAPES = [
    ("z", lambda x: dict(x, z=x["z"][:, :, None])),
    ("labels", lambda x: dict(x, labels=x["labels"][:-1])),
    ("labels", lambda x: dict(x, labels=x["labels"].int())),
    ("center", lambda x: dict(x, center=x["center"][:-1])),
    ("bank_real", lambda x: dict(x, bank_real=x["bank_real"][:, :-1])),
    ("bank_fake", lambda x: dict(x, bank_fake=x["bank_fake"].cpu())),
    ("lam", lambda x: dict(x, lam=x["lam"][None])),
    ("z", lambda x: dict(x, z=x["z"].int())),
]


@pytest.mark.parametrize("name,spoil", BAD_SHAPES, ids=[f"{name}-{i}" for i, (name, _) in enumerate(BAD_SHAPES)])
def test_bad_shapes_dtypes_and_devices_name_the_argument(name, spoil):
    x = spoil(_cuda_inputs(10, 8, 2, 2, None, torch.float32, requires_grad=False))
    with pytest.raises(RuntimeError, match=name):
        _op(x)


@pytest.mark.parametrize("option,value", [("neighbors", -1), ("temperature", 0.0), ("margin", float("nan"))])
def test_bad_options_name_the_option(option, value):
    x = _cuda_inputs(10, 8, 2, 2, None, torch.float32, requires_grad=False)
    with pytest.raises(RuntimeError, match=option):
        _op(x, **dict(OPTIONS, **{option: value}))


def test_bad_k_names_k():
    x = _cuda_inputs(10, 8, 2, 2, None, torch.float32, requires_grad=False)
    with pytest.raises(RuntimeError, match="rccl: k:"):
        torch.ops.rccl.update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], -1)


DEVICE_ASSERTS = {
    "labels": ("x['labels'][3] = 2", "labels must be 0 (natural) or 1 (fake)"),
    "z": ("x['z'][2, 1] = float('nan')", "z contains NaN or infinite values"),
    "lam": ("x['lam'][1] = 1.5", "lam: mixing coefficients must lie in [0, 1]"),
}


@pytest.mark.parametrize("name", sorted(DEVICE_ASSERTS))
def test_bad_values_stop_the_kernel_with_a_device_side_assert(name):
    spoil, message = DEVICE_ASSERTS[name]
    script = textwrap.dedent(f"""
        import torch
        import rccl.ops
        from tests.conftest import make_inputs
        x = make_inputs(40, D=8, K=2, M=2, device="cuda", requires_grad=False)
        {spoil}
        out = torch.ops.rccl.real_centric_loss(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"],
                                               x["lam"], 2, 0.1, 0.2)
        torch.cuda.synchronize()
        print("NO ERROR")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "NO ERROR" not in result.stdout
    printed = result.stdout + result.stderr  # the device prints the assert; torch raises on the next call
    assert message in printed, printed[-2000:]


def test_public_api_rejects_bad_values_on_cuda():
    # rccl.functional either checks the values on the host first (a catchable ValueError naming the
    # argument) or leaves them to the kernels' device-side assert; both stop the call. In a child process,
    # because the second leaves the CUDA context unusable.
    script = textwrap.dedent(f"""
        import sys, torch
        from tests.conftest import make_inputs
        from rccl.functional import real_centric_loss
        x = make_inputs(10, D=8, K=2, M=2, device="cuda", requires_grad=False)
        x["labels"][0] = 3
        try:
            real_centric_loss(**x, impl="compiled")
            torch.cuda.synchronize()
        except ValueError as error:
            print("VALUE ERROR:", error)
            sys.exit(0)
        print("NO ERROR")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                            capture_output=True, text=True, timeout=120)
    printed = result.stdout + result.stderr
    if result.returncode == 0:
        assert "VALUE ERROR" in result.stdout and "labels" in result.stdout, printed[-2000:]
    else:
        assert "labels must be 0 (natural) or 1 (fake)" in printed, printed[-2000:]


@pytest.fixture
def tile_threshold():
    """Sets rccl::_cuda_set_small_tile_max_n for one test and restores the build's default after it."""
    previous = []
    yield lambda max_n: previous.append(torch.ops.rccl._cuda_set_small_tile_max_n(max_n))
    if previous:
        torch.ops.rccl._cuda_set_small_tile_max_n(previous[0])


@pytest.mark.parametrize("tiles", ["small", "large"])
@pytest.mark.parametrize("N", [47, 150, 600])
def test_both_tile_sizes_match_the_reference(tile_threshold, tiles, N):
    tile_threshold(1 << 40 if tiles == "small" else 0)
    x = make_inputs(N, D=40, K=4, M=5, device=CUDA, seed=N)
    loss, extra, extra_labels, _ = torch.ops.rccl.real_centric_loss(*x.values(), *OPTIONS.values())
    (grad,) = torch.autograd.grad(loss, x["z"])
    z64 = x["z"].detach().double().requires_grad_(True)
    ref = reference.real_centric_loss_outputs(z64, x["labels"], *(x[k].double() for k in ("center", "bank_real",
                                              "bank_fake", "lam")), *OPTIONS.values())
    (ref_grad,) = torch.autograd.grad(ref[0], z64)
    assert torch.equal(extra_labels, ref[2])
    torch.testing.assert_close(loss.double(), ref[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("tiles", ["small", "large"])
@pytest.mark.parametrize("N,D", [(47, 40), (150, 130), (600, 16)])
def test_tensor_core_path_matches_the_reference(tile_threshold, tiles, N, D, dtype):
    # half-precision z runs its similarity tiles and the fold's H products on tensor cores (wmma): against
    # float64 on the same rounded inputs, the loss float32-close, the gradient within the rounding of H and
    # of grad_z to the dtype (the emulated tests' limits); odd N and D: partial fragments zero-padded
    tile_threshold(1 << 40 if tiles == "small" else 0)
    inputs = _cuda_inputs(N, D, 4, 5, None, dtype, seed=N + D)
    loss, extra, extra_labels, lse = _op(inputs, **OPTIONS)
    (grad,) = torch.autograd.grad(loss, inputs["z"], torch.tensor(0.7, device=CUDA))
    ref_loss, ref_extra, ref_labels, ref_lse, ref_grad = _reference64(inputs, **OPTIONS)
    assert torch.equal(extra_labels, ref_labels)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(extra.double(), ref_extra, rtol=1e-5, atol=1e-5)
    _assert_lse_close(lse, ref_lse, 1e-4)
    assert grad.dtype == dtype
    assert _relative(grad, 0.7 * ref_grad) <= accuracy.BOUNDS[dtype]


def test_tile_threshold_rejects_a_negative_value():
    with pytest.raises(RuntimeError, match="max_n: expected an int >= 0"):
        torch.ops.rccl._cuda_set_small_tile_max_n(-1)


def test_nan_centre_ranks_like_the_reference():
    # every centre similarity NaN: torch.sort's order (NaN ties, broken by index), every rank written once
    x = make_inputs(45, D=16, K=3, M=4, device=CUDA, n_fake=15, requires_grad=False)
    x["center"][0] = float("nan")
    _, extra, extra_labels, _ = torch.ops.rccl.real_centric_loss(*x.values(), *OPTIONS.values())
    ref = reference.real_centric_loss_outputs(*x.values(), *OPTIONS.values())
    assert torch.equal(extra_labels, ref[2])
    torch.testing.assert_close(extra, ref[1], rtol=1e-5, atol=1e-6)
    got = torch.ops.rccl.update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], 8)
    expected = reference.update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], 8)
    for g, e in zip(got, expected):
        assert torch.equal(g, e)
