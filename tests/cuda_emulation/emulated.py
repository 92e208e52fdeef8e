"""The rccl CUDA kernels (csrc/cuda/*.cu), compiled by g++ against a CPU emulation of the CUDA execution
model (include/cuda_emulation.h) and called through their raw launchers, with the same tensor handling as
csrc/cuda/ops.cpp. For checking the kernels' logic and synchronisation on a machine without a GPU:

    python -m tests.cuda_emulation.emulated          # builds (~1 min on 2 cores), then compares with the reference

`build(variant=...)` makes the plain library or one built with ThreadSanitizer ("tsan") or
AddressSanitizer + UndefinedBehaviorSanitizer ("asan"); a sanitized library must run in a process that
preloads its runtime (`sanitizer_env`), which tests/test_op_cuda_sanitize.py does in a child process.
It is slow (a std::thread per CUDA thread): keep N in the hundreds.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from rccl import accuracy, reference

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
KERNELS = ROOT / "csrc" / "cuda"
SOURCES = ("loss_forward.cu", "loss_backward.cu", "hard_banks.cu")
HEADERS = ("common.cuh", "kernels.h")
DTYPES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2, torch.float64: 3}
# kernel<<<grid, block, shared, stream>>>(args);  ->  emu::launch(kernel, grid, block, shared, stream, args);
LAUNCH = re.compile(r"(\w+(?:<[^<>;]*>)?)<<<([^;]*?)>>>\(([^;]*?)\);")
# extern __shared__ T name[];  ->  T* name = emu::dynamic_shared<T>();
DYNAMIC_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([^;]*?)\s+(\w+)\s*\[\s*\]\s*;")
# __shared__ [__align__(n)] T name[a][b];  ->
#     static char emu_tag_name; auto& name = emu::shared<T[a][b][, n]>(&emu_tag_name);
STATIC_SHARED = re.compile(r"__shared__\s+(?:__align__\((\d+)\)\s+)?([^;]*?)\s+(\w+)\s*((?:\[[^\]]*\])*)\s*;")
FLAGS = {
    "plain": ["-O1"],
    "tsan": ["-O1", "-fsanitize=thread"],
    "asan": ["-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"],
}
RUNTIMES = {"tsan": "libtsan.so", "asan": "libasan.so"}


def emulate(text: str) -> str:
    """A CUDA source rewritten for the emulation: launches become emu::launch calls, __shared__ variables
    references into the running block's own shared memory."""
    text = LAUNCH.sub(r"emu::launch(\1, \2, \3);", text)
    text = DYNAMIC_SHARED.sub(r"\1* \2 = emu::dynamic_shared<\1>();", text)
    def static_shared(m: re.Match) -> str:
        align, type_, name, dims = m.groups()
        return f"static char emu_tag_{name}; auto& {name} = emu::shared<{type_}{dims}{', ' + align if align else ''}>(&emu_tag_{name});"

    return STATIC_SHARED.sub(static_shared, text)


def build(out_dir: Path | None = None, *, kernels: Path = KERNELS, variant: str = "plain") -> Path:
    """Compile the kernel sources in `kernels` (the checkout's csrc/cuda by default) and driver.cpp into a
    shared library. Each translation unit is compiled on its own (two at a time) and cached by the hash of
    its text, the headers and the variant, so a change to one .cu file recompiles only that one."""
    texts = {name: (kernels / name).read_text() for name in SOURCES + HEADERS}
    for name in SOURCES:
        if not LAUNCH.search(texts[name]):
            raise RuntimeError(f"no kernel launch found in {kernels / name}")
    out_dir = out_dir or Path(tempfile.gettempdir()) / "rccl_cuda_emulation"
    headers = b"".join(emulate(texts[h]).encode() for h in HEADERS)
    headers += b"".join(p.read_bytes() for p in sorted((HERE / "include").iterdir()))

    def digest(*parts: bytes) -> str:
        return hashlib.sha256(variant.encode() + b"".join(parts)).hexdigest()[:16]

    header_dir = out_dir / f"include_{digest(headers)}"
    header_dir.mkdir(parents=True, exist_ok=True)
    for h in HEADERS:
        if not (header_dir / h).exists():
            tmp = header_dir / f"{h}.tmp"
            tmp.write_text(emulate(texts[h]))
            tmp.replace(header_dir / h)
    units = {name: emulate(texts[name]).encode() for name in SOURCES}
    units["driver.cpp"] = (HERE / "driver.cpp").read_bytes()
    objects = {name: out_dir / f"{name.split('.')[0]}_{variant}_{digest(text, headers)}.o" for name, text in units.items()}
    library = out_dir / f"librccl_emu_{variant}_{digest(*(o.name.encode() for o in objects.values()))}.so"
    if library.exists():
        return library

    # a sanitizer preloaded into this process (a sanitized child building a cache miss) must not reach g++
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}

    def compile_unit(name: str) -> None:
        obj = objects[name]
        if obj.exists():
            return
        source = obj.with_suffix(".cpp")
        source.write_bytes(units[name])
        tmp = obj.with_suffix(".o.tmp")
        subprocess.run(["g++", "-std=c++20", *FLAGS[variant], "-g", "-pthread", "-fPIC", "-c", "-x", "c++",
                        f"-I{HERE / 'include'}", f"-I{header_dir}", str(source), "-o", str(tmp)], check=True, env=env)
        tmp.replace(obj)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(compile_unit, objects))
    tmp = library.with_suffix(".tmp")
    subprocess.run(["g++", *FLAGS[variant], "-pthread", "-shared", *map(str, objects.values()), "-o", str(tmp)],
                   check=True, env=env)
    tmp.replace(library)
    return library


