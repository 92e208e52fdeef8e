"""The DALI training loader: the same two-view batches as rccl.data.loaders, decoded and augmented by
NVIDIA DALI, on the GPU when there is one (JPEG decoded by nvJPEG, every augmentation a CUDA kernel, the
batch handed to torch on the device without a trip through the host) and on the CPU otherwise
(`device_id=None`, the twin that CI tests).

One pipeline definition serves both: `two_view_pipeline(..., device_id=None | a GPU index)`. The crop files are
read in Python by an external source driven by the ForgeryPairSampler, so the pairs, labels and indices
are exactly those of the torch loader; only the random augmentation draws differ (DALI's own generator).

Augmentation, per view and drawn independently (the torch loader's recipe, rccl.data.transforms):
random resized crop (resized to S with antialiasing), colour twist with probability
color_jitter_p, Gaussian blur with probability blur_p, JPEG-quality distortion with probability jpeg_p
(off by default), horizontal flip, normalisation to float32 CHW with the encoder's mean and std
(rccl.model.input_normalization, as the torch loader). An instance pair (partner =
anchor) decodes its file once for both views.

The pipeline is rebuilt every epoch with a seed made of (train.seed, epoch, rank): an epoch's augmentation
is reproducible on its own, so a resumed run draws what the uninterrupted one would have, and a loop that
leaves an epoch early leaves nothing half-read behind.
"""
from __future__ import annotations

import os
from collections import deque

import numpy as np
import torch

from rccl.data.blend.records import BLEND_KEY
from rccl.data.dali_video import DaliUnavailable  # one class for "DALI cannot do this here"
from rccl.data.transforms import Normalization, blur_kernel
from rccl.defaults import DEFAULTS
from rccl.errors import RcclError
from rccl.model import input_normalization

try:
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator
except ImportError as e:  # the module imports without DALI so that the error can say how to get it
    _DALI_IMPORT_ERROR: ImportError | None = e
else:
    _DALI_IMPORT_ERROR = None

OUTPUTS = ("view1", "view2", "label", "index")



class DaliDataError(RcclError, RuntimeError):
    """A crop the DALI pipeline could not read or decode; the message names the file(s)."""


def require_dali() -> None:
    if _DALI_IMPORT_ERROR is not None:
        raise DaliUnavailable(
            f"NVIDIA DALI is not importable ({_DALI_IMPORT_ERROR}); install it with `pip install -e .[dali]` "
            "(nvidia-dali-cuda130 for a CUDA 13 torch) or set data.backend: torch")


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A DALI pipeline seed (a non-negative int32) for one epoch on one rank."""
    mixed = np.random.SeedSequence([int(seed), int(epoch), int(rank), 0xDA11]).generate_state(1)[0]
    return int(mixed) & 0x7FFFFFFF


def read_encoded(path: str) -> np.ndarray:
    """The bytes of one crop file as uint8, for DALI's decoder; a clear error naming a missing file."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DaliDataError(f"crop {path}: no such file (was the manifest's folder moved? re-run rccl-prep)") from None
    except OSError as e:
        raise DaliDataError(f"crop {path}: cannot be read ({e})") from None
    if data.size == 0:
        raise DaliDataError(f"crop {path}: empty file (0 bytes)")
    return data


class PairSource:
    """The external source: one sampler batch per call, as (anchor bytes, partner bytes, same, label, index);
    `same` marks instance pairs (partner = anchor), whose file is decoded once for both views.

    DALI calls iter() on it at the start of every epoch and next() ahead of time (prefetching); the paths
    of the batches read recently are kept so that a decoding error can be traced to its file."""

    def __init__(self, records: list[dict], sampler, keep: int = 8):
        self.records = records
        self.sampler = sampler
        self.recent: deque[list[str]] = deque(maxlen=keep)
        self._batches = None

    def __iter__(self):
        self._batches = iter(self.sampler)
        return self

    def __next__(self):
        if self._batches is None:
            self._batches = iter(self.sampler)
        pairs = next(self._batches)  # StopIteration ends DALI's epoch
        self.recent.append([self.records[i]["abspath"] for pair in pairs for i in pair])
        anchors, partners, same, labels, index = [], [], [], [], []
        for a, p in pairs:
            anchor = read_encoded(self.records[a]["abspath"])
            anchors.append(anchor)
            partners.append(anchor if p == a else read_encoded(self.records[p]["abspath"]))
            same.append(np.array(p == a))
            labels.append(np.array(int(self.records[a]["label"]), dtype=np.int64))
            index.append(np.array(a, dtype=np.int64))
        return anchors, partners, same, labels, index


