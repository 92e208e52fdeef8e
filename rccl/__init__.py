"""rccl: real-centric consistency learning for deepfake detection.

The op lives in rccl.functional (reference PyTorch, compiled CPU and CUDA kernels); data preparation in
rccl.data; the model, loss, training and evaluation loops beside them. See docs/architecture.md.
"""
__version__ = "0.1.0"


def backends() -> dict:
    """Which compiled kernels this build has, e.g. {"cpu": True, "cuda": False}.

    Never raises because a backend is missing: a build without the compiled library reports both False
    and rccl.functional falls back to the pure-PyTorch reference (impl="auto").
    """
    from rccl.ops import backends as _backends

    return _backends()
