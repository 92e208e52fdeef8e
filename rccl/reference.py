r"""The real-centric loss in plain, vectorised PyTorch: the spec in code.

This module is the oracle the compiled kernels are tested against and the fallback used when they are not
built or cannot do the variant asked for. It does no input checking (rccl.functional does that, once, for
both paths). docs/method.md says the same in prose, with the paper's reasons.

Notation: a batch of N L2-normalised features z (N, D) with labels y in {0 = natural, 1 = fake}, the unit
centre of natural features c (D,), two banks of global hard features B_real (K_real, D) and B_fake
(K_fake, D), mixing coefficients lam (M,), `neighbors` = m, temperature T, margin mu.
normalize(x) = x / max(||x||, 1e-12) (as torch.nn.functional.normalize).

Where the inputs come from in training (rccl.loss.RealCentricLoss, step t of an epoch): c is the mean of
every natural seen this epoch INCLUDING step t's batch; B_real and B_fake are the banks as they stood after
step t-1 (empty at the epoch's first step), so a global hard feature is one seen EARLIER in the epoch and
the batch is the local set; the banks are updated with step t's batch only after its loss is computed.

Hard positives, by `fusion` (the paper's Table 4):
  smooth (the default, section 3.4): for each h in B_real (class 0) and each h in B_fake (class 1),
    J = the min(m, n_c) batch features z_j of that class with the largest h . z_j
        (n_c = the number of batch features of that class; ties go to the lowest batch index),
    p = normalize(h + sum_{j in J} z_j), a positive of the bank's class.
  linear (the control group of Table 4): for each h in a bank and each of its q = `linear_neighbors`
    most similar same-class batch features z_j (rank r = 0..q-1, same tie-break),
    p = normalize(w[h, r] h + (1 - w[h, r]) z_j), a positive of the bank's class; w (one weight per slot,
    in [0, 1]) is drawn by the caller (U(0, 1) in training). Only min(q, n_c) ranks exist per h.
  linear_smooth: each linear p, then smoothed as `smooth` smooths h: p' = normalize(p + sum_{j in J(p)} z_j)
    with J(p) the min(m, n_c) same-class batch features most similar to p.
No positive comes from a bank whose class is absent from the batch.

Mixed negatives. F = the min(M, n_fake) batch fakes with the largest z . c, in descending order of that
similarity (ties: lowest index). For the t-th f in F:
    r   = the batch natural with the largest f . r (ties: lowest index),
    n_t = normalize(lam[t] f + (1 - lam[t]) r).
There are none when the batch has no naturals. By `mixed_as` (the paper's Table 6):
  negatives (the default): n_t is a positive of no anchor (it only enters the denominators);
  fakes: n_t is labelled fake, a positive of every fake anchor (and a negative of every natural one).

Loss. The contrast set C is the N batch features plus the positives plus the mixed features (all
synthesized features detached). For each anchor i of the batch, A(i) = C without i and P(i) = the members
of A(i) that carry the label of i, and
    logit(i, a) = (z_i . c_a - mu [a in P(i)]) / T
    L_i = -(1 / |P(i)|) sum_{p in P(i)} (logit(i, p) - logsumexp_{a in A(i)} logit(i, a)).
The loss is the mean of L_i over the anchors with |P(i)| > 0, and 0 (with a zero gradient) when no anchor
has a positive. With mu = 0 and no banks and no lam this is the supervised contrastive loss of Khosla et
al. (the "L_out" form).

Hard-bank update. The real bank's candidates are B_real followed by the batch naturals; it keeps the k
with the LOWEST similarity to c. The fake bank's candidates are B_fake followed by the batch fakes; it
keeps the k with the HIGHEST. Each result has min(k, K + n_c) rows, ordered from the hardest (ties: the
lowest candidate index), detached. (Keeping the k hardest of everything seen is nested: the first k' < k
rows of a k-bank are exactly a k'-bank, so "the first 8 hard features" of Table 4 are a bank of 4 a class.)

Slots of the synthesized features (the compiled op's `extra`, `extra_labels`): the positives from B_real,
then those from B_fake (smooth: one slot per bank row; linear*: q slots per bank row, row-major, rank r
inside), then the M mixed slots; an absent slot is zero and labelled ABSENT.

Precision: everything is computed in the accumulation dtype, float32 for float16/bfloat16 features and
z's own dtype otherwise; the loss and the synthesized features come out in that dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NATURAL, FAKE = 0, 1
# extra_labels values beyond the two classes (see csrc/rccl.cpp)
MIXED_NEGATIVE, ABSENT = 2, -1
NORMALIZE_EPS = 1e-12
# The hard-positive fusions (Table 4) and the places of the mixed features (Table 6); the first is the default.
FUSIONS = ("smooth", "linear", "linear_smooth")
MIXED_AS = ("negatives", "fakes")


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision features, the features' own dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _top_indices(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Column indices of the `count` largest scores of each row, largest first, ties to the lowest
    index (a stable descending sort keeps equal scores in index order)."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    return order[..., :count]


def _absent(rows, d, like):
    return like.new_zeros((rows, d)), torch.full((rows,), ABSENT, dtype=torch.int64, device=like.device)


def _smoothed(z, in_class, features, neighbors):
    """normalize(f + the sum of the min(m, n_c) same-class batch features most similar to f), per row."""
    n_c = int(in_class.sum())
    scores = (features @ z.T).masked_fill(~in_class, float("-inf"))
    chosen = _top_indices(scores, min(neighbors, n_c))
    selection = torch.zeros_like(scores).scatter_(1, chosen, 1.0)
    return F.normalize(features + selection @ z, dim=1, eps=NORMALIZE_EPS)


def _hard_positives(z, labels, bank, cls, neighbors):
    """`smooth` positives of class `cls` from one bank: (K, D) features and (K,) labels (ABSENT if the
    class is not in the batch)."""
    in_class = labels == cls
    k = bank.shape[0]
    if int(in_class.sum()) == 0 or k == 0:
        return _absent(k, bank.shape[1], bank)
    positives = _smoothed(z, in_class, bank, neighbors)
    return positives, torch.full((k,), cls, dtype=torch.int64, device=z.device)


def _linear_positives(z, labels, bank, cls, w, pairs, smooth_neighbors=None):
    """`linear` (or, with smooth_neighbors, `linear_smooth`) positives of class `cls` from one bank:
    (K * pairs, D) features in slots row-major (bank row, neighbour rank) and their labels; w holds one
    weight per slot. Ranks >= n_c are absent."""
    in_class = labels == cls
    n_c = int(in_class.sum())
    k, d = bank.shape
    used = min(pairs, n_c)
    if used == 0 or k == 0:
        return _absent(k * pairs, d, bank)
    scores = (bank @ z.T).masked_fill(~in_class, float("-inf"))
    neighbours = z[_top_indices(scores, used)]                      # (K, used, D)
    weight = w.reshape(k, pairs)[:, :used, None]
    fused = F.normalize(weight * bank[:, None, :] + (1 - weight) * neighbours, dim=2, eps=NORMALIZE_EPS)
    if smooth_neighbors is not None:
        fused = _smoothed(z, in_class, fused.reshape(k * used, d), smooth_neighbors).reshape(k, used, d)
    features = bank.new_zeros((k, pairs, d))
    features[:, :used] = fused
    slot_labels = torch.full((k, pairs), ABSENT, dtype=torch.int64, device=z.device)
    slot_labels[:, :used] = cls
    return features.reshape(k * pairs, d), slot_labels.reshape(k * pairs)


def _mixed_negatives(z, labels, center, lam, mixed_as="negatives"):
    """(M, D) mixed features in slot order and their (M,) labels (MIXED_NEGATIVE, or FAKE when
    mixed_as == "fakes", or ABSENT)."""
    m = lam.shape[0]
    is_fake = labels == FAKE
    n_fake, n_natural = int(is_fake.sum()), int((~is_fake).sum())
    used = min(m, n_fake) if n_natural > 0 else 0
    absent = _absent(m - used, z.shape[1], z)
    if used == 0:
        return absent
    center_similarity = (z @ center).masked_fill(~is_fake, float("-inf"))
    fakes = z[_top_indices(center_similarity, used)]
    # argmax returns the first of equal maxima: the lowest index
    nearest = (fakes @ z.T).masked_fill(is_fake, float("-inf")).argmax(dim=1)
    weight = lam[:used, None]
    negatives = F.normalize(weight * fakes + (1 - weight) * z[nearest], dim=1, eps=NORMALIZE_EPS)
    label = FAKE if mixed_as == "fakes" else MIXED_NEGATIVE
    present = torch.full((used,), label, dtype=torch.int64, device=z.device)
    return torch.cat([negatives, absent[0]]), torch.cat([present, absent[1]])


def linear_weight_count(bank_real_rows: int, bank_fake_rows: int, linear_neighbors: int) -> int:
    """How many fusion weights w the linear fusions take: one per (bank row, neighbour rank) slot."""
    return (bank_real_rows + bank_fake_rows) * linear_neighbors


def synthesize(z, labels, center, bank_real, bank_fake, lam, neighbors, compute_dtype=None, *, fusion="smooth",
               w=None, linear_neighbors=4, mixed_as="negatives"):
    """The synthesized contrast features and their labels, in the slots of the module docstring (for
    smooth + negatives exactly the op's `extra` and `extra_labels`). Absent rows are zero and labelled
    ABSENT. Detached. w: the linear fusions' weights, (linear_weight_count(K_real, K_fake, q),), real bank
    slots first. compute_dtype overrides the accumulation dtype (the tests use it to measure PyTorch's own
    error in half precision)."""
    acc = compute_dtype or accumulation_dtype(z.dtype)
    z, center = z.detach().to(acc), center.detach().to(acc)
    bank_real, bank_fake, lam = bank_real.detach().to(acc), bank_fake.detach().to(acc), lam.detach().to(acc)
    if fusion == "smooth":
        real_pos, real_lab = _hard_positives(z, labels, bank_real, NATURAL, neighbors)
        fake_pos, fake_lab = _hard_positives(z, labels, bank_fake, FAKE, neighbors)
    else:
        w = w.detach().to(acc)
        split = bank_real.shape[0] * linear_neighbors
        smooth = neighbors if fusion == "linear_smooth" else None
        real_pos, real_lab = _linear_positives(z, labels, bank_real, NATURAL, w[:split], linear_neighbors, smooth)
        fake_pos, fake_lab = _linear_positives(z, labels, bank_fake, FAKE, w[split:], linear_neighbors, smooth)
    negatives, negative_labels = _mixed_negatives(z, labels, center, lam, mixed_as)
    return torch.cat([real_pos, fake_pos, negatives]), torch.cat([real_lab, fake_lab, negative_labels])


def contrastive_loss(z, labels, extra, extra_labels, temperature, margin, compute_dtype=None):
    """(loss, lse): the margin supervised contrastive loss of the batch against the batch and the present
    extra rows, differentiable in z (extra is a constant), and logsumexp_{A(i)} logit(i, a) per anchor
    (-inf for an anchor whose A(i) is empty)."""
    zc = z.to(compute_dtype or accumulation_dtype(z.dtype))
    n = zc.shape[0]
    contrast = torch.cat([zc, extra.detach().to(zc.dtype)])
    contrast_labels = torch.cat([labels, extra_labels])
    not_self = torch.cat([~torch.eye(n, dtype=torch.bool, device=z.device),
                          torch.ones(n, extra.shape[0], dtype=torch.bool, device=z.device)], dim=1)
    in_a = not_self & (contrast_labels != ABSENT)[None, :]
    in_p = in_a & (contrast_labels[None, :] == labels[:, None])
    logits = (zc @ contrast.T - margin * in_p.to(zc.dtype)) / temperature

    # An anchor with an empty A(i) (N = 1, nothing synthesized) would give logsumexp(-inf...) = -inf and
    # a NaN gradient through it even when masked out afterwards: give its row zeros, then report -inf.
    has_a = in_a.any(dim=1)
    masked = logits.masked_fill(~in_a, float("-inf")).masked_fill(~has_a[:, None], 0.0)
    lse = torch.logsumexp(masked, dim=1)
    positives = in_p.sum(dim=1)
    has_p = positives > 0
    mean_positive_logit = torch.where(in_p, logits, 0.0).sum(dim=1) / positives.clamp(min=1)
    per_anchor = torch.where(has_p, lse - mean_positive_logit, 0.0)
    # no anchor with a positive: 0 that still depends on z, so backward gives zeros, not None or NaN
    loss = per_anchor.sum() / has_p.sum().clamp(min=1)
    return loss, torch.where(has_a, lse, float("-inf")).detach()


def real_centric_loss_outputs(z, labels, center, bank_real, bank_fake, lam, neighbors, temperature, margin,
                              compute_dtype=None, **variant):
    """(loss, extra, extra_labels, lse) computed by the spec, for smooth + negatives the compiled op's four
    outputs; `loss` is differentiable in z through plain autograd. variant: fusion, w, linear_neighbors,
    mixed_as (as synthesize)."""
    extra, extra_labels = synthesize(z, labels, center, bank_real, bank_fake, lam, neighbors, compute_dtype,
                                     **variant)
    loss, lse = contrastive_loss(z, labels, extra, extra_labels, temperature, margin, compute_dtype)
    return loss, extra, extra_labels, lse


def real_centric_loss(z, labels, center, bank_real, bank_fake, lam, neighbors=2, temperature=0.1, margin=0.2, *,
                      fusion="smooth", w=None, linear_neighbors=4, mixed_as="negatives"):
    """The scalar loss (see the module docstring), differentiable in z only."""
    return real_centric_loss_outputs(z, labels, center, bank_real, bank_fake, lam, neighbors, temperature, margin,
                                     fusion=fusion, w=w, linear_neighbors=linear_neighbors, mixed_as=mixed_as)[0]


def _keep_hardest(candidates, similarity, k, lowest):
    order = torch.sort(similarity, descending=not lowest, stable=True).indices
    return candidates[order[:k]]


def update_hard_banks(z, labels, center, bank_real, bank_fake, k):
    """(new_bank_real, new_bank_fake): the k candidates least similar to the centre among bank_real and
    the batch naturals, and the k most similar among bank_fake and the batch fakes; detached, in the
    accumulation dtype, hardest first."""
    acc = accumulation_dtype(z.dtype)
    z, center = z.detach().to(acc), center.detach().to(acc)
    is_fake = labels == FAKE
    real_candidates = torch.cat([bank_real.detach().to(acc), z[~is_fake]])
    fake_candidates = torch.cat([bank_fake.detach().to(acc), z[is_fake]])
    new_real = _keep_hardest(real_candidates, real_candidates @ center, k, lowest=True)
    new_fake = _keep_hardest(fake_candidates, fake_candidates @ center, k, lowest=False)
    return new_real, new_fake
