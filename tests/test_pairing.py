"""ForgeryPairSampler: the pairing rules of each strategy, class balance, rank sharding, resume state."""
from collections import Counter

import pytest

from rccl.data.pairing import ForgeryPairSampler, resolve_strategies


def _records(identities=4, videos=3, frames=4, qualities=("raw",), youtube=2, fake_share=2):
    """Naturals idI_V of identity I; fakes idI_idJ_V from natural idI_V with target J (fake_share targets
    per source video); YouTube naturals with unknown identity; frames in consecutive pairs."""
    rows = []

    def add(video, label, source="", target="", identity="", q="raw"):
        for f in range(frames):
            rows.append({"video": video, "label": label, "quality": q, "frame": f, "pair": f // 2,
                         "source": source, "target": target, "identity": identity})

    for q in qualities:
        for i in range(identities):
            for v in range(videos):
                add(f"Celeb-real/id{i}_{v:04d}.mp4", 0, identity=f"id{i}", q=q)
                for s in range(1, fake_share + 1):
                    j = (i + s) % identities
                    add(f"Celeb-synthesis/id{i}_id{j}_{v:04d}.mp4", 1, source=f"id{i}_{v:04d}", target=f"id{j}", q=q)
        for y in range(youtube):
            add(f"YouTube-real/{y:05d}.mp4", 0, q=q)
    return rows


def _pairs(sampler, epoch=0):
    sampler.set_epoch(epoch)
    return [p for batch in sampler for p in batch]


def test_every_batch_is_balanced_and_fakes_are_undersampled():
    recs = _records()
    n_nat = sum(r["label"] == 0 for r in recs)
    n_fake = sum(r["label"] == 1 for r in recs)
    assert n_fake > n_nat
    s = ForgeryPairSampler(recs, batch_size=8, strategies="semantic", seed=1)
    assert len(s) == n_nat // 4
    anchors = []
    for batch in s:
        assert len(batch) == 8
        assert Counter(recs[a]["label"] for a, _ in batch) == {0: 4, 1: 4}
        anchors += [a for a, _ in batch]
    assert len(set(anchors)) == len(anchors)  # no anchor twice in an epoch


def test_instance_only_pairs_each_crop_with_itself():
    recs = _records()
    assert all(a == p for a, p in _pairs(ForgeryPairSampler(recs, 8, "instance-only", seed=0)))


def test_temporal_partner_is_the_other_frame_of_the_consecutive_pair():
    recs = _records()
    s = ForgeryPairSampler(recs, 8, {"temporal": 1.0}, seed=0)
    for a, p in _pairs(s):
        ra, rp = recs[a], recs[p]
        assert (ra["video"], ra["pair"], ra["quality"]) == (rp["video"], rp["pair"], rp["quality"])
        assert ra["frame"] != rp["frame"]
    assert s.stats == Counter({"temporal": len(s) * 8})


def test_semantic_partners_follow_the_forgery_rules():
    recs = _records()
    s = ForgeryPairSampler(recs, 8, {"semantic": 1.0}, seed=3)
    used = Counter()
    for a, p in _pairs(s):
        ra, rp = recs[a], recs[p]
        assert ra["label"] == rp["label"] and ra["quality"] == rp["quality"]
        if ra["identity"] == "" and ra["label"] == 0:
            # a YouTube natural has no known identity: no semantic partner, it falls back to temporal
            assert ra["video"] == rp["video"] and ra["frame"] != rp["frame"]
            continue
        assert ra["video"] != rp["video"]
        if ra["label"] == 1:
            assert ra["source"] == rp["source"] or ra["target"] == rp["target"]
            used["same source" if ra["source"] == rp["source"] else "same target"] += 1
        else:
            assert ra["identity"] == rp["identity"]
    assert used["same source"] > 0 and used["same target"] > 0


def test_class_level_partner_shares_nothing_but_the_class():
    recs = _records()
    for a, p in _pairs(ForgeryPairSampler(recs, 8, {"class": 1.0}, seed=5)):
        ra, rp = recs[a], recs[p]
        assert ra["label"] == rp["label"] and ra["video"] != rp["video"]
        if ra["label"] == 1:
            assert ra["source"] != rp["source"] and ra["target"] != rp["target"]
        elif ra["identity"]:
            assert rp["identity"] != ra["identity"]


