"""The ablation variants of the spec (rccl.reference): the linear fusions of Table 4 and the mixed features
"as fakes" of Table 6, on hand-made batches and against a naive per-anchor loop of the loss formula; and
how rccl.functional routes them (reference under auto, refused under compiled)."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_inputs

import rccl
from rccl import reference
from rccl.functional import CompiledUnavailable, real_centric_loss

D64 = torch.float64
HAS_COMPILED = rccl.backends()["cpu"]


def _t(rows):
    return torch.tensor(rows, dtype=D64)


# naturals 0, 3; fakes 1, 2, 4
Z = F.normalize(_t([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.0, 0.8], [0.0, 0.8, 0.6]]), dim=1)
LABELS = torch.tensor([0, 1, 1, 0, 1])
CENTER = _t([1.0, 0.0, 0.0])
BANK_REAL = F.normalize(_t([[0.8, 0.0, 0.6]]), dim=1)
BANK_FAKE = F.normalize(_t([[0.0, 0.6, 0.8]]), dim=1)


def test_linear_fuses_each_bank_row_with_its_top_q_same_class_neighbours():
    w = _t([0.25, 0.5, 0.75, 0.1, 0.9, 0.3])  # q = 3: real row slots 0..2, fake row slots 3..5
    extra, labels = reference.synthesize(Z, LABELS, CENTER, BANK_REAL, BANK_FAKE, torch.zeros(0, dtype=D64), 2,
                                         fusion="linear", w=w, linear_neighbors=3)
    h = BANK_REAL[0]
    # naturals by similarity to h = (.8, 0, .6): z3 (.96), z0 (.8); only 2 naturals, so rank 2 is absent
    torch.testing.assert_close(extra[0], F.normalize(0.25 * h + 0.75 * Z[3], dim=0))
    torch.testing.assert_close(extra[1], F.normalize(0.5 * h + 0.5 * Z[0], dim=0))
    assert extra[2].abs().sum() == 0
    g = BANK_FAKE[0]
    # fakes by similarity to g = (0, .6, .8): z4 (.96), z2 (.8), z1 (.6)
    torch.testing.assert_close(extra[3], F.normalize(0.1 * g + 0.9 * Z[4], dim=0))
    torch.testing.assert_close(extra[4], F.normalize(0.9 * g + 0.1 * Z[2], dim=0))
    torch.testing.assert_close(extra[5], F.normalize(0.3 * g + 0.7 * Z[1], dim=0))
    assert labels.tolist() == [0, 0, -1, 1, 1, 1]


def test_linear_smooth_smooths_each_linear_positive_with_its_top_m_batch_features():
    w = _t([0.5, 0.5])  # q = 1
    extra, labels = reference.synthesize(Z, LABELS, CENTER, BANK_REAL, BANK_FAKE, torch.zeros(0, dtype=D64), 1,
                                         fusion="linear_smooth", w=w, linear_neighbors=1)
    p_real = F.normalize(0.5 * BANK_REAL[0] + 0.5 * Z[3], dim=0)
    # its nearest natural is z3 again (p_real lies between h and z3)
    torch.testing.assert_close(extra[0], F.normalize(p_real + Z[3], dim=0))
    p_fake = F.normalize(0.5 * BANK_FAKE[0] + 0.5 * Z[4], dim=0)
    torch.testing.assert_close(extra[1], F.normalize(p_fake + Z[4], dim=0))
    assert labels.tolist() == [0, 1]


def test_linear_gives_no_positive_for_a_class_absent_from_the_batch():
    z, labels = Z[[0, 3]], LABELS[[0, 3]]  # naturals only
    extra, extra_labels = reference.synthesize(z, labels, CENTER, BANK_REAL, BANK_FAKE, torch.zeros(0, dtype=D64),
                                               2, fusion="linear", w=_t([0.5] * 4), linear_neighbors=2)
    assert extra_labels.tolist() == [0, 0, -1, -1]
    assert extra[2:].abs().sum() == 0


def test_mixed_as_fakes_labels_the_mixed_features_fake():
    lam = _t([0.7, 0.6])
    as_neg, neg_labels = reference.synthesize(Z, LABELS, CENTER, BANK_REAL, BANK_FAKE, lam, 1)
    as_fake, fake_labels = reference.synthesize(Z, LABELS, CENTER, BANK_REAL, BANK_FAKE, lam, 1, mixed_as="fakes")
    torch.testing.assert_close(as_neg, as_fake)
    assert neg_labels.tolist()[-2:] == [reference.MIXED_NEGATIVE] * 2
    assert fake_labels.tolist()[-2:] == [reference.FAKE] * 2


def _naive_loss(z, labels, extra, extra_labels, temperature, margin):
    """The formula of the spec, one anchor and one contrast member at a time."""
    contrast = [(z[j], int(labels[j]), j) for j in range(len(z))] + \
               [(extra[e], int(extra_labels[e]), None) for e in range(len(extra)) if extra_labels[e] != -1]
    terms = []
    for i in range(len(z)):
        members = [(c, lab) for c, lab, j in contrast if j != i]
        positive = [lab == int(labels[i]) for _, lab in members]
        logits = [(float(z[i] @ c) - margin * p) / temperature for (c, _), p in zip(members, positive)]
        if not any(positive):
            continue
        lse = math.log(sum(math.exp(v) for v in logits))
        pos = [v for v, p in zip(logits, positive) if p]
        terms.append(-sum(v - lse for v in pos) / len(pos))
    return sum(terms) / len(terms) if terms else 0.0


@pytest.mark.parametrize("fusion, mixed_as", [("smooth", "negatives"), ("smooth", "fakes"), ("linear", "negatives"),
                                              ("linear_smooth", "fakes")])
def test_loss_of_each_variant_is_the_formula_over_its_synthesized_features(fusion, mixed_as):
    inputs = make_inputs(11, D=6, K=3, M=4, dtype=D64, seed=3, n_fake=5, requires_grad=False)
    w = torch.rand(reference.linear_weight_count(3, 3, 2), dtype=D64, generator=torch.Generator().manual_seed(1))
    variant = dict(fusion=fusion, w=None if fusion == "smooth" else w, linear_neighbors=2, mixed_as=mixed_as)
    loss, extra, extra_labels, _ = reference.real_centric_loss_outputs(**inputs, neighbors=2, temperature=0.3,
                                                                       margin=0.2, **variant)
    expected = _naive_loss(inputs["z"], inputs["labels"], extra, extra_labels, 0.3, 0.2)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    if mixed_as == "fakes":
        assert (extra_labels[-4:] == reference.FAKE).all()


def test_as_fakes_changes_the_fake_anchors_loss():
    inputs = make_inputs(10, D=6, K=2, M=3, dtype=D64, seed=4, n_fake=4)
    as_negatives = real_centric_loss(**inputs, impl="reference")
    as_fakes = real_centric_loss(**inputs, mixed_as="fakes", impl="reference")
    assert not torch.isclose(as_negatives, as_fakes)


@pytest.mark.parametrize("variant", [{"fusion": "linear"}, {"fusion": "linear_smooth"}, {"mixed_as": "fakes"}])
def test_auto_runs_a_variant_the_op_cannot_do_on_the_reference(variant):
    inputs = make_inputs(9, D=5, K=2, M=3, dtype=torch.float32, seed=5, n_fake=4)
    w = torch.full((reference.linear_weight_count(2, 2, 4),), 0.3) if "fusion" in variant else None
    auto = real_centric_loss(**inputs, w=w, impl="auto", **variant)
    ref = reference.real_centric_loss(**inputs, w=w, **variant)
    torch.testing.assert_close(auto, ref)
    auto.backward()
    assert torch.isfinite(inputs["z"].grad).all()


@pytest.mark.parametrize("variant, key", [({"fusion": "linear"}, "fusion"), ({"fusion": "linear_smooth"}, "fusion"),
                                          ({"mixed_as": "fakes"}, "mixed_as")])
def test_compiled_refuses_a_variant_it_cannot_do_naming_the_key(variant, key):
    inputs = make_inputs(6, D=4, K=1, M=2)
    w = torch.full((reference.linear_weight_count(1, 1, 4),), 0.5) if "fusion" in variant else None
    with pytest.raises(CompiledUnavailable, match=rf"rccl: {key}: impl='compiled' cannot do {key}="):
        real_centric_loss(**inputs, w=w, impl="compiled", **variant)


@pytest.mark.skipif(not HAS_COMPILED, reason="the compiled CPU op is not built")
def test_compiled_runs_smooth_negatives_with_any_lam():
    inputs = make_inputs(12, D=6, K=3, M=5, dtype=D64, seed=6)
    inputs["lam"] = torch.distributions.Beta(2.0, 4.0).sample((5,)).to(D64)  # unfolded: below 0.5 too
    compiled = real_centric_loss(**inputs, impl="compiled")
    torch.testing.assert_close(compiled, reference.real_centric_loss(**inputs))


@pytest.mark.parametrize("options, name", [({"fusion": "mean"}, "fusion"), ({"mixed_as": "positives"}, "mixed_as"),
                                           ({"fusion": "linear"}, "w"),
                                           ({"fusion": "linear", "w": torch.full((3,), 0.5)}, "w"),
                                           ({"fusion": "linear", "w": torch.full((16,), 1.5)}, "w"),
                                           ({"fusion": "linear", "w": torch.full((16,), 0.5), "linear_neighbors": -1},
                                            "linear_neighbors")])
def test_bad_variant_options_name_the_option(options, name):
    inputs = make_inputs(6, D=4, K=2, M=2)
    with pytest.raises(ValueError, match=rf"rccl: {name}:"):
        real_centric_loss(**inputs, **options)
