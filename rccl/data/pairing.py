"""ForgeryPairSampler: which crops make a training batch, and which partner crop gives each anchor its
second view (the paper's section 3.3, forgery semantical guided pairing, and the ablations of Table 3).

Strategies, drawn per anchor from a configurable mix of weights:
  instance  the anchor itself (two augmentations of one crop)
  temporal  the other frame of the anchor's consecutive pair (same video, same `pair`)
  semantic  a fake: another fake video's crop with the same source or the same target;
            a natural: a crop of another video of the same identity
  class     a crop of another video of the same class with nothing in common (fakes: other source and
            other target; naturals: another or unknown identity): the paper's class-level pairing
A strategy with no candidate for an anchor falls back to the next simpler one (class -> semantic ->
temporal -> instance); `stats` counts what was used. Partners always come from the anchor's quality.

Presets (Table 3): "instance" (instance-only), "temporal" (instance + temporal), "semantic" (the paper's
method: instance + temporal + semantic), "class" (all four), in equal parts.

Self-blended pseudo-fakes (records with "blend_of", rccl.data.blend.records): each is put in the batch
beside its natural source, a same-frame pair across the classes, as a face swap and its source frame. With
pseudo-fakes only (data.fakes=sbi) the fake half of every batch is the pseudo-fakes of its natural half; with
the dataset's fakes too (mixed) every other fake slot is, the others take dataset fakes. A pseudo-fake's own
partner follows the strategies like any fake's (instance: the same pseudo-fake, two augmentations; temporal:
the pseudo-fake of the other frame; semantic: one of another video of the same identity).

Balance: each epoch takes m = min(#naturals, #fakes) anchors of each class (the larger class, normally
the fakes, under-sampled afresh each epoch) and every batch holds batch_size/2 of each. With world_size
ranks, every rank draws the GLOBAL batch (batch_size x world_size: anchors and partners, as one process
with that batch size draws them) and takes its own consecutive share, so ranks never share an anchor, all
agree on the number of batches, and N ranks train on the batches one process would.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterator, Mapping

import numpy as np

STRATEGIES = ("instance", "temporal", "semantic", "class")
FALLBACK = {"class": "semantic", "semantic": "temporal", "temporal": "instance"}
PRESETS = {
    "instance": {"instance": 1.0},
    "temporal": {"instance": 1.0, "temporal": 1.0},
    "semantic": {"instance": 1.0, "temporal": 1.0, "semantic": 1.0},
    "class": {"instance": 1.0, "temporal": 1.0, "semantic": 1.0, "class": 1.0},
}
ALIASES = {"instance-only": "instance", "instance_only": "instance", "class-level": "class",
           "class_level": "class", "forgery-semantic": "semantic", "forgery_semantic": "semantic"}


def resolve_strategies(strategies) -> dict[str, float]:
    """A preset name or a {strategy: weight} mapping -> normalised weights over STRATEGIES."""
    if isinstance(strategies, str):
        name = ALIASES.get(strategies, strategies)
        if name not in PRESETS:
            raise ValueError(f"pairing: unknown preset {strategies!r}; presets: {', '.join(PRESETS)} "
                             f"(or a mapping of {', '.join(STRATEGIES)} to weights)")
        strategies = PRESETS[name]
    if not isinstance(strategies, Mapping) or not strategies:
        raise ValueError(f"pairing: expected a preset name or a non-empty mapping of strategy weights, got {strategies!r}")
    unknown = [k for k in strategies if k not in STRATEGIES]
    if unknown:
        raise ValueError(f"pairing: unknown strategy {unknown[0]!r}; strategies: {', '.join(STRATEGIES)}")
    weights = {k: float(strategies.get(k, 0.0)) for k in STRATEGIES}
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"pairing: weights must be >= 0 with a positive sum, got {dict(strategies)}")
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


class ForgeryPairSampler:
    def __init__(self, records: list[dict], batch_size: int, strategies="semantic", seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 2 or batch_size % 2:
            raise ValueError(f"ForgeryPairSampler: batch_size must be an even number >= 2 (half natural, half "
                             f"fake), got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"ForgeryPairSampler: rank {rank} outside world_size {world_size}")
        self.records = records
        self.batch_size = batch_size
        self.weights = resolve_strategies(strategies)
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.stats: Counter = Counter()

        labels = np.array([int(r["label"]) for r in records], dtype=np.int64)
        self.naturals = np.flatnonzero(labels == 0)
        self.fakes = np.flatnonzero(labels == 1)
        # natural index -> its pseudo-fake's index; the dataset's own fakes stay in self.fakes
        self._twin = {int(r["blend_of"]): i for i, r in enumerate(records) if "blend_of" in r}
        self.blending = None
        if self._twin:
            self.fakes = np.array([i for i in self.fakes if "blend_of" not in records[i]], dtype=np.int64)
            self.blending = "mixed" if len(self.fakes) else "sbi"
            if self.blending == "sbi":
                self.naturals = np.array(sorted(self._twin), dtype=np.int64)  # every anchor brings its twin
                self.fakes = np.array(sorted(self._twin.values()), dtype=np.int64)
        if len(self.naturals) == 0 or len(self.fakes) == 0:
            absent = "natural (label 0)" if len(self.naturals) == 0 else "fake (label 1)"
            raise ValueError(f"ForgeryPairSampler: the training records have no {absent} crop "
                             f"({len(self.naturals)} natural, {len(self.fakes)} fake); both classes are needed")
        self.per_class = min(len(self.naturals), len(self.fakes))
        if self.blending == "mixed":  # half the fake slots take dataset fakes: they may run out later
            self.per_class = min(len(self.naturals), 2 * len(self.fakes))
        half_global = batch_size // 2 * world_size
        if self.per_class < half_global:
            raise ValueError(f"ForgeryPairSampler: {self.per_class} crop(s) per class after balancing, fewer than "
                             f"one batch needs ({half_global} per class for batch_size {batch_size} x "
                             f"{world_size} rank(s)); lower the batch size or add data")
        self._build_groups()

    def _build_groups(self) -> None:
        temporal, by_source, by_target, by_identity, by_class = (defaultdict(list) for _ in range(5))
        for i, r in enumerate(self.records):
            q, video, label = r["quality"], r["video"], int(r["label"])
            temporal[(q, video, r["pair"], label)].append(i)  # a pseudo-fake shares its source's video
            by_class[(q, label)].append(i)
            if label == 1:
                if r["source"]:
                    by_source[(q, r["source"])].append(i)
                if r["target"]:
                    by_target[(q, r["target"])].append(i)
            elif r["identity"]:
                by_identity[(q, r["identity"])].append(i)
        as_arrays = lambda d: {k: np.asarray(v, dtype=np.int64) for k, v in d.items()}  # noqa: E731
        self._temporal, self._by_source, self._by_target, self._by_identity, self._by_class = (
            as_arrays(d) for d in (temporal, by_source, by_target, by_identity, by_class))
        self._video = np.array([r["video"] for r in self.records], dtype=object)

    def __len__(self) -> int:
        return self.per_class // (self.batch_size // 2 * self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "seed": self.seed, "batch_size": self.batch_size,
                "world_size": self.world_size, "weights": dict(self.weights)}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "batch_size", "world_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"ForgeryPairSampler: the checkpoint's sampler has {key}={state[key]}, this run "
                                 f"has {getattr(self, key)}; resume with the run's own settings")
        self.epoch = int(state["epoch"])

    def _other_video(self, rng, candidates: np.ndarray, anchor: int, exclude=None) -> int | None:
        """A random candidate from another video than the anchor's (and passing `exclude`), or None."""
        video = self._video[anchor]
        for _ in range(8):  # rejection first: the usual case finds one at once
            c = int(candidates[rng.integers(len(candidates))])
            if self._video[c] != video and (exclude is None or not exclude(c)):
                return c
        valid = [int(c) for c in candidates if self._video[c] != video and (exclude is None or not exclude(int(c)))]
        return int(valid[rng.integers(len(valid))]) if valid else None

    def _partner(self, rng, anchor: int, strategy: str) -> tuple[int, str]:
        r = self.records[anchor]
        q = r["quality"]
        while True:
            partner = None
            if strategy == "instance":
                return anchor, "instance"
            if strategy == "temporal":
                group = self._temporal[(q, r["video"], r["pair"], int(r["label"]))]
                others = group[group != anchor]
                if len(others):
                    partner = int(others[rng.integers(len(others))])
            elif strategy == "semantic":
                if int(r["label"]) == 1:
                    pools = [p for p in (self._by_source.get((q, r["source"])), self._by_target.get((q, r["target"])))
                             if p is not None]
                    candidates = np.concatenate(pools) if pools else np.empty(0, np.int64)
                else:
                    candidates = self._by_identity.get((q, r["identity"]), np.empty(0, np.int64))
                if len(candidates):
                    partner = self._other_video(rng, candidates, anchor)
            elif strategy == "class":
                candidates = self._by_class[(q, int(r["label"]))]
                if int(r["label"]) == 1:
                    shares = lambda c: (self.records[c]["source"] == r["source"]  # noqa: E731
                                        or self.records[c]["target"] == r["target"])
                else:
                    shares = lambda c: bool(r["identity"]) and self.records[c]["identity"] == r["identity"]  # noqa: E731
                partner = self._other_video(rng, candidates, anchor, exclude=shares)
            if partner is not None:
                return partner, strategy
            strategy = FALLBACK[strategy]

    def _epoch_order(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        naturals = rng.permutation(self.naturals)[: self.per_class]
        fakes = rng.permutation(self.fakes)[: self.per_class]
        return naturals, fakes

    def _fake_slots(self, naturals: np.ndarray, fakes: np.ndarray, start: int) -> np.ndarray:
        """The fake half of a batch with pseudo-fakes: the twin of the natural in the same place (every slot
        under sbi, every other one under mixed, where the natural has a twin), else the dataset fake at the
        batch's place in the epoch's fake order (cycled: under mixed fewer are used than there are slots)."""
        out = np.empty(len(naturals), dtype=np.int64)
        for j, n in enumerate(naturals.tolist()):
            twin = self._twin.get(n)
            if twin is not None and (self.blending == "sbi" or j % 2 == 0):
                out[j] = twin
            else:
                out[j] = fakes[(start + j) % len(fakes)]
        return out

    def global_batches(self) -> Iterator[list[tuple[int, int]]]:
        """The epoch's GLOBAL batches (batch_size x world_size pairs each), anchors and partners drawn as
        one process with that batch size draws them; `stats` counts the whole global batch (the same on
        every rank and as one process). A rank's batch is its `rank_share` of each."""
        naturals, fakes = self._epoch_order()
        size = self.batch_size * self.world_size
        half = size // 2
        names = list(self.weights)
        probs = np.array([self.weights[n] for n in names])
        self.stats = Counter()
        for b in range(len(self)):
            start = b * half
            anchors = np.empty(size, dtype=np.int64)
            anchors[0::2] = naturals[start:start + half]
            anchors[1::2] = fakes[start:start + half] if self.blending is None else \
                self._fake_slots(naturals[start:start + half], fakes, start)
            # the 0 stood for the rank when each rank drew its own share; one process draws as before
            rng = np.random.default_rng([self.seed, self.epoch, b, 0, 1])
            drawn = rng.choice(len(names), size=size, p=probs)
            batch = []
            for a, s in zip(anchors.tolist(), drawn.tolist()):
                partner, used = self._partner(rng, a, names[s])
                self.stats[used] += 1
                batch.append((a, partner))
            yield batch

    def rank_share(self, items: list) -> list:
        """This rank's consecutive share of a global batch's items (rank 0 the first batch_size)."""
        return items[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.global_batches():
            yield self.rank_share(batch)