def test_missing_candidates_fall_back_to_simpler_strategies():
    # one natural video, one fake video, one frame each: no temporal, semantic or class partner exists
    recs = _records(identities=1, videos=1, frames=1, youtube=0, fake_share=1)
    s = ForgeryPairSampler(recs, 2, "class", seed=0)
    pairs = _pairs(s)
    assert all(a == p for a, p in pairs)
    assert set(s.stats) == {"instance"}


def test_the_mix_follows_its_weights():
    recs = _records(identities=6, videos=4)
    s = ForgeryPairSampler(recs, 16, {"instance": 3, "temporal": 1}, seed=0)
    _pairs(s)
    share = s.stats["instance"] / sum(s.stats.values())
    assert 0.6 < share < 0.9


def test_ranks_split_the_epoch_without_overlap_and_agree_on_its_length():
    recs = _records(identities=6)
    single = ForgeryPairSampler(recs, 8, "semantic", seed=2)
    ranks = [ForgeryPairSampler(recs, 4, "semantic", seed=2, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    per_rank = [[a for a, _ in _pairs(s, epoch=3)] for s in ranks]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(a for a, _ in _pairs(single, epoch=3))


@pytest.mark.parametrize("fakes", ["real", "sbi", "mixed"])
def test_n_ranks_draw_the_batches_one_process_draws(fakes):
    """Each rank's batch is its consecutive share of the global batch one process with the global batch
    size draws: anchors, partners and the pairing counts (issue 27: the partners were drawn per rank)."""
    from rccl.data.blend.records import pseudo_fake_record

    recs = _records(identities=6)
    if fakes != "real":
        base = [r for r in recs if r["label"] == 0] if fakes == "sbi" else recs
        recs = base + [pseudo_fake_record(r, i) for i, r in enumerate(base) if r["label"] == 0]
    single = ForgeryPairSampler(recs, 12, "class", seed=2)
    ranks = [ForgeryPairSampler(recs, 4, "class", seed=2, rank=r, world_size=3) for r in range(3)]
    whole = list(_at(single, 3))
    shares = [list(_at(s, 3)) for s in ranks]
    assert len(whole) == len(shares[0]) > 0
    for b, batch in enumerate(whole):
        assert sum((share[b] for share in shares), []) == batch
    assert all(s.stats == single.stats for s in ranks)


def _at(sampler, epoch):
    sampler.set_epoch(epoch)
    return sampler


def test_epochs_differ_and_a_restored_sampler_repeats_its_epoch():
    recs = _records()
    s = ForgeryPairSampler(recs, 8, "semantic", seed=7)
    e0, e1 = _pairs(s, 0), _pairs(s, 1)
    assert e0 != e1
    s.set_epoch(1)
    state = s.state_dict()
    other = ForgeryPairSampler(recs, 8, "semantic", seed=7)
    other.load_state_dict(state)
    assert other.epoch == 1 and [p for b in other for p in b] == e1
    wrong = ForgeryPairSampler(recs, 8, "semantic", seed=8)
    with pytest.raises(ValueError, match="seed"):
        wrong.load_state_dict(state)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 7}, "even"),
    ({"batch_size": 1000}, "fewer than one batch"),
    ({"strategies": "pixel"}, "unknown preset"),
    ({"strategies": {"instance": 1, "swap": 1}}, "unknown strategy 'swap'"),
    ({"strategies": {"instance": 0}}, "positive sum"),
])
def test_bad_arguments_are_named(kwargs, message):
    args = {"batch_size": 8, "strategies": "semantic"} | kwargs
    with pytest.raises(ValueError, match=message):
        ForgeryPairSampler(_records(), **args)


def test_one_class_records_are_refused():
    recs = [r for r in _records() if r["label"] == 1]
    with pytest.raises(ValueError, match="no natural"):
        ForgeryPairSampler(recs, 8)


def test_presets_match_table_3():
    assert set(k for k, w in resolve_strategies("instance").items() if w) == {"instance"}
    assert set(k for k, w in resolve_strategies("temporal").items() if w) == {"instance", "temporal"}
    assert set(k for k, w in resolve_strategies("semantic").items() if w) == {"instance", "temporal", "semantic"}
    assert set(k for k, w in resolve_strategies("class-level").items() if w) == {"instance", "temporal", "semantic", "class"}
