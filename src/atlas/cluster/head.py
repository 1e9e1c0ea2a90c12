"""The head's side of a run (the `snakemake` process): what the Snakefile calls when it is read
(`install`), when the run starts (`on_start`) and when it ends with failed jobs (`on_error`), and
the hint for a stale lock (`lock_hint`)."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from atlas.cluster import slurm
from atlas.cluster.ends import ENDS, local_end
from atlas.cluster.slurm import PLUGIN, RUN, STOP

log = logging.getLogger("snakemake.logging")

# SLURM's commands, which the plugin runs from the head: left alone when the head stops.
SLURM_CLIENTS = frozenset({"sbatch", "squeue", "sacct", "scancel", "scontrol", "sinfo", "sacctmgr"})
HEAD_RECORD = Path(".snakemake/atlas/head.json")
LOCKS = Path(".snakemake/locks")
_STOPPED: dict[str, str] = {}  # "by": the signal that stopped the run


class _FirstRunNote(logging.Filter):
    """Snakemake says "Cannot restore <file>: no backup found." when a job with an update() output
    (a chunk's records) fails on its first run: there was no earlier file to put back. It reads
    like data lost; say what it means."""

    _text = re.compile(r"Cannot restore (.+): no backup found\.?")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and (m := self._text.fullmatch(record.msg.strip())):
            record.msg = f"{m.group(1)}: no earlier version to restore (the job's first run): nothing was lost"
            record.args = ()
        return True


def install(workflow: Any) -> None:
    """In the head, while the Snakefile is read: patch the SLURM plugin (when Snakemake has loaded
    it), make Snakemake's note on a first run's failure say what it means, and explain a lock
    that a killed run left."""
    if not _is_head(workflow) or RUN.get("installed"):
        return
    RUN["installed"] = "yes"
    plugin = sys.modules.get(PLUGIN)
    if plugin is not None and not getattr(plugin, "_atlas_patched", False):
        slurm.patch(plugin)
    if not any(isinstance(f, _FirstRunNote) for f in log.filters):
        log.addFilter(_FirstRunNote())
    hint = lock_hint()
    if hint:
        log.warning(hint)
        # Again after Snakemake's own paragraph on the lock, the last thing it prints, unless
        # this run got the lock after all (a dry run does without).
        atexit.register(lambda: RUN.get("started") or print(hint, file=sys.stderr))


def _is_head(workflow: Any) -> bool:
    mode = getattr(workflow, "exec_mode", None)
    return str(getattr(mode, "name", mode)).lower() == "default"


def rerun_command(extra: Iterable[str] = ()) -> str:
    """The command this head runs, as the user would type it again."""
    prefix = "uv run " if os.environ.get("UV") else ""
    return prefix + shlex.join(["snakemake", *sys.argv[1:], *extra])


def on_start(workflow: Any) -> None:
    """When the run starts (the lock is held): note who holds the lock, make SIGTERM stop the run
    as Ctrl-C does, and warn about jobs of an earlier run of this folder that still run."""
    RUN["started"] = "yes"
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "slurm_run_id": RUN.get("id"),
        "command": rerun_command(),
    }
    from atlas.io import write_text

    with contextlib.suppress(OSError):
        write_text(HEAD_RECORD, json.dumps(record, indent=1))
    _stop_on_sigterm()
    if RUN.get("id"):
        others = [j for j in folder_jobs(Path.cwd()) if j["name"] != RUN["id"]]
        if others:
            log.warning(
                f"Atlas: {len(others)} SLURM job(s) of an earlier run of this folder still run "
                f"({_ids(others)}) and write chunks this run may redo: cancel them with `scancel {_ids(others, ' ')}`"
            )


def _ids(jobs: list[dict[str, str]], sep: str = ", ") -> str:
    return sep.join(j["id"] for j in jobs)


def _stop_on_sigterm() -> None:
    """Snakemake stops on SIGTERM only after every running job has ended (its jobs go on); here
    SIGTERM stops the run as Ctrl-C does: the SLURM jobs are cancelled (scancel), local jobs get
    SIGTERM, and the run ends at once, failed."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough; the stop is under way
        _STOPPED["by"] = "SIGTERM"
        log.warning("Atlas: SIGTERM: stopping the run and cancelling its running jobs (as Ctrl-C does)")
        STOP.set()
        for pid, name in descendants(os.getpid()):
            if name not in SLURM_CLIENTS:  # an sbatch cut short could leave a job nobody knows
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def descendants(pid: int) -> list[tuple[int, str]]:
    """The processes below `pid` (Linux /proc) with their names, children first."""
    parent: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (name) state ppid ...": the name may hold spaces and parentheses
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        parent[int(entry.name)] = (int(stat[stat.rfind(")") + 1 :].split()[1]), name)
    out: list[tuple[int, str]] = []
    frontier = {pid}
    while frontier:
        children = [(p, name) for p, (pp, name) in parent.items() if pp in frontier]
        out.extend(children)
        frontier = {p for p, _ in children}
    return out


def folder_jobs(folder: Path) -> list[dict[str, str]]:
    """This user's queued and running SLURM jobs whose working folder is `folder` (every job of a
    Snakemake run is submitted with -D <the run's folder>)."""
    try:
        out = subprocess.run(
            ["squeue", "--me", "-h", "-o", "%i|%j|%T|%k|%Z"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    here = os.path.realpath(folder)
    jobs = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == 5 and os.path.realpath(parts[4]) == here:
            jobs.append(dict(zip(("id", "name", "state", "comment", "folder"), parts, strict=True)))
    return jobs


def on_error(workflow: Any) -> None:
    """At the end of a run that failed: each failed job on one line, and the command to rerun."""
    scheduler = getattr(workflow, "scheduler", None)
    failed = sorted(getattr(scheduler, "failed", ()) or (), key=lambda j: str(j.name))
    ends = [ENDS.get(job.jobid) or local_end(job) for job in failed]
    if ends:
        log.error(f"Atlas: {len(ends)} job(s) failed:\n" + "\n".join(f"  {end.line()}" for end in ends))
        what = "only these jobs and what depends on them"
    else:
        by = f" by {_STOPPED['by']}, its running jobs cancelled," if _STOPPED.get("by") else ""
        log.error(f"Atlas: the run was stopped{by} before its end")
        what = "only what is missing"
    log.error(f"Atlas: to finish, run the same command again; it redoes {what}: {rerun_command()}")


def _alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return "snakemake" in cmdline


def lock_hint(argv: list[str] | None = None) -> str | None:
    """While the Snakefile is read: the one-line hint for a lock that a killed run left (None
    when there is no lock). With --unlock: the SLURM jobs of that run that still run, if any."""
    if not LOCKS.is_dir() or not any(LOCKS.iterdir()):
        return None
    argv = sys.argv[1:] if argv is None else argv
    try:
        head = json.loads(HEAD_RECORD.read_text())
    except (OSError, ValueError):
        head = {}
    pid, host, run_id = head.get("pid"), head.get("host"), head.get("slurm_run_id")
    here = host == socket.gethostname()
    if here and isinstance(pid, int) and pid != os.getpid() and _alive(pid):
        return (
            f"Atlas: the run started {head.get('started')} (pid {pid}) holds this folder's lock and is running: "
            f"wait for it, or stop it with `kill {pid}`"
        )
    # Only a SLURM run's jobs are looked for (squeue may wait long where no controller answers).
    jobs = [j for j in folder_jobs(Path.cwd()) if j["name"] == run_id] if run_id else []
    if "--unlock" in argv:
        if not jobs:
            return None
        return (
            f"Atlas: {len(jobs)} SLURM job(s) of the run that held the lock still run ({_ids(jobs)}): cancel them "
            f"with `scancel --name {run_id}` before the next run, or it redoes their chunks beside them"
        )
    if jobs:
        orphans = (
            f"{len(jobs)} of its SLURM jobs still run ({_ids(jobs)}): cancel them with `scancel --name {run_id}` "
            "(or let them end), then "
        )
    elif run_id:
        orphans = f"none of its SLURM jobs runs any more (`squeue --me --name {run_id}`), so "
    else:
        orphans = (
            "cancel any of its SLURM jobs that still run (`squeue --me -o '%i %j %Z'` shows each job's folder), then "
        )
    if here:
        who = f"Atlas: the run that locked this folder (started {head.get('started')}, pid {pid}) was killed: "
    elif head:
        who = f"Atlas: the run that locked this folder was started {head.get('started')} on {host} (pid {pid}); if it is gone, "
    else:
        who = "Atlas: another run holds this folder's lock, or one that was killed left it; if none runs, "
    return (
        f"{who}{orphans}`{rerun_command(['--unlock'])}` removes the lock, "
        "and the same command without --unlock redoes only what is missing"
    )
