"""The workflow's behaviour beyond the shared tiny run: failed and retried chunks, the paper's plan,
the shipped configs, config errors, the lint, and the chunk plan itself. Each runs its own small
workflow (or none), so this file runs beside tests/test_workflow.py under pytest-xdist."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from atlas.errors import AtlasError
from atlas.methods import METHODS, MethodSettings
from atlas.plan import Chunk, class_targets, filter_targets, pair_targets, parse_indices, plan_chunks
from atlas.targets import parse_specs
from tests.test_workflow import (
    REPO,
    RUN,
    _env,
    ok,
    only_pixel,
    output,
    planned_jobs,
    snakemake,
    write_config,
)


def _resnet(cfg: dict[str, Any], layer: str) -> None:
    """Pixel only, on a classifier whose layers the package does not table (so only the job that
    loads it can know whether `layer` exists)."""
    only_pixel(cfg)
    cfg["classifier"] = {"name": "torchvision:resnet18", "weights": "random", "image_size": 64}
    cfg["filters"] = [{"layer": layer, "channels": [0]}]


def test_a_failed_chunk_lets_the_others_finish_and_reruns_alone(tmp_path: Path) -> None:
    def broken(cfg: dict[str, Any]) -> None:
        _resnet(cfg, "layer9")

    workdir = tmp_path / "failing"
    write_config(workdir, broken)
    text = output(proc := snakemake(workdir, "--keep-going"))
    assert proc.returncode != 0, text
    run = workdir / "results" / RUN
    assert (run / "generate/pixel/class/chunk-0000/records.parquet").is_file()
    assert (run / "generate/pixel/pair/chunk-0000/records.parquet").is_file()
    assert not (run / "generate/pixel/filter/layer9-chunk-0000").exists() or not any(
        (run / "generate/pixel/filter/layer9-chunk-0000").iterdir()
    )
    assert "unknown layer 'layer9'" in (run / "logs/generate/pixel/filter/layer9-chunk-0000.log").read_text()
    assert not (run / "records.parquet").exists() and not (run / "index.parquet").exists()

    def fixed(cfg: dict[str, Any]) -> None:
        _resnet(cfg, "layer1")

    # The exemplars job draws the filter's exemplars too, so it failed on the same layer and reruns.
    assert "unknown layer 'layer9'" in (run / "logs/exemplars.log").read_text()
    write_config(workdir, fixed)
    assert planned_jobs(ok(snakemake(workdir, "-n"))) == {
        "generate_pixel_filter_layer1_0000": 1,
        "exemplars": 1,
        "score_pixel": 1,
        "collect": 1,
        "index": 1,
        "site": 1,
        "all": 1,
    }


def test_a_target_whose_loss_went_nan_is_retried_by_the_next_runs_with_new_seeds(tmp_path: Path) -> None:
    def diverging(cfg: dict[str, Any]) -> None:
        for method in METHODS:
            cfg["methods"][method]["enabled"] = method == "scratch"
        cfg["methods"]["scratch"]["settings"]["lr"] = 1e20  # every attempt's loss goes NaN
        cfg.update(classes=[0], pairs=[], filters=[], nan_attempts=2)
        cfg["exemplars"] = {"top_k": 0}

    workdir = tmp_path / "nan"
    write_config(workdir, diverging)
    records = workdir / "results" / RUN / "generate/scratch/class/chunk-0000/records.parquet"
    ok(snakemake(workdir))
    first = pd.read_parquet(records).iloc[0]
    assert first["failed"] and first["attempt"] == 0 and json.loads(first["earlier_attempts"]) == []
    # The next run tries it again (its chunk and what depends on it), with the next attempt's seed.
    assert planned_jobs(ok(snakemake(workdir, "-n"))) == {
        "generate_scratch_class_0000": 1,
        "score_scratch": 1,
        "collect": 1,
        "index": 1,
        "site": 1,
        "all": 1,
    }
    ok(snakemake(workdir))
    second = pd.read_parquet(records).iloc[0]
    assert second["failed"] and second["attempt"] == 1 and second["seed"] != first["seed"]
    assert json.loads(second["earlier_attempts"]) == [
        {"attempt": 0, "seed": int(first["seed"]), "reason": first["reason"]}
    ]
    index = pq.read_table(workdir / "results" / RUN / "index.parquet").to_pandas()
    assert list(index["attempt"]) == [1]
    # Both attempts spent (nan_attempts 2): nothing more to do.
    assert planned_jobs(ok(snakemake(workdir, "-n"))) == {}


# --------------------------------------------------------------------------------------------
# Planning the paper's run


def test_the_paper_config_plans_all_1000_classes_without_importing_torch(tmp_path: Path) -> None:
    workdir = tmp_path / "vgg"
    (workdir / "imagenet").mkdir(parents=True)
    cfg = yaml.safe_load((REPO / "workflow" / "configs" / "imagenet-vgg16.yaml").read_text())
    cfg["dataset"]["root"] = "imagenet"
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    # A `torch` that cannot be imported: planning must not load (or download) VGG-16.
    (tmp_path / "no_torch" / "torch").mkdir(parents=True)
    (tmp_path / "no_torch" / "torch" / "__init__.py").write_text("raise ImportError('torch imported at DAG time')\n")
    env = _env() | {"PYTHONPATH": str(tmp_path / "no_torch")}
    text = ok(snakemake(workdir, "-n", "-p", env=env))

    targets: dict[str, list[str]] = {}
    for method, specs in re.findall(r"atlas generate --method (\w+) (.*?) --out ", text):
        targets.setdefault(method, []).extend(re.findall(r"--targets (\S+)", specs))
    assert set(targets) == set(METHODS)
    for method, specs in targets.items():
        classes = [int(c) for s in specs if s.startswith("class:") for c in s.removeprefix("class:").split(",")]
        assert sorted(classes) == list(range(1000)), method
        filters = sum(len(s.split(":")[2].split(",")) for s in specs if s.startswith("filter:"))
        assert filters == 128 + 512, method
    jobs = planned_jobs(text)
    chunk = cfg["methods"]["scratch"]["classes_per_job"]
    assert sum(n for rule, n in jobs.items() if rule.startswith("generate_scratch_class_")) == math.ceil(1000 / chunk)
    assert jobs["extract"] == 1 and jobs["train_dae"] == 1


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "workflow" / "configs").glob("*.yaml")))
def test_each_shipped_config_sets_every_key_the_embedded_default_sets(name: str) -> None:
    """`--configfile workflow/configs/NAME` is merged over config.yaml (snakemake updates dicts key
    by key), so a key the embedded default sets and the shipped config does not would carry the
    embedded default's budget into that run."""

    def leaves(d: dict[str, Any], prefix: str = "") -> set[str]:
        out: set[str] = set()
        for k, v in d.items():
            out |= leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}"}
        return out

    embedded = yaml.safe_load((REPO / "config.yaml").read_text())
    paper = yaml.safe_load((REPO / "workflow" / "configs" / name).read_text())
    schema_defaults = {"compute.precision", "compute.channels_last", "compute.compile"}  # the schema's defaults
    missing = leaves(embedded) - leaves(paper) - schema_defaults
    assert not missing, f"{name} inherits these from config.yaml: {sorted(missing)}"


