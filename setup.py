"""Builds rccl._C: the op schema, the CPU kernels, and the CUDA kernels when a CUDA toolkit and a CUDA
build of torch are both present.

Install with `pip install --no-build-isolation -e .` after torch (build isolation would build against a
different torch than the one that runs the extension).

Environment switches:
  RCCL_NO_CUDA=1     build the CPU kernels only, even with a CUDA toolkit
  RCCL_FORCE_CUDA=1  build the CUDA kernels even when torch sees no GPU (the default: nvcc + CUDA torch is
                     enough, no GPU needed); fail loudly if that is impossible
  DEBUG=1            -O0 -g, no fast math
  TORCH_CUDA_ARCH_LIST  GPU architectures (default "8.0;9.0": A100, H100/H200)
  MAX_JOBS           parallel compile jobs
"""
import glob
import os
import re
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _find_cuda_home():
    """The toolkit root. The `nvcc` on PATH may be a wrapper script (it is on the project's CI machines);
    torch would take the wrapper's folder as CUDA_HOME and miss the library headers, so read the real
    nvcc's path out of the wrapper."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = shutil.which("nvcc")
    candidates = []
    if nvcc:
        real = os.path.realpath(nvcc)
        try:
            with open(real, "rb") as f:
                head = f.read(4096)
            if head.startswith(b"#!"):
                m = re.search(rb"(/\S+)/bin/nvcc", head)
                if m:
                    candidates.append(m.group(1).decode())
        except OSError:
            pass
        candidates.append(os.path.dirname(os.path.dirname(real)))
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for c in candidates:
        if os.path.exists(os.path.join(c, "bin", "nvcc")) and os.path.exists(
            os.path.join(c, "include", "cuda_runtime.h")
        ):
            return c
    return None


cuda_home = _find_cuda_home()
if cuda_home and not os.environ.get("CUDA_HOME"):
    # must be set before torch.utils.cpp_extension is imported: it reads CUDA_HOME once, at import
    os.environ["CUDA_HOME"] = cuda_home
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

debug = os.environ.get("DEBUG", "0") == "1"
want_cuda = os.environ.get("RCCL_NO_CUDA", "0") != "1"
force_cuda = os.environ.get("RCCL_FORCE_CUDA", "0") == "1"
torch_has_cuda = torch.version.cuda is not None
use_cuda = want_cuda and torch_has_cuda and cuda_home is not None

if force_cuda and not use_cuda:
    sys.exit(
        "rccl setup: RCCL_FORCE_CUDA=1 but CUDA cannot be built: "
        f"torch {torch.__version__} (CUDA {torch.version.cuda}), toolkit {cuda_home or 'not found'}"
        + (", RCCL_NO_CUDA=1 is set" if not want_cuda else "")
    )

sources = [os.path.join("csrc", "rccl.cpp")] + sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")) + glob.glob(os.path.join("csrc", "cuda", "*.cpp")))

cxx_flags = ["-O0", "-g"] if debug else ["-O3", "-fopenmp"]
# no -std flag: torch's BuildExtension adds the one its headers need (C++20 for torch >= 2.13, C++17 before)
cxx_flags += ["-DPy_LIMITED_API=0x03090000"]
nvcc_flags = ["-O0", "-g", "-G"] if debug else ["-O3", "-lineinfo"]
link_flags = [] if debug else ["-fopenmp"]

if use_cuda:
    why = f"CUDA {torch.version.cuda} torch + toolkit {cuda_home}, arch {os.environ['TORCH_CUDA_ARCH_LIST']}"
    ext = CUDAExtension(
        "rccl._C",
        sources + cuda_sources,
        extra_compile_args={"cxx": cxx_flags + ["-DRCCL_WITH_CUDA"], "nvcc": nvcc_flags + ["-DRCCL_WITH_CUDA"]},
        extra_link_args=link_flags,
        py_limited_api=True,
    )
else:
    if not want_cuda:
        why = "RCCL_NO_CUDA=1"
    elif not torch_has_cuda:
        why = f"torch {torch.__version__} is a CPU-only build"
    else:
        why = "no CUDA toolkit found (set CUDA_HOME)"
    ext = CppExtension(
        "rccl._C",
        sources,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
        py_limited_api=True,
    )

print(f"rccl setup: building {'CPU + CUDA' if use_cuda else 'CPU only'} kernels ({why})", flush=True)

setup(
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
