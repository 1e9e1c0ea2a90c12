"""Cluster faults on the real one-node SLURM test cluster (marker `slurm`): a generation job
cancelled with scancel, a job's process killed by SIGKILL as the out-of-memory killer does, the
head killed by SIGKILL (the stale lock and its orphan job) and stopped by SIGTERM. Each run ends on
its own within a bound, says what failed on one line per job, and the rerun redoes only that.

Tiny runs of the pixel method (64 px, a few hundred steps, one class per chunk), with the test
cluster's profile as in tests/test_workflow_slurm.py. What the head does is atlas.cluster's;
docs/operations.md describes each fault.
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
import yaml

from tests.slurm_cluster import SlurmCluster
from tests.test_workflow import RUN, SNAKEFILE, TINY, _env, planned_jobs

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


def _write_config(workdir: Path, classes: list[int]) -> None:
    cfg: dict[str, Any] = yaml.safe_load(yaml.safe_dump(TINY))
    cfg["classes"], cfg["pairs"], cfg["filters"] = classes, [], []
    for method in ("scratch", "pretrained", "fourier", "maco"):
        cfg["methods"][method]["enabled"] = False
    cfg["methods"]["pixel"].update(classes_per_job=1, settings={"steps": STEPS})
    cfg["exemplars"] = {"top_k": 0}  # no dataset: generation and scoring alone
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))


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

    def slurm_job(self, rule: str, timeout: float = TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        while not (m := re.search(rf"submitted with SLURM jobid (\d+) \(log: \S*/rule_{rule}/", self.text)):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.text[-4000:]
            time.sleep(0.2)
        return m.group(1)

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


def _reference_png(head_text: str, chunk: str, out: Path) -> bytes:
    """The chunk's image from its job's own `atlas generate` command, run here, undisturbed."""
    m = re.search(rf"^Shell command: (.*--out \S*/class/{chunk}) >", head_text, re.M)
    assert m, head_text[-4000:]
    argv = shlex.split(m.group(1))
    env = _env() | {"OMP_NUM_THREADS": "1"}
    assert argv[0] == "OMP_NUM_THREADS=1" and argv[1] == "atlas"
    argv = [*argv[2 : argv.index("--out")], "--out", str(out)]
    code = "import sys; from atlas.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", code, *argv], env=env, check=True, capture_output=True, timeout=TIMEOUT_S)
    (png,) = out.glob("*.png")
    return png.read_bytes()


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
