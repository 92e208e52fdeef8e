"""The training config: files, base chains, overrides, and errors that name the key at fault."""
from pathlib import Path

import pytest
import yaml
from torchvision.transforms import v2

from rccl.train.config import ConfigError, load_config, parse_override, save_config
from rccl.train.demo import demo_base, is_demo_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["stage1.lr=0.1", "data.train_qualities=[raw,c23]", "model.weights=null",
                             "loss.kind=supcon", "train.amp=true"])
    assert cfg["stage1"]["lr"] == 0.1 and cfg["data"]["train_qualities"] == ["raw", "c23"]
    assert cfg["model"]["weights"] is None and cfg["loss"]["kind"] == "supcon" and cfg["train"]["amp"] is True
    assert parse_override("a.b.c=3") == {"a": {"b": {"c": 3}}}


def test_a_yaml_boolean_word_is_kept_for_a_key_of_words_in_overrides_and_files(tmp_path):
    """YAML 1.1 reads off / no / on as booleans and 2024 as a number: a choice or text key takes the word as
    written (issue 27, defect 9: `train.amp_cpu=off` was refused), a boolean key still takes yes / off."""
    cfg = load_config(None, ["train.amp_cpu=off", "name=no", "train.amp=yes", "data.manifest=null"])
    assert (cfg["train"]["amp_cpu"], cfg["name"], cfg["train"]["amp"], cfg["data"]["manifest"]) == ("off", "no", True, None)
    (tmp_path / "words.yaml").write_text("name: 2024\ntrain:\n  amp_cpu: off\n  amp: on\n  progress: no\n")
    cfg = load_config(tmp_path / "words.yaml")
    assert (cfg["name"], cfg["train"]["amp_cpu"], cfg["train"]["amp"], cfg["train"]["progress"]) == ("2024", "off", True, False)
    save_config(cfg, tmp_path / "saved.yaml")  # the resolved config reads back the same
    assert load_config(tmp_path / "saved.yaml") == cfg


@pytest.mark.parametrize("override, message", [
    ("stage1.lrr=0.1", "unknown config key 'stage1.lrr'"),
    ("optimizer.lr=0.1", "unknown config key 'optimizer'"),
    ("stage1.epochs=2.5", "'stage1.epochs' must be an integer"),
    ("train.amp=yes please", "'train.amp' must be true or false"),
    ("loss.kind=triplet", "'loss.kind' must be one of"),
    ("stage1.batch_size=7", "'stage1.batch_size' must be an even number"),
    ("stage1", "expected KEY=VALUE"),
    ("data=3", "'data' is a section"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_unknown_key_in_a_file_names_the_key_and_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stage2:\n  epochs: 3\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown config key 'stage2\.learning_rate'"):
        load_config(path)


def test_base_chain_applies_in_order_and_loops_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("stage1:\n  epochs: 7\n  lr: 0.5\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nstage1:\n  lr: 0.2\n")
    cfg = load_config(tmp_path / "b.yaml", ["stage1.lr=0.3"])
    assert cfg["stage1"]["epochs"] == 7 and cfg["stage1"]["lr"] == 0.3
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg["name"]


def test_paper_setting_and_ablations():
    paper = load_config(CONFIGS / "celebdf.yaml")
    assert (paper["model"]["encoder"], paper["stage1"]["epochs"], paper["stage1"]["batch_size"]) == ("legacy_xception", 100, 128)
    assert (paper["loss"]["temperature"], paper["loss"]["bank_size"], paper["loss"]["negatives"]) == (0.1, 16, 16)
    assert load_config(CONFIGS / "tables" / "table3_instance.yaml")["data"]["pairing"] == "instance"
    fusion = load_config(CONFIGS / "tables" / "table5_pos32_neg32.yaml")["loss"]
    assert (fusion["bank_size"], fusion["negatives"]) == (16, 32)


def test_shipped_configs_resolve_by_name_and_the_demo_is_configs_demo_yaml():
    assert load_config("demo") == load_config(CONFIGS / "demo.yaml") == demo_base()
    assert load_config("celebdf") == load_config(CONFIGS / "celebdf.yaml")
    assert load_config("tables/table3_instance")["data"]["pairing"] == "instance"
    assert is_demo_config(None) and is_demo_config("demo") and is_demo_config(CONFIGS / "demo.yaml")
    assert not is_demo_config("celebdf")
    with pytest.raises(ConfigError, match=r"no shipped config of that name \(shipped: .*celebdf.*demo"):
        load_config("nonesuch")


def test_a_config_without_a_manifest_is_an_error_that_says_how_to_give_one(capsys):
    from rccl.cli.train import main

    assert main(["--config", "celebdf", "--no-eval"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rccl-train: error: --config celebdf: no data.manifest")
    assert "data.manifest=PREP/manifest.jsonl" in err and "--config demo" in err


def test_one_definition_of_the_defaults():
    import rccl.data.dali_loader as dali_loader
    import rccl.data.transforms as transforms
    from rccl.data.layouts import QUALITIES
    from rccl.defaults import DEFAULTS as NEUTRAL
    from rccl.train.config import DEFAULTS

    # the data room reads the one table instead of keeping copies (the ratio once was 1.3333333 against 4 / 3)
    assert DEFAULTS is NEUTRAL
    assert not hasattr(transforms, "AUGMENT_DEFAULTS") and not hasattr(dali_loader, "DALI_DEFAULTS")
    [crop] = [t for t in transforms.train_transform(32).transforms if isinstance(t, v2.RandomResizedCrop)]
    assert tuple(crop.ratio) == tuple(DEFAULTS["data"]["augment"]["ratio"]) == (0.75, 4 / 3)
    assert tuple(DEFAULTS["eval"]["qualities"]) == QUALITIES


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(None, ["stage1.lr=0.25", "model.encoder_kwargs={drop_rate: 0.1}"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(None, base=yaml.safe_load((tmp_path / "config.yaml").read_text())) == cfg
