"""The CUDA kernels' own source (csrc/cuda/*.cu), run on the CPU through a CUDA emulation
(tests/cuda_emulation: g++, a std::thread per CUDA thread, two blocks at once in a shuffled order, each
with its own poisoned shared memory, a blocking barrier for __syncthreads, an exchange for warp shuffles),
against the reference. This checks the kernels' indexing, tiling, reductions, tie-breaks and math on
machines without a GPU (CI); tests/test_op_cuda.py checks them on a real GPU. Races and out-of-bounds
accesses are tests/test_op_cuda_sanitize.py's (the same emulation under ThreadSanitizer and ASan + UBSan).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import make_inputs
from cuda_emulation import emulated
from rccl import accuracy, reference

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # one g++ build of the kernels (~45 s on 2 cores), then seconds per case


def _compiler_problem() -> str | None:
    """Why g++ cannot build the emulation here (C++20 std::atomic_ref, _Float16), or None."""
    probe = ("#include <atomic>\nint main() { int i = 0; std::atomic_ref<int>(i).fetch_add(1); _Float16 h = 1;"
             " return (int)(float)h - i; }\n")
    try:
        result = subprocess.run(["g++", "-std=c++20", "-x", "c++", "-", "-o", "/dev/null", "-pthread"], input=probe,
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"g++ not usable: {error}"
    return None if result.returncode == 0 else f"g++ lacks C++20 std::atomic_ref or _Float16: {result.stderr[-300:]}"


@pytest.fixture(scope="module")
def ops():
    problem = _compiler_problem()
    if problem:
        pytest.skip(problem)
    return emulated.EmulatedOps(emulated.build())  # a compile error in the kernels fails here, loudly


LIMITS = accuracy.BOUNDS  # the bounds rccl-check applies on a GPU
CASES = emulated.CASES  # odd sizes, absent classes, K = 0, M > fakes, neighbors 0 and > class, N > 512


# the two large cases (several row tiles; several slices of the nearest-natural search) in one dtype each:
# the emulation spends seconds per barrier-heavy block on 2 cores
RUNS = [(case, torch.float32) for case in CASES[:-2]]
RUNS += [(CASES[i], torch.float64) for i in (0, 2, 4, 8)]  # float64: the 32 x 32 tiles and exact IEEE math
RUNS += [(CASES[-2], torch.float32), (CASES[-1], torch.float64)]


def assert_matches_reference(ops, case, dtype, *, seed):
    """The emulated kernels' loss, extra rows, lse and gradient against the float64 reference."""
    N, D, K, M, n_fake, neighbors = case
    x = make_inputs(N, D=D, K=K, M=M, dtype=dtype, seed=seed, n_fake=n_fake, requires_grad=False)
    result = emulated.compare(ops, x, neighbors, verbose=False)
    assert result["labels_equal"] and result["lse_inf_equal"], result
    for key in ("loss", "extra", "lse", "grad"):
        assert result[key] <= LIMITS[dtype], (key, result)


@pytest.mark.parametrize("case,dtype", RUNS, ids=[f"{c}-{str(d)[6:]}" for c, d in RUNS])
def test_emulated_kernels_match_reference(ops, case, dtype):
    assert_matches_reference(ops, case, dtype, seed=case[0] + case[1])


@pytest.mark.parametrize("case", [CASES[2], CASES[4], CASES[5]], ids=str)
def test_emulated_large_tiles(ops, case):
    # the 64 x 64 tiles that batches over 1024 rows use (float accumulation only)
    large = emulated.EmulatedOps(emulated.build(), small_tile_max_n=0)
    assert_matches_reference(large, case, torch.float32, seed=case[0])


SPLIT_RUNS = [  # (case, dtype, small_tile_max_n, target_blocks)
    (CASES[4], torch.float32, 1024, 2),   # D = 130: two feature chunks; 1 split of 2 tiles; fold strip of 3 tiles
    (CASES[10], torch.float32, 1024, 10),  # 2 column splits of 4 tiles; fold strips of 3 tiles
    (CASES[10], torch.float64, 1024, 10),
    (CASES[5], torch.float32, 0, 1),      # 64 x 64 tiles: the diagonal and the extra tile in one strip
]


