"""The one atomic writer: the umask's mode, the old file kept on failure, no temporary file left behind."""
from __future__ import annotations

import os

import pytest

from rccl.errors import RcclError
from rccl.fileio import append_json_line, atomic_write, torch_save, write_json, write_text


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_mode_follows_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    for name, write in (("a.txt", lambda p: write_text(p, "x")), ("b.json", lambda p: write_json(p, {"a": 1})),
                        ("c.pt", lambda p: torch_save(p, {"a": 1}))):
        write(tmp_path / name)
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    write_text(target, "old")
    with pytest.raises(ZeroDivisionError):
        with atomic_write(target) as f:
            f.write("half of the new")
            1 / 0
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


def test_creates_the_parent_and_replaces(tmp_path):
    target = tmp_path / "a" / "b" / "f.bin"
    with atomic_write(target, "wb") as f:
        f.write(b"1")
    with atomic_write(target, "wb") as f:
        f.write(b"22")
    assert target.read_bytes() == b"22"


def test_json_lines_are_appended_and_keep_the_old_lines(tmp_path):
    import json

    target = tmp_path / "runs.jsonl"
    append_json_line(target, {"run": 1})
    target.write_text(target.read_text() + '{"run": 2}')  # a file another tool left without its last newline
    append_json_line(target, {"run": 3, "name": "ü"})
    assert [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()] == [
        {"run": 1}, {"run": 2}, {"run": 3, "name": "ü"}]


def test_bad_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "f", "a"):
            pass


def test_every_rccl_error_shares_the_base():
    from rccl.data.dali_loader import DaliDataError
    from rccl.data.dali_video import DaliUnavailable
    from rccl.data.layouts import LayoutError
    from rccl.data.manifest import ManifestError
    from rccl.train.config import ConfigError

    for cls in (DaliDataError, DaliUnavailable, LayoutError, ManifestError, ConfigError):
        assert issubclass(cls, RcclError), cls
    assert issubclass(ConfigError, ValueError)  # callers catching the builtin keep working
