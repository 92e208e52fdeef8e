"""RealCentricLoss: the stateful module around rccl.functional.real_centric_loss.

State (buffers, so it travels in checkpoints and follows .to(device)): the running sum and count of the
natural features seen this epoch (their normalised mean is the real centre, the paper's Eq. 1), and the
two global hard banks (up to k rows each). `reset()` starts an epoch afresh: the paper updates the centre
and the banks within an epoch so stale marginal features do not linger.

Each call (step t of the epoch), in this order:
  1. add the batch's naturals to the centre (the centre of step t includes step t's naturals);
  2. draw lam (one per mixed negative) from Beta(a, b), folded to max(u, 1 - u) when `fold`, and, for the
     linear fusions, one fusion weight w ~ U(0, 1) per (bank row, neighbour rank) slot;
  3. evaluate the loss with the banks AS THEY STOOD AFTER STEP t-1 (empty at the first step): the global
     hard features are those seen earlier in the epoch, the batch is the local set;
  4. update the banks with step t's batch, against step t's centre.

No value is read back to the host: the centre is a masked sum on the device (with the batch mean standing
in while no natural has been seen this epoch), and the filled rows of each bank are counted in Python (the
bank update's output shape), the `*_count` buffers being written for checkpoints, never read per step.
Under DDP the caller passes the features all-gathered from every rank (rccl.train.distributed), so the
sums, the banks and the loss are the same on every rank; lam and w are drawn on rank 0 and broadcast.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from rccl import reference
from rccl.errors import RcclError
from rccl.functional import loss_feature_dtype, real_centric_loss, update_hard_banks


class LossConfigError(RcclError, ValueError):
    """A RealCentricLoss setting that cannot be used; the message names it."""


def _beta_pair(beta) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in beta)
    except (TypeError, ValueError):
        raise LossConfigError(f"RealCentricLoss: beta must be two numbers [a, b], got {beta!r}") from None
    if not (a > 0 and b > 0):
        raise LossConfigError(f"RealCentricLoss: beta's shape parameters must both be > 0, got {beta!r}")
    return a, b


class RealCentricLoss(nn.Module):
    def __init__(self, dim: int, *, temperature: float = 0.1, bank_size: int = 16, negatives: int = 16,
                 neighbors: int = 2, margin: float = 0.2, beta=(0.5, 0.5), fold: bool = True,
                 fusion: str = "smooth", linear_neighbors: int = 4, mixed_as: str = "negatives",
                 impl: str = "auto"):
        super().__init__()
        if fusion not in reference.FUSIONS:
            raise LossConfigError(f"RealCentricLoss: fusion must be one of {', '.join(reference.FUSIONS)}, "
                                  f"got {fusion!r}")
        if mixed_as not in reference.MIXED_AS:
            raise LossConfigError(f"RealCentricLoss: mixed_as must be one of {', '.join(reference.MIXED_AS)}, "
                                  f"got {mixed_as!r}")
        for name, value in (("bank_size", bank_size), ("negatives", negatives), ("neighbors", neighbors),
                            ("linear_neighbors", linear_neighbors)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise LossConfigError(f"RealCentricLoss: {name} must be an int >= 0, got {value!r}")
        self.dim = dim
        self.temperature = float(temperature)
        self.bank_size = int(bank_size)
        self.negatives = int(negatives)
        self.neighbors = int(neighbors)
        self.margin = float(margin)
        self.beta = _beta_pair(beta)
        self.fold = bool(fold)
        self.fusion = fusion
        self.linear_neighbors = int(linear_neighbors)
        self.mixed_as = mixed_as
        self.impl = impl
        self.register_buffer("center_sum", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("center_count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("bank_real", torch.zeros(self.bank_size, dim))
        self.register_buffer("bank_fake", torch.zeros(self.bank_size, dim))
        self.register_buffer("bank_real_count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("bank_fake_count", torch.zeros((), dtype=torch.int64))
        # Filled bank rows, kept on the host so a step never reads a count back from the device; restored
        # from the *_count buffers when a state_dict is loaded.
        self._filled = {"real": 0, "fake": 0}
        self.register_load_state_dict_post_hook(_counts_from_buffers)

    @classmethod
    def from_config(cls, loss_cfg: dict, dim: int) -> "RealCentricLoss":
        """loss.kind rccl: the paper's loss; supcon: the same op with margin 0, no banks, no negatives
        (exactly the supervised contrastive loss of Khosla et al.)."""
        kind = loss_cfg["kind"]
        if kind not in ("rccl", "supcon"):
            raise LossConfigError(f"RealCentricLoss: loss.kind {kind!r} is not a contrastive loss (rccl or supcon)")
        supcon = kind == "supcon"
        return cls(dim, temperature=loss_cfg["temperature"],
                   bank_size=0 if supcon else loss_cfg["bank_size"],
                   negatives=0 if supcon else loss_cfg["negatives"],
                   neighbors=loss_cfg["neighbors"], margin=0.0 if supcon else loss_cfg["margin"],
                   beta=loss_cfg["beta"], fold=loss_cfg["fold"], fusion=loss_cfg["fusion"],
                   linear_neighbors=loss_cfg["linear_neighbors"], mixed_as=loss_cfg["mixed_as"],
                   impl=loss_cfg["impl"])

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, temperature={self.temperature}, bank_size={self.bank_size}, "
                f"negatives={self.negatives}, neighbors={self.neighbors}, margin={self.margin}, "
                f"beta={list(self.beta)}, fold={self.fold}, fusion={self.fusion!r}, "
                f"linear_neighbors={self.linear_neighbors}, mixed_as={self.mixed_as!r}")

    @torch.no_grad()
    def reset(self) -> None:
        self.center_sum.zero_()
        self.center_count.zero_()
        self.bank_real.zero_()
        self.bank_fake.zero_()
        self.bank_real_count.zero_()
        self.bank_fake_count.zero_()
        self._filled = {"real": 0, "fake": 0}

    def center(self) -> torch.Tensor:
        """The unit-norm centre of the naturals seen this epoch (float32). Reads the count back: for
        inspection and tests, not used by a training step."""
        if int(self.center_count) == 0:
            raise RuntimeError("RealCentricLoss: no natural feature seen this epoch, so there is no real centre")
        return F.normalize((self.center_sum / self.center_count).float(), dim=0)

    def banks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The filled rows of the two banks (views of the buffers)."""
        return self.bank_real[: self._filled["real"]], self.bank_fake[: self._filled["fake"]]

    def draw_mixing(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(lam, w): lam (negatives,) from Beta(a, b), folded to max(u, 1 - u) when fold; w, for the
        linear fusions, one U(0, 1) weight per (bank row, neighbour rank) slot of full banks, real bank's
        first ((2 * bank_size * linear_neighbors,); empty for smooth). Drawn with torch's global CPU
        generator, on rank 0 and broadcast under DDP."""
        # validate_args=False: the shape parameters were checked once in __init__ (validation reads a value)
        beta = torch.distributions.Beta(torch.tensor(self.beta[0]), torch.tensor(self.beta[1]), validate_args=False)
        u = beta.sample((self.negatives,))
        lam = torch.maximum(u, 1 - u) if self.fold else u
        slots = 0 if self.fusion == "smooth" else 2 * self.bank_size * self.linear_neighbors
        w = torch.rand(slots, dtype=lam.dtype)
        drawn = torch.cat([lam, w]).to(device=device, dtype=torch.float32, non_blocking=True)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(drawn, src=0)
        return drawn[: self.negatives], drawn[self.negatives:]

    def _weights_for_banks(self, w: torch.Tensor) -> torch.Tensor:
        """The slots of w that the filled bank rows use (w is drawn for full banks, so its size and hence
        the random stream do not depend on how full the banks are)."""
        q = self.linear_neighbors
        per_bank = w.reshape(2, self.bank_size * q)
        return torch.cat([per_bank[0, : self._filled["real"] * q], per_bank[1, : self._filled["fake"] * q]])

    @torch.no_grad()
    def _add_to_center(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Add the batch's naturals; return this step's centre (float32, unit norm) without a host read."""
        natural = (labels == reference.NATURAL)
        self.center_sum += (z.detach().to(torch.float64) * natural[:, None]).sum(dim=0)
        self.center_count += natural.sum()
        mean = self.center_sum / self.center_count.clamp(min=1)
        # A batch of fakes before any natural this epoch: the batch mean stands in until naturals come.
        fallback = z.detach().to(torch.float64).mean(dim=0)
        return F.normalize(torch.where(self.center_count > 0, mean, fallback).float(), dim=0)

    @torch.no_grad()
    def _update_banks(self, z: torch.Tensor, labels: torch.Tensor, center: torch.Tensor) -> None:
        if self.bank_size == 0:
            return
        bank_real, bank_fake = self.banks()
        new_real, new_fake = update_hard_banks(z, labels, center, bank_real, bank_fake, k=self.bank_size,
                                               impl=self.impl)
        for side, bank, count, new in (("real", self.bank_real, self.bank_real_count, new_real),
                                       ("fake", self.bank_fake, self.bank_fake_count, new_fake)):
            rows = new.shape[0]
            bank[:rows] = new.to(bank.dtype)
            count.fill_(rows)
            self._filled[side] = rows

    @torch.no_grad()
    def collapsed_value(self, labels: torch.Tensor) -> torch.Tensor:
        """The loss this step would have if every feature (the batch's, the centre, the banks' rows as they
        stand) were the same unit vector: the degenerate point of two-class contrastive learning, where the
        loss is flat (ln(2B - 1) for Sup. Con on 2B views). A device scalar; call it before forward(), which
        updates the banks. The mixing weights do not matter there (every mix of one vector is that vector)."""
        one = torch.zeros(self.dim, device=labels.device)
        one[0] = 1.0
        real, fake = (one.expand(self._filled[side], self.dim) for side in ("real", "fake"))
        lam = torch.full((self.negatives,), 0.5, device=labels.device)
        w = None if self.fusion == "smooth" else torch.full(((real.shape[0] + fake.shape[0]) * self.linear_neighbors,),
                                                           0.5, device=labels.device)
        return real_centric_loss(one.expand(len(labels), self.dim), labels, one, real, fake, lam,
                                 neighbors=self.neighbors, temperature=self.temperature, margin=self.margin,
                                 fusion=self.fusion, w=w, linear_neighbors=self.linear_neighbors,
                                 mixed_as=self.mixed_as, impl="reference")

    def feature_dtype(self, z: torch.Tensor) -> torch.dtype:
        """The dtype to hand this loss the model's output z in (rccl.functional.loss_feature_dtype): under
        autocast on CUDA the autocast dtype when the compiled op computes this loss, float32 elsewhere."""
        return loss_feature_dtype(z.device.type, z.dtype, self.impl, self.fusion, self.mixed_as)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """z (N, D) L2-normalised features of the (global) batch, labels (N,) 0 natural / 1 fake."""
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise LossConfigError(f"RealCentricLoss: features have dimension {z.shape[-1]}, the loss was built "
                                  f"for {self.dim}")
        center = self._add_to_center(z, labels)
        lam, w = self.draw_mixing(z.device)
        bank_real, bank_fake = self.banks()  # as they stood after the previous step
        loss = real_centric_loss(z, labels, center, bank_real, bank_fake, lam, neighbors=self.neighbors,
                                 temperature=self.temperature, margin=self.margin, fusion=self.fusion,
                                 w=None if self.fusion == "smooth" else self._weights_for_banks(w),
                                 linear_neighbors=self.linear_neighbors, mixed_as=self.mixed_as, impl=self.impl)
        self._update_banks(z, labels, center)
        return loss


def _counts_from_buffers(module: RealCentricLoss, incompatible_keys) -> None:
    # A checkpoint's counts come back to the host once, at load time.
    module._filled = {"real": int(module.bank_real_count), "fake": int(module.bank_fake_count)}