def _decode(encoded, device: str):
    return fn.decoders.image(encoded, device="mixed" if device == "gpu" else "cpu", output_type=types.RGB)


def _augment(image, *, size: int, aug: dict, normalization: Normalization):
    """One view: a decoded HWC uint8 image -> float32 (3, S, S) normalised with the encoder's mean and std
    (rccl.model.input_normalization, as the torch loader), on the image's device."""
    # torchvision's RandomResizedCrop draw: area fraction, log-uniform aspect ratio, 10 attempts then the
    # centre; the region is resized to S with antialiasing.
    image = fn.random_resized_crop(image, size=[size, size], random_area=list(aug["scale"]),
                                   random_aspect_ratio=list(aug["ratio"]), num_attempts=10,
                                   interp_type=types.INTERP_LINEAR, antialias=True)
    strength = float(aug["color_jitter"])
    if strength > 0 and aug["color_jitter_p"] > 0:
        if fn.random.coin_flip(probability=float(aug["color_jitter_p"])):
            hue = min(0.5, strength / 4) * 360.0  # torchvision's hue is a fraction of the circle, DALI's degrees
            factor = (max(0.0, 1.0 - strength), 1.0 + strength)
            image = fn.color_twist(image, brightness=fn.random.uniform(range=factor),
                                   contrast=fn.random.uniform(range=factor),
                                   saturation=fn.random.uniform(range=factor),
                                   hue=fn.random.uniform(range=(-hue, hue)))
    if aug["blur_p"] > 0:
        if fn.random.coin_flip(probability=float(aug["blur_p"])):
            image = fn.gaussian_blur(image, window_size=blur_kernel(size),
                                     sigma=fn.random.uniform(range=[float(s) for s in aug["blur_sigma"]]))
    if aug["jpeg_p"] > 0:
        if fn.random.coin_flip(probability=float(aug["jpeg_p"])):
            lo, hi = (int(q) for q in aug["jpeg_quality"])
            image = fn.jpeg_compression_distortion(image, quality=fn.random.uniform(range=[lo, hi + 1],
                                                                                    dtype=types.INT32))
    return fn.crop_mirror_normalize(image, dtype=types.FLOAT, output_layout="CHW",
                                    mean=[255.0 * m for m in normalization.mean],
                                    std=[255.0 * s for s in normalization.std],
                                    mirror=fn.random.coin_flip(probability=float(aug["flip"])))


def two_view_pipeline(source: PairSource, *, batch_size: int, size: int, aug: dict, normalization: Normalization,
                      device_id: int | None, num_threads: int, seed: int, prefetch: int = 2):
    """The DALI pipeline: CPU-only when device_id is None, else decoding ("mixed") and augmenting on
    GPU `device_id`, with every output (labels too) on that GPU."""
    require_dali()
    device = "cpu" if device_id is None else "gpu"

    @pipeline_def(enable_conditionals=True)
    def pipeline():
        enc1, enc2, same, label, index = fn.external_source(
            source=source, num_outputs=5, cycle="raise",
            dtype=[types.UINT8, types.UINT8, types.BOOL, types.INT64, types.INT64])
        image1 = _decode(enc1, device)
        if same:  # instance pairs: both views from one decoded image (a third of the semantic preset's pairs)
            image2 = image1
        else:
            image2 = _decode(enc2, device)
        view1 = _augment(image1, size=size, aug=aug, normalization=normalization)
        view2 = _augment(image2, size=size, aug=aug, normalization=normalization)
        if device == "gpu":
            label, index = label.gpu(), index.gpu()
        return view1, view2, label, index

    return pipeline(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                    prefetch_queue_depth=prefetch, exec_dynamic=True)


def _undecodable(paths) -> list[str]:
    """Which of `paths` PIL cannot read, to name the culprit of a DALI decoding error."""
    from PIL import Image

    bad = []
    for p in dict.fromkeys(paths):
        try:
            with Image.open(p) as im:
                im.load()
        except Exception as e:  # noqa: BLE001 - any failure to decode is what we are looking for
            bad.append(f"{p} ({type(e).__name__}: {e})")
    return bad


