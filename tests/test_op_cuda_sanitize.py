"""The CUDA kernels' own source under sanitizers, on the CPU (`pytest -m sanitize`; part of the normal run):
the emulation (tests/cuda_emulation) built with ThreadSanitizer and, separately, AddressSanitizer +
UndefinedBehaviorSanitizer, several blocks at once in a shuffled order, each block's shared memory its own
and poisoned. A sanitized library runs in a child process that preloads the sanitizer's runtime.

What it proves: no data race between the threads of a block or between blocks (barriers, fences, atomics),
no out-of-bounds access or undefined behaviour (NaN centres and overflowing similarities included), and
that the emulation reports CUDA misuse (a barrier only part of a block reaches, a shuffle or ballot with a
lane missing, launches beyond the device limits). The barrier-removal tests show the race detection has
teeth: the kernel sources with one `__syncthreads()` deleted must FAIL here. By default they remove the
two barriers of common.cuh's block_sum, the fold's H barrier, the radix select's histogram barrier and
the tensor-core tile's barrier between storing its fragments and reading them;
RCCL_EMU_BARRIER_SWEEP=1 (this file's own switch) removes each
`__syncthreads()` of csrc/cuda in turn (a TSan rebuild each, ~1-2 min apiece on 2 cores).
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cuda_emulation import emulated

pytestmark = [pytest.mark.sanitize, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
TSAN_CASES = ["small_tiles", "large_tiles", "strips", "bfloat16_tensor_cores", "banks_filling"]


def _sanitizer_problem() -> str | None:
    """Why g++'s sanitizers cannot run the emulation here, or None."""
    probe = ("#include <atomic>\nint main() { int i = 0; std::atomic_ref<int>(i).fetch_add(1); _Float16 h = 1;"
             " return (int)(float)h - i; }\n")
    for flag in ("-fsanitize=thread", "-fsanitize=address,undefined"):
        try:
            result = subprocess.run(["g++", "-std=c++20", flag, "-x", "c++", "-", "-o", os.devnull, "-pthread"],
                                    input=probe, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"g++ not usable: {error}"
        if result.returncode != 0:
            return f"g++ {flag} unusable: {result.stderr[-300:]}"
    return None


@pytest.fixture(scope="module", autouse=True)
def _toolchain():
    problem = _sanitizer_problem()
    if problem:
        pytest.skip(problem)


def run_cases(variant: str, cases: list[str] | None, kernels: Path = emulated.KERNELS, seed: int = 0):
    """Build the `variant` library of the sources in `kernels` here, run `cases` (None: all of
    sanitize_cases.py's) in a sanitized child."""
    emulated.build(kernels=kernels, variant=variant)  # compile errors fail here, in this process
    env = {**os.environ, **emulated.sanitizer_env(variant), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tests.cuda_emulation.sanitize_cases", "--variant", variant,
               "--kernels", str(kernels), "--seed", str(seed), *(["--cases", *cases] if cases else [])]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_threadsanitizer_finds_no_race():
    result = run_cases("tsan", TSAN_CASES, seed=1)
    assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-2000:]
    assert "sanitized cases match the reference" in result.stdout


def test_address_and_ub_sanitizer_find_nothing():
    # every dtype, both tile sizes, the banks filling and full, a NaN centre and overflowing similarities
    result = run_cases("asan", None, seed=2)
    assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-2000:]
    assert "sanitized cases match the reference" in result.stdout


# ---- the emulation reports CUDA misuse ---------------------------------------------------------------
@pytest.fixture(scope="module")
def misuse():
    return emulated.build_misuse()


