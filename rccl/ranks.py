"""What the processes of a torchrun job agree on, for every room that runs under it (training, and the
evaluation after training): rank 0's value on every rank, and one rank's error raised on every rank, so that
no rank is left waiting in a collective the others never reach. Outside a process group (or with one
process) each function is its plain single-process self. The process group itself is training's
(rccl.train.distributed); these functions only use the one that exists.
"""
from __future__ import annotations

import pickle
from typing import Callable, TypeVar

import torch.distributed as dist

T = TypeVar("T")


def active() -> bool:
    """A process group of more than one process exists."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of processes): (0, 1) outside a process group."""
    return (dist.get_rank(), dist.get_world_size()) if active() else (0, 1)


def _sendable(error: BaseException) -> BaseException:
    """The exception as it can cross to the other ranks (pickled); one that cannot is sent as its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def all_gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank ([obj] in one process)."""
    if not active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def from_main(fn: Callable[[], T]) -> T:
    """fn() run on rank 0 alone, its value broadcast to every rank; an exception it raises is raised on
    every rank (the same class and message), so no rank is left waiting in a collective that the others
    never reach. Outside a process group: fn()."""
    if not active():
        return fn()
    box: list = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = (True, fn())
        except Exception as e:
            box[0] = (False, _sendable(e))
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def on_every_rank(fn: Callable[[], T]) -> T:
    """fn() run on every rank; if it raised on any rank, every rank raises the first failing rank's
    exception (its own where it failed), so one rank's error does not leave the others waiting later."""
    if not active():
        return fn()
    try:
        value, error = fn(), None
    except Exception as e:
        value, error = None, e
    errors: list = [None] * dist.get_world_size()
    dist.all_gather_object(errors, None if error is None else _sendable(error))
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise error if error is not None and errors.index(first) == dist.get_rank() else first
    return value


