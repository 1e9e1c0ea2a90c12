"""Cluster faults on the real one-node SLURM test cluster (marker `slurm`): a generation job
cancelled with scancel, a job's process killed by SIGKILL as the out-of-memory killer does, a job
past its time limit (TIMEOUT) and its retry with more time, the controller (slurmctld) stopped and
restarted mid-run, the node drained mid-run and resumed, the head killed by SIGKILL (the stale
lock and its orphan job) and stopped by SIGTERM. Each run ends on its own within a bound and says
what failed on one line per job; the rerun (or the retry) redoes only that, and the images are
byte for byte those of an undisturbed run.

Tiny runs of the pixel method (64 px, a few hundred steps, one class per chunk), with the test
cluster's profile as in tests/test_workflow_slurm.py. What the head does is atlas.cluster's;
docs/operations.md describes each fault, with the times these tests print (`-s` shows them).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.slurm_cluster import SlurmCluster
from tests.test_workflow import RUN, SNAKEFILE, _env, cut_to, planned_jobs, write_config

TIMEOUT_S = 600
# A job's end is seen at most atlas.cluster.STATUS_POLL_MAX_S (60 s) after SLURM records it; the
# bound asserted here leaves room for a loaded machine.
DETECT_BOUND_S = 120
STEPS = 600  # long enough to act on a running optimisation, short enough to rerun


@pytest.fixture()
def workdir(tmp_path: Path) -> Iterator[Path]:
    """The run's folder. Afterwards, no process of the test's is left running in it: on the test
    cluster (proctrack/linuxproc) a process of a cancelled job whose parent died first escapes
    SLURM's kill, as a job's process can outlive its job on a real cluster."""
    yield tmp_path / "run"
    for entry in Path("/proc").iterdir():
        try:
            inside = Path(os.readlink(entry / "cwd")).is_relative_to(tmp_path)
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and inside:
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


def _write_config(workdir: Path, classes: list[int], steps: int = STEPS) -> None:
    def change(cfg: dict[str, Any]) -> None:
        cut_to(classes, ("pixel",))(cfg)
        cfg["methods"]["pixel"].update(classes_per_job=1, settings={"steps": steps})
        cfg["exemplars"] = {"top_k": 0}  # no dataset: generation and scoring alone

    write_config(workdir, change)


def _command(workdir: Path, cluster: SlurmCluster, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--profile",
        str(cluster.profile),
        "--cores",
        "all",
        "--keep-going",  # as the SLURM profile
        "--default-resources",
        f"slurm_partition={cluster.partition}",
        f"slurm_account={cluster.account}",
        "mem_mb=2000",
        "runtime=10",
        *extra,
    ]


class Head:
    """A snakemake head running in the background, its output read line by line with the time
    each line came."""

    def __init__(self, workdir: Path, command: list[str]) -> None:
        self.workdir = workdir
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=_env(slurm=True),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def when(self, pattern: str) -> float | None:
        return next((t for t, line in self.lines if re.search(pattern, line)), None)

    def wait_for(self, pattern: str, timeout: float = TIMEOUT_S) -> re.Match[str]:
        """The first line that matches `pattern`, once the head has printed it."""
        deadline = time.monotonic() + timeout
        while not (m := next((m for _, line in self.lines if (m := re.search(pattern, line))), None)):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.text[-4000:]
            time.sleep(0.2)
        return m

    def slurm_job(self, rule: str, timeout: float = TIMEOUT_S) -> str:
        return self.wait_for(rf"submitted with SLURM jobid (\d+) \(log: \S*/rule_{rule}/", timeout).group(1)

    def slurm_jobs(self, rule: str) -> list[str]:
        """Every SLURM job submitted for `rule` so far (a retry is a job of its own)."""
        return re.findall(rf"submitted with SLURM jobid (\d+) \(log: \S*/rule_{rule}/", self.text)

    def wait(self, timeout: float = TIMEOUT_S) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


def _optimising(workdir: Path, head: Head, but: str = "", timeout: float = TIMEOUT_S) -> tuple[str, int]:
    """Wait until a chunk's `atlas generate` (other than `but`) has loaded D and is optimising:
    its chunk name and the pid of its process."""
    logs = workdir / "results" / RUN / "logs" / "generate" / "pixel" / "class"
    deadline = time.monotonic() + timeout
    while True:
        for log in sorted(logs.glob("chunk-*.log")):
            text = log.read_text()
            if log.stem != but and "runtime on" in text and "wrote" not in text and "atlas generate:" not in text:
                pid = _atlas_process(workdir, log.stem)
                if pid is not None:
                    return log.stem, pid
        assert head.proc.poll() is None and time.monotonic() < deadline, head.text[-4000:]
        time.sleep(0.2)


def _atlas_process(workdir: Path, chunk: str) -> int | None:
    """The pid of this test's `atlas generate` of `chunk` (the python process, not its shell)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if (
            os.path.basename(argv[0]) not in ("bash", "sh")
            and any(a.endswith("/atlas") for a in argv[:2])
            and "generate" in argv
            and any(a.endswith(f"/class/{chunk}") for a in argv)
            and os.path.realpath(cwd) == os.path.realpath(workdir)
        ):
            return int(entry.name)
    return None


