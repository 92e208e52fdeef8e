"""Every bad config value is one line naming its key, exit 2, no traceback, and no run folder: checked
against the schema (rccl/train/schema.py) before train.out is touched, for every section of the config."""
import pytest

from rccl.cli.train import main
from rccl.defaults import DEFAULTS
from rccl.train.config import flatten, load_config
from rccl.train.schema import SCHEMA
from tiny_data import make_tiny_manifest, tiny_overrides

BAD = [  # (override, the key the error must name)
    ("name=a/b", "name"),
    ("data.manifest=[3]", "data.manifest"),  # a list; a bare 3 is a path word, as the user wrote it
    ("data.pairing=bogus", "data.pairing"),
    ("data.pairing={instance: -1}", "data.pairing"),
    ("data.pairing={rotation: 1}", "data.pairing"),
    ("data.augment.scale=[2,1]", "data.augment.scale"),
    ("data.augment.scale=[0.5]", "data.augment.scale"),
    ("data.augment.ratio=[0,1]", "data.augment.ratio"),
    ("data.augment.flip=1.5", "data.augment.flip"),
    ("data.augment.color_jitter_p=-0.1", "data.augment.color_jitter_p"),
    ("data.augment.blur_sigma=[2,1]", "data.augment.blur_sigma"),
    ("data.augment.jpeg_quality=[0,95]", "data.augment.jpeg_quality"),
    ("data.train_qualities=[raw,c50]", "data.train_qualities"),
    ("data.image_size=4", "data.image_size"),
    ("data.workers=-1", "data.workers"),
    ("data.backend=gpu", "data.backend"),
    ("model.encoder=xceptionnn", "model.encoder"),
    ("model.proj_dim=0", "model.proj_dim"),
    ("model.pretrained=maybe", "model.pretrained"),
    ("model.encoder_kwargs=3", "model.encoder_kwargs"),
    ("loss.kind=triplet", "loss.kind"),
    ("loss.temperature=0", "loss.temperature"),
    ("loss.beta=[0.5,-1]", "loss.beta"),
    ("loss.fusion=cubic", "loss.fusion"),
    ("loss.margin=-0.1", "loss.margin"),
    ("loss.alpha=0.5", "loss.alpha"),
    ("loss.impl=fast", "loss.impl"),
    ("stage1.batch_size=3", "stage1.batch_size"),
    ("stage1.lr=-1", "stage1.lr"),
    ("stage1.lr=abc", "stage1.lr"),
    ("stage1.momentum=1.5", "stage1.momentum"),
    ("stage2.epochs=-1", "stage2.epochs"),
    ("stage2.scheduler=step", "stage2.scheduler"),
    ("stage2.warmup_epochs=5", "stage2.warmup_epochs"),
    ("train.seed=-3", "train.seed"),
    ("train.amp_dtype=float8", "train.amp_dtype"),
    ("train.log_every=0", "train.log_every"),
    ("train.device=tpu", "train.device"),
    ("eval.qualities=[c99]", "eval.qualities"),
    ("eval.batch_size=0", "eval.batch_size"),
    ("eval.after_training=sometimes", "eval.after_training"),
    ("demo.seed=x", "demo.seed"),
    ("demo.synth=3", "demo.synth"),
]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_tiny_manifest(tmp_path_factory.mktemp("data"))


def test_the_list_covers_every_section():
    assert len(BAD) >= 25
    sections = {key.split(".")[0] if "." in key else key for _, key in BAD}
    assert sections == set(DEFAULTS) and any(k.startswith("data.augment.") for _, k in BAD)


@pytest.mark.parametrize("override, key", BAD, ids=[o for o, _ in BAD])
def test_a_bad_value_is_one_line_naming_the_key_exit_2_and_no_run_folder(tmp_path, capsys, manifest, override, key):
    out = tmp_path / "runs"
    assert main(tiny_overrides(manifest, out, **{"stage2.epochs": 1}) + [override]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("rccl-train: error: ") and f"'{key}'" in err, err
    assert not out.exists()


def test_bad_values_in_a_config_file_name_the_key_and_the_file(tmp_path, capsys, manifest):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  augment:\n    scale: [0.9, 0.2]\n")
    assert main(["--config", str(path), *tiny_overrides(manifest, tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "'data.augment.scale' must be [low, high] with low <= high" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override, message", [
    ("stage1.batch_size=512", "'stage1.batch_size' 512 with"),   # more than the crops per class give
    ("stage2.batch_size=512", "'stage2.batch_size' 512 with"),
    ("model.weights=/nonexistent/enc.pt", "model.weights: /nonexistent/enc.pt does not exist"),
    ("data.train_qualities=[c40]", "no crop with split='train'"),
])
def test_values_that_only_the_data_or_the_model_refuse_leave_no_folder(tmp_path, capsys, manifest, override, message):
    out = tmp_path / "runs"
    assert main(tiny_overrides(manifest, out) + [override]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_batch_sizes_must_split_over_the_processes(tmp_path, capsys, manifest, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main(tiny_overrides(manifest, tmp_path / "runs")) == 2
    err = capsys.readouterr().err
    assert "'stage1.batch_size' 8 does not split into 3 process(es)" in err and not (tmp_path / "runs").exists()


def test_every_key_has_a_rule_and_the_defaults_follow_their_rules():
    assert set(flatten(DEFAULTS)) == set(SCHEMA)
    assert load_config() == DEFAULTS


def test_stage_2_alone_on_a_new_run_is_refused_before_a_folder(tmp_path, capsys, manifest):
    out = tmp_path / "runs"
    assert main(tiny_overrides(manifest, out) + ["--stage", "2"]) == 2
    err = capsys.readouterr().err
    assert "--stage 2 needs stage 1's encoder" in err and not out.exists()