def build_misuse(out_dir: Path | None = None) -> Path:
    """misuse.cu (kernels that break CUDA's rules on purpose) as a plain shared library."""
    out_dir = out_dir or Path(tempfile.gettempdir()) / "rccl_cuda_emulation"
    text = emulate((HERE / "misuse.cu").read_text())
    headers = b"".join(p.read_bytes() for p in sorted((HERE / "include").iterdir()))
    library = out_dir / f"librccl_emu_misuse_{hashlib.sha256(text.encode() + headers).hexdigest()[:16]}.so"
    if not library.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        source, tmp = library.with_suffix(".cpp"), library.with_suffix(".tmp")
        source.write_text(text)
        subprocess.run(["g++", "-std=c++20", "-O1", "-g", "-pthread", "-shared", "-fPIC", f"-I{HERE / 'include'}",
                        str(source), "-o", str(tmp)], check=True)
        tmp.replace(library)
    return library


def sanitizer_env(variant: str) -> dict[str, str]:
    """Environment variables for a child process that loads a library of `variant` ("tsan" or "asan")."""
    runtime = subprocess.run(["g++", f"-print-file-name={RUNTIMES[variant]}"], capture_output=True, text=True,
                             check=True).stdout.strip()
    if variant == "tsan":
        return {"LD_PRELOAD": runtime, "TSAN_OPTIONS": "halt_on_error=1 exitcode=66 report_signal_unsafe=0"}
    return {"LD_PRELOAD": runtime, "ASAN_OPTIONS": "detect_leaks=0 abort_on_error=1 halt_on_error=1",
            "UBSAN_OPTIONS": "halt_on_error=1 print_stacktrace=1"}


class LaunchError(RuntimeError):
    """A launcher returned a CUDA error (an invalid launch configuration, as a GPU would refuse it)."""


def _check(rc: int) -> None:
    if rc != 0:
        raise LaunchError(f"the launcher returned cudaError {rc} (see rccl-emu's message on stderr)")