def _sacct_state(job: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", job, "-o", "State"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
        if out and out.split()[0] not in ("PENDING", "RUNNING", "COMPLETING"):
            return out
        assert time.monotonic() < deadline, f"job {job} is still {out!r}"
        time.sleep(1)


_REFERENCES: dict[tuple[str, ...], bytes] = {}  # a chunk's `atlas generate` arguments -> its image


def _reference_png(head_text: str, chunk: str, out: Path) -> bytes:
    """The chunk's image from its job's own `atlas generate` command, run here, undisturbed (once
    per command and session: the tests that share a config share it)."""
    m = re.search(rf"^Shell command: (.*--out \S*/class/{chunk}) >", head_text, re.M)
    assert m, head_text[-4000:]
    argv = shlex.split(m.group(1))
    env = _env() | {"OMP_NUM_THREADS": "1"}
    assert argv[0] == "OMP_NUM_THREADS=1" and argv[1] == "atlas"
    argv = argv[2 : argv.index("--out")]
    if tuple(argv) not in _REFERENCES:
        code = "import sys; from atlas.cli import main; sys.exit(main(sys.argv[1:]))"
        subprocess.run(
            [sys.executable, "-c", code, *argv, "--out", str(out)],
            env=env,
            check=True,
            capture_output=True,
            timeout=TIMEOUT_S,
        )
        (png,) = out.glob("*.png")
        _REFERENCES[tuple(argv)] = png.read_bytes()
    return _REFERENCES[tuple(argv)]


def _assert_images_undisturbed(workdir: Path, head_text: str, classes: list[int], tmp_path: Path) -> None:
    """Each chunk's image is byte for byte that of an undisturbed run, and no temporary folder is left."""
    chunks = workdir / "results" / RUN / "generate" / "pixel" / "class"
    for c in classes:
        chunk = f"chunk-{c:04d}"
        reference = _reference_png(head_text, chunk, tmp_path / "reference" / chunk)
        assert (chunks / chunk / f"class-{c:04d}.png").read_bytes() == reference, f"{chunk}'s image differs"
    assert not list(chunks.glob(".chunk-*")), "a temporary folder was left behind"


def _sacct_fields(job: str, *fields: str) -> dict[str, str]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", job, "-o", ",".join(fields)], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    return dict(zip(fields, out.splitlines()[0].split("|"), strict=True)) if out else {}


@pytest.mark.slurm
def test_a_cancelled_and_a_killed_job_end_the_run_and_the_rerun_redoes_them(
    slurm_cluster: SlurmCluster, workdir: Path, tmp_path: Path
) -> None:
    _write_config(workdir, [0, 9, 30])
    command = _command(workdir, slurm_cluster)
    head = Head(workdir, command)
    try:
        # Which chunk SLURM starts first varies: act on whichever is optimising.
        first, _ = _optimising(workdir, head)
        cancelled = head.slurm_job(f"generate_pixel_class_{first[-4:]}")
        subprocess.run(["scancel", cancelled], check=True, timeout=60)
        t_cancel = time.monotonic()
        second, pid = _optimising(workdir, head, but=first)
        os.kill(pid, signal.SIGKILL)  # as the out-of-memory killer does
        t_kill = time.monotonic()
        code = head.wait()
    finally:
        if head.proc.poll() is None:
            os.killpg(head.proc.pid, signal.SIGKILL)
    text = head.text
    assert code != 0, text[-6000:]
    rule_cancelled, rule_killed = (f"generate_pixel_class_{c[-4:]}" for c in (first, second))
    (undisturbed,) = {"generate_pixel_class_0000", "generate_pixel_class_0009", "generate_pixel_class_0030"} - {
        rule_cancelled,
        rule_killed,
    }

    # One line per failed job, as it is seen: rule, chunk, SLURM job and state, reason, log.
    seen_cancel = head.when(rf"^Atlas: job failed: {rule_cancelled} .*SLURM job {cancelled} CANCELLED")
    seen_kill = head.when(rf"^Atlas: job failed: {rule_killed} .* FAILED: the command ended without a message")
    assert seen_cancel and seen_kill, text[-6000:]
    print(f"scancel seen after {seen_cancel - t_cancel:.1f} s, SIGKILL after {seen_kill - t_kill:.1f} s")
    assert seen_cancel - t_cancel < DETECT_BOUND_S and seen_kill - t_kill < DETECT_BOUND_S
    line = next(ln for ln in text.splitlines() if ln.startswith(f"Atlas: job failed: {rule_cancelled}"))
    assert f"(chunk results/tiny/generate/pixel/class/{first})" in line and "cancelled by" in line
    assert f"log results/tiny/logs/generate/pixel/class/{first}.log" in line
    # The other chunk went on (keep-going); the end lists both and the command that redoes them.
    assert re.search(rf"Finished jobid: \d+ \(Rule: {undisturbed}\)", text), text[-6000:]
    summary = text[text.index("Atlas: 2 job(s) failed:") :]
    assert rule_cancelled in summary and rule_killed in summary
    assert "Atlas: to finish, run the same command again" in summary and "no backup found" not in text
    # The SIGKILLed job left its temporary folder; the cancelled one (SIGTERM) did not.
    chunks = workdir / "results" / RUN / "generate" / "pixel" / "class"
    assert all(p.name.startswith(f".{second}.") for p in chunks.glob(".chunk-*"))

    # The rerun redoes those two chunks and what depends on them, nothing else.
    rerun = subprocess.run(
        command, cwd=workdir, env=_env(slurm=True), capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    rerun_text = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, rerun_text[-6000:]
    jobs = planned_jobs(rerun_text)
    assert {j for j in jobs if j.startswith("generate_")} == {rule_cancelled, rule_killed}
    assert not list(chunks.glob(".chunk-*")), "a killed job's temporary folder was left behind"
    # Byte for byte the image of an undisturbed run of the cancelled chunk.
    reference = _reference_png(text, first, tmp_path / "reference")
    assert (chunks / first / f"class-{first[-4:]}.png").read_bytes() == reference


@pytest.mark.slurm
def test_a_killed_head_leaves_a_lock_explained_and_sigterm_cancels_the_jobs(
    slurm_cluster: SlurmCluster, workdir: Path
) -> None:
    _write_config(workdir, [0])
    command = _command(workdir, slurm_cluster)

    # SIGKILL of the head: its job runs on (an orphan), its lock stays.
    head = Head(workdir, command)
    try:
        orphan = head.slurm_job("generate_pixel_class_0000")
        _optimising(workdir, head)
        os.kill(head.proc.pid, signal.SIGKILL)
        head.wait(timeout=60)
    finally:
        if head.proc.poll() is None:
            os.killpg(head.proc.pid, signal.SIGKILL)
    run_id = re.search(r"^SLURM run ID: (\S+)", head.text, re.M)
    assert run_id, head.text[-4000:]

    # The next run stops at the lock, with a one-line hint naming the orphan and the commands.
    locked = subprocess.run(
        command, cwd=workdir, env=_env(slurm=True), capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    text = locked.stdout + locked.stderr
    assert locked.returncode != 0 and "Directory cannot be locked" in text, text[-4000:]
    hint = next((ln for ln in text.splitlines() if ln.startswith("Atlas: the run that locked this folder")), "")
    assert f"pid {head.proc.pid}) was killed" in hint, text[-4000:]
    assert f"1 of its SLURM jobs still run ({orphan})" in hint and f"`scancel --name {run_id.group(1)}`" in hint
    assert "--unlock` removes the lock" in hint
    # Do what it says: cancel the orphan, unlock.
    subprocess.run(["scancel", "--name", run_id.group(1)], check=True, timeout=60)
    assert _sacct_state(orphan).startswith("CANCELLED")
    unlock = subprocess.run(
        [*command, "--unlock"], cwd=workdir, env=_env(slurm=True), capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert unlock.returncode == 0, (unlock.stdout + unlock.stderr)[-4000:]

    # SIGTERM to the head: it cancels its job and ends at once, failed, with its lock removed.
    head = Head(workdir, command)
    try:
        job = head.slurm_job("generate_pixel_class_0000")
        _optimising(workdir, head)
        head.proc.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        code = head.wait(timeout=180)
        stopped_after = time.monotonic() - t_term
    finally:
        if head.proc.poll() is None:
            os.killpg(head.proc.pid, signal.SIGKILL)
    print(f"the head ended {stopped_after:.1f} s after SIGTERM")
    assert code != 0 and stopped_after < DETECT_BOUND_S, head.text[-4000:]
    assert "Atlas: the run was stopped by SIGTERM, its running jobs cancelled," in head.text, head.text[-4000:]
    assert _sacct_state(job).startswith("CANCELLED")
    assert not list((workdir / ".snakemake" / "locks").glob("*"))

    # And the next run finishes it.
    final = subprocess.run(
        command, cwd=workdir, env=_env(slurm=True), capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert final.returncode == 0, (final.stdout + final.stderr)[-6000:]
    assert (workdir / "results" / RUN / "generate" / "pixel" / "class" / "chunk-0000" / "class-0000.png").is_file()
    assert not list((workdir / "results" / RUN / "generate" / "pixel" / "class").glob(".chunk-*"))


@pytest.mark.slurm
def test_a_job_past_its_time_limit_ends_timeout_and_its_retry_with_more_time_finishes(
    slurm_cluster: SlurmCluster, workdir: Path, tmp_path: Path
) -> None:
    """TIMEOUT: the chunk's first attempt gets 1 minute (SLURM's least) and its process stops making
    progress (SIGSTOP, as a job hung on a filesystem), so it runs past its limit; SLURM ends it
    TIMEOUT, the head says so on one line, the retry (`--retries 1`, the profile's `retries: 1`)
    asks for more time as a value of `attempt`, finishes, and the run ends 0. (A chunk that
    computes for over 90 s instead would cost minutes more of CPU on each run of the test: SLURM
    checks time limits every 30 s, so a 1-minute job ends 60-90 s after it starts.)"""
    _write_config(workdir, [0])
    rule = "generate_pixel_class_0000"
    # 1 minute for the first attempt, 11 for the retry: a value of `attempt`, as the profile's runtime.
    command = _command(workdir, slurm_cluster, "--retries", "1", "--set-resources", f"{rule}:runtime=1+10*(attempt-1)")
    head = Head(workdir, command)
    try:
        first = head.slurm_job(rule)
        _, pid = _optimising(workdir, head)
        os.kill(pid, signal.SIGSTOP)
        assert head.slurm_jobs(rule) == [first], "the process stopped is not the first attempt's"
        assert _sacct_state(first, timeout=180).startswith("TIMEOUT"), head.text[-4000:]
        t_timeout = time.monotonic()
        code = head.wait()
    finally:
        if head.proc.poll() is None:
            os.killpg(head.proc.pid, signal.SIGKILL)
    text = head.text
    assert code == 0, text[-6000:]

    chunk = f"results/{RUN}/generate/pixel/class/chunk-0000"
    seen = head.when(
        rf"^Atlas: job failed: {rule} \(chunk {chunk}\): SLURM job {first} TIMEOUT: "
        r"reached its time limit \(00:01:00\); raise runtime \(methods\.pixel\.resources\.runtime, minutes\); log "
    )
    assert seen, text[-6000:]
    timed_out = _sacct_fields(first, "Elapsed", "Timelimit")
    print(
        f"TIMEOUT after {timed_out['Elapsed']} of a {timed_out['Timelimit']} limit, "
        f"seen {seen - t_timeout:.1f} s after sacct had it"
    )
    assert seen - t_timeout < DETECT_BOUND_S
    # Snakemake's own paragraph on the job says the same, not the plugin's "Reason: Unknown".
    assert f"message: SLURM job {first} TIMEOUT: reached its time limit" in text and "Reason: Unknown" not in text
    # The retry: a job of its own with more time, which finished; nothing failed in the end.
    assert "Trying to restart job" in text
    jobs = head.slurm_jobs(rule)
    assert len(jobs) == 2 and jobs[0] == first, text[-6000:]
    retry = _sacct_fields(jobs[1], "State", "Elapsed", "Timelimit")
    print(f"the retry ran {retry['Elapsed']} of its {retry['Timelimit']}")
    assert retry["State"] == "COMPLETED" and retry["Timelimit"] == "00:11:00", retry
    assert "job(s) failed" not in text
    _assert_images_undisturbed(workdir, text, [0], tmp_path)


OUTAGE_S = 30  # how long the controller stays down while jobs run


@pytest.mark.slurm
def test_the_controller_stopped_and_restarted_mid_run_loses_no_job(
    slurm_cluster_alone: SlurmCluster, workdir: Path, tmp_path: Path
) -> None:
    """slurmctld stopped and restarted: first while the run submits its jobs (sbatch cannot reach
    it; the head tries each submission again and they go through once it is back), then for
    OUTAGE_S while the jobs run (they run on; their ends are seen once it is back). The run ends 0,
    each chunk computed once, the images those of an undisturbed run."""
    _write_config(workdir, [0, 9])
    rules = ["generate_pixel_class_0000", "generate_pixel_class_0009"]
    try:
        slurm_cluster_alone.stop_controller()
        t_down = time.monotonic()
        head = Head(workdir, _command(workdir, slurm_cluster_alone))
        try:
            first_retry = head.wait_for(
                r"^Atlas: sbatch for (generate_pixel_class_\d+) failed \((.*)\); trying again in 5 s$"
            )
            t_up = time.monotonic()
            slurm_cluster_alone.start()  # returns once the node takes jobs again
            ids = [head.slurm_job(rule) for rule in rules]
            t_submitted = time.monotonic()
            _optimising(workdir, head)
            slurm_cluster_alone.stop_controller()
            t_down_again = time.monotonic()
            time.sleep(OUTAGE_S)
            t_up_again = time.monotonic()
            slurm_cluster_alone.start()
            code = head.wait()
        finally:
            if head.proc.poll() is None:
                os.killpg(head.proc.pid, signal.SIGKILL)
    finally:
        slurm_cluster_alone.start()  # whatever happened: the next test finds a controller
    text = head.text
    assert code == 0, text[-6000:]
    tries = len(re.findall(r"^Atlas: sbatch for \S+ failed", text, re.M))
    print(
        f"controller down {t_up - t_down:.0f} s at the start ({tries} sbatch tries failed; the jobs submitted "
        f"{t_submitted - t_up:.0f} s after its restart began), then {t_up_again - t_down_again:.0f} s while the jobs ran"
    )
    # The submissions that met the outage were tried again, and said so on one line each.
    assert "Unable to contact slurm controller" in first_retry.group(2), text[-6000:]
    # Each chunk went through once: no job failed, none was submitted twice, all completed.
    assert "Atlas: job failed" not in text and "job(s) failed" not in text, text[-6000:]
    assert [head.slurm_jobs(rule) for rule in rules] == [[i] for i in ids]
    assert all(_sacct_fields(i, "State")["State"] == "COMPLETED" for i in ids)
    for rule in rules:
        done = head.when(rf"Finished jobid: \d+ \(Rule: {rule}\)")
        assert done is not None
        print(f"{rule} seen done {done - t_up_again:+.0f} s from the controller's return")
    _assert_images_undisturbed(workdir, text, [0, 9], tmp_path)


HOLD_S = 20  # how long a job waits for the drained node before it is resumed


def _pending(workdir: Path, timeout: float = TIMEOUT_S) -> tuple[str, str, str]:
    """The first of this run's jobs that waits in the queue: its id, rule and SLURM's reason."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(
            ["squeue", "--me", "-h", "-t", "PENDING", "-o", "%i|%k|%r|%Z"], capture_output=True, text=True, timeout=30
        ).stdout
        for line in out.splitlines():
            job, comment, reason, folder = line.split("|")
            if os.path.realpath(folder) == os.path.realpath(workdir) and reason not in ("None", "Priority"):
                return job, comment.removeprefix("rule_"), reason
        assert time.monotonic() < deadline, "no job of the run waited for the drained node"
        time.sleep(1)


@pytest.mark.slurm
def test_a_node_drained_mid_run_holds_the_next_jobs_until_it_is_resumed(
    slurm_cluster_alone: SlurmCluster, workdir: Path, tmp_path: Path
) -> None:
    """The node drained while the chunks run: the running jobs run to their end, the next job waits
    PENDING with SLURM's reason, and the head waits with it, quietly; once the node is resumed the
    job runs and the run ends 0, the images those of an undisturbed run."""
    _write_config(workdir, [0, 9])
    head = Head(workdir, _command(workdir, slurm_cluster_alone))
    try:
        try:
            _optimising(workdir, head)
            slurm_cluster_alone.drain("atlas-fault-test")
            t_drain = time.monotonic()
            job, rule, reason = _pending(workdir)
            t_pending = time.monotonic()
            time.sleep(HOLD_S)
            state = subprocess.run(
                ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
            assert state == "PENDING", f"job {job} ({rule}) is {state!r} on a drained node"
            quiet = head.text
        finally:
            slurm_cluster_alone.resume()
        t_resume = time.monotonic()
        code = head.wait()
    finally:
        if head.proc.poll() is None:
            os.killpg(head.proc.pid, signal.SIGKILL)
        slurm_cluster_alone.resume()
    text = head.text
    assert code == 0, text[-6000:]
    started = _sacct_fields(job, "State", "Start")
    done = head.when(rf"Finished jobid: \d+ \(Rule: {rule}\)")
    assert done is not None and started["State"] == "COMPLETED", text[-6000:]
    print(
        f"{rule} (job {job}) waited from {t_pending - t_drain:.0f} s after the drain ({reason}); "
        f"seen done {done - t_resume:.0f} s after the resume"
    )
    assert "ReqNodeNotAvail" in reason or "DRAINED" in reason.upper(), reason
    # While it waited the head said nothing of failure; nothing failed, nothing ran twice.
    assert "Atlas: job failed" not in quiet and "Atlas: job failed" not in text and "job(s) failed" not in text
    assert all(len(head.slurm_jobs(f"generate_pixel_class_{c:04d}")) == 1 for c in (0, 9))
    _assert_images_undisturbed(workdir, text, [0, 9], tmp_path)
