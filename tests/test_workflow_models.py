"""The workflow with a model of the user's own: a 10-class `python:` model with a classes file
(planning checks, a tiny run, the site's names), and a random-weight timm vision transformer."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from atlas.methods import METHODS
from tests.test_workflow import TINY, _env, ok, output, planned_jobs, snakemake

TESTS = Path(__file__).resolve().parent
BIRDS = [
    "zebra finch",
    "house sparrow",
    "great tit",
    "blue tit",
    "robin",
    "wren",
    "blackbird",
    "starling",
    "jay",
    "magpie",
]


def _env_with_user_model() -> dict[str, str]:
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
    return env


def _birds_config(workdir: Path, **changes: Any) -> dict[str, Any]:
    """The tiny config with the 10-class python: model, two methods and no judge."""
    cfg = copy.deepcopy(TINY)
    cfg["run"] = "birds"
    cfg["classifier"] = {
        "name": "python:user_model:ten_classes",
        "image_size": 32,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "classes": "birds.txt",
    }
    cfg["judge"] = {"name": "none"}
    cfg["classes"] = [0, 7]
    cfg["pairs"] = [[1, 2]]
    cfg["filters"] = [{"layer": "conv2", "channels": ["0-1"]}]
    cfg["exemplars"] = {"top_k": 2}
    for method in METHODS:
        cfg["methods"][method]["enabled"] = method in ("pixel", "fourier")
    for key, value in changes.items():
        cfg[key] = value
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "birds.txt").write_text("\n".join(BIRDS) + "\n")
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def _config_error(workdir: Path) -> str:
    proc = snakemake(workdir, "-n", env=_env_with_user_model())
    text = output(proc)
    assert proc.returncode != 0, text[-3000:]
    line = next((ln for ln in text.splitlines() if ln.startswith("config:")), None)
    assert line is not None, text[-3000:]
    assert not (workdir / "results").exists()
    return line


def test_a_ten_class_python_model_plans_against_its_classes_file(tmp_path: Path) -> None:
    _birds_config(tmp_path)
    jobs = planned_jobs(ok(snakemake(tmp_path, "-n", env=_env_with_user_model())))
    assert jobs["generate_pixel_class_0000"] == 1 and jobs["score_fourier"] == 1

    _birds_config(tmp_path, classes=[0, 10])
    assert _config_error(tmp_path).startswith("config: classes: 10 is out of range; indices are 0..9")
    _birds_config(tmp_path, pairs=[[3, 12]])
    assert _config_error(tmp_path).startswith("config: pairs: 3+12: 12 is out of range; indices are 0..9")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c.update(judge={"name": "efficientnet-lite2"}),
            "config: judge: efficientnet-lite2 classifies ImageNet-1k's 1000 classes, D birds.txt's 10: "
            "set judge.name to none (no judge)",
        ),
        (
            lambda c: c["classifier"].pop("image_size"),
            "config: classifier: python:user_model:ten_classes does not declare its input; set classifier.image_size",
        ),
        (
            lambda c: c["classifier"].update(classes="no/such/birds.txt"),
            "config: classes file no/such/birds.txt does not exist",
        ),
        (
            lambda c: c["methods"]["pretrained"].update(enabled=True),
            "config: methods.pretrained: its autoencoder learns D's normalisation from D's name",
        ),
        (
            lambda c: c["classifier"].update(name="export:no/such/model.pt2", weights="default"),
            "config: filters: export:no/such/model.pt2 is a saved export model whose layers cannot be hooked",
        ),
    ],
)
def test_model_config_errors_stop_before_any_job(tmp_path: Path, change, message: str) -> None:
    cfg = _birds_config(tmp_path)
    change(cfg)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    line = _config_error(tmp_path)
    assert line.startswith(message), line


def test_a_ten_class_python_model_runs_end_to_end_and_the_site_names_its_classes(tmp_path: Path) -> None:
    _birds_config(tmp_path)
    ok(snakemake(tmp_path, env=_env_with_user_model()))
    run = tmp_path / "results" / "birds"
    index = pd.read_parquet(run / "index.parquet")
    assert len(index) == 2 * (2 + 1 + 2) and not index["failed"].any()
    classes = index[index["kind"] == "class"]
    assert set(classes["label"]) == {"zebra finch", "starling"}
    assert all(0 <= k < 10 for top in index["d_top5"] for k in top)
    assert all(set(labels) <= set(BIRDS) for labels in index["d_top5_labels"])
    # No judge: its columns are empty, not an ImageNet judge's meaningless figures.
    assert set(index["judge"]) == {"none"} and index["judge_prob"].isna().all()
    # The bundled photos' labels are ImageNet's, not D's classes: not counted as photos of them.
    assert index.loc[index["kind"] == "class", "class_photos"].isna().all()
    site = run / "site"
    page = (site / "class-0007.html").read_text()
    assert "<title>" in page and "starling" in page
    assert "the dataset&#39;s labels are ImageNet-1k classes, not D&#39;s" in page
    assert "house sparrow + great tit" in (site / "pair-0001+0002.html").read_text()
    summary = (site / "summary.html").read_text()
    assert "This run has no judge" in summary and "judge top-1" not in summary


def test_a_random_timm_vit_runs_through_the_workflow(tmp_path: Path) -> None:
    cfg = copy.deepcopy(TINY)
    cfg["run"] = "vit"
    cfg["classifier"] = {"name": "timm:vit_tiny_patch16_224", "weights": "random"}
    cfg["judge"] = {"name": "timm:resnet18", "weights": "random"}
    cfg["classes"] = [1]
    cfg["pairs"] = []
    cfg["filters"] = [{"layer": "blocks.6", "channels": [0]}]
    cfg["exemplars"] = {"top_k": 0}  # no dataset: the ten-class run covers the exemplars
    for method in METHODS:
        cfg["methods"][method]["enabled"] = method == "pixel"
    cfg["methods"]["pixel"]["settings"] = {"steps": 2}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    ok(snakemake(tmp_path))
    index = pd.read_parquet(tmp_path / "results" / "vit" / "index.parquet")
    assert list(index["target_id"]) == ["class-0001", "filter-blocks.6-0000"]
    assert not index["failed"].any() and set(index["image_size"]) == {224}
    assert index["judge"].tolist() == ["timm:resnet18"] * 2 and index["judge_prob"].notna().iloc[0]