class EmulatedOps:
    """The three ops with ops.cpp's tensor handling, running the emulated kernels on CPU tensors."""

    def __init__(self, library: Path | None = None, small_tile_max_n: int = 1024, concurrency: int = 2, seed: int = 0,
                 target_blocks: int = 0):
        """small_tile_max_n: batches up to this many rows use the 32 x 32 tiles (ops.cpp's default 1024; 0 =
        always 64 x 64). concurrency, seed: blocks running at once and the seed of their order.
        target_blocks: the blocks the loss pass's column split and the backward fold's strips aim for (0 =
        the kernels' default, 264 and 528; a small value makes small problems run splits and strips of
        several tiles, the shape large N has on a GPU)."""
        self.library = Path(library or build())
        self.lib = ctypes.CDLL(str(self.library))
        self.small_tile_max_n = small_tile_max_n
        self.target_blocks = target_blocks
        for name in ("rccl_emu_forward", "rccl_emu_backward", "rccl_emu_hard_banks"):
            getattr(self.lib, name).restype = ctypes.c_int
        self.lib.rccl_emu_set_schedule.restype = None
        self.lib.rccl_emu_take_mma_calls.restype = ctypes.c_ulonglong
        self.lib.rccl_emu_set_schedule(ctypes.c_uint(concurrency), ctypes.c_ulonglong(seed))

    def schedule(self) -> tuple[int, int, int]:
        """(concurrency, seed, launches since the schedule was set) of the library's block scheduler."""
        c, s, n = ctypes.c_uint(), ctypes.c_ulonglong(), ctypes.c_ulonglong()
        self.lib.rccl_emu_get_schedule(ctypes.byref(c), ctypes.byref(s), ctypes.byref(n))
        return c.value, s.value, n.value

    def take_mma_calls(self) -> int:
        """wmma::mma_sync calls (per warp and 16 x 16 x 16 product) since the last take: which work ran on
        the (emulated) tensor cores."""
        return int(self.lib.rccl_emu_take_mma_calls())

    @staticmethod
    def _acc(z):
        return torch.float64 if z.dtype == torch.float64 else torch.float32

    @staticmethod
    def _ptr(t):
        return ctypes.c_void_p(t.data_ptr())

    def real_centric_loss(self, z, labels, center, bank_real, bank_fake, lam, neighbors, temperature, margin):
        acc = self._acc(z)
        z, labels = z.detach().contiguous(), labels.contiguous()
        center, bank_real, bank_fake, lam = (t.detach().to(acc).contiguous() for t in (center, bank_real, bank_fake, lam))
        n, d = z.shape
        rows = bank_real.shape[0] + bank_fake.shape[0] + lam.shape[0]
        loss = torch.empty((), dtype=acc)
        extra = torch.empty(rows, d, dtype=acc)
        extra_labels = torch.empty(rows, dtype=torch.int64)
        lse = torch.empty(n, dtype=acc)
        if n == 0:
            return loss.zero_(), extra.zero_(), extra_labels.fill_(-1), lse
        for t in (loss, extra, extra_labels, lse):  # garbage, so that an unwritten output shows
            if t.numel():
                t.reshape(-1).view(torch.uint8).fill_(0xFF)
        p = self._ptr
        rc = self.lib.rccl_emu_forward(
            DTYPES[z.dtype], ctypes.c_int64(n), ctypes.c_int64(d), ctypes.c_int64(bank_real.shape[0]),
            ctypes.c_int64(bank_fake.shape[0]), ctypes.c_int64(lam.shape[0]), ctypes.c_int64(neighbors),
            ctypes.c_double(temperature), ctypes.c_double(margin), p(z), p(labels), p(center), p(bank_real),
            p(bank_fake), p(lam), p(loss), p(extra), p(extra_labels), p(lse), int(n <= self.small_tile_max_n),
            ctypes.c_int64(self.target_blocks))
        _check(rc)
        return loss, extra, extra_labels, lse

    def backward(self, grad_loss, z, labels, extra, extra_labels, lse, temperature, margin):
        acc = self._acc(z)
        z, labels, extra_labels = z.detach().contiguous(), labels.contiguous(), extra_labels.contiguous()
        grad_loss, extra, lse = (t.detach().to(acc).contiguous() for t in (grad_loss.reshape(()), extra, lse))
        grad_z = torch.empty_like(z)
        if z.shape[0] == 0:
            return grad_z
        grad_z.reshape(-1).view(torch.uint8).fill_(0xFF)
        p = self._ptr
        rc = self.lib.rccl_emu_backward(
            DTYPES[z.dtype], ctypes.c_int64(z.shape[0]), ctypes.c_int64(z.shape[1]), ctypes.c_int64(extra.shape[0]),
            ctypes.c_double(temperature), ctypes.c_double(margin), p(grad_loss), p(z), p(labels), p(extra),
            p(extra_labels), p(lse), p(grad_z), int(z.shape[0] <= self.small_tile_max_n),
            ctypes.c_int64(self.target_blocks))
        _check(rc)
        return grad_z

    def update_hard_banks(self, z, labels, center, bank_real, bank_fake, k):
        acc = self._acc(z)
        z, labels = z.detach().contiguous(), labels.contiguous()
        center, bank_real, bank_fake = (t.detach().to(acc).contiguous() for t in (center, bank_real, bank_fake))
        n, d = z.shape

        def rows(bank, cls):  # ops.cpp's rule
            if bank.shape[0] >= k:
                return k
            return min(k, bank.shape[0] + int((labels == cls).sum()))

        rows_real, rows_fake = rows(bank_real, 0), rows(bank_fake, 1)
        out_real = torch.full((rows_real, d), float("nan"), dtype=acc)
        out_fake = torch.full((rows_fake, d), float("nan"), dtype=acc)
        p = self._ptr
        rc = self.lib.rccl_emu_hard_banks(
            DTYPES[z.dtype], ctypes.c_int64(n), ctypes.c_int64(d), ctypes.c_int64(bank_real.shape[0]),
            ctypes.c_int64(bank_fake.shape[0]), ctypes.c_int64(rows_real), ctypes.c_int64(rows_fake), p(z),
            p(labels), p(center), p(bank_real), p(bank_fake), p(out_real), p(out_fake))
        _check(rc)
        return out_real, out_fake


