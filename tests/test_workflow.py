"""The Snakemake workflow, run end to end on the tiny config (.test/config.yaml) as a subprocess.

One full run (module fixture) is shared: tests that change it work on a copy of its folder, with
snakemake's own records (.snakemake/) and the files' times, so that what snakemake decides to
rerun is what it would decide in the original.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from atlas.methods import METHODS
from atlas.schema import check_index

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
TINY = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
RUN = TINY["run"]
TIMEOUT_S = 600


def snakemake(
    workdir: Path, *args: str, timeout: int = TIMEOUT_S, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run snakemake on the workflow in `workdir` with `workdir/config.yaml`; never raises on failure."""
    return subprocess.run(
        _command(workdir, *args),
        cwd=workdir,
        env=env or _env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _command(workdir: Path, *args: str) -> list[str]:
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
        "--cores",
        "2",
        *args,
    ]


def _env(slurm: bool = False) -> dict[str, str]:
    # The rules call the `atlas` CLI of this environment; a SLURM_* variable from an enclosing job
    # would redirect nothing here, but keep the runs independent of one.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    path = [str(Path(sys.executable).parent), env.get("PATH", "")]
    if not slurm:
        # An scontrol that answers at once (tests/harness/no-slurm/scontrol says why).
        path.insert(0, str(REPO / "tests" / "harness" / "no-slurm"))
    env["PATH"] = os.pathsep.join(path)
    return env


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    text = output(proc)
    assert proc.returncode == 0, text[-6000:]
    return text


def planned_jobs(text: str) -> dict[str, int]:
    """The "Job stats" table that snakemake prints before a (dry) run: rule -> job count."""
    if "Nothing to be done" in text:
        return {}
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+\d+", text, re.S)
    assert m, text[-4000:]
    return {rule: int(n) for rule, n in (line.split() for line in m.group(1).splitlines())}


