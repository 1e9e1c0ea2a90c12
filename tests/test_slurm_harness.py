"""Smoke test: snakemake's slurm executor against the real one-node test cluster.

Two independent rules (so they run as one DAG level: one status-poll round trip):
``cpu`` and ``gpu``; the latter declares ``resources: gpu=1`` and records the
CUDA_VISIBLE_DEVICES that SLURM gave it. Checks the outputs, the variable, and that
the accounting database shows a gres/gpu allocation for the GPU job only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.slurm_cluster import SlurmCluster

SNAKEFILE = """\
rule cpu:
    output: "cpu.txt"
    shell: "hostname > {output}"

rule gpu:
    output: "gpu.txt"
    resources: gpu=1
    # ${{...:-unset}}: snakemake runs shell commands with `set -u`
    shell: "echo ${{CUDA_VISIBLE_DEVICES:-unset}} > {output}"
"""

SNAKEMAKE_TIMEOUT_S = 240


def _sacct_rows(job_ids: list[str]) -> dict[str, dict[str, str]]:
    fields = ["JobID", "State", "AllocTRES", "Comment"]
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", ",".join(fields)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    rows = [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line]
    return {r["JobID"]: r for r in rows}


@pytest.mark.slurm
def test_snakemake_runs_cpu_and_gpu_jobs_on_slurm(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    # A SLURM_* variable from an enclosing job (CI running inside SLURM) would make
    # sbatch/sacct talk to that cluster, not ours.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        str(slurm_cluster.profile),
        "--cores",
        "all",
        "--snakefile",
        str(tmp_path / "Snakefile"),
        "--directory",
        str(tmp_path),
        "cpu.txt",
        "gpu.txt",
    ]
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SNAKEMAKE_TIMEOUT_S,
        check=False,
    )
    elapsed = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    slurm_logs = "\n".join(
        f"--- {p}\n{p.read_text(errors='replace')}"
        for p in sorted((tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))
    )
    assert proc.returncode == 0, f"snakemake failed ({elapsed:.0f} s):\n{log}\n{slurm_logs}"

    assert (tmp_path / "cpu.txt").read_text().strip()
    cuda = (tmp_path / "gpu.txt").read_text().strip()
    assert re.fullmatch(r"\d+(,\d+)*", cuda), (
        f"CUDA_VISIBLE_DEVICES in the gpu=1 job was {cuda!r}; expected a device index"
    )

    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", log)
    assert len(job_ids) == 2, f"expected 2 SLURM submissions, got {job_ids}:\n{log}"

    # The records reach slurmdbd asynchronously; they are normally there already
    # (snakemake polled sacct to see the jobs finish), but allow a few seconds.
    deadline = time.monotonic() + 20
    while True:
        rows = _sacct_rows(job_ids)
        if len(rows) == 2 and all(r["State"] == "COMPLETED" for r in rows.values()):
            break
        assert time.monotonic() < deadline, f"sacct rows for {job_ids}: {rows}"
        time.sleep(1)

    by_rule = {r["Comment"]: r for r in rows.values()}
    assert set(by_rule) == {"rule_cpu", "rule_gpu"}, rows
    assert "gres/gpu=1" in by_rule["rule_gpu"]["AllocTRES"], rows
    assert "gpu" not in by_rule["rule_cpu"]["AllocTRES"], rows
