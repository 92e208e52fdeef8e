"""Loaders: the training loader (two augmented views per anchor/partner pair from ForgeryPairSampler)
and an evaluation loader over frames. `build_train_loader` dispatches on cfg["data"]["backend"]:
"torch" (this module: torchvision v2 on DataLoader workers), "dali" (rccl.data.dali_loader), "auto"
(DALI when it is installed, on a GPU or on the CPU: it was the faster on both; else torch). Both give the training batch contract of
docs/architecture.md: view1, view2 (B, 3, S, S) float normalised, label (B,) int64, index (B,) int64.
Both normalise with the encoder's mean and std (rccl.model.input_normalization of cfg["model"]["encoder"]),
as the evaluation loader does.
"""
from __future__ import annotations

import importlib.util
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor
from tqdm import tqdm

from rccl.data.blend import BLEND_KEY, BlendParams, self_blend
from rccl.data.blend.draws import RowDraws
from rccl.data.transforms import Normalization, eval_transform, train_transform
from rccl.errors import RcclError
from rccl.model import input_normalization


class CropError(RcclError, RuntimeError):
    """A crop file that cannot be read; the message names it."""


def read_crop(path: str) -> torch.Tensor:
    """uint8 (3, H, W) RGB."""
    try:
        with Image.open(path) as im:
            return pil_to_tensor(im.convert("RGB"))
    except FileNotFoundError:
        raise CropError(f"crop {path}: no such file (was the manifest's folder moved? re-run rccl-prep)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise CropError(f"crop {path}: cannot be decoded as an image ({type(e).__name__}: {e})") from None


class _Crops(Dataset):
    """Shared crop access, optionally decoded once into memory (workers inherit the cache by fork)."""

    def __init__(self, records: list[dict]):
        self.records = records
        self.cache: list[torch.Tensor] | None = None

    def preload(self, progress: bool = True) -> None:
        self.cache = [read_crop(r["abspath"]) for r in tqdm(self.records, desc="caching crops", unit="crop",
                                                              disable=not progress, leave=False)]

    def image(self, i: int) -> torch.Tensor:
        return self.cache[i] if self.cache is not None else read_crop(self.records[i]["abspath"])


class PairViews(_Crops):
    """Item: an (anchor, partner) index pair -> {view1, view2, label, index}.

    A record with "blend_of" (a self-blended pseudo-fake, rccl.data.blend.records) has no file of its own:
    its image is made from its natural source's crop and landmarks. The DataLoader fetches a whole batch
    through __getitems__, so the batch's pseudo-fakes are blended together in one batched call, and an
    anchor that is its own partner (instance pairing) gives both views from the one blend."""

    def __init__(self, records: list[dict], transform, blend_params=None):
        super().__init__(records)
        self.transform = transform
        self.blend_params = blend_params
        self._landmarks = {i: torch.tensor(r["landmarks"], dtype=torch.float32)
                           for i, r in enumerate(records) if BLEND_KEY in r}
        self._shapes: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self.records)

    def _images(self, indices, members=None) -> dict[int, torch.Tensor]:
        """The images of `indices`, the pseudo-fakes among them blended. `members`: every index of the
        global batch (None: `indices` are the whole batch); its pseudo-fakes are blended together in one
        batched call per crop size, each from the draws of its row in that call, so that a rank's
        pseudo-fakes are those one process makes for the whole batch (rccl.data.blend.draws)."""
        decoded: dict[int, torch.Tensor] = {}  # a pseudo-fake and its source (same batch) share one decode
        images = {}
        for i in indices:
            src = self.records[i].get(BLEND_KEY, i)
            if src not in decoded:
                decoded[src] = self.image(src)
            images[i] = decoded[src]
        members = indices if members is None else members
        by_shape: dict[tuple, list[int]] = {}
        for i in members:
            if BLEND_KEY in self.records[i]:
                by_shape.setdefault(tuple(images[i].shape) if i in images else self._shape(i), []).append(i)
        params = {"params": self.blend_params} if self.blend_params else {}
        for group in by_shape.values():  # crops of one size blend together (a manifest normally has one)
            mine = [i for i in group if i in images]
            if len(mine) == len(group):
                made = self_blend(torch.stack([images[i] for i in group]),
                                  torch.stack([self._landmarks[i] for i in group]), **params)
                self._place(images, group, made)
                continue
            # another rank's share of the group; with none of ours, one stand-in keeps the draws in step
            rows = mine or [group[0]]
            crops = [images[i] if i in images else self.image(self.records[i][BLEND_KEY]) for i in rows]
            made = self_blend(torch.stack(crops), torch.stack([self._landmarks[i] for i in rows]),
                              generator=RowDraws(len(group), [group.index(i) for i in rows]), **params)
            self._place(images, mine, made)
        return images

    def _place(self, images: dict, rows: list[int], made) -> None:
        """The pseudo-fakes of `rows` (the first len(rows) of `made`) into the batch's images, and each one's
        natural source, where the batch holds it, as the natural it was blended into (jittered when the
        target took the jitters): the pair differs inside the face only."""
        for i, fake, natural in zip(rows, made.fakes, made.naturals):
            images[i] = fake
            if self.records[i][BLEND_KEY] in images:
                images[self.records[i][BLEND_KEY]] = natural

    def _shape(self, i: int) -> tuple:
        """The (3, H, W) of a record's image without decoding it (its file's header; remembered)."""
        src = self.records[i].get(BLEND_KEY, i)
        if src not in self._shapes:
            if self.cache is not None:
                self._shapes[src] = tuple(self.cache[src].shape)
            else:
                try:
                    with Image.open(self.records[src]["abspath"]) as im:
                        self._shapes[src] = (3, im.height, im.width)
                except (OSError, ValueError) as e:
                    raise CropError(f"crop {self.records[src]['abspath']}: cannot be read ({type(e).__name__}: "
                                    f"{e})") from None
        return self._shapes[src]

    def _item(self, images, anchor: int, partner: int, seed: int | None = None) -> dict:
        """The two views of (anchor, partner), augmented from the process's RNG, or with a seed (what the
        training loader gives: see SeededBatches) from a generator of that seed alone."""
        if seed is None:
            return self._views(images, anchor, partner)
        with torch.random.fork_rng(devices=[]):  # the process's own CPU stream is left as it was
            torch.default_generator.manual_seed(int(seed))  # the CPU generator only: the views' draws
            return self._views(images, anchor, partner)

    def _views(self, images, anchor: int, partner: int) -> dict:
        return {"view1": self.transform(images[anchor]), "view2": self.transform(images[partner]),
                "label": torch.tensor(int(self.records[anchor]["label"]), dtype=torch.int64),
                "index": torch.tensor(anchor, dtype=torch.int64)}

    def _batch_images(self, pairs) -> dict[int, torch.Tensor]:
        """The images of a batch's pairs; when the pairs carry seeds, the self-blending draws come from the
        global batch's (BatchBlend: its first item's seed, all its indices; else this batch's first seed
        and indices), so they too are the same after a resume and on any number of ranks."""
        indices = sorted({i for pair in pairs for i in pair[:2]})
        if len(pairs[0]) < 3:
            return self._images(indices)
        blend = pairs[0][3] if len(pairs[0]) > 3 else BatchBlend(int(pairs[0][2]), tuple(indices))
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(blend.seed))
            return self._images(indices, blend.members)

    def __getitem__(self, pair):
        """pair: (anchor, partner), (anchor, partner, seed) or (anchor, partner, seed, BatchBlend)."""
        return self._item(self._batch_images([pair]), *pair[:3])

    def __getitems__(self, pairs):
        images = self._batch_images(pairs)
        return [self._item(images, *pair[:3]) for pair in pairs]


