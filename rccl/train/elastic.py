"""What torchrun's elastic agent tells a worker about its launch: which attempt this is, and an identity of
the job that survives the agent's restarts.

Under `torchrun --max-restarts N` a worker that dies makes the agent stop the group and start every worker
again with the same command line and TORCHELASTIC_RESTART_COUNT one higher. A restarted rccl-train must
then continue its own run (the run folder its first attempt claimed) from the last checkpoint, while a new
job with the same `name` still gets a folder of its own. The job identity written into the folder at the
claim (rccl.run.RunDir.claim) is what tells the two apart:

- TORCHELASTIC_RUN_ID when the user gave one (`--rdzv-id`, which torchrun wants unique per job; a
  `--standalone` launch draws a fresh uuid);
- otherwise (torchrun's static rendezvous names every job "none") the host, process id and start time of
  this worker's parent: the agent, which lives as long as the job and restarts its workers itself.

A restart looks for the newest run folder of its name carrying its job's identity (rccl.train.plan).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Launch:
    restart: int = 0          # TORCHELASTIC_RESTART_COUNT: 0 on a first attempt and outside torchrun
    job: str | None = None    # the job's identity under torchrun (see the module's docstring), else None

    @property
    def restarted(self) -> bool:
        return self.restart > 0


def _process_start(pid: int) -> str:
    """The start time of a process in clock ticks since boot (Linux), "" where /proc cannot say: with the
    pid it names one process over the machine's uptime, even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def launch_from_env() -> Launch:
    """The launch as torchrun's environment describes it (Launch() outside torchrun)."""
    environ = os.environ
    if "TORCHELASTIC_RESTART_COUNT" not in environ:
        return Launch()
    restart = int(environ.get("TORCHELASTIC_RESTART_COUNT") or 0)
    run_id = environ.get("TORCHELASTIC_RUN_ID", "")
    if run_id and run_id != "none":
        return Launch(restart, f"rdzv:{run_id}")
    agent = os.getppid()
    return Launch(restart, f"agent:{socket.gethostname()}:{agent}:{_process_start(agent)}")