@pytest.mark.parametrize("case,dtype,small_tile_max_n,target_blocks", SPLIT_RUNS,
                         ids=[f"{c}-{str(d)[6:]}-{m}-{t}" for c, d, m, t in SPLIT_RUNS])
def test_emulated_column_splits_and_fold_strips(case, dtype, small_tile_max_n, target_blocks):
    # few target blocks make small problems take the shape large N has on a GPU: column splits of several
    # tiles merged by the row tile's last split, fold strips keeping dZ_I in registers across tiles
    ops = emulated.EmulatedOps(emulated.build(), small_tile_max_n=small_tile_max_n, target_blocks=target_blocks)
    assert_matches_reference(ops, case, dtype, seed=case[0] + case[1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_emulated_half_precision(ops, dtype):
    # against float64 on the same rounded inputs: the loss is float32-exact, the gradient is rounded to dtype
    x = make_inputs(64, D=16, K=4, M=20, dtype=dtype, seed=3, n_fake=5, requires_grad=False)
    result = emulated.compare(ops, x, 2, verbose=False)
    assert result["labels_equal"] and result["loss"] < 1e-5 and result["lse"] < 1e-4
    assert result["grad"] <= LIMITS[dtype]


def _tensor_core_products(n: int, d: int, tile: int) -> tuple[int, int]:
    """mma_sync calls (per warp) the forward and the backward make for half-precision z.
    S: the loss pass's column tiles of batch rows only (n // tile per row tile; a tile holding extra rows
    runs on CUDA cores), the fold's batch tiles J >= I once per 128-feature slice of the gradient (its
    grid's y); each (tile / 16)^2 fragments, d rounded up to 32-feature chunks of two 16-deep steps.
    The fold's H products, per batch tile and 32-feature chunk of the slice: 2 (tile / 16) fragments, each
    tile / 16 steps deep, for H z_J, and as many for H^T z_I off the diagonal (J > I)."""
    row_tiles = -(-n // tile)
    s_per_tile = (tile // 16) ** 2 * (-(-d // 32) * 2)
    slices = -(-d // 128)
    chunks = sum(-(-min(128, d - 128 * y) // 32) for y in range(slices))
    h_per_chunk = 2 * (tile // 16) * (tile // 16)
    tiles, off_diagonal = row_tiles * (row_tiles + 1) // 2, row_tiles * (row_tiles - 1) // 2
    forward = row_tiles * (n // tile) * s_per_tile
    backward = tiles * s_per_tile * slices + (tiles + off_diagonal) * h_per_chunk * chunks
    return forward, backward


TENSOR_CORE_RUNS = [  # (N, D, K, M, n_fake, small_tile_max_n, target_blocks): odd N and D, both tiles
    (47, 16, 4, 4, None, 1024, 0), (70, 40, 2, 3, 9, 0, 0), (150, 40, 16, 16, None, 1024, 10),
    (64, 130, 3, 5, None, 0, 1),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("run", TENSOR_CORE_RUNS, ids=str)
def test_emulated_half_precision_runs_on_tensor_cores(run, dtype):
    # the values match the reference AND the similarity tiles went through wmma fragments: exactly the
    # expected number of mma_sync calls (none for float32, which stays on CUDA cores)
    N, D, K, M, n_fake, small_tile_max_n, target_blocks = run
    ops = emulated.EmulatedOps(emulated.build(), small_tile_max_n=small_tile_max_n, target_blocks=target_blocks)
    x = make_inputs(N, D=D, K=K, M=M, dtype=dtype, seed=N + D, n_fake=n_fake, requires_grad=False)
    ops.take_mma_calls()
    loss, extra, extra_labels, lse = ops.real_centric_loss(*x.values(), 2, 0.1, 0.2)
    forward_calls = ops.take_mma_calls()
    ops.backward(torch.tensor(0.7, dtype=torch.float64), x["z"], x["labels"], extra, extra_labels, lse, 0.1, 0.2)
    backward_calls = ops.take_mma_calls()
    tile = 32 if N <= small_tile_max_n else 64
    assert (forward_calls, backward_calls) == _tensor_core_products(N, D, tile)
    result = emulated.compare(ops, x, 2, verbose=False)
    assert result["labels_equal"] and result["lse_inf_equal"], result
    for key in ("loss", "extra", "lse", "grad"):
        assert result[key] <= LIMITS[dtype], (key, result)
    x32 = {k: v.float() if v.is_floating_point() else v for k, v in x.items()}
    ops.take_mma_calls()
    ops.real_centric_loss(*x32.values(), 2, 0.1, 0.2)
    assert ops.take_mma_calls() == 0, "float32 stays on CUDA cores"


def test_emulated_ops_set_the_schedule_they_are_given(ops):
    # the block order a sanitizer case runs under is the one it asks for, and a new EmulatedOps starts its
    # schedule afresh (an earlier instance's launches do not shift its block order)
    x = make_inputs(20, D=8, K=2, M=2, dtype=torch.float32, seed=3, requires_grad=False)
    ops.real_centric_loss(*x.values(), 2, 0.1, 0.2)
    assert ops.schedule()[2] > 0
    other = emulated.EmulatedOps(ops.library, concurrency=3, seed=7)
    assert other.schedule() == (3, 7, 0)
    other.real_centric_loss(*x.values(), 2, 0.1, 0.2)
    assert other.schedule()[:2] == (3, 7) and other.schedule()[2] > 0
    assert emulated.EmulatedOps(ops.library, concurrency=0, seed=1).schedule() == (1, 1, 0)  # 0: one at a time


def test_emulated_exact_ties_go_to_the_lowest_index(ops):
    z = torch.tensor([[0.6, 0.8], [0.6, -0.8], [0.8, 0.6], [-0.8, 0.6], [0.0, -1.0]])
    args = (z, torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0.0, 1.0]), torch.tensor([[1.0, 0.0]]),
            torch.tensor([[0.0, 1.0]]), torch.tensor([0.25, 0.5, 0.75]))
    _, extra, extra_labels, _ = ops.real_centric_loss(*args, 1, 0.1, 0.2)
    _, ref_extra, ref_labels, _ = reference.real_centric_loss_outputs(*args, 1, 0.1, 0.2)
    assert torch.equal(extra_labels, ref_labels)
    torch.testing.assert_close(extra, ref_extra, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("N,K_old,k,n_fake", [(47, 16, 16, None), (47, 4, 16, None), (5, 2, 16, 2), (30, 8, 0, 10),
                                              (30, 8, 4, 0), (0, 6, 4, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_emulated_update_hard_banks(ops, N, K_old, k, n_fake, dtype):
    x = make_inputs(N, D=24, K=K_old, M=0, dtype=dtype, seed=N + k, n_fake=n_fake, requires_grad=False)
    got = ops.update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], k)
    expected = reference.update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], k)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert torch.equal(g, e), "the same rows, hardest first"


@pytest.mark.parametrize("spoil,message", [
    ("x['labels'][3] = 2", "labels must be 0 (natural) or 1 (fake)"),
    ("x['z'][2, 1] = float('nan')", "z contains NaN or infinite values"),
    ("x['lam'][1] = 1.5", "lam: mixing coefficients must lie in [0, 1]"),
], ids=["labels", "z", "lam"])
def test_emulated_device_side_asserts(ops, spoil, message):
    # the assert aborts the process, as it would stop the kernel: run it in a child
    script = textwrap.dedent(f"""
        from tests.conftest import make_inputs
        from tests.cuda_emulation import emulated
        x = make_inputs(40, D=8, K=2, M=2, requires_grad=False)
        {spoil}
        emulated.EmulatedOps().real_centric_loss(*x.values(), 2, 0.1, 0.2)
        print("NO ERROR")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "NO ERROR" not in result.stdout
    assert message in result.stderr, result.stderr[-2000:]