class BatchBlend(NamedTuple):
    """What each item of a rank's batch carries for self-blending: the seed of the blend draws (the global
    batch's first item's) and every record index of the global batch (anchors and partners, sorted)."""
    seed: int
    members: tuple


class SeededBatches:
    """The sampler's batches with an augmentation seed per item, made of (train.seed, epoch, batch, the
    item's place in the GLOBAL batch): the views an item gets do not depend on which worker makes it, on
    how long the workers have lived (persistent workers carry their RNG across epochs), on a resume, or on
    how many ranks share the batch, so a resumed run with data.workers > 0 sees exactly the views an
    uninterrupted one saw, and N ranks the views of one process. With `blending`, every item also carries
    the batch's BatchBlend. Call sampler.set_epoch first."""

    def __init__(self, sampler, seed: int, blending: bool = False):
        self.sampler, self.seed, self.blending = sampler, int(seed), blending

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        epoch = int(self.sampler.epoch)
        for b, batch in enumerate(self.sampler.global_batches()):
            # the 0 stood for the rank when each rank seeded its own share: one process seeds as before
            seeds = np.random.SeedSequence([self.seed, epoch, 0, b]).generate_state(len(batch), np.uint64)
            items = [(a, p, int(s) >> 1) for (a, p), s in zip(batch, seeds)]
            if self.blending:
                blend = BatchBlend(items[0][2], tuple(sorted({i for a, p, _ in items for i in (a, p)})))
                items = [item + (blend,) for item in items]
            yield self.sampler.rank_share(items)


