"""rccl.functional.set_cuda_host_checks: the explicit setting (it replaced the environment switch
RCCL_CUDA_HOST_CHECKS) that decides whether CUDA inputs' values are checked on the host or left to the
kernels' device-side asserts. Runs without a GPU: it checks the decision and the argument handling;
tests/test_op_cuda.py checks the two behaviours on a GPU."""
from __future__ import annotations

import pytest
import torch

from rccl import functional


class _OnDevice:
    """Stands in for a tensor: the decision only reads the device."""

    def __init__(self, device: str):
        self.device = torch.device(device)


@pytest.fixture
def restore_setting():
    previous = functional.cuda_host_checks()
    yield
    functional.set_cuda_host_checks(previous)


def test_default_leaves_cuda_values_to_the_kernels(restore_setting):
    functional.set_cuda_host_checks(False)
    assert functional._kernel_checks_values(True, _OnDevice("cuda")) is True
    assert functional._kernel_checks_values(True, _OnDevice("cpu")) is True  # the CPU kernel checks in its pass
    assert functional._kernel_checks_values(False, _OnDevice("cuda")) is False  # the reference: host checks


def test_enabling_checks_cuda_values_on_the_host_and_returns_the_previous_setting(restore_setting):
    functional.set_cuda_host_checks(False)
    assert functional.set_cuda_host_checks(True) is False
    assert functional.cuda_host_checks() is True
    assert functional._kernel_checks_values(True, _OnDevice("cuda")) is False
    assert functional._kernel_checks_values(True, _OnDevice("cpu")) is True  # CPU unaffected
    assert functional.set_cuda_host_checks(False) is True


@pytest.mark.parametrize("value", [1, "yes", None])
def test_refuses_a_non_bool(restore_setting, value):
    with pytest.raises(functional.LossTypeError, match="rccl: enabled: expected True or False"):
        functional.set_cuda_host_checks(value)

