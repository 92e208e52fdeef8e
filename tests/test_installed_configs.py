"""The shipped configs resolve by name from an installed (non-editable) copy: pyproject's data-files, as
setuptools reads them, are installed into a temporary prefix, the checkout's configs/ is hidden, and every
config (tables/ and ablations/ included) loads by name from the prefix alone, equal to the checkout's."""
import shutil
from pathlib import Path

from setuptools.config.pyprojecttoml import read_configuration

import rccl.train.config as config
from rccl.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def _install_data_files(prefix: Path) -> list[str]:
    """What `pip install .` does with [tool.setuptools.data-files]: each file into PREFIX/TARGET."""
    entries = read_configuration(ROOT / "pyproject.toml")["tool"]["setuptools"]["data-files"]
    installed = []
    for target, files in (entries.items() if isinstance(entries, dict) else entries):
        for name in files:
            source = ROOT / name
            (prefix / target).mkdir(parents=True, exist_ok=True)
            shutil.copy(source, prefix / target / source.name)
            installed.append(f"{target}/{source.name}")
    return installed


def test_every_shipped_config_is_installed_and_resolves_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # setuptools expands the globs from the project root
    installed = _install_data_files(tmp_path)
    shipped = sorted(p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml"))
    assert sorted(p.removeprefix("share/rccl/configs/") for p in installed) == shipped

    expected = {name: load_config(name.removesuffix(".yaml")) for name in shipped}  # from the checkout
    monkeypatch.setattr(config, "CHECKOUT_CONFIGS", tmp_path / "no-checkout")
    monkeypatch.setattr(config, "installed_configs", lambda: tmp_path / "share" / "rccl" / "configs")
    assert config.config_dirs() == [tmp_path / "share" / "rccl" / "configs"]
    for name in shipped:
        assert load_config(name.removesuffix(".yaml")) == expected[name], name
    assert load_config("tables/table2_ours")["name"]