class DaliTrainLoader:
    """Iterating gives one training batch per sampler batch, for the sampler's current epoch (call
    sampler.set_epoch first, as with the torch loader); `len()` is the sampler's."""

    def __init__(self, records: list[dict], sampler, *, size: int, aug: dict, normalization: Normalization,
                 device_id: int | None, num_threads: int, seed: int, prefetch: int = 2):
        require_dali()
        self.records = records
        self.sampler = sampler
        self.size = size
        self.aug = aug
        self.normalization = normalization
        self.device_id = device_id
        self.num_threads = num_threads
        self.seed = seed
        self.prefetch = prefetch

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu") if self.device_id is None else torch.device("cuda", self.device_id)

    def __iter__(self):
        source = PairSource(self.records, self.sampler)
        pipe = two_view_pipeline(source, batch_size=self.sampler.batch_size, size=self.size, aug=self.aug,
                                 normalization=self.normalization, device_id=self.device_id, num_threads=self.num_threads,
                                 seed=epoch_seed(self.seed, getattr(self.sampler, "epoch", 0),
                                                 getattr(self.sampler, "rank", 0)),
                                 prefetch=self.prefetch)
        try:
            iterator = DALIGenericIterator(pipe, list(OUTPUTS), auto_reset=False)
            for (batch,) in iterator:
                yield batch
        except DaliDataError:
            raise
        except RuntimeError as e:
            if "DaliDataError" in str(e):  # raised in our source, re-wrapped by DALI: keep our message
                raise DaliDataError(_source_message(str(e))) from None
            recent = [p for paths in source.recent for p in paths]
            bad = _undecodable(recent)
            if bad:
                raise DaliDataError("DALI could not decode crop(s): " + "; ".join(bad)) from e
            raise
        finally:
            iterator = pipe = None  # release the pipeline's threads and buffers now, before the next epoch's


def _source_message(text: str) -> str:
    """The DaliDataError line out of DALI's wrapped traceback."""
    for line in text.splitlines():
        if "DaliDataError:" in line:
            return line.split("DaliDataError:", 1)[1].strip()
    return text


def _section(cfg, name: str) -> dict:
    return dict(cfg.get(name) or {}) if isinstance(cfg, dict) else {}


def resolve_device_id(cfg: dict) -> int | None:
    """The GPU the pipeline runs on (the current CUDA device, which DDP sets per rank), or None for the CPU."""
    wanted = _section(cfg, "train").get("device", "auto")
    if wanted == "cpu" or not torch.cuda.is_available():
        if wanted == "cuda":
            raise DaliUnavailable("train.device=cuda but torch sees no GPU; the DALI GPU pipeline cannot run")
        return None
    return torch.cuda.current_device()


def default_threads() -> int:
    """CPU threads per pipeline: this rank's share of the cores, at most 8 (DALI's GPU path needs few)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // max(1, local)))


def augment_params(cfg: dict) -> dict:
    """The torch loader's augmentation settings plus the JPEG-quality distortion, checked."""
    aug = {**DEFAULTS["data"]["augment"], **(_section(cfg, "data").get("augment") or {})}
    lo, hi = (int(q) for q in aug["jpeg_quality"])
    if not 1 <= lo <= hi <= 100:
        raise ValueError(f"data.augment.jpeg_quality must be [low, high] within 1..100, got {aug['jpeg_quality']}")
    for key in ("flip", "color_jitter_p", "blur_p", "jpeg_p"):
        if not 0.0 <= float(aug[key]) <= 1.0:
            raise ValueError(f"data.augment.{key} is a probability in [0, 1], got {aug[key]}")
    return aug


def build_dali_train_loader(cfg: dict, records: list[dict], sampler) -> DaliTrainLoader:
    """The loader rccl.data.loaders.build_train_loader returns for data.backend: dali (or auto when DALI is installed)."""
    require_dali()
    if any(BLEND_KEY in r for r in records):  # a pseudo-fake has no file of its own
        raise DaliDataError("the DALI loader does not make self-blended pseudo-fakes (data.fakes sbi or mixed); "
                            "use data.backend=torch (auto picks it for these modes)")
    data = _section(cfg, "data")
    missing = [r["abspath"] for r in records if not os.path.isfile(r["abspath"])]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DaliDataError(f"{len(missing)} crop file(s) named by the manifest do not exist: "
                            f"{', '.join(missing[:3])}{more} (re-run rccl-prep or fix data.manifest)")
    device_id = resolve_device_id(cfg)
    threads = int(data.get("dali_threads", DEFAULTS["data"]["dali_threads"])) or default_threads()
    return DaliTrainLoader(records, sampler, size=int(data.get("image_size", 299)), aug=augment_params(cfg),
                           normalization=input_normalization(cfg["model"]["encoder"]), device_id=device_id, num_threads=threads,
                           seed=int(_section(cfg, "train").get("seed", 0)),
                           prefetch=int(data.get("dali_prefetch", DEFAULTS["data"]["dali_prefetch"])))