def _misuse_in_child(library: Path, function: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import ctypes
        out = (ctypes.c_int * 2048)()
        print("returned", ctypes.CDLL({str(library)!r}).{function}(out))
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("function,message", [
    ("misuse_partial_barrier", "__syncthreads() reached by only part of block (0, 0, 0)"),
    ("misuse_shuffle_missing_lane", "__shfl_xor_sync in warp 0 of block (0, 0, 0): lane 5 of mask 0xffffffff did not take part"),
    # both warps of the block miss lane 31: whichever warp's ballot is checked first is reported
    ("misuse_ballot_missing_lane", "__ballot_sync in warp {0,1} of block (0, 0, 0): lane 31 of mask 0xffffffff did not take part"),
    ("misuse_big_static_shared", "a kernel's static __shared__ memory exceeds 48 KiB"),
])
def test_emulation_stops_at_misuse(misuse, function, message):
    result = _misuse_in_child(misuse, function)
    assert result.returncode != 0 and "returned" not in result.stdout, result.stdout
    pattern = re.escape(f"rccl-emu: error: {message}").replace(re.escape("{0,1}"), "[01]")
    assert re.search(pattern, result.stderr), result.stderr[-2000:]


@pytest.mark.parametrize("threads,grid_x,grid_y,dynamic,opt_in,error", [
    (256, 1, 1, 0, 0, 0),
    (1024, 2, 3, 0, 0, 0),
    (1025, 1, 1, 0, 0, 9),              # threads per block
    (256, 0, 1, 0, 0, 9),               # an empty grid
    (256, 1, 65536, 0, 0, 9),           # grid y
    (256, 1, 1, 48 * 1024, 0, 0),       # 48 KiB: allowed without the opt-in
    (256, 1, 1, 64 * 1024, 0, 9),       # above 48 KiB without cudaFuncSetAttribute
    (256, 1, 1, 64 * 1024, 64 * 1024, 0),
    (256, 1, 1, 100 * 1024, 64 * 1024, 9),  # above what was opted in
    (256, 1, 1, 0, 228 * 1024, 1),      # the attribute itself: above 227 KiB is an invalid value
])
def test_emulation_refuses_launches_beyond_the_device_limits(misuse, threads, grid_x, grid_y, dynamic, opt_in, error):
    lib = ctypes.CDLL(str(misuse))
    out = torch.zeros(2048, dtype=torch.int32)
    got = lib.misuse_launch(ctypes.c_void_p(out.data_ptr()), ctypes.c_uint(threads), ctypes.c_uint(grid_x),
                            ctypes.c_uint(grid_y), ctypes.c_ulonglong(dynamic), ctypes.c_int(opt_in))
    assert got == error  # cudaErrorInvalidConfiguration (9), cudaErrorInvalidValue (1)
    if error == 0:
        assert out[0] == 1, "the launch ran"


# ---- tensor-core fragments (nvcuda::wmma) are warp-collective, their layout private ----------------
def _wmma_inputs():
    i = torch.arange(16)
    a = ((3 * i[:, None] + 7 * i[None, :]) % 11 - 5) / 4.0
    b = ((5 * i[:, None] + 2 * i[None, :]) % 13 - 6) / 8.0
    return a, b


def test_emulated_wmma_product_is_exact(misuse):
    # one warp: load A (row-major) and B (column-major) from shared memory, mma, store: A B exactly
    out = torch.full((256,), float("nan"))
    assert ctypes.CDLL(str(misuse)).misuse_wmma(ctypes.c_void_p(out.data_ptr()), 0) == 0
    a, b = _wmma_inputs()
    assert torch.equal(out.view(16, 16), a @ b)


def test_emulated_wmma_hides_the_fragment_layout(misuse):
    # a kernel that reads accumulator.x[i] assuming the PTX m16n8k16 register layout gets every value of
    # A B, at the wrong places: the emulation's lane mapping is scrambled, so layout assumptions fail
    out = torch.full((256,), float("nan"))
    assert ctypes.CDLL(str(misuse)).misuse_wmma(ctypes.c_void_p(out.data_ptr()), 1) == 0
    a, b = _wmma_inputs()
    assert torch.equal(out.sort().values, (a @ b).reshape(-1).sort().values)
    assert not torch.equal(out.view(16, 16), a @ b)


@pytest.mark.parametrize("mode,message", [
    (2, "mma_sync in warp 0 of block (0, 0, 0): lane 3 did not take part"),
    (3, "load_matrix_sync: ldm 12 is not a multiple of 8 elements"),
    (4, "load_matrix_sync: pointer 0x[0-9a-f]+ is not 256-bit \\(32-byte\\) aligned"),
    (5, "load_matrix_sync in warp 0 of block (0, 0, 0): lane 1 is at another wmma call than lane 0 or passed "
        "other arguments"),
], ids=["lane-skips-mma", "ldm", "unaligned", "divergent-pointer"])
def test_emulation_stops_at_wmma_misuse(misuse, mode, message):
    script = textwrap.dedent(f"""
        import ctypes
        out = (ctypes.c_float * 256)()
        print("returned", ctypes.CDLL({str(misuse)!r}).misuse_wmma(out, {mode}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "returned" not in result.stdout, result.stdout
    pattern = "rccl-emu: error: " + (message if mode == 4 else re.escape(message))
    assert re.search(pattern, result.stderr), result.stderr[-2000:]


# ---- removing a needed barrier must fail -------------------------------------------------------------
BARRIER = re.compile(r"__syncthreads\(\);")


def barrier_sites() -> list[tuple[str, int, int]]:
    """(file, line, occurrence) of every __syncthreads() in the kernel sources."""
    sites = []
    for path in sorted(emulated.KERNELS.iterdir()):
        if path.suffix not in (".cu", ".cuh"):
            continue
        text = path.read_text()
        for occurrence, match in enumerate(BARRIER.finditer(text)):
            sites.append((path.name, text.count("\n", 0, match.start()) + 1, occurrence))
    return sites


def _function_lines(name: str, signature: str) -> range:
    """The lines of the function of common.cuh-style source `name` whose declaration contains `signature`."""
    lines = (emulated.KERNELS / name).read_text().splitlines()
    first = next(i for i, text in enumerate(lines) if signature in text) + 1
    last = next(i for i in range(first, len(lines)) if lines[i].startswith("}")) + 1
    return range(first, last + 1)


def _commented_site(name: str, comment: str) -> tuple[str, int, int]:
    """The barrier of `name` on the line that carries `comment`."""
    lines = (emulated.KERNELS / name).read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "__syncthreads();" in text and comment in text)
    return next(s for s in barrier_sites() if s[:2] == (name, line))


# block_sum's two barriers (before the scratch writes: a previous call's readers; and after them), the
# backward fold's barrier between writing H and reading it, the radix select's between zeroing its
# histogram and counting into it, and the tensor-core tile's between storing the fragments and reading them
DEFAULT_SITES = [s for s in barrier_sites() if s[0] == "common.cuh" and s[1] in _function_lines("common.cuh", "T block_sum(")]
DEFAULT_SITES += [_commented_site("loss_backward.cu", "Hs written; the previous Cs consumed"),
                  _commented_site("common.cuh", "the histogram is zeroed before any thread counts into it"),
                  _commented_site("common.cuh", "the whole tile stored")]
SWEEP = os.environ.get("RCCL_EMU_BARRIER_SWEEP") == "1"


@pytest.mark.parametrize("site", barrier_sites(), ids=lambda s: f"{s[0]}:{s[1]}")
def test_removing_a_barrier_is_caught(tmp_path, site):
    if site not in DEFAULT_SITES and not SWEEP:
        pytest.skip("one of the barrier sweep's sites (RCCL_EMU_BARRIER_SWEEP=1 runs them)")
    name, line, occurrence = site
    kernels = tmp_path / "cuda"
    shutil.copytree(emulated.KERNELS, kernels)
    text = (kernels / name).read_text()
    match = list(BARRIER.finditer(text))[occurrence]
    (kernels / name).write_text(text[:match.start()] + "/* __syncthreads() removed */" + text[match.end():])
    result = run_cases("tsan", TSAN_CASES, kernels=kernels, seed=1)
    # any ThreadSanitizer report counts: a missing barrier shows as a data race, or as a use of memory a
    # garbage index pointed at (heap-use-after-free, seen when the radix select's "selected written"
    # barrier is removed: unwritten slots read as row indices)
    caught = "WARNING: ThreadSanitizer:" in result.stderr or "rccl-emu: error" in result.stderr
    wrong = result.returncode == 1 and "FAILURES" in result.stdout
    assert result.returncode != 0 and (caught or wrong), (
        f"{name}:{line}: the kernels ran clean without this barrier\n" + result.stdout[-2000:])
