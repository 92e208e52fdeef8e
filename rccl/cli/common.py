"""What every rccl command shares: the error convention, the common flags and the logging set-up.

An `RcclError` (a bad input, named in its message) prints `PROG: error: MESSAGE` and exits 2, as argparse
does for a bad flag; anything else is a bug and keeps its traceback. `--traceback` shows the traceback
of an RcclError too (for a bug report). Diagnostics go through the `logging` module to stderr (`-v` for
debug messages, `-q` for warnings only); results go to stdout.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from rccl.errors import RcclError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def add_common_arguments(p: argparse.ArgumentParser, *, device_help: str | None = None) -> argparse.ArgumentParser:
    """--device, --no-progress, -v/-q, --traceback: every command has them. `device_help` says what
    --device means for a command that does not run a model."""
    p.add_argument("--device", default=None,
                   help=device_help or "torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    g.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    return p


def setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if getattr(args, "verbose", False) else (
        logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    root = logging.getLogger("rccl")
    root.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        root.addHandler(_StderrHandler())
    root.propagate = True  # pytest's caplog and a caller's own handlers still see the records


class _StderrHandler(logging.Handler):
    """The message alone, to whatever sys.stderr is at the time (not the stream of the first call)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


def error(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def refuse_accelerator(prog: str, args: argparse.Namespace, libraries: str) -> int | None:
    """For a command that computes on the CPU only: the exit status of its error when --device names
    anything but cpu or auto, else None."""
    if (args.device or "auto").split(":")[0] in ("auto", "cpu"):
        return None
    return error(prog, f"--device {args.device}: {prog} computes on the CPU only ({libraries}); use --device cpu "
                       f"or leave it out")


def run_command(prog: str, args: argparse.Namespace, body: Callable[[], int],
                interrupted: str = "interrupted") -> int:
    """Run `body()` under the shared conventions; returns the exit status."""
    setup_logging(args)
    try:
        return body()
    except RcclError as e:
        if getattr(args, "traceback", False):
            raise
        return error(prog, str(e))
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
