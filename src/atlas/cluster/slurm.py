"""The SLURM executor plugin (snakemake-executor-plugin-slurm 2.8.0) as the head runs it: its
status query and some of its methods wrapped (`patch`), each keeping the plugin's behaviour where
that is right, and harmless where a later version already does what it adds (the package's
docstring lists them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from atlas.cluster.ends import ENDS, sbatch_error, slurm_end

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
RUN: dict[str, str] = {}  # this head's SLURM run id ("id", once its executor exists); "started"
STOP = threading.Event()  # set when the head stops: no more waiting to submit again
_SUBMIT = threading.local()  # per submission thread: the sbatch failures held back
POLL: dict[str, Any] = {"ok": None, "preempted": set(), "warned": False}


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


def patch(plugin: Any) -> None:
    """Wrap the plugin's methods (module docstring); `plugin` is its imported module."""
    executor = plugin.Executor
    query = plugin.query_job_status

    async def query_job_status(command: str, logger: Any) -> tuple[dict[str, str] | None, float | None]:
        states, seconds = await query(command, logger)
        POLL["ok"] = states is not None
        if states is None:
            return None, seconds
        POLL["raw"] = dict(states)
        return normalise_states(states, POLL["preempted"]), seconds

    check = executor.check_active_jobs

    async def check_active_jobs(self: Any, active_jobs: list[Any]) -> AsyncIterator[Any]:
        POLL["ok"] = None
        kept = []
        async for job in check(self, active_jobs):
            kept.append(job)
            yield job
        if POLL["ok"] is False:
            # The plugin reported none of them and dropped them all: keep them for the next poll.
            if not POLL["warned"]:
                log.warning(
                    f"Atlas: sacct does not answer: the {len(active_jobs)} running job(s) are asked about again "
                    f"at the next poll (at most {STATUS_POLL_MAX_S} s)"
                )
                POLL["warned"] = True
            for job in active_jobs:
                if job not in kept:
                    yield job
        elif POLL["ok"]:
            POLL["warned"] = False
        if (self.next_seconds_between_status_checks or 0) > STATUS_POLL_MAX_S:
            self.next_seconds_between_status_checks = STATUS_POLL_MAX_S

    report = executor.report_job_error

    def report_job_error(self: Any, job_info: Any, msg: str | None = None, **kwargs: Any) -> Any:
        with contextlib.suppress(Exception):  # the report must never stop the plugin's own
            end = slurm_end(job_info, msg, (POLL.get("raw") or {}).get(str(job_info.external_jobid)))
            ENDS[job_info.job.jobid] = end
            log.error("Atlas: job failed: " + end.line())
            # Snakemake's "Error in rule ..." paragraph follows (its input, output, logs and shell
            # command); its message says the state and the reason too, not the plugin's
            # "Reason: Unknown" (sacct has no reason for a job step that was cancelled or killed).
            msg = end.why() + ". "  # the plugin's base class appends "For further error details ..."
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
            if wait is None or STOP.is_set():
                report_threadsafe(self, *held[-1])
                return
            log.warning(f"Atlas: sbatch for {job.name} failed ({sbatch_error(held[-1][1])}); trying again in {wait} s")
            STOP.wait(wait)

    async def sleep(self: Any) -> None:
        # As RemoteExecutor.sleep, but looking every second whether the head is stopping.
        end = time.monotonic() + float(self.next_seconds_between_status_checks or 0)
        while self.wait and (left := end - time.monotonic()) > 0:
            await _asleep(min(1.0, left))

    post_init = executor.__post_init__

    def __post_init__(self: Any, *args: Any, **kwargs: Any) -> None:
        STOP.clear()
        post_init(self, *args, **kwargs)
        RUN["id"] = str(self.run_uuid)

    cancel = executor.cancel

    def cancel_(self: Any) -> None:
        STOP.set()
        cancel(self)

    shutdown = executor.shutdown

    def shutdown_(self: Any) -> None:
        STOP.set()
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
    await asyncio.sleep(seconds)
