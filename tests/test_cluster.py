"""atlas.cluster without a cluster: the SLURM plugin's methods as Atlas wraps them (on a stand-in
of the plugin with the same names), the reasons given for a failed job, the note that replaces
Snakemake's "no backup found", and the hint for a stale lock. The real cluster's faults are in
tests/test_cluster_faults.py."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from atlas.cluster import ends, head, slurm


@dataclass
class FakeJob:
    name: str
    jobid: int
    output: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


@dataclass
class Info:
    job: FakeJob
    external_jobid: str | None = None
    aux: dict[str, Any] | None = None


def fake_plugin(answers: list[dict[str, str] | None]) -> types.ModuleType:
    """A module with the plugin's names: `query_job_status` answers from `answers` (None: sacct
    failed); `Executor` does what plugin 2.8.0 does with them."""
    plugin = types.ModuleType("fake_slurm_plugin")

    async def query_job_status(command: str, logger: Any) -> tuple[dict[str, str] | None, float | None]:
        answer = answers.pop(0)
        return (None, None) if answer is None else (dict(answer), 0.01)

    class Executor:
        def __init__(self) -> None:
            self.errors: list[tuple[Any, str | None]] = []
            self.submitted: list[str] = []
            self.next_seconds_between_status_checks: int | None = 40
            self.wait = True
            self.sbatch_results: list[str] = []
            self.__post_init__()

        def __post_init__(self) -> None:
            self.run_uuid = "run-1"

        async def check_active_jobs(self, active_jobs: list[Info]) -> Any:
            states, _ = await plugin.query_job_status("sacct", None)  # as the plugin: its module's global
            if states is None:
                return  # 2.8.0: no job reported, none yielded
            for job in active_jobs:
                state = states.get(job.external_jobid or "")
                if state == "COMPLETED":
                    continue
                if state in ("CANCELLED", "FAILED", "TIMEOUT"):
                    self.report_job_error(job, msg=f"SLURM status is: '{state}'")
                    continue
                yield job
            self.next_seconds_between_status_checks = min((self.next_seconds_between_status_checks or 0) + 10, 180)

        def report_job_error(self, job_info: Info, msg: str | None = None, **kwargs: Any) -> None:
            self.errors.append((job_info, msg))

        def _report_job_error_threadsafe(self, job_info: Info, msg: str) -> None:
            self.report_job_error(job_info, msg=msg)

        def run_job(self, job: FakeJob) -> None:
            result = self.sbatch_results.pop(0)
            if result == "ok":
                self.submitted.append(job.name)
            else:
                self._report_job_error_threadsafe(
                    Info(job), f"SLURM sbatch failed. The error message was 'sbatch: error: {result}'.\n"
                )

        async def sleep(self) -> None:
            await asyncio.sleep(float(self.next_seconds_between_status_checks or 0))

        def cancel(self) -> None:
            pass

        def shutdown(self) -> None:
            pass

    plugin.query_job_status = query_job_status  # type: ignore[attr-defined]
    plugin.Executor = Executor  # type: ignore[attr-defined]
    slurm.patch(plugin)
    return plugin


async def _poll(executor: Any, jobs: list[Info]) -> list[Info]:
    return [job async for job in executor.check_active_jobs(jobs)]


@pytest.fixture(autouse=True)
def _no_sacct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ends, "_sacct_row", lambda slurm_id: {})
    ends.ENDS.clear()
    slurm.POLL.update(ok=None, warned=False, preempted=set())


def test_states_are_cut_to_their_first_word_and_a_lasting_preemption_ends_the_job() -> None:
    seen: set[str] = set()
    assert slurm.normalise_states({"1": "CANCELLED by 0", "2": "RUNNING", "3": "PREEMPTED"}, seen) == {
        "1": "CANCELLED",
        "2": "RUNNING",
        "3": "PREEMPTED",
    }
    assert slurm.normalise_states({"3": "PREEMPTED", "4": "PREEMPTED"}, seen) == {"3": "FAILED", "4": "PREEMPTED"}
    assert slurm.normalise_states({"4": "PENDING"}, seen) == {"4": "PENDING"} and not seen  # requeued


def test_a_cancelled_job_is_reported_once_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    plugin = fake_plugin([{"7": "CANCELLED by 0", "8": "RUNNING"}])
    executor = plugin.Executor()
    chunk = FakeJob(
        "generate_pixel_class_0000",
        3,
        output=["results/r/generate/pixel/class/chunk-0000/records.parquet"],
        log=["results/r/logs/chunk-0000.log"],
    )
    cancelled, running = Info(chunk, "7"), Info(FakeJob("generate_pixel_class_0009", 4), "8")
    with caplog.at_level(logging.INFO, logger="snakemake.logging"):
        still = asyncio.run(_poll(executor, [cancelled, running]))
    assert still == [running]
    # Snakemake's own paragraph on the job gets the state and the reason as its message.
    assert executor.errors == [
        (cancelled, "SLURM job 7 CANCELLED: cancelled (scancel, an administrator, or preemption). ")
    ]
    lines = [r.getMessage() for r in caplog.records if "job failed" in r.getMessage()]
    assert lines == [
        "Atlas: job failed: generate_pixel_class_0000 (chunk results/r/generate/pixel/class/chunk-0000): "
        "SLURM job 7 CANCELLED: cancelled (scancel, an administrator, or preemption); log results/r/logs/chunk-0000.log"
    ]
    assert ends.ENDS[3].state == "CANCELLED"


def test_jobs_stay_watched_when_sacct_fails_and_polls_are_at_most_a_minute_apart() -> None:
    plugin = fake_plugin([None, None, {"1": "COMPLETED"}])
    executor = plugin.Executor()
    executor.next_seconds_between_status_checks = 170
    job = Info(FakeJob("score_pixel", 1), "1")
    assert asyncio.run(_poll(executor, [job])) == [job]  # 2.8.0 would drop it: the head waited forever
    assert executor.next_seconds_between_status_checks == slurm.STATUS_POLL_MAX_S
    assert asyncio.run(_poll(executor, [job])) == [job]
    assert asyncio.run(_poll(executor, [job])) == [] and not executor.errors


def test_an_sbatch_the_controller_did_not_answer_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm, "SUBMIT_WAITS_S", (0, 0))
    plugin = fake_plugin([])
    executor = plugin.Executor()
    executor.sbatch_results = ["Unable to contact slurm controller (connect failure)", "ok"]
    executor.run_job(FakeJob("generate_pixel_class_0000", 1))
    assert executor.submitted == ["generate_pixel_class_0000"] and not executor.errors

    # Still failing after every wait: the job fails, once.
    executor.sbatch_results = ["Socket timed out on send/recv operation"] * 3
    executor.run_job(FakeJob("generate_pixel_class_0009", 2))
    assert len(executor.errors) == 1 and ends.ENDS[2].state == "sbatch failed"

    # An error that waiting does not mend fails the job at once.
    executor.sbatch_results = ["Invalid account or account/partition combination specified"]
    executor.run_job(FakeJob("score_pixel", 3))
    assert len(executor.errors) == 2 and not executor.sbatch_results


def test_the_head_stops_waiting_between_polls_when_it_shuts_down() -> None:
    plugin = fake_plugin([])
    executor = plugin.Executor()
    executor.next_seconds_between_status_checks = 60

    async def stop_soon() -> float:
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, setattr, executor, "wait", False)
        start = loop.time()
        await executor.sleep()
        return loop.time() - start

    assert asyncio.run(stop_soon()) < 5


@pytest.mark.parametrize(
    ("state", "row", "text"),
    [
        ("CANCELLED", {"State": "CANCELLED by 0"}, "cancelled by root (scancel, an administrator, or preemption)"),
        (
            "TIMEOUT",
            {"Timelimit": "00:05:00"},
            "reached its time limit (00:05:00); raise runtime (methods.maco.resources.runtime",
        ),
        (
            "OUT_OF_MEMORY",
            {"ReqMem": "2000M"},
            "ran out of its memory (2000M); raise mem_mb (methods.maco.resources.mem_mb)",
        ),
        ("NODE_FAIL", {"NodeList": "gpu7"}, "its node gpu7 failed"),
    ],
)
def test_the_reason_for_each_slurm_state(state: str, row: dict[str, str], text: str) -> None:
    assert ends.state_reason(state, row, None, "maco").startswith(text)


def test_the_reason_from_a_jobs_own_log(tmp_path: Path) -> None:
    log = tmp_path / "chunk.log"
    assert "failed before its command started" in ends.log_reason(str(log))
    log.write_text("2026-01-01 INFO atlas.generate: runtime on cpu\natlas generate: error: no such class 1000\n")
    assert ends.log_reason(str(log)) == "atlas generate: error: no such class 1000"
    log.write_text("2026-01-01 INFO atlas.generate: runtime on cpu\n")  # SIGKILL leaves no last word
    assert ends.log_reason(str(log)).startswith("the command ended without a message: killed (SIGKILL")


def test_no_backup_found_says_that_nothing_was_lost() -> None:
    record = logging.LogRecord(
        "snakemake.logging", logging.WARNING, "", 0, "Cannot restore a/records.parquet: no backup found.", (), None
    )
    head._FirstRunNote().filter(record)
    assert (
        record.getMessage()
        == "a/records.parquet: no earlier version to restore (the job's first run): nothing was lost"
    )


def test_a_stale_lock_is_explained_on_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["snakemake", "--cores", "all", "--profile", "slurm"])
    monkeypatch.delenv("UV", raising=False)
    assert head.lock_hint() is None  # no lock
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    (tmp_path / ".snakemake" / "locks" / "0.output.lock").write_text("x")

    # No record of who locked it.
    hint = head.lock_hint()
    assert hint and "\n" not in hint and "`snakemake --cores all --profile slurm --unlock`" in hint

    # The head that locked it was killed (its pid is gone); two of its jobs still run.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"pid": dead.pid, "host": socket.gethostname(), "started": "2026-01-01 10:00:00", "slurm_run_id": "r-1"}
    (tmp_path / ".snakemake" / "atlas").mkdir()
    (tmp_path / ".snakemake" / "atlas" / "head.json").write_text(json.dumps(record))
    jobs = [{"id": "41", "name": "r-1"}, {"id": "42", "name": "r-1"}, {"id": "50", "name": "other-run"}]
    monkeypatch.setattr(head, "folder_jobs", lambda folder: jobs)
    hint = head.lock_hint()
    assert hint and "\n" not in hint
    assert f"pid {dead.pid}) was killed" in hint and "2 of its SLURM jobs still run (41, 42)" in hint
    assert "`scancel --name r-1`" in hint and "--unlock` removes the lock" in hint
    with_unlock = head.lock_hint(["--cores", "all", "--unlock"])
    assert with_unlock and "(41, 42)" in with_unlock and "scancel --name r-1" in with_unlock

    # The head is alive: wait for it, do not unlock.
    monkeypatch.setattr(head, "_alive", lambda pid: True)
    record["pid"] = 1
    (tmp_path / ".snakemake" / "atlas" / "head.json").write_text(json.dumps(record))
    hint = head.lock_hint()
    assert hint and "is running: wait for it" in hint and "--unlock" not in hint


def test_descendants_are_found_through_proc() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert (child.pid, "sleep") in head.descendants(os.getpid())
    finally:
        child.kill()
        child.wait()
