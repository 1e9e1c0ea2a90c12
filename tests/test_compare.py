"""Two models side by side (config `compare:`, `atlas compare`, `atlas site --compare`): the second
model's run through the workflow, the table of each model reading the other's images, the site's
pages that show both, the reruns, and the config's errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from atlas.compare import SCHEMA, pair_rows, read_comparison
from atlas.errors import AtlasError
from tests.test_workflow import RUN, ok, only_pixel, output, planned_jobs, snakemake, write_config

B_RUN = f"{RUN}-compare"


def _two_models(cfg: dict[str, Any]) -> None:
    """Pixel only, no exemplars (nothing extracted): Lite0 against Lite2, both at 64 px."""
    only_pixel(cfg)
    cfg["exemplars"] = {"top_k": 0}
    cfg["compare"] = {"classifier": {"name": "efficientnet-lite2", "image_size": 64}, "labels": ["Lite0", None]}


@pytest.fixture(scope="module")
def two_model_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("compare")
    write_config(workdir, _two_models)
    ok(snakemake(workdir))
    return workdir


def test_the_second_model_gets_a_run_of_its_own_and_the_two_read_each_other(two_model_run: Path) -> None:
    a, b = two_model_run / "results" / RUN, two_model_run / "results" / B_RUN
    index_a, index_b = pd.read_parquet(a / "index.parquet"), pd.read_parquet(b / "index.parquet")
    assert set(index_a["classifier"]) == {"efficientnet-lite0"} and set(index_b["classifier"]) == {"efficientnet-lite2"}
    assert sorted(index_a["target_id"]) == sorted(index_b["target_id"])
    assert (b / "site" / "index.html").is_file()  # B's own atlas
    table, meta = read_comparison(a / "compare" / "compare.parquet")
    assert table.schema.remove_metadata() == SCHEMA
    rows = table.to_pandas()
    # The two classes and the pair with the one method; the filter is not compared (a channel of
    # Lite0's layer has no counterpart in Lite2).
    assert sorted(rows["target_id"]) == ["class-0000", "class-0009", "pair-0009+0030"]
    assert set(rows["method"]) == {"pixel"}
    for col in ("a_prob", "b_prob", "b_reads_a", "a_reads_b", "a_judge_prob", "b_judge_prob", "transfer"):
        assert rows[col].between(0, 1).all(), col
    assert (rows["transfer"] == (rows["b_reads_a"] + rows["a_reads_b"]) / 2).all()
    # Each model's own reading is the one its index recorded.
    own_a = index_a.set_index("target_id")["d_prob"]
    assert all(rows["a_prob"] == [own_a[t] for t in rows["target_id"]])
    assert meta["a"]["label"] == "Lite0" and meta["b"]["label"] == "efficientnet-lite2"
    assert (a / "compare" / meta["b"]["run_dir"]).resolve() == b.resolve()
    # The site of run A shows B's image beside A's on the class page, and the page of changes.
    site = a / "site"
    page = (site / "class-0009.html").read_text()
    assert "generate/pixel/class/chunk-0000/class-0009.png" in page  # A's exact PNG
    assert "compare/images/pixel/class-0009.jpg" in page and (site / "compare/images/pixel/class-0009.jpg").is_file()
    assert "A: Lite0" in page and "B: efficientnet-lite2" in page
    changed = (site / "changed.html").read_text()
    assert changed.count("<tr><td>") == 3 and "B reads A&#39;s: top-1" in changed
    assert 'href="changed.html">Two models</a>' in (site / "index.html").read_text()
    assert planned_jobs(ok(snakemake(two_model_run, "-n"))) == {}


def test_a_deleted_image_of_the_second_model_reruns_its_chunk_and_the_comparison(two_model_run: Path) -> None:
    png = two_model_run / "results" / B_RUN / "generate" / "pixel" / "class" / "chunk-0000" / "class-0009.png"
    saved = png.read_bytes()
    png.unlink()
    try:
        jobs = planned_jobs(ok(snakemake(two_model_run, "-n")))
    finally:
        png.write_bytes(saved)
    assert jobs == {
        "compare_generate_pixel_class_0000": 1,
        "compare_score_pixel": 1,
        "compare_collect": 1,
        "compare_index": 1,
        "compare_site": 1,
        "compare": 1,
        "site": 1,
        "all": 1,
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c.update(compare={"classifier": {"name": "efficientnet-lite0", "image_size": 64}}),
            "config: compare.classifier is the classifier itself: name a second model",
        ),
        (
            lambda c: c.update(compare={"classifier": {"name": "efficientnet-lite2"}, "run": RUN}),
            f"config: compare.run '{RUN}' is this run's own name; give the second model's run another name",
        ),
        (
            lambda c: c.update(compare={"classifier": {"name": "efficientnet-lite2"}, "labels": ["a"]}),
            "config: compare.labels: ['a'] is too short",
        ),
        (
            lambda c: c.update(compare={"name": "efficientnet-lite2"}),
            "config: compare: Additional properties are not allowed ('name' was unexpected)",
        ),
    ],
)
def test_config_errors_of_the_comparison(tmp_path: Path, change: Any, message: str) -> None:
    write_config(tmp_path, change)
    proc = snakemake(tmp_path, "-n")
    text = output(proc)
    assert proc.returncode != 0
    line = next((ln for ln in text.splitlines() if ln.startswith("config:")), None)
    assert line is not None and line.startswith(message), text[-3000:]
    assert not (tmp_path / "results").exists()


def _row(target: str, method: str, classes: list[int]) -> dict[str, Any]:
    return {"target_id": target, "method": method, "classes": classes}


def test_runs_of_other_targets_are_not_compared() -> None:
    a = {("class-0001", "pixel"): _row("class-0001", "pixel", [1])}
    with pytest.raises(AtlasError, match="share no class or pair target"):
        pair_rows(a, {("class-0002", "pixel"): _row("class-0002", "pixel", [2])})
    with pytest.raises(AtlasError, match="names classes"):
        pair_rows(a, {("class-0001", "pixel"): _row("class-0001", "pixel", [2])})
    assert pair_rows(a, a | {("class-0002", "pixel"): _row("class-0002", "pixel", [2])}) == [
        (a[("class-0001", "pixel")], a[("class-0001", "pixel")])
    ]


def test_a_file_that_is_not_a_comparison_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(path)
    with pytest.raises(AtlasError, match="is not an atlas comparison table"):
        read_comparison(path)
    with pytest.raises(AtlasError, match="does not exist"):
        read_comparison(tmp_path / "missing.parquet")