def compare(ops: EmulatedOps, x: dict, neighbors: int = 2, verbose: bool = True) -> dict:
    """Emulated kernels against the float64 reference on the inputs `x` (tests/conftest.py's make_inputs,
    requires_grad=False): the worst errors."""
    options = (neighbors, 0.1, 0.2)
    loss, extra, extra_labels, lse = ops.real_centric_loss(*x.values(), *options)
    grad = ops.backward(torch.tensor(0.7, dtype=torch.float64), x["z"], x["labels"], extra, extra_labels, lse, *options[1:])
    result = accuracy.errors((loss, extra, extra_labels, lse, grad),
                             accuracy.reference_outputs(x, *options, grad_loss=0.7))
    if verbose:
        (N, D), K, M = x["z"].shape, x["bank_real"].shape[0], x["lam"].shape[0]
        print(f"N={N:4d} D={D:3d} K={K:2d} M={M:2d} fake={int(x['labels'].sum())} nb={neighbors} {str(x['z'].dtype):14s} "
              + " ".join(f"{k}={v:.1e}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()), flush=True)
    return result


CASES = [  # (N, D, K, M, n_fake, neighbors)
    (1, 16, 4, 4, None, 2), (2, 16, 4, 4, 1, 2), (47, 16, 4, 4, None, 2), (47, 3, 0, 0, None, 2),
    (47, 130, 3, 5, None, 2), (64, 16, 4, 20, 5, 2), (64, 16, 4, 4, 0, 2), (64, 16, 4, 4, 64, 2),
    (33, 16, 4, 4, 3, 10), (40, 16, 2, 2, None, 0), (150, 40, 16, 16, None, 2), (600, 8, 2, 3, 200, 2),
]


def main() -> int:
    from tests.conftest import make_inputs  # run as `python -m tests.cuda_emulation.emulated` from the root

    ops = EmulatedOps()
    failures = []
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        for case in CASES if dtype in (torch.float32, torch.float64) else CASES[2:6]:
            N, D, K, M, n_fake, neighbors = case
            x = make_inputs(N, D=D, K=K, M=M, dtype=dtype, seed=N + D, n_fake=n_fake, requires_grad=False)
            r = compare(ops, x, neighbors)
            limit = accuracy.BOUNDS[dtype]
            bad = [k for k in accuracy.ERROR_KEYS if not r[k] <= limit]
            bad += [k for k in ("labels_equal", "lse_inf_equal") if not r[k]]
            if bad:
                failures.append(f"{case} {dtype}: {bad}")
    for N, K_old, k, n_fake in [(47, 16, 16, None), (47, 4, 16, None), (5, 2, 16, 2), (30, 8, 0, 10), (30, 8, 4, 0),
                                (0, 6, 4, 0)]:
        for dtype in (torch.float32, torch.bfloat16):
            x = make_inputs(N, D=24, K=K_old, M=0, dtype=dtype, seed=N + k, n_fake=n_fake, requires_grad=False)
            got = ops.update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], k)
            expected = reference.update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], k)
            ok = all(g.shape == e.shape and torch.equal(g, e) for g, e in zip(got, expected))
            print(f"update_hard_banks N={N} K={K_old} k={k} {dtype}: {'ok' if ok else 'MISMATCH'}")
            if not ok:
                failures.append(f"update_hard_banks {(N, K_old, k, n_fake)} {dtype}")
    print("FAILURES:" if failures else "all emulated cases match the reference", *failures, sep="\n  ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())


class EmulatedBackend:
    """The emulated CUDA kernels as a backend of rccl-check (rccl.check.Backend's interface): both tile
    sizes, every dtype, on CPU tensors, so that the check itself is run over the CUDA kernels in CI."""

    name = "cuda (emulated)"
    device = "cpu"
    tile_settings = ("32x32", "64x64")

    def __init__(self, library: Path | None = None):
        library = library or build()
        self.ops = {"32x32": EmulatedOps(library, small_tile_max_n=1 << 40), "64x64": EmulatedOps(library, 0)}

    def tiles_for(self, dtype):
        return ("32x32",) if dtype == torch.float64 else self.tile_settings  # float64: 32 x 32 always

    def loss_outputs(self, x, case, tiles):
        from rccl.check import GRAD_LOSS, OPTIONS

        ops = self.ops[tiles]
        t, m = OPTIONS["temperature"], OPTIONS["margin"]
        loss, extra, extra_labels, lse = ops.real_centric_loss(*x.values(), case.neighbors, t, m)
        grad = ops.backward(torch.tensor(GRAD_LOSS, dtype=torch.float64), x["z"], x["labels"], extra, extra_labels,
                            lse, t, m)
        return loss, extra, extra_labels, lse, grad

    def hard_banks(self, x, k, tiles):
        return self.ops[tiles].update_hard_banks(x["z"], x["labels"], x["center"], x["bank_real"], x["bank_fake"], k)
