"""Where self-blending's random numbers come from: a torch.Generator (None: torch's global one), or a
`RowDraws`, the draws of a whole batch of which only some rows are made here.

Every draw of a blend is one call for the batch (torch.rand(B, ...)), so a sample's values depend on its
row and on the batch's size. Under torchrun a rank makes the pseudo-fakes of its share of the global
batch only, yet they must be those one process makes for the whole batch (rccl.data.loaders): with
RowDraws(total, rows) each call draws for all `total` samples, exactly as one process does, and keeps
`rows`. With a plain generator the calls are the plain torch calls.
"""
from __future__ import annotations

from typing import Sequence

import torch


class RowDraws:
    def __init__(self, total: int, rows: Sequence[int], generator: torch.Generator | None = None):
        self.total, self.generator = int(total), generator
        self.rows = torch.as_tensor(list(rows), dtype=torch.int64)


def _check(source: RowDraws, n: int) -> None:
    if n != len(source.rows):
        raise ValueError(f"self_blend: {n} samples drawn for, {len(source.rows)} rows given")


def rand(source, n: int, *shape: int) -> torch.Tensor:
    """torch.rand(n, *shape) from `source` (a generator, None, or RowDraws: the rows of the whole batch's)."""
    if isinstance(source, RowDraws):
        _check(source, n)
        return torch.rand(source.total, *shape, generator=source.generator)[source.rows]
    return torch.rand(n, *shape, generator=source)


def randint(source, low: int, high: int, n: int) -> torch.Tensor:
    """torch.randint(low, high, (n,)) from `source`, as `rand`."""
    if isinstance(source, RowDraws):
        _check(source, n)
        return torch.randint(low, high, (source.total,), generator=source.generator)[source.rows]
    return torch.randint(low, high, (n,), generator=source)
