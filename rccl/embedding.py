"""How far apart the two classes lie on the unit sphere: a statistic of L2-normalised features that both
the training room (the collapse watch, per step) and the evaluation room (metrics.json, per test set) use;
a neutral module, so that neither room imports the other."""
from __future__ import annotations

import torch


def embedding_separation(z, labels) -> tuple:
    """(mean pairwise cosine, class gap) of unit-norm rows z (N, D) with labels (N,) 0 natural / 1 fake, as
    0-d tensors on z's device (no host read: the training loop sums them per step).

    The class gap is the mean cosine of same-class pairs minus that of natural-fake pairs: how far apart
    the classes lie on the sphere (~0 when the projections have collapsed onto one point or do not
    separate the classes; the stage-2 classifier needs it > 0). Pairs exclude a row with itself. Computed
    from the class sums of z, O(N D): for S_c = sum of class c's rows, the same-class mean is
    (|S_c|^2 - N_c) / (N_c (N_c - 1)) and the cross-class mean S_0 . S_1 / (N_0 N_1). A class with fewer
    than two rows (or absent) leaves the gap 0."""
    z = z.detach().float()
    fake = (labels == 1).to(z.dtype)
    n1 = fake.sum()
    n0 = len(z) - n1
    s1 = (z * fake[:, None]).sum(0)
    s0 = z.sum(0) - s1
    n = torch.tensor(float(len(z)), device=z.device)
    total = s0 + s1
    mean_cos = ((total @ total) - n) / (n * (n - 1)).clamp(min=1)
    same_pairs = n0 * (n0 - 1) + n1 * (n1 - 1)
    same = ((s0 @ s0) - n0 + (s1 @ s1) - n1) / same_pairs.clamp(min=1)
    cross = (s0 @ s1) / (n0 * n1).clamp(min=1)
    defined = (n0 >= 1) & (n1 >= 1) & (same_pairs > 0)
    return mean_cos, torch.where(defined, same - cross, torch.zeros_like(same))
