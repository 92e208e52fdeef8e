"""A broken build is a failure, not a quiet skip: where this machine could build the compiled kernels, they
must have loaded. The op tests skip when a backend is absent (a machine without a compiler, a CPU-only
torch); this test is what turns "absent because the build broke" into a red suite, with the load error."""
import os
import shutil

import pytest
import torch

import rccl
import rccl.ops


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")


def test_the_cpu_kernels_loaded_where_a_compiler_could_build_them():
    compiler = _compiler()
    if compiler is None:
        pytest.skip("no C++ compiler on this machine: rccl._C cannot have been built here (reference ops only)")
    assert rccl.backends()["cpu"], (
        f"a C++ compiler ({compiler}) is here, but rccl._C's CPU kernels did not load: "
        f"{rccl.ops.load_error or 'the library loaded without the CPU kernels'}. Rebuild with "
        f"`pip install --no-build-isolation -e .` (or `python setup.py build_ext --inplace`)")


def test_the_cuda_kernels_loaded_where_a_gpu_and_a_toolkit_could_build_them():
    if not (torch.cuda.is_available() and torch.version.cuda and shutil.which("nvcc") and _compiler()):
        pytest.skip("no GPU, CUDA torch and nvcc together here: the CUDA kernels are not expected")
    assert rccl.backends()["cuda"], (
        f"a GPU, a CUDA torch and nvcc are here, but rccl._C has no CUDA kernels "
        f"({rccl.ops.load_error or 'built without them: was RCCL_NO_CUDA=1 set?'}); rebuild with "
        f"`pip install --no-build-isolation -e .`")