def write_config(workdir: Path, change: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    cfg = copy.deepcopy(TINY)
    if change is not None:
        change(cfg)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def only_pixel(cfg: dict[str, Any]) -> None:
    for method in METHODS:
        if method != "pixel":
            cfg["methods"][method]["enabled"] = False


def cut_to(classes: list[int], methods: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    """A change for write_config: these classes alone (no pairs, no filters), these methods alone."""

    def change(cfg: dict[str, Any]) -> None:
        cfg["classes"], cfg["pairs"], cfg["filters"] = list(classes), [], []
        for method in METHODS:
            if method not in methods:
                cfg["methods"][method]["enabled"] = False

    return change


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny config run once, end to end: every stage, every method."""
    workdir = tmp_path_factory.mktemp("tiny")
    write_config(workdir)
    ok(snakemake(workdir))
    return workdir


@pytest.fixture()
def tiny_copy(tiny_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "tiny", symlinks=True))


# --------------------------------------------------------------------------------------------
# End to end


def test_end_to_end_writes_every_stage(tiny_run: Path) -> None:
    run = tiny_run / "results" / RUN
    records = pd.read_parquet(run / "records.parquet")
    # 5 methods x (2 classes + 1 pair + 1 filter), one row each, every one with its image.
    assert len(records) == 20 and not records["failed"].any()
    assert set(records["method"]) == set(METHODS) == {"scratch", "pretrained", "pixel", "fourier", "maco"}
    assert set(records["target_id"]) == {"class-0000", "class-0009", "pair-0009+0030", "filter-_blocks.4-0000"}
    assert not records.duplicated(["method", "target_id"]).any()
    for image in records["image"]:
        assert (run / image).is_file() and image.startswith("generate/")
    assert set(records["steps"]) == {3}
    # Scratch optimises one target at a time (its batch_size), the others a job's chunk as one batch.
    batches = records.groupby("method")["chunk_size"].max()
    assert batches["scratch"] == 1 and batches["pixel"] == 2
    # The index: one row per record, checked against the schema, every image scored.
    index = check_index(pq.read_table(run / "index.parquet")).to_pandas()
    assert list(index["target_id"]) == list(records["target_id"]) and list(index["method"]) == list(records["method"])
    assert index["judge"].eq("efficientnet-lite2").all() and index["judge_top5"].map(len).eq(5).all()
    classes = index[index["kind"] != "filter"]
    assert classes["judge_prob"].between(0, 1).all() and classes["robust_prob"].between(0, 1).all()
    # Every target has its exemplars, the filter too (the photos that drive its channel hardest).
    assert (index["exemplars"].map(len) == 4).all()
    for paths in index["exemplars"]:
        assert all((run / p).is_file() for p in paths)
    assert index["config_sha256"].nunique() == 1 and index["classifier_sha256"].notna().all()
    # The site: its grid, a page per target, and every image of the run in it.
    site = run / "site"
    assert (site / "index.html").is_file() and (site / "index.parquet").is_file()
    assert {f"{t}.html" for t in records["target_id"]} <= {p.name for p in site.glob("*.html")}
    # One log and one benchmark per job, none empty; the decoder the pretrained method used.
    chunks = [
        f"{m}/{k}" for m in METHODS for k in ("class/chunk-0000", "filter/_blocks.4-chunk-0000", "pair/chunk-0000")
    ]
    jobs = [
        "extract",
        "train_dae",
        "collect",
        "exemplars",
        "index",
        "site",
        *(f"generate/{c}" for c in chunks),
        *(f"score/{m}" for m in METHODS),
    ]
    for job in jobs:
        assert (run / "logs" / f"{job}.log").is_file(), job
        bench = pd.read_csv(run / "benchmarks" / f"{job}.tsv", sep="\t")
        assert len(bench) == 1 and bench.loc[0, "s"] > 0, job
    assert len(list((run / "autoencoder").glob("*/decoder.pt"))) == 1
    assert (run / "dataset" / "images.npy").is_file()
    # The maco images' magnitude is the run's photos' spectrum, recorded with its dataset's hash.
    spectrum = json.loads((run / "generate" / "maco" / "class" / "chunk-0000" / "run.json").read_text())["spectrum"]
    assert spectrum["dataset"].endswith("dataset") and len(spectrum["sha256"]) == 64
    # Nothing left to do.
    assert planned_jobs(ok(snakemake(tiny_run, "-n"))) == {}


# --------------------------------------------------------------------------------------------
# Incremental reruns


def test_deleting_one_image_reruns_only_its_chunk(tiny_copy: Path) -> None:
    png = tiny_copy / "results" / RUN / "generate" / "pixel" / "class" / "chunk-0000" / "class-0009.png"
    before = png.read_bytes()
    png.unlink()
    assert planned_jobs(ok(snakemake(tiny_copy, "-n"))) == {
        "generate_pixel_class_0000": 1,
        "score_pixel": 1,
        "collect": 1,
        "index": 1,
        "site": 1,
        "all": 1,
    }
    others = {p: p.read_bytes() for p in (tiny_copy / "results" / RUN / "scores" / "pixel").glob("[fp]*/*.parquet")}
    ok(snakemake(tiny_copy))
    assert png.read_bytes() == before, "the rerun chunk must give the same image"
    # The method's scoring job rescored that chunk alone: the others' scores are current, kept.
    assert len(others) == 2 and all(p.read_bytes() == b for p, b in others.items())
    log = (tiny_copy / "results" / RUN / "logs" / "score" / "pixel.log").read_text()
    assert log.count("are current; kept") == 2 and "1 of 3 chunks scored" in log


def test_a_rerun_recovers_a_chunk_left_half_published_or_by_a_killed_job(tiny_copy: Path) -> None:
    """A job whose process outlived it published its chunk after it was declared failed: the
    workflow deleted the records and run.json, not the images. Another one was killed by SIGKILL
    while it built the chunk under its temporary name (mode 0700). The rerun redoes that chunk
    alone, by itself, with the same images, and removes the temporary folder."""
    chunk = tiny_copy / "results" / RUN / "generate" / "pixel" / "class" / "chunk-0000"
    images = {p.name: p.read_bytes() for p in chunk.glob("*.png")}
    (chunk / "records.parquet").unlink()
    (chunk / "run.json").unlink()
    killed = chunk.parent / ".chunk-0000.k1ll3d_0.tmp"
    killed.mkdir(mode=0o700)
    (killed / "class-0000.png").write_bytes(b"half an image")
    assert planned_jobs(ok(snakemake(tiny_copy, "-n"))) == {
        "generate_pixel_class_0000": 1,
        "score_pixel": 1,
        "collect": 1,
        "index": 1,
        "site": 1,
        "all": 1,
    }
    ok(snakemake(tiny_copy))
    assert {p.name: p.read_bytes() for p in chunk.glob("*.png")} == images and len(images) == 2
    assert (chunk / "records.parquet").is_file() and not killed.exists()
    assert not [p.name for p in chunk.parent.iterdir() if p.name.startswith(".")]


def test_changing_one_methods_setting_reruns_only_that_method(tiny_copy: Path) -> None:
    def change(cfg: dict[str, Any]) -> None:
        cfg["methods"]["scratch"]["settings"]["lr"] = 0.02

    write_config(tiny_copy, change)
    jobs = planned_jobs(ok(snakemake(tiny_copy, "-n")))
    assert jobs == {
        "generate_scratch_class_0000": 1,
        "generate_scratch_filter__blocks_4_0000": 1,
        "generate_scratch_pair_0000": 1,
        "score_scratch": 1,
        "collect": 1,
        "index": 1,
        "site": 1,
        "all": 1,
    }


def test_an_interrupted_run_resumes_where_it_stopped(tiny_run: Path, tmp_path: Path) -> None:
    def change(cfg: dict[str, Any]) -> None:
        only_pixel(cfg)
        cfg["methods"]["pixel"]["classes_per_job"] = 1
        cfg["pairs"], cfg["filters"] = [], []
        cfg["exemplars"] = {"top_k": 0}  # no dataset either: generation and scoring alone

    workdir = tmp_path / "interrupted"
    write_config(workdir, change)
    chunks = workdir / "results" / RUN / "generate" / "pixel" / "class"
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        # Its own process group, with SIGINT's default action (a test runner may ignore SIGINT,
        # and children inherit that), so that the group gets a Ctrl-C as from a terminal.
        proc = subprocess.Popen(
            [*_command(workdir), "--cores", "1"],
            cwd=workdir,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            deadline = time.monotonic() + TIMEOUT_S
            # The first chunk finished as snakemake sees it (its records of the job written) and the
            # second one started (a score job may run in between).
            while not (
                re.search(r"^\d+ of \d+ steps", log_path.read_text(), re.M)
                and len(re.findall(r"^localrule generate_pixel_class_\d+:", log_path.read_text(), re.M)) == 2
            ):
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "no chunk finished in time"
                time.sleep(0.1)
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C while the second chunk runs
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    first = log_path.read_text()
    assert proc.returncode != 0 and "Terminating processes on user request" in first, first[-3000:]
    started = re.findall(r"^localrule (generate_pixel_class_\d+):", first, re.M)
    assert len(started) == 2, first[-3000:]
    assert not list(chunks.glob(".*")), "an interrupted chunk left its temporary folder behind"

    # The method's one scoring job waits for both chunks, so it has not run.
    assert not list((workdir / "results" / RUN / "scores").glob("pixel/class/*.parquet"))
    rerun = ok(snakemake(workdir, "--rerun-incomplete"))
    assert planned_jobs(rerun) == {started[1]: 1, "score_pixel": 1, "collect": 1, "index": 1, "site": 1, "all": 1}
    # Same bytes as an uninterrupted `atlas generate` of each class alone (chunks of one, as here).
    # Not compared with the tiny run's chunk of two: a chunk equals its singles up to float
    # rounding only, and under the random transformations Adam's sign-like first steps turn
    # rounding-level gradients at pixels the transformed frame barely touches into whole steps.
    for target, spec in (("class-0000", "class:0"), ("class-0009", "class:9")):
        ours = next(chunks.glob(f"chunk-*/{target}.png")).read_bytes()
        alone = tmp_path / "alone" / target
        args = [
            "generate",
            "--method",
            "pixel",
            "--preset",
            "default",
            "--set",
            "steps=3",
            "--classifier",
            "efficientnet-lite0",
            "--image-size",
            "64",
            "--targets",
            spec,
            "--seed",
            "0",
            "--batch-size",
            "1",
            "--device",
            "cpu",
            "--out",
            str(alone),
        ]
        # One thread, as the workflow's jobs run (a CPU's reductions may split by thread count).
        code = "import sys; from atlas.cli import main; sys.exit(main(sys.argv[1:]))"
        subprocess.run(
            [sys.executable, "-c", code, *args], env=_env() | {"OMP_NUM_THREADS": "1"}, check=True, capture_output=True
        )
        assert ours == (alone / f"{target}.png").read_bytes(), target
    assert len(pd.read_parquet(workdir / "results" / RUN / "records.parquet")) == 2
