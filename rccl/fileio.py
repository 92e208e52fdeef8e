"""The one atomic writer: every file rccl writes goes through `atomic_write`.

A reader, or a process killed mid-write, sees the old file or the new one, never half of one: the bytes go
to a temporary file beside the target (same file system, so the rename is atomic), are fsync'ed, get the
mode a plain `open()` would give under the current umask (mkstemp's own files are owner-only), and then
`os.replace` puts them in place. On any failure, KeyboardInterrupt included, the temporary file is removed
and the target is left as it was.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any, Iterator


def _umask() -> int:
    # os.umask can only be read by setting it; set it back at once (not thread-safe, but cheap and rare)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open(path, "w")` would give a new file under the current umask (0644 under 022)."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8",
                 newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing ("w" text or "wb" binary); on a clean exit of the
    block it replaces `path`. The parent folder is created if needed."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        if mode == "wb":
            f = os.fdopen(fd, "wb")
        else:
            f = os.fdopen(fd, "w", encoding=encoding, newline=newline)
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def link_replace(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Make `target` another name of the file `source` (written once, two names): a hard link made beside
    the target, then os.replace, so a reader sees the old target or the new one. Where the file system has
    no hard links, a copy of the bytes through the atomic writer."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.link.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        write_bytes(target, Path(source).read_bytes())
        return
    try:
        os.replace(tmp, target)
    finally:  # gone after the replace; left only when it failed
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_new_text(path: str | os.PathLike, text: str) -> None:
    """Create `path` holding `text`, only if no file of that name exists (FileExistsError otherwise): the
    text is written whole under a temporary name (the atomic writer), which is then hard-linked under the
    name (os.link never replaces), so the file appears whole and two writers racing for one name cannot
    both win. Where the file system has no hard links, an exclusive create (O_EXCL) written in place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.new")
    write_text(tmp, text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise  # the name is taken: that is the answer, not a file system without links
    except OSError:
        with open(path, "x", encoding="utf-8") as f:
            f.write(text)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """JSON with a trailing newline; keys kept in insertion order."""
    write_text(path, json.dumps(obj, indent=indent) + "\n")


def write_lines(path: str | os.PathLike, lines) -> None:
    """Each item of `lines` (strings without their newline) on a line of its own."""
    with atomic_write(path, "w") as f:
        for line in lines:
            f.write(line + "\n")


def append_json_line(path: str | os.PathLike, obj: Any) -> None:
    """`obj` as one more JSON line at the end of `path` (created if missing), the whole file rewritten
    atomically: a crash leaves the old lines or the new file, never a torn last line."""
    path = os.fspath(path)
    old = open(path, encoding="utf-8").read() if os.path.isfile(path) else ""
    if old and not old.endswith("\n"):
        old += "\n"
    write_text(path, old + json.dumps(obj) + "\n")


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    """torch.save through the atomic writer (serialised in memory first: torch wants a seekable file)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())
