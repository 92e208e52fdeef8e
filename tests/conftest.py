"""Shared fixtures for the op tests. `make_inputs` (rccl.accuracy's, which rccl-check uses too) is importable
(`from conftest import make_inputs`) by every test module under tests/, including the CUDA tests, so all
backends are tested on the same inputs."""
from __future__ import annotations

import pytest
import torch

from rccl.accuracy import make_inputs  # noqa: F401  (the one factory, re-exported for the tests)


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
