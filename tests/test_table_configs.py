"""configs/tables: one file per row of the paper's Tables 2-6, on the bases docs/method.md argues for; each
resolves through rccl.train.config and builds its loss."""
from pathlib import Path

import pytest

from rccl.loss import RealCentricLoss
from rccl.train.config import ConfigError, load_config

TABLES = Path(__file__).resolve().parents[1] / "configs" / "tables"
ROWS = ["table2_xception", "table2_supcon", "table2_ours",
        "table3_instance", "table3_temporal", "table3_semantic", "table3_class",
        "table4_linear", "table4_linear_smooth", "table4_smooth",
        "table5_supcon", "table5_pos32", "table5_pos32_neg16", "table5_pos32_neg32",
        "table6_supcon", "table6_as_fakes", "table6_as_negatives"]
LOSS_KEYS = ("kind", "fusion", "bank_size", "negatives", "neighbors", "linear_neighbors", "mixed_as", "margin")


def _row(name):
    cfg = load_config(TABLES / f"{name}.yaml")
    return cfg["data"]["pairing"], tuple(cfg["loss"][k] for k in LOSS_KEYS)


def test_the_folder_holds_exactly_the_rows():
    assert sorted(p.stem for p in TABLES.glob("*.yaml")) == sorted(ROWS)


@pytest.mark.parametrize("name", ROWS)
def test_every_row_resolves_and_builds_its_loss(name):
    cfg = load_config(TABLES / f"{name}.yaml")
    assert cfg["name"] == name.replace("_", "-")
    assert cfg["model"]["encoder"] == "legacy_xception" and cfg["data"]["train_qualities"] == ["raw"]
    if cfg["loss"]["kind"] != "ce":  # the baseline "Xception" keeps configs/ce.yaml's 20 epochs
        assert cfg["stage1"]["epochs"] == 100
        assert isinstance(RealCentricLoss.from_config(cfg["loss"], cfg["model"]["proj_dim"]), RealCentricLoss)


def test_the_rows_vary_what_their_tables_vary():
    supcon = ("instance", ("supcon", "smooth", 16, 16, 2, 4, "negatives", 0.2))
    for name in ("table2_supcon", "table3_instance", "table5_supcon", "table6_supcon"):
        assert _row(name) == supcon
    assert _row("table2_ours") == ("semantic", ("rccl", "smooth", 16, 16, 2, 4, "negatives", 0.2))
    assert load_config(TABLES / "table2_xception.yaml")["loss"]["kind"] == "ce"
    for name, pairing in (("table3_temporal", "temporal"), ("table3_semantic", "semantic"), ("table3_class", "class")):
        assert _row(name) == (pairing, supcon[1])
    # Table 4 "Smooth" = Table 5 "+32 pos., 16 neg." = Table 6 "As negatives": one setting on instance pairing
    smooth = ("instance", ("rccl", "smooth", 16, 16, 2, 4, "negatives", 0.2))
    for name in ("table4_smooth", "table5_pos32_neg16", "table6_as_negatives"):
        assert _row(name) == smooth
    assert _row("table4_linear") == ("instance", ("rccl", "linear", 4, 16, 2, 4, "negatives", 0.2))
    assert _row("table4_linear_smooth") == ("instance", ("rccl", "linear_smooth", 4, 16, 2, 4, "negatives", 0.2))
    assert _row("table5_pos32") == ("instance", ("rccl", "smooth", 16, 0, 2, 4, "negatives", 0.2))
    assert _row("table5_pos32_neg32") == ("instance", ("rccl", "smooth", 16, 32, 2, 4, "negatives", 0.2))
    assert _row("table6_as_fakes") == ("instance", ("rccl", "smooth", 16, 16, 2, 4, "fakes", 0.2))


def test_paper_literal_reading_of_section_4_1():
    loss = load_config(TABLES.parent / "paper_literal.yaml")["loss"]
    assert (loss["bank_size"], loss["neighbors"], loss["beta"], loss["fold"]) == (32, 4, [2, 4], False)


@pytest.mark.parametrize("override, match", [("loss.alpha=0.5", "replaced by 'loss.beta'"),
                                             ("loss.beta=[0.5]", "loss.beta"), ("loss.beta=[0.5, 0]", "loss.beta"),
                                             ("loss.fusion=mean", "loss.fusion"), ("loss.mixed_as=both", "loss.mixed_as"),
                                             ("loss.fold=1", "loss.fold"), ("loss.linear_neighbors=-1", "linear_neighbors")])
def test_bad_loss_keys_are_named(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])