class Frames(_Crops):
    """Item: a record index -> {image, label, index} (the evaluation transform)."""

    def __init__(self, records: list[dict], image_size: int, normalization: Normalization):
        super().__init__(records)
        self.transform = eval_transform(image_size, normalization)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        return {"image": self.transform(self.image(i)),
                "label": torch.tensor(int(self.records[i]["label"]), dtype=torch.int64),
                "index": torch.tensor(i, dtype=torch.int64)}


class LoaderError(RcclError, ValueError):
    """Training data or a loader backend that cannot be used; the message names the setting at fault."""


def dali_available() -> bool:
    return (importlib.util.find_spec("nvidia") is not None and importlib.util.find_spec("nvidia.dali") is not None
            and importlib.util.find_spec("rccl.data.dali_loader") is not None)


def resolve_backend(backend: str) -> str:
    if backend == "auto":
        # DALI's CPU pipeline also beat the torch loader on a 2-core machine (bench/results/dali.md)
        return "dali" if dali_available() else "torch"
    if backend not in ("torch", "dali"):
        raise LoaderError(f"data.backend must be torch, dali or auto, got {backend!r}")
    if backend == "dali" and not dali_available():
        raise LoaderError("data.backend=dali but NVIDIA DALI (nvidia-dali-cuda130) or rccl.data.dali_loader is "
                          "not importable; install DALI or use data.backend=torch")
    return backend


def build_train_loader(cfg: dict, records: list[dict], sampler):
    """An iterable of training batches, one per sampler batch; call sampler.set_epoch before each epoch.
    Records with pseudo-fakes (data.fakes sbi or mixed) take the torch loader: "auto" picks it, and "dali"
    is refused (the DALI pipeline does not self-blend)."""
    blending = any(BLEND_KEY in r for r in records)
    backend = "torch" if blending and cfg["data"]["backend"] == "auto" else resolve_backend(cfg["data"]["backend"])
    if backend == "dali" and blending:
        raise RcclError(f"data.fakes={cfg['data'].get('fakes')}: the DALI loader does not make self-blended "
                        f"pseudo-fakes; use data.backend=torch (or auto, which picks it for this mode)")
    if backend == "dali":
        from rccl.data.dali_loader import build_dali_train_loader
        return build_dali_train_loader(cfg, records, sampler)
    data = cfg["data"]
    normalization = input_normalization(cfg["model"]["encoder"])
    dataset = PairViews(records, train_transform(data["image_size"], data["augment"], normalization),
                        blend_params=BlendParams(downscale_p=float(data["blend_downscale_p"]),
                                                 target_p=float(data["blend_target_p"])) if blending else None)
    if data["cache_images"]:
        dataset.preload(progress=cfg["train"]["progress"])
    workers = int(data["workers"])
    # the loader's own generator: the worker base seed it draws leaves the global RNG alone (a resumed run
    # creates its workers at another epoch than an uninterrupted one; the views do not use that seed)
    return DataLoader(dataset, batch_sampler=SeededBatches(sampler, cfg["train"]["seed"], blending),
                      num_workers=workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None, generator=torch.Generator().manual_seed(0))


def build_eval_loader(cfg: dict, records: list[dict], batch_size: int | None = None, workers: int | None = None):
    """Frames in manifest order, the evaluation transform, no shuffling."""
    data = cfg["data"]
    workers = data["workers"] if workers is None else workers
    frames = Frames(records, data["image_size"], input_normalization(cfg["model"]["encoder"]))
    return DataLoader(frames, batch_size=batch_size or cfg["eval"]["batch_size"],
                      shuffle=False, num_workers=workers, pin_memory=torch.cuda.is_available())


def check_train_records(records: list[dict], manifest: str, split: str, qualities, fakes: str = "real") -> None:
    """Errors a user can act on, before any worker starts: nothing selected, one class only (with
    fakes="sbi" naturals alone are enough: the fakes are made from them)."""
    if not records:
        raise LoaderError(f"manifest {manifest}: no crop with split={split!r} and quality in {list(qualities)}; "
                         f"check data.train_split / data.train_qualities")
    labels = {int(r["label"]) for r in records}
    if fakes == "sbi":
        if 0 not in labels:
            raise LoaderError(f"manifest {manifest}: the {split!r} split (qualities {list(qualities)}) has no natural "
                             f"crop; data.fakes=sbi makes its fakes from naturals")
        return
    if labels != {0, 1}:
        present = "naturals" if labels == {0} else "fakes"
        raise LoaderError(f"manifest {manifest}: the {split!r} split (qualities {list(qualities)}) has only {present} "
                         f"({len(records)} crops); training needs both classes")
