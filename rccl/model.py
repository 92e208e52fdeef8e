"""The detector: a timm encoder without its classifier, a 2-layer MLP projector onto the unit sphere
(stage 1, contrastive), and a linear classifier on the encoder's features (stage 2; class 1 = fake).

`model(images)` gives the classifier's logits (B, 2): that is the detector evaluation and prediction use.
`model.embedder()(images)` gives the L2-normalised projections z (B, proj_dim) the loss sees.
"""
from __future__ import annotations

import sys

import timm
import torch
import torch.nn.functional as F
from torch import nn

from rccl.data.transforms import IMAGENET, Normalization
from rccl.errors import RcclError
from rccl.weights import WeightsError, check_weights_config, offline_hint
from rccl.weights import load_weights as load_weights_into


class ModelError(RcclError, RuntimeError):
    """A model that cannot be built as configured (unknown encoder, unloadable weights)."""


class Embedder(nn.Module):
    """Encoder + projector: images -> z on the unit sphere. The module stage 1 trains (and DDP wraps)."""

    def __init__(self, encoder: nn.Module, projector: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.projector = projector

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.projector(self.encoder(images))
        z = F.normalize(features.float(), dim=1)
        # Under autocast on CUDA the projector gives bfloat16/float16: the loss gets z in that dtype
        # (normalised in float32, then rounded), which the CUDA op takes as it is; its loss and gradient
        # errors against the float64 oracle stay within the core bound (docs/cuda.md, "Accuracy";
        # bench/cuda_low_precision_error.py). On the CPU z stays float32, what the CPU kernel computes in.
        if features.device.type == "cuda" and features.dtype in (torch.float16, torch.bfloat16):
            return z.to(features.dtype)
        return z


class Detector(nn.Module):
    def __init__(self, encoder: nn.Module, feature_dim: int, proj_hidden: int, proj_dim: int, proj_bn: bool = True,
                 proj_out_bn: bool = True):
        super().__init__()
        self.encoder = encoder
        self.feature_dim = feature_dim
        # Batch norm on the hidden layer (as in SimCLR v2 / MoCo v3 projectors) keeps a randomly initialised
        # encoder's features from starting collapsed onto one point, where the contrastive loss is flat.
        hidden = [nn.Linear(feature_dim, proj_hidden, bias=not proj_bn)]
        hidden += [nn.BatchNorm1d(proj_hidden)] if proj_bn else []
        # Batch norm without affine on the output, before the L2 norm: every projection coordinate has zero
        # mean over the batch, so the projections cannot all share one direction. Two-class SupCon otherwise
        # falls within a few warm-up steps into the point where every z is the same vector (the loss sits at
        # ln(2B - 1)) and its gradient vanishes (docs/method.md, "The projector"; a deviation from the paper).
        out = [nn.BatchNorm1d(proj_dim, affine=False)] if proj_out_bn else []
        self.projector = nn.Sequential(*hidden, nn.ReLU(inplace=True), nn.Linear(proj_hidden, proj_dim, bias=not proj_out_bn),
                                       *out)
        self.classifier = nn.Linear(feature_dim, 2)

    def embedder(self) -> Embedder:
        """A view sharing this model's encoder and projector (no copy)."""
        return Embedder(self.encoder, self.projector)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(images))


def input_normalization(encoder: str) -> Normalization:
    """The per-channel mean and std the encoder expects of inputs scaled to [0, 1], from timm's pretrained
    config of that model (legacy_xception: 0.5 / 0.5; resnets: ImageNet's), as timm.data.resolve_data_config
    reads them. Offline: only the config is read, no weights. A name with a tag ("legacy_xception.tf_in1k")
    uses that tag's config; a model whose config names no mean/std gets timm's default (ImageNet's)."""
    if not isinstance(encoder, str) or not timm.is_model(encoder.split(".")[0]):
        raise ModelError(f"model.encoder: timm has no model named {encoder!r} (see timm.list_models())")
    cfg = timm.get_pretrained_cfg(encoder)
    mean = tuple(float(v) for v in (getattr(cfg, "mean", None) or IMAGENET.mean))
    std = tuple(float(v) for v in (getattr(cfg, "std", None) or IMAGENET.std))
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ModelError(f"model.encoder {encoder!r}: timm's pretrained config gives mean {mean} and std {std}; "
                         f"the loaders feed 3-channel RGB and need three means and three positive stds")
    return Normalization(mean, std)


def _create_encoder(name: str, pretrained: bool, kwargs: dict) -> nn.Module:
    if not timm.is_model(name.split(".")[0]):
        raise ModelError(f"model.encoder: timm has no model named {name!r} (see timm.list_models())")
    return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)


def build_model(cfg: dict, *, load_weights: bool = True) -> Detector:
    """The detector described by cfg["model"]. With load_weights=False (rebuilding from a checkpoint)
    no pretrained weights are fetched or read: the checkpoint supplies every tensor."""
    m = cfg["model"]
    kwargs = dict(m.get("encoder_kwargs") or {})
    if load_weights:
        try:
            check_weights_config(m)
        except WeightsError as e:
            raise ModelError(str(e)) from None
    pretrained = bool(m["pretrained"]) and load_weights and not m["weights"]
    try:
        encoder = _create_encoder(m["encoder"], pretrained, kwargs)
    except ModelError:
        raise
    except Exception as e:
        if not pretrained:
            raise ModelError(f"model.encoder {m['encoder']!r} with {kwargs}: {type(e).__name__}: {e}") from None
        # Offline, or a model without published weights: one clear line, then scratch only if allowed.
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        if not m["allow_scratch"]:
            raise ModelError(f"model.pretrained: could not load ImageNet weights for {m['encoder']!r} ({reason}); "
                             f"{offline_hint()}; or allow random weights with model.allow_scratch=true") from None
        print(f"model.pretrained: no ImageNet weights for {m['encoder']!r} ({reason}); training from scratch "
              f"(model.allow_scratch=true)", file=sys.stderr)
        encoder = _create_encoder(m["encoder"], False, kwargs)
    if load_weights and m["weights"]:
        try:
            load_weights_into(encoder, m["weights"])
        except WeightsError as e:
            raise ModelError(str(e)) from None
    elif load_weights and not m["pretrained"] and not m["allow_scratch"]:
        raise ModelError(f"model: no ImageNet weights configured for {m['encoder']!r} (model.pretrained=false, "
                         f"model.weights=null) and model.allow_scratch=false: {offline_hint()}; or train from "
                         f"random weights with model.allow_scratch=true")
    feature_dim = encoder.num_features
    # A run saved before model.proj_out_bn existed was trained without it: its config lacks the key.
    return Detector(encoder, feature_dim, m["proj_hidden"] or feature_dim, m["proj_dim"], m["proj_bn"],
                    m.get("proj_out_bn", False))