# --------------------------------------------------------------------------------------------
# Config errors: one clear line, before any job runs


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["methods"]["scratch"].update(chunk_szie=2),
            "config: methods.scratch: Additional properties are not allowed ('chunk_szie' was unexpected)",
        ),
        (
            lambda c: c["methods"]["fourier"].update(chunk_size=50),
            "config: methods.fourier.chunk_size was renamed methods.fourier.classes_per_job (the bin of target "
            "indices per generation job); write classes_per_job: 50",
        ),
        (lambda c: c.update(classes=[0, 1000]), "config: classes: 1000 is out of range; indices are 0..999"),
        (
            lambda c: c["dataset"].update(source="imagenet", root="no/such/folder"),
            "config: dataset.root no/such/folder is not an existing folder (dataset.source imagenet)",
        ),
        (
            lambda c: c.update(filters=[{"layer": "_blocks.99", "channels": [0]}]),
            "config: filters: efficientnet-lite0 has no layer '_blocks.99'; valid layers: _blocks.0.",
        ),
        (
            lambda c: c.update(filters=[{"layer": "_blocks.4", "channels": ["0-40"]}]),
            "config: filters: channel 40 of layer _blocks.4 is out of range; efficientnet-lite0's _blocks.4 has channels 0..39",
        ),
        (
            lambda c: c["methods"]["scratch"].update(classes=["5-2"]),
            "config: methods.scratch.classes: range '5-2' runs backwards; write it as \"2-5\"",
        ),
        (
            lambda c: c["methods"]["pixel"].update(resources={"runtim": 60}),
            "config: methods.pixel.resources: Additional properties are not allowed ('runtim' was unexpected)",
        ),
    ],
)
def test_config_errors_stop_before_any_job(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    write_config(tmp_path, change)
    proc = snakemake(tmp_path, "-n")
    text = output(proc)
    assert proc.returncode != 0
    line = next((ln for ln in text.splitlines() if ln.startswith("config:")), None)
    assert line is not None and line.startswith(message), text[-3000:]
    assert not (tmp_path / "results").exists()


def test_generation_resources_come_from_the_config(tmp_path: Path) -> None:
    """Each chunk is a rule of its own: the config sets a method's (or every) generation job's
    resources, a retry asks for attempt x runtime and mem_mb, and `--set-resources generate:...`,
    which names no rule, is refused rather than ignored."""

    def change(c: dict[str, Any]) -> None:
        only_pixel(c)
        c["generate_resources"] = {"runtime": 20, "mem_mb": 3000, "slurm_partition": "gpu"}
        c["methods"]["pixel"]["resources"] = {"runtime": 45}

    write_config(tmp_path, change)
    text = ok(snakemake(tmp_path, "-n", "--retries", "1"))
    generate = re.findall(r"rule (generate_\S+):\n(?:    .*\n)*?    resources: (.*)", text)
    assert generate, text[-3000:]
    for _, resources in generate:
        assert "runtime=45" in resources and "mem_mb=3000" in resources and "slurm_partition=gpu" in resources
    scores = re.search(r"rule score_pixel:\n(?:    .*\n)*?    resources: (.*)", text)
    assert scores and "runtime=45" not in scores.group(1)

    proc = snakemake(tmp_path, "-n", "--set-resources", "generate:runtime=60")
    line = next((ln for ln in output(proc).splitlines() if ln.startswith("--set-resources")), "")
    assert proc.returncode != 0 and "names no rule of this run" in line and "methods.<method>.resources" in line


def test_lint_reports_nothing(tmp_path: Path) -> None:
    write_config(tmp_path)
    text = output(snakemake(tmp_path, "--lint"))
    assert not re.findall(r"^\s+\* (.+?):?$", text, re.M), text[-4000:]
    assert "Congratulations, your workflow is in a good condition!" in text, text[-4000:]


# --------------------------------------------------------------------------------------------
# The chunk plan and the schema (no snakemake)


@pytest.mark.parametrize(
    ("kind", "planned", "sizes", "names"),
    [
        (
            "class",
            class_targets([0, "5-7", 3]),
            [1, 1, 1, 2],
            ["chunk-0000", "chunk-0001", "chunk-0002", "chunk-0003"],
        ),
        (
            "pair",
            pair_targets([[9, 30], [593, 611], [30, 9 + 1]]),
            [1, 1, 1],
            ["chunk-0004", "chunk-0005", "chunk-0296"],
        ),
        (
            "filter",
            filter_targets([{"layer": "_blocks.4", "channels": ["0-2"]}, {"layer": "features.26", "channels": [5]}]),
            [2, 1, 1],
            ["_blocks.4-chunk-0000", "_blocks.4-chunk-0001", "features.26-chunk-0002"],
        ),
    ],
)
def test_chunks_are_bins_of_indices_and_their_specs_name_exactly_their_targets(
    kind: str, planned: list[Any], sizes: list[int], names: list[str]
) -> None:
    chunks = plan_chunks("scratch", kind, planned, 2)
    assert [len(c.targets) for c in chunks] == sizes and [c.name for c in chunks] == names
    for chunk in chunks:
        assert isinstance(chunk, Chunk) and [t.id for t in parse_specs(chunk.specs())] == chunk.ids
    assert sorted(t.id for c in chunks for t in c.targets) == sorted(t.id for t in planned)
    # Job names are identifiers: a filter chunk's layer with its dots written as _.
    assert chunks[-1].key == {"class": "0003", "pair": "0296", "filter": "features_26_0002"}[kind]


@pytest.mark.parametrize("added", [0, 500, 999])
def test_adding_a_target_changes_its_own_chunk_and_no_other(added: int) -> None:
    before = plan_chunks("fourier", "class", class_targets([c for c in range(1000) if c != added]), 50)
    after = plan_chunks("fourier", "class", class_targets(list(range(1000))), 50)
    changed = {c.name for c in after} - {c.name for c in before} | {
        a.name for a in after for b in before if a.name == b.name and a.targets != b.targets
    }
    assert changed == {f"chunk-{added // 50:04d}"}
    assert all(len(c.targets) <= 50 for c in after) and len(after) == 20


def test_a_method_can_draw_its_own_classes(tmp_path: Path) -> None:
    """methods.<m>.classes: scratch on a spread of its own, the others on the run's classes; the
    exemplars cover every class that any method draws."""

    def change(cfg: dict[str, Any]) -> None:
        for method in METHODS:
            cfg["methods"][method]["enabled"] = method in ("scratch", "fourier")
        cfg["methods"]["scratch"].update(classes=[9, 500], classes_per_job=1000)
        cfg.update(classes=["0-3"], pairs=[], filters=[])

    write_config(tmp_path, change)
    text = ok(snakemake(tmp_path, "-n", "-p"))
    commands = _generate_commands(text)
    assert sorted(commands) == ["generate_fourier_class_0000", "generate_scratch_class_0000"]
    assert "--targets class:9,500 " in commands["generate_scratch_class_0000"]
    assert "--targets class:0,1,2,3 " in commands["generate_fourier_class_0000"]
    exemplars = re.search(r"atlas exemplars .*", text)
    assert exemplars and "--targets class:0,1,2,3,9,500 " in exemplars.group(0)


def test_a_method_with_seeds_passes_them_to_its_jobs_and_batches_them_together(tmp_path: Path) -> None:
    """methods.<m>.seeds: fourier's jobs get --seeds 3 and batches of targets x seeds; a method
    with one seed keeps the command it always had (no --seeds), so its finished jobs stay done."""

    def change(cfg: dict[str, Any]) -> None:
        for method in METHODS:
            cfg["methods"][method]["enabled"] = method in ("pixel", "fourier")
        cfg["methods"]["fourier"].update(seeds=3, classes_per_job=1000, batch_size=None)
        cfg["methods"]["pixel"].update(classes_per_job=1000, batch_size=None)
        cfg.update(classes=["0-1"], pairs=[], filters=[])

    write_config(tmp_path, change)
    commands = _generate_commands(ok(snakemake(tmp_path, "-n", "-p")))
    assert " --seeds 3 " in commands["generate_fourier_class_0000"]
    assert "--batch-size 6 " in commands["generate_fourier_class_0000"]
    assert "--seeds" not in commands["generate_pixel_class_0000"]
    assert "--batch-size 2 " in commands["generate_pixel_class_0000"]
    chunk = plan_chunks("fourier", "class", class_targets([0, 1]), 1000, seeds=2)[0]
    assert chunk.ids == ["class-0000", "class-0000-seed1", "class-0001", "class-0001-seed1"] and chunk.size == 4
    with pytest.raises(AtlasError, match="seeds must be at least 1"):
        plan_chunks("fourier", "class", class_targets([0]), 8, seeds=0)


def _generate_commands(text: str) -> dict[str, str]:
    """A dry run's (`-n -p`) generation jobs: job name -> its `atlas generate` command."""
    jobs = re.findall(r"^rule (generate_\w+):\n(?:.*\n)*?Shell command: (.*)$", text, re.M)
    return dict(jobs)


def test_a_class_added_in_the_middle_plans_one_new_chunk_per_method(tmp_path: Path) -> None:
    """Two dry runs, with class 50 left out and added: the jobs whose commands differ are one chunk
    per method, the one holding class 50; every later chunk is planned exactly as before."""

    def classes(listed: list[int]) -> Callable[[dict[str, Any]], None]:
        def change(cfg: dict[str, Any]) -> None:
            for method in METHODS:
                cfg["methods"][method]["enabled"] = method in ("fourier", "maco")
                cfg["methods"][method]["classes_per_job"] = 10
            cfg.update(classes=listed, pairs=[], filters=[])
            cfg["exemplars"] = {"top_k": 0}

        return change

    plans = []
    for listed in ([c for c in range(100) if c != 50], list(range(100))):
        workdir = tmp_path / f"plan{len(listed)}"
        write_config(workdir, classes(listed))
        plans.append(_generate_commands(ok(snakemake(workdir, "-n", "-p"))))
    before, after = plans
    assert len(before) == len(after) == 20, after.keys()
    changed = sorted(job for job in after if before.get(job) != after[job])
    assert changed == ["generate_fourier_class_0005", "generate_maco_class_0005"]


def test_class_lists_are_sorted_unique_and_checked() -> None:
    assert parse_indices([9, "0-2", 1], "classes", 1000) == [0, 1, 2, 9]
    for bad, message in [
        ([1000], "out of range"),
        (["3-1"], "runs backwards"),
        (["x"], "malformed"),
        ([True], "not an index"),
    ]:
        with pytest.raises(AtlasError, match=message):
            parse_indices(bad, "classes", 1000)
    with pytest.raises(AtlasError, match="listed twice"):
        pair_targets([[1, 2], [2, 1]])
    with pytest.raises(AtlasError, match="listed twice"):
        filter_targets([{"layer": "a", "channels": [0]}, {"layer": "a", "channels": [1]}])
    with pytest.raises(AtlasError, match="layer name"):
        filter_targets([{"layer": "a;rm", "channels": [0]}])


def test_the_schema_lists_every_method_setting() -> None:
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    fields = set(MethodSettings.__dataclass_fields__) - {"method"}
    assert set(schema["$defs"]["settings"]["properties"]) == fields
