"""The Atlas workflow through a real SLURM cluster (tests/harness/slurm, marker `slurm`).

A small run of the tiny config (one class, the pixel and pretrained methods) with the test
cluster's profile: every stage runs as a SLURM job except the local `collect` and `index`, and
the jobs that declare `resources: gpu=1` (training, generation, scoring, exemplars) are given a GPU
by SLURM while the others are not.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.slurm_cluster import SlurmCluster
from tests.test_workflow import RUN, SNAKEFILE, _env, cut_to, write_config

SNAKEMAKE_TIMEOUT_S = 600


def _sacct(job_ids: list[str]) -> dict[str, dict[str, str]]:
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
def test_the_workflow_runs_on_slurm_with_gpus_for_generation(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    write_config(tmp_path, cut_to([0], ("pixel", "pretrained")))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(tmp_path / "config.yaml"),
        "--profile",
        str(slurm_cluster.profile),
        "--cores",
        "all",
        # The test profile's 512 MB default is too small for a job that loads a classifier.
        "--default-resources",
        f"slurm_partition={slurm_cluster.partition}",
        f"slurm_account={slurm_cluster.account}",
        "mem_mb=2000",
        "runtime=10",
    ]
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=_env(slurm=True),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SNAKEMAKE_TIMEOUT_S,
        check=False,
    )
    log = proc.stdout + proc.stderr
    slurm_logs = "\n".join(
        f"--- {p}\n{p.read_text(errors='replace')[-2000:]}"
        for p in sorted((tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))
    )
    assert proc.returncode == 0, f"snakemake failed after {time.monotonic() - t0:.0f} s:\n{log[-6000:]}\n{slurm_logs}"

    records = pd.read_parquet(tmp_path / "results" / RUN / "records.parquet")
    assert sorted(records["method"]) == ["pixel", "pretrained"] and not records["failed"].any()
    for image in records["image"]:
        assert (tmp_path / "results" / RUN / image).is_file()

    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", log)
    # extract, train_dae, exemplars, two generation chunks and their two score jobs; collect and
    # index run locally.
    assert len(job_ids) == 7, log
    assert (tmp_path / "results" / RUN / "index.parquet").is_file()
    deadline = time.monotonic() + 20
    while True:
        rows = _sacct(job_ids)
        if len(rows) == 7 and all(r["State"] == "COMPLETED" for r in rows.values()):
            break
        assert time.monotonic() < deadline, rows
        time.sleep(1)
    # A wildcard rule's comment is rule_<name>_wildcards_<values>.
    by_rule = [(r["Comment"].removeprefix("rule_").split("_wildcards_")[0], r["AllocTRES"]) for r in rows.values()]
    assert sorted(rule for rule, _ in by_rule) == sorted(
        [
            "extract",
            "train_dae",
            "exemplars",
            "generate_pixel_class_0000",
            "generate_pretrained_class_0000",
            "score_pixel",
            "score_pretrained",
        ]
    ), rows
    for rule, tres in by_rule:
        assert ("gres/gpu=1" in tres) == (rule != "extract"), (rule, tres)
    # The runs inside the jobs found no CUDA (the cluster's GPUs are fake) and fell back to the CPU.
    run_json = json.loads((tmp_path / "results" / RUN / "generate/pixel/class/chunk-0000/run.json").read_text())
    assert run_json["device"] == "cpu"
