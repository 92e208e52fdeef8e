"""RealCentricLoss: the stateful module around rccl.functional.real_centric_loss.

State (buffers, so it travels in checkpoints and follows .to(device)): the running sum and count of the
natural features seen this epoch (their normalised mean is the real centre, the paper's Eq. 1), and the
two global hard banks (up to k rows each; the filled rows are counted). `reset()` starts an epoch afresh:
the paper updates the centre and the banks within an epoch so stale marginal features do not linger.

Each call, in this order: add the batch's naturals to the centre, update the banks with the batch, draw
lam = max(u, 1 - u) with u ~ Beta(alpha, alpha) (U-shaped: the fake dominates every mix), and evaluate the
op. Under DDP the caller passes the features all-gathered from every rank (rccl.train.distributed), so the
sums, the banks and the loss are the same on every rank; lam is drawn on rank 0 and broadcast.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from rccl.functional import real_centric_loss, update_hard_banks


class RealCentricLoss(nn.Module):
    def __init__(self, dim: int, *, temperature: float = 0.1, bank_size: int = 16, negatives: int = 16,
                 neighbors: int = 2, margin: float = 0.2, alpha: float = 0.5, impl: str = "auto"):
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"RealCentricLoss: alpha must be > 0, got {alpha}")
        self.dim = dim
        self.temperature = float(temperature)
        self.bank_size = int(bank_size)
        self.negatives = int(negatives)
        self.neighbors = int(neighbors)
        self.margin = float(margin)
        self.alpha = float(alpha)
        self.impl = impl
        self.register_buffer("center_sum", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("center_count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("bank_real", torch.zeros(self.bank_size, dim))
        self.register_buffer("bank_fake", torch.zeros(self.bank_size, dim))
        self.register_buffer("bank_real_count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("bank_fake_count", torch.zeros((), dtype=torch.int64))

    @classmethod
    def from_config(cls, loss_cfg: dict, dim: int) -> "RealCentricLoss":
        """loss.kind rccl: the paper's loss; supcon: the same op with margin 0, no banks, no negatives
        (exactly the supervised contrastive loss of Khosla et al.)."""
        kind = loss_cfg["kind"]
        if kind not in ("rccl", "supcon"):
            raise ValueError(f"RealCentricLoss: loss.kind {kind!r} is not a contrastive loss (rccl or supcon)")
        supcon = kind == "supcon"
        return cls(dim, temperature=loss_cfg["temperature"],
                   bank_size=0 if supcon else loss_cfg["bank_size"],
                   negatives=0 if supcon else loss_cfg["negatives"],
                   neighbors=loss_cfg["neighbors"], margin=0.0 if supcon else loss_cfg["margin"],
                   alpha=loss_cfg["alpha"], impl=loss_cfg["impl"])

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, temperature={self.temperature}, bank_size={self.bank_size}, "
                f"negatives={self.negatives}, neighbors={self.neighbors}, margin={self.margin}, alpha={self.alpha}")

    @torch.no_grad()
    def reset(self) -> None:
        self.center_sum.zero_()
        self.center_count.zero_()
        self.bank_real.zero_()
        self.bank_fake.zero_()
        self.bank_real_count.zero_()
        self.bank_fake_count.zero_()

    def center(self) -> torch.Tensor:
        """The unit-norm centre of the naturals seen this epoch (float32)."""
        if int(self.center_count) == 0:
            raise RuntimeError("RealCentricLoss: no natural feature seen this epoch, so there is no real centre")
        return F.normalize((self.center_sum / self.center_count).float(), dim=0)

    def banks(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.bank_real[: int(self.bank_real_count)], self.bank_fake[: int(self.bank_fake_count)]

    def draw_lam(self, device) -> torch.Tensor:
        u = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha)).sample((self.negatives,))
        lam = torch.maximum(u, 1 - u).to(device=device, dtype=torch.float32)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(lam, src=0)
        return lam

    @torch.no_grad()
    def _update_state(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        naturals = z[labels == 0]
        self.center_sum += naturals.to(torch.float64).sum(dim=0)
        self.center_count += naturals.shape[0]
        if int(self.center_count) == 0:
            # A batch of fakes before any natural this epoch: the batch mean stands in until naturals come.
            center = F.normalize(z.float().mean(dim=0), dim=0)
        else:
            center = self.center()
        if self.bank_size > 0:
            bank_real, bank_fake = self.banks()
            new_real, new_fake = update_hard_banks(z, labels, center, bank_real, bank_fake, k=self.bank_size,
                                                   impl=self.impl)
            for bank, count, new in ((self.bank_real, self.bank_real_count, new_real),
                                     (self.bank_fake, self.bank_fake_count, new_fake)):
                bank[: new.shape[0]] = new.to(bank.dtype)
                count.fill_(new.shape[0])
        return center

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """z (N, D) L2-normalised features of the (global) batch, labels (N,) 0 natural / 1 fake."""
        if z.shape[1] != self.dim:
            raise ValueError(f"RealCentricLoss: features have dimension {z.shape[1]}, the loss was built for {self.dim}")
        center = self._update_state(z, labels)
        bank_real, bank_fake = self.banks()
        lam = self.draw_lam(z.device)
        return real_centric_loss(z, labels, center, bank_real, bank_fake, lam, neighbors=self.neighbors,
                                 temperature=self.temperature, margin=self.margin, impl=self.impl)
