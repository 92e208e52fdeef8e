"""DEFAULTS: every training key with its default and meaning, written once.

A neutral module (it imports only the list of qualities) so that every room reads the one definition: the
config room (rccl.train.config) validates and merges files against it, and the data room's transforms and
DALI loader take their fallbacks from it instead of keeping copies.
"""
from __future__ import annotations

from rccl.data.layouts import QUALITIES

DEFAULTS: dict = {
    "name": "run",
    "data": {
        "manifest": None,          # rccl-prep's manifest.jsonl (required, except by the demo config)
        "backend": "auto",         # torch | dali | auto (dali when installed: faster on GPU and CPU alike)
        "dali_threads": 0,         # DALI CPU threads; 0 -> this rank's share of the cores, at most 8
        "dali_prefetch": 2,        # DALI batches prepared ahead
        "image_size": 299,         # the side of the square input the encoder sees
        "train_split": "train",
        "train_qualities": ["raw"],  # the paper trains on the original (raw) version only
        "pairing": "semantic",     # preset (instance | temporal | semantic | class) or {strategy: weight}
        # the fakes trained on (rccl.data.blend): real = the manifest's own; sbi = none of them, a self-blended
        # pseudo-fake of each natural crop instead (needs rccl-prep's landmarks); mixed = both
        "fakes": "real",
        # with sbi / mixed: the share of pseudo-fakes whose source loses resolution (a down-up scale); the
        # others are sharpened (rccl.data.blend.params). At 0 the detectors still call heavily compressed
        # naturals fake: the source's resampling smooths it too (bench/RESULTS.md, "Self-blending")
        "blend_downscale_p": 0.5,
        # with sbi / mixed: the share of pseudo-fakes whose natural (the target) takes the colour and frequency
        # jitters instead of the source, and is the natural the pseudo-fake is paired with (SBI's 50/50): a
        # whole face that lost detail is then as often natural as fake (rccl.data.blend.pseudo_fake)
        "blend_target_p": 0.0,
        "workers": 4,
        "cache_images": False,     # decode every training crop once and keep it in memory (small sets)
        "augment": {
            "scale": [0.5, 1.0],   # RandomResizedCrop area range
            "ratio": [0.75, 4 / 3],  # torchvision's RandomResizedCrop default
            "flip": 0.5,
            "color_jitter": 0.4,   # brightness, contrast, saturation strength (hue is a quarter of it)
            "color_jitter_p": 0.8,
            "blur_p": 0.5,
            "blur_sigma": [0.1, 2.0],
            "jpeg_p": 0.0,         # JPEG-quality distortion probability (both loaders)
            "jpeg_quality": [30, 95],
        },
    },
    "model": {
        "encoder": "legacy_xception",
        "encoder_kwargs": {},      # passed to timm.create_model (free-form)
        # The paper's encoders are ImageNet-pretrained, so an encoder without weights is refused unless
        # allow_scratch says otherwise (the demo does; rccl.weights says how to give weights offline).
        "pretrained": True,        # timm's own download of ImageNet weights (needs a network)
        "weights": None,           # a local file of encoder weights (a timm state_dict), or package:NAME
                                   # (ImageNet weights an installed package ships: rccl.weights.SOURCES)
        "allow_scratch": False,    # true: train from random weights when none are given or can be loaded
        "proj_hidden": None,       # projector hidden width; null -> the encoder's feature width
        "proj_dim": 128,
        "proj_bn": True,           # batch norm on the projector's hidden layer (false: Linear-ReLU-Linear)
        "proj_out_bn": True,       # batch norm (no affine) on the projector's output, before the L2 norm: the
                                   # projections cannot collapse onto one direction (false: the paper's projector)
        "channels_last": True,
        "compile": False,
    },
    "loss": {
        "kind": "rccl",            # rccl | supcon | ce
        "temperature": 0.1,
        "bank_size": 16,           # hard features kept per class (16 + 16 = the paper's 32 positives)
        "negatives": 16,           # mixed hard negatives
        "neighbors": 2,
        "margin": 0.2,
        "beta": [0.5, 0.5],        # u ~ Beta(a, b) for the mixed negatives' lam (0.5, 0.5: U-shaped)
        "fold": True,              # lam = max(u, 1 - u) (the fake dominates every mix); false: lam = u
        "fusion": "smooth",        # hard positives (Table 4): smooth | linear | linear_smooth
        "linear_neighbors": 4,     # linear fusions: batch neighbours fused with each bank row (Table 4: 4)
        "mixed_as": "negatives",   # mixed features (Table 6): negatives (of no anchor) | fakes (labelled fake)
        "alpha": None,             # removed: an error pointing to beta and fold (see validate)
        "impl": "auto",
    },
    "stage1": {
        "epochs": 100,
        "batch_size": 128,         # the global batch of anchors (each gives two views)
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "warmup_epochs": 0,
        "scheduler": "cosine",     # cosine | constant
    },
    "stage2": {
        "epochs": 10,
        "batch_size": 128,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "warmup_epochs": 0,
        "scheduler": "cosine",
    },
    "train": {
        "seed": 0,
        "out": "runs",             # the run folder is OUT/NAME
        "amp": False,
        "amp_dtype": "bfloat16",   # bfloat16 | float16 (float16 uses a GradScaler)
        "amp_cpu": "auto",         # auto: bfloat16 autocast only on CPUs with native bfloat16; force; off
        "device": "auto",          # auto | cpu | cuda
        "threads": 0,              # torch CPU threads; 0 = torch's default
        "keep_epochs": 3,          # numbered checkpoints kept per stage (0 = all); *_last.pt always
        "progress": True,
        "log_every": 10,
        # synchronised batch norm under torchrun (rccl.train.sync_bn): every BN layer normalises with the
        # global batch's statistics, so N processes train what one process does with the same global batch;
        # no effect in one process. Its cost: docs/training.md, "Synchronised batch norm"
        "sync_bn": True,
        # the largest global L2 norm of the gradients (clipped down to it before the update); null: no clipping
        "clip_grad": None,
        # weight decay (stage{N}.weight_decay) on every parameter (true), or only on the weight matrices and
        # convolution kernels, not on the norm layers' scales and shifts nor on any bias (false: timm's
        # param_groups_weight_decay). Measured on the Table-2 bench: docs/training.md, "Weight decay"
        "decay_norm_and_bias": True,
    },
    "eval": {
        "qualities": list(QUALITIES),  # rccl.data.layouts.QUALITIES: the qualities rccl-prep makes
        "split": "test",
        "batch_size": 128,
        "after_training": True,
    },
    "demo": {
        "cache": None,             # null -> ~/.cache/rccl
        "seed": 0,
        "synth": {},               # keyword arguments of rccl.data.synth.make_synthetic (free-form)
        "prep": {},                # keyword arguments of rccl.data.prep.prepare (free-form)
    },
}
