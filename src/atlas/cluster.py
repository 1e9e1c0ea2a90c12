"""How a run ends when the cluster fails: what the workflow's head (the Snakemake process that
submits the jobs) does about cancelled, killed and timed-out jobs, a controller or accounting
database that does not answer, SIGTERM, and a lock left behind by a killed head.

The Snakefile calls `install` while it is read (in the head only), `on_start` when the run
starts and `on_error` when it ends with failed jobs; `lock_hint` explains a stale lock. Nothing
here runs inside a job. docs/operations.md describes each fault as the user sees it.

Under `--profile slurm` the SLURM executor plugin (snakemake-executor-plugin-slurm 2.8.0) submits
and watches the jobs. `install` wraps five of its methods; each wrapper keeps the plugin's own
behaviour where that is right and is harmless where a later version already does what it adds:

- a job's state as `sacct` prints it is cut to its first word: a cancelled job is `CANCELLED by
  <uid>`, which the plugin does not recognise as an end, so the head waited for it forever;
- a job still `PREEMPTED` at the next poll is over (SLURM requeues a job it will run again as
  PENDING): the plugin waited for it forever too;
- status polls: the plugin starts them `slurm-init-seconds-before-status-checks` apart, adds 10 s
  after each poll that saw no job end and goes up to 180 s; here they are at most
  `STATUS_POLL_MAX_S` apart, which bounds how late a job's end is seen. Between polls the head
  checks every second whether it is stopping, instead of sleeping out the interval;
- a poll whose every `sacct` attempt failed (the accounting database restarting) made the plugin
  forget the jobs it asked about, and the head waited for them forever: they are kept and asked
  about at the next poll;
- an `sbatch` that fails because the controller does not answer (restarting, overloaded) failed
  the job at once, spending its retry: it is tried again after `SUBMIT_WAITS_S` before it counts.

Each job that fails is reported on one line (`JobEnd.line`): the rule, the chunk folder, the SLURM
job, its state and the reason, and the job's log; the end of the run lists them again with the
command that redoes them (`on_error`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import pwd
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("snakemake.logging")  # Snakemake's own logger: its console and log file

PLUGIN = "snakemake_executor_plugin_slurm"
# A job's end is seen at most this long after SLURM records it (one status poll).
STATUS_POLL_MAX_S = 60
# Waits between the attempts of an sbatch that failed because the controller did not answer:
# with sbatch's own 9 s of trying per attempt, about 2 minutes before the submission counts as
# failed (and the profile's retry, if any, starts over).
SUBMIT_WAITS_S = (5, 10, 20, 40)
# sbatch's messages for a controller that cannot be reached or is too busy: worth trying again.
TRANSIENT_SUBMIT_ERRORS = (
    "unable to contact slurm controller",
    "socket timed out",
    "temporarily unable",
    "transport endpoint is not connected",
    "connection refused",
    "zero bytes were transmitted or received",
    "communication connection failure",
    "slurm_persist_conn_open",
)
# SLURM's commands, which the plugin runs from the head: left alone when the head stops.
SLURM_CLIENTS = frozenset({"sbatch", "squeue", "sacct", "scancel", "scontrol", "sinfo", "sacctmgr"})
HEAD_RECORD = Path(".snakemake/atlas/head.json")
LOCKS = Path(".snakemake/locks")

# What the atlas command prints last when it stops on its own (atlas.cli.main).
_ATLAS_LAST_LINE = re.compile(r"^atlas [a-z-]+: (error: |interrupted|terminated)")


@dataclass
class JobEnd:
    """How one job ended badly, as the head learned it."""

    rule: str
    chunk: str | None  # a generation job's chunk folder
    slurm_id: str | None
    state: str  # the SLURM state (CANCELLED, TIMEOUT, ...), "sbatch failed", or "failed" (local)
    reason: str
    log: str | None  # the job's own log (atlas's output)
    slurm_log: str | None

    def line(self) -> str:
        where = f" (chunk {self.chunk})" if self.chunk else ""
        job = f"SLURM job {self.slurm_id} " if self.slurm_id else ""
        logs = ", ".join(p for p in (self.log, self.slurm_log) if p)
        return f"{self.rule}{where}: {job}{self.state}: {self.reason}" + (f"; log {logs}" if logs else "")


_ENDS: dict[int, JobEnd] = {}  # Snakemake job id -> how its last attempt ended
_RUN: dict[str, str] = {}  # this head's SLURM run id ("id", once its executor exists); "started"
_STOP = threading.Event()  # set when the head stops: no more waiting to submit again
_SUBMIT = threading.local()  # per submission thread: the sbatch failures held back
_POLL: dict[str, Any] = {"ok": None, "preempted": set(), "warned": False}
_STOPPED: dict[str, str] = {}  # "by": the signal that stopped the run


# --------------------------------------------------------------------------------------------
# The SLURM plugin's status checks and submissions


def normalise_states(states: dict[str, str], preempted: set[str]) -> dict[str, str]:
    """`sacct`'s states as the plugin compares them: the first word (`CANCELLED by 0` ->
    `CANCELLED`); a job `PREEMPTED` at two polls in a row -> `FAILED` (it is over; the report
    names the real state). `preempted` holds the jobs seen preempted at the previous poll."""
    out = {}
    now = set()
    for job, state in states.items():
        word = state.split()[0] if state.split() else state
        if word == "PREEMPTED":
            now.add(job)
            if job in preempted:
                word = "FAILED"
        out[job] = word
    preempted.clear()
    preempted.update(now)
    return out


def is_transient_submit_error(message: str) -> bool:
    return any(text in message.lower() for text in TRANSIENT_SUBMIT_ERRORS)


def _patch_slurm(plugin: Any) -> None:
    executor = plugin.Executor
    query = plugin.query_job_status

    async def query_job_status(command: str, logger: Any) -> tuple[dict[str, str] | None, float | None]:
        states, seconds = await query(command, logger)
        _POLL["ok"] = states is not None
        if states is None:
            return None, seconds
        _POLL["raw"] = dict(states)
        return normalise_states(states, _POLL["preempted"]), seconds

    check = executor.check_active_jobs

    async def check_active_jobs(self: Any, active_jobs: list[Any]) -> AsyncIterator[Any]:
        _POLL["ok"] = None
        kept = []
        async for job in check(self, active_jobs):
            kept.append(job)
            yield job
        if _POLL["ok"] is False:
            # The plugin reported none of them and dropped them all: keep them for the next poll.
            if not _POLL["warned"]:
                log.warning(
                    f"Atlas: sacct does not answer: the {len(active_jobs)} running job(s) are asked about again "
                    f"at the next poll (at most {STATUS_POLL_MAX_S} s)"
                )
                _POLL["warned"] = True
            for job in active_jobs:
                if job not in kept:
                    yield job
        elif _POLL["ok"]:
            _POLL["warned"] = False
        if (self.next_seconds_between_status_checks or 0) > STATUS_POLL_MAX_S:
            self.next_seconds_between_status_checks = STATUS_POLL_MAX_S

    report = executor.report_job_error

    def report_job_error(self: Any, job_info: Any, msg: str | None = None, **kwargs: Any) -> Any:
        with contextlib.suppress(Exception):  # the report must never stop the plugin's own
            end = slurm_end(job_info, msg)
            _ENDS[job_info.job.jobid] = end
            log.error("Atlas: job failed: " + end.line())
        return report(self, job_info, msg=msg, **kwargs)

    report_threadsafe = executor._report_job_error_threadsafe

    def _report_job_error_threadsafe(self: Any, job_info: Any, msg: str) -> Any:
        held = getattr(_SUBMIT, "held", None)
        if held is not None and msg.startswith("SLURM sbatch failed") and is_transient_submit_error(msg):
            held.append((job_info, msg))
            return None
        return report_threadsafe(self, job_info, msg)

    run_job = executor.run_job

    def run_job_again_if_transient(self: Any, job: Any) -> None:
        for wait in (*SUBMIT_WAITS_S, None):
            held: list[tuple[Any, str]] = []
            _SUBMIT.held = held
            try:
                run_job(self, job)
            finally:
                _SUBMIT.held = None
            if not held:
                return
            if wait is None or _STOP.is_set():
                report_threadsafe(self, *held[-1])
                return
            log.warning(f"Atlas: sbatch for {job.name} failed ({_sbatch_error(held[-1][1])}); trying again in {wait} s")
            _STOP.wait(wait)

    async def sleep(self: Any) -> None:
        # As RemoteExecutor.sleep, but looking every second whether the head is stopping.
        end = time.monotonic() + float(self.next_seconds_between_status_checks or 0)
        while self.wait and (left := end - time.monotonic()) > 0:
            await _asleep(min(1.0, left))

    post_init = executor.__post_init__

    def __post_init__(self: Any, *args: Any, **kwargs: Any) -> None:
        _STOP.clear()
        post_init(self, *args, **kwargs)
        _RUN["id"] = str(self.run_uuid)

    cancel = executor.cancel

    def cancel_(self: Any) -> None:
        _STOP.set()
        cancel(self)

    shutdown = executor.shutdown

    def shutdown_(self: Any) -> None:
        _STOP.set()
        shutdown(self)

    plugin.query_job_status = query_job_status
    executor.check_active_jobs = check_active_jobs
    executor.report_job_error = report_job_error
    executor._report_job_error_threadsafe = _report_job_error_threadsafe
    executor.run_job = run_job_again_if_transient
    executor.sleep = sleep
    executor.__post_init__ = __post_init__
    executor.cancel = cancel_
    executor.shutdown = shutdown_
    plugin._atlas_patched = True


async def _asleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def _sbatch_error(msg: str) -> str:
    m = re.search(r"The error message was '([^']*)'", msg)
    text = m.group(1) if m else msg
    return " ".join(text.split())[:200]


# --------------------------------------------------------------------------------------------
# Why a job failed


def _sacct_row(slurm_id: str) -> dict[str, str]:
    fields = ["State", "ExitCode", "Timelimit", "ReqMem", "NodeList"]
    try:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", slurm_id, "-o", ",".join(fields)],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    lines = [line for line in out.splitlines() if line.strip()]
    return dict(zip(fields, lines[0].split("|"), strict=False)) if lines else {}


def _user(uid: str) -> str:
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, ValueError):
        return f"uid {uid}"


def log_reason(path: str | None) -> str:
    """What a job's own log says about its end: atlas's last message, or that there is none."""
    if not path or not os.path.isfile(path):
        return "its log was not written: it failed before its command started (see the SLURM log)"
    with open(path, "rb") as fh:
        fh.seek(max(0, os.path.getsize(path) - 4096))
        lines = [line.strip() for line in fh.read().decode(errors="replace").splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if _ATLAS_LAST_LINE.match(last):
        return last
    ends = f"; its log ends: {last[:160]}" if last else "; its log is empty"
    return (
        "the command ended without a message: killed (SIGKILL: the out-of-memory killer or kill -9) or crashed" + ends
    )


def state_reason(state: str, row: dict[str, str], job_log: str | None, method: str | None) -> str:
    """One clause on why a job in this SLURM state ended; `row` is its sacct row."""
    key = f"methods.{method}.resources" if method else "resources"
    if state == "CANCELLED":
        m = re.search(r"by (\d+)", row.get("State", ""))
        who = f" by {_user(m.group(1))}" if m else ""
        return f"cancelled{who} (scancel, an administrator, or preemption)"
    if state == "TIMEOUT":
        limit = row.get("Timelimit") or "its limit"
        return f"reached its time limit ({limit}); raise runtime ({key}.runtime, minutes)"
    if state == "OUT_OF_MEMORY":
        mem = row.get("ReqMem") or "its memory"
        return f"ran out of its memory ({mem}); raise mem_mb ({key}.mem_mb)"
    if state == "NODE_FAIL":
        return f"its node {row.get('NodeList', '')} failed".replace("  ", " ")
    if state == "PREEMPTED":
        return "preempted by a job of higher priority and not requeued"
    if state in ("BOOT_FAIL", "DEADLINE"):
        return {"BOOT_FAIL": "its node failed to boot", "DEADLINE": "it reached its deadline"}[state]
    return log_reason(job_log)


def _chunk_folder(job: Any) -> str | None:
    if not str(job.name).startswith("generate_"):
        return None
    for path in job.output:
        if str(path).endswith("/records.parquet"):
            return os.path.dirname(str(path))
    return None


def _method(job: Any) -> str | None:
    m = re.match(r"generate_([a-z]+)_", str(job.name))
    return m.group(1) if m else None


def _job_log(job: Any) -> str | None:
    logs = [str(p) for p in job.log] if job.log else []
    return logs[0] if logs else None


def slurm_end(job_info: Any, msg: str | None) -> JobEnd:
    """A SLURM job's end from what the plugin reports and `sacct` says."""
    job = job_info.job
    slurm_id = job_info.external_jobid
    aux = job_info.aux or {}
    slurm_log = str(aux["slurm_logfile"]) if aux.get("slurm_logfile") else None
    if slurm_id is None:
        reason = _sbatch_error(msg or "") or "sbatch failed"
        return JobEnd(str(job.name), _chunk_folder(job), None, "sbatch failed", reason, _job_log(job), None)
    row = _sacct_row(str(slurm_id))
    raw = (row.get("State") or (_POLL.get("raw") or {}).get(str(slurm_id)) or "").strip()
    state = raw.split()[0] if raw else ""
    if not state:
        m = re.search(r"SLURM status is: '([A-Z_]+)'", msg or "")
        state = m.group(1) if m else "FAILED"
    reason = state_reason(state, row, _job_log(job), _method(job))
    exit_code = row.get("ExitCode", "")
    if state == "FAILED" and exit_code and exit_code not in ("0:0", "1:0"):
        reason += f" (exit code {exit_code})"
    return JobEnd(str(job.name), _chunk_folder(job), str(slurm_id), state, reason, _job_log(job), slurm_log)


