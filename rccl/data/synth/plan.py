"""The plan of a synthetic tree: which videos it holds, of whom, which are fakes of what, which are tested.

Every identity x has `videos_per_identity` natural videos; each gets one fake that puts another identity's
face into it (every identity a target equally often, never x itself). The last `test_videos_per_identity`
of each identity, with their fakes, and a quarter of the YouTube videos form the test list.
"""
from __future__ import annotations

from rccl.data.synth.params import SynthConfig


def video_plan(cfg: SynthConfig) -> list[dict]:
    """Every video to make: folder, name, identity, and for fakes the source video and the target."""
    n = cfg.n_identities
    plan = []
    for x in range(n):
        for k in range(cfg.videos_per_identity):
            split = "test" if k >= cfg.videos_per_identity - cfg.test_videos_per_identity else "train"
            plan.append(dict(kind="real", video=f"Celeb-real/id{x}_{k:04d}.mp4", identity=x, number=k, split=split))
    for x in range(n):
        for k in range(cfg.videos_per_identity):
            y = (x + 1 + k % (n - 1)) % n  # every identity is a target equally often; never x itself
            split = "test" if k >= cfg.videos_per_identity - cfg.test_videos_per_identity else "train"
            plan.append(dict(kind="fake", video=f"Celeb-synthesis/id{x}_id{y}_{k:04d}.mp4", identity=x,
                             target=y, number=k, split=split))
    n_test_yt = max(1, cfg.n_youtube // 4) if cfg.n_youtube else 0
    for j in range(cfg.n_youtube):
        plan.append(dict(kind="youtube", video=f"YouTube-real/{j:05d}.mp4", identity=None, number=j,
                         split="test" if j >= cfg.n_youtube - n_test_yt else "train"))
    return plan


def test_list_lines(plan: list[dict]) -> list[str]:
    """List_of_testing_videos.txt as Celeb-DF-v2 writes it: '1 VIDEO' for a natural video, '0 VIDEO' a fake."""
    return [f"{0 if it['kind'] == 'fake' else 1} {it['video']}" for it in plan if it["split"] == "test"]
