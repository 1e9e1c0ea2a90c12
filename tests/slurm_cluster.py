"""A real one-node SLURM cluster as a pytest fixture.

Usage in a test module (the fixture is imported into ``tests/conftest.py``)::

    import pytest

    @pytest.mark.slurm
    def test_something(slurm_cluster):
        slurm_cluster.account      # "ci_acct"
        slurm_cluster.partition    # "debug"
        slurm_cluster.profile      # Path of the test snakemake profile directory
        slurm_cluster.stop_controller(); slurm_cluster.start()   # a controller restart
        slurm_cluster.drain("why"); slurm_cluster.resume()      # the node drained and back

The session-scoped fixture runs ``tests/harness/slurm/install.sh`` (Debian packages,
skipped when present) and ``start.sh`` (munge, MariaDB, slurmdbd, slurmctld, slurmd,
2 fake GPUs), or reuses a cluster that is already running. At the end of the session
the cluster is stopped only if a pytest session started it (never one started by
hand with start.sh), and only by the last session still using it. If the cluster
cannot be installed or started, the tests that use it FAIL with the reason: a silent
skip would let a broken SLURM integration pass CI unnoticed. Needs root.

Environment knobs:
    ATLAS_SLURM_BASE  state/config/log directory (default /tmp/atlas-slurm-test)
    ATLAS_SLURM_KEEP  "1": leave the cluster running at the end (faster edit-test
                      loops; stop it with tests/harness/slurm/stop.sh)
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HARNESS_DIR = Path(__file__).resolve().parent / "harness" / "slurm"
TEST_PROFILE_DIR = HARNESS_DIR / "profile"
DEFAULT_BASE = "/tmp/atlas-slurm-test"

# Fixed by start.sh.
CLUSTER_NAME = "ci"
ACCOUNT = "ci_acct"
PARTITION = "debug"
NODE = "localhost"

INSTALL_TIMEOUT_S = 900
START_TIMEOUT_S = 300
STOP_TIMEOUT_S = 120


@dataclass(frozen=True)
class SlurmCluster:
    """What a test needs to know about the running test cluster."""

    account: str
    partition: str
    cluster_name: str
    gpus: int
    base_dir: Path
    profile: Path  # snakemake profile directory for this cluster
    started_here: bool  # True when this pytest session started it
    node: str = NODE

    def stop_controller(self) -> None:
        """Stop slurmctld as an administrator's restart does (SIGTERM: it saves its state), by its
        pid file; the other daemons and the jobs go on."""
        pidfile = self.base_dir / "run" / "slurmctld.pid"
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _pid_alive(pidfile) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pidfile):
            os.kill(pid, signal.SIGKILL)
        pidfile.unlink(missing_ok=True)

    def start(self) -> None:
        """Start whatever of the cluster is not running (start.sh: e.g. a stopped controller) and
        wait until the node takes jobs."""
        try:
            proc: subprocess.CompletedProcess[str] | None = _run_script("start.sh", START_TIMEOUT_S)
            err = ""
        except subprocess.TimeoutExpired:
            proc, err = None, f"timed out after {START_TIMEOUT_S} s"
        if proc is None or proc.returncode != 0:
            _fail_with("start.sh", proc, err)

    def scontrol(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60, check=check)

    def drain(self, reason: str) -> None:
        """Drain the node: its running jobs go on, it takes no new ones."""
        self.scontrol("update", f"nodename={self.node}", "state=drain", f"reason={reason}")

    def resume(self) -> None:
        """Give the drained node back (harmless when it is not drained)."""
        self.scontrol("update", f"nodename={self.node}", "state=resume", check=False)


def _base_dir() -> Path:
    return Path(os.environ.get("ATLAS_SLURM_BASE", DEFAULT_BASE))


def _pid_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cluster_running(base: Path) -> bool:
    """Our cluster (the one under ``base``) has its control daemons up."""
    run = base / "run"
    return all(_pid_alive(run / f"{d}.pid") for d in ("slurmctld", "slurmd", "slurmdbd"))


def _run_script(name: str, timeout: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["ATLAS_SLURM_BASE"] = str(_base_dir())
    return subprocess.run(
        ["bash", str(HARNESS_DIR / name), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def _fail_with(what: str, proc: subprocess.CompletedProcess[str] | None, err: str = "") -> None:
    detail = err
    if proc is not None:
        out = (proc.stdout + proc.stderr).strip().splitlines()
        detail = f"exit code {proc.returncode}\n" + "\n".join(out[-40:])
    pytest.fail(f"SLURM test cluster: {what} failed: {detail}", pytrace=False)


def _ensure_cluster() -> bool:
    """Install + start the cluster; returns True when this call started it."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.fail(
            "SLURM test cluster: must run as root (it installs packages and starts "
            "daemons); run the slurm tests as root or deselect them with -m 'not slurm'",
            pytrace=False,
        )
    base = _base_dir()
    was_running = _cluster_running(base)
    if not was_running:
        try:
            proc = _run_script("install.sh", INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _fail_with("install.sh", None, f"timed out after {INSTALL_TIMEOUT_S} s")
        if proc.returncode != 0:
            _fail_with("install.sh", proc)
    # start.sh is idempotent and cheap on a running cluster: it also re-creates the
    # account records should someone have purged the database.
    try:
        proc: subprocess.CompletedProcess[str] | None = _run_script("start.sh", START_TIMEOUT_S)
        err = ""
    except subprocess.TimeoutExpired:
        proc, err = None, f"timed out after {START_TIMEOUT_S} s"
    if proc is None or proc.returncode != 0:
        if not was_running:  # do not leave half a cluster behind (logs are kept)
            _run_script("stop.sh", STOP_TIMEOUT_S)
        _fail_with("start.sh", proc, err)
    return not was_running


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A running one-node SLURM cluster (see the module docstring)."""
    base = _base_dir()
    base.mkdir(parents=True, exist_ok=True)
    # Several pytest sessions on this machine may use the cluster at once. Each holds
    # a shared lock on users.lock while it uses it. A session that starts the cluster
    # leaves a marker file; at the end, a session stops the cluster only if the marker
    # is there (a test session started it, not a person running start.sh) and it can
    # take the lock exclusively (nobody else is using it): so the last user stops it.
    # The lock file is only ever opened here, never inherited by the daemons.
    marker = base / "started-by-pytest"
    users = open(base / "users.lock", "a+")  # noqa: SIM115 -- held for the whole session
    try:
        fcntl.flock(users, fcntl.LOCK_SH)
        # Not while a test holds the cluster alone: its stopped controller is no cluster to start.
        with open(base / "tests.lock", "a+") as turn:
            fcntl.flock(turn, fcntl.LOCK_SH)
            started_here = _ensure_cluster()
        if started_here:
            marker.touch()
        yield SlurmCluster(
            account=ACCOUNT,
            partition=PARTITION,
            cluster_name=CLUSTER_NAME,
            gpus=int(os.environ.get("ATLAS_SLURM_GPUS", "2")),
            base_dir=base,
            profile=TEST_PROFILE_DIR,
            started_here=started_here,
        )
        if os.environ.get("ATLAS_SLURM_KEEP") == "1":
            marker.unlink(missing_ok=True)  # kept on purpose: no later session stops it
            return
        if not marker.exists():
            return  # started outside pytest: leave it to whoever started it
        fcntl.flock(users, fcntl.LOCK_UN)
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another session is still using it; the last one stops it
        proc = _run_script("stop.sh", STOP_TIMEOUT_S)
        marker.unlink(missing_ok=True)
        if proc.returncode != 0:
            _fail_with("stop.sh", proc)
    finally:
        users.close()  # also releases the lock


@pytest.fixture(autouse=True)
def _slurm_turn(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests that use the cluster share it, except one that requests `slurm_cluster_alone` (a
    controller restart, a drained node would fail the jobs of a test running beside it, in this
    pytest session's other workers or in another session): it waits until no other test uses the
    cluster and holds it alone, and the others wait for it. A lock on a file of the cluster's folder."""
    if "slurm_cluster" not in request.fixturenames:
        yield
        return
    base = _base_dir()
    base.mkdir(parents=True, exist_ok=True)
    alone = "slurm_cluster_alone" in request.fixturenames
    with open(base / "tests.lock", "a+") as turn:
        fcntl.flock(turn, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        yield


@pytest.fixture()
def slurm_cluster_alone(slurm_cluster: SlurmCluster) -> SlurmCluster:
    """The cluster, with no other test using it meanwhile (`_slurm_turn`)."""
    return slurm_cluster