def local_end(job: Any) -> JobEnd:
    return JobEnd(str(job.name), _chunk_folder(job), None, "failed", log_reason(_job_log(job)), _job_log(job), None)


# --------------------------------------------------------------------------------------------
# The head: install, start, error, lock


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
    if not _is_head(workflow):
        return
    plugin = sys.modules.get(PLUGIN)
    if plugin is not None and not getattr(plugin, "_atlas_patched", False):
        _patch_slurm(plugin)
    if not any(isinstance(f, _FirstRunNote) for f in log.filters):
        log.addFilter(_FirstRunNote())
    hint = lock_hint()
    if hint:
        log.warning(hint)
        # Again after Snakemake's own paragraph on the lock, the last thing it prints, unless
        # this run got the lock after all (a dry run does without).
        atexit.register(lambda: _RUN.get("started") or print(hint, file=sys.stderr))


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
    _RUN["started"] = "yes"
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "slurm_run_id": _RUN.get("id"),
        "command": rerun_command(),
    }
    from atlas.io import write_text

    with contextlib.suppress(OSError):
        write_text(HEAD_RECORD, json.dumps(record, indent=1))
    _stop_on_sigterm()
    if _RUN.get("id"):
        others = [j for j in folder_jobs(Path.cwd()) if j["name"] != _RUN["id"]]
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
        _STOP.set()
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
    ends = [_ENDS.get(job.jobid) or local_end(job) for job in failed]
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
