"""`atlas index`: a tiny run's records, scores and exemplars joined into the checked index."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from atlas.cli import main
from atlas.collect import collect
from atlas.errors import AtlasError
from atlas.exemplars import exemplars
from atlas.index import build_index, config_sha256, read_provenance
from atlas.schema import INDEX_COLUMNS, INDEX_FORMAT, PROVENANCE_KEY, check_index, markdown_table
from atlas.score import robustness_set, score_chunk, write_scores
from atlas.targets import parse_specs
from tests.tiny import make_chunk, tiny_classifier, write_dataset

REPO = Path(__file__).resolve().parents[1]
CHUNKS = {
    "generate/pixel/class/chunk-0000": ["class:1,2"],
    "generate/pixel/filter/chunk-0000": ["filter:act:0"],
    "generate/pixel/pair/chunk-0000": ["pair:1+3"],
}
CONFIG = {"run": "tiny", "seed": 0, "classes": [1, 2], "judge": {"name": "tiny", "weights": "random"}}


def scores_of(run: Path) -> list[Path]:
    return [run / "scores" / f"{folder.removeprefix('generate/')}.parquet" for folder in CHUNKS]


def score_into(chunk: Path, out: Path, judge_seed: int = 1) -> None:
    d, judge = tiny_classifier(), tiny_classifier(seed=judge_seed)
    transforms = robustness_set(jitter_px=2, jitter_count=2, scales=(0.9,))
    write_scores(score_chunk(d, judge, chunk, transforms), d, judge, transforms, out)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as the workflow leaves it before `atlas index`."""
    run = tmp_path_factory.mktemp("index") / "run"
    for folder, specs in CHUNKS.items():
        make_chunk(run / folder, specs)
    collect([run / f / "records.parquet" for f in CHUNKS], run, run / "records.parquet")
    for folder, out in zip(CHUNKS, scores_of(run), strict=True):
        score_into(run / folder, out)
    rng = np.random.default_rng(0)
    data = write_dataset(run / "dataset", rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))
    exemplars(tiny_classifier(), data, parse_specs(["class:1,2", "pair:1+3", "filter:act:0"]), 2, run / "exemplars")
    return run


@pytest.fixture()
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def index_args(run: Path, scores: list[Path] | None = None, exemplars: Path | None = None) -> list[str]:
    ex = exemplars if exemplars is not None else run / "exemplars" / "exemplars.parquet"
    return [
        "index",
        "--run-dir",
        str(run),
        "--records",
        str(run / "records.parquet"),
        "--exemplars",
        str(ex),
        "--config-json",
        json.dumps(CONFIG),
        "--out",
        str(run / "index.parquet"),
        *map(str, scores if scores is not None else scores_of(run)),
    ]


def test_the_index_joins_records_scores_and_exemplars(run_copy: Path) -> None:
    assert main(index_args(run_copy)) == 0
    table = pq.read_table(run_copy / "index.parquet")
    assert table.column_names == [c.name for c in INDEX_COLUMNS]
    check_index(table)
    rows = {r["target_id"]: r for r in table.to_pylist()}
    records = {r["target_id"]: r for r in pq.read_table(run_copy / "records.parquet").to_pylist()}
    assert set(rows) == {"class-0001", "class-0002", "filter-act-0000", "pair-0001+0003"}
    scores = {r["target_id"]: r for p in scores_of(run_copy) for r in pq.read_table(p).to_pylist()}
    for tid, row in rows.items():
        rec = records[tid]
        assert row["d_activation"] == rec["activation"] and row["d_top5"] == rec["top5"]
        assert row["image"] == rec["image"] and (run_copy / row["image"]).is_file()
        for col in ("judge_prob", "judge_top5_labels", "robust_prob", "robust_activation", "d_top5_labels"):
            assert row[col] == scores[tid][col], (tid, col)
        assert row["judge"] == "tiny" and row["classifier"] == "tiny" and row["config_sha256"] == config_sha256(CONFIG)
        assert row["classifier_sha256"] is None and row["decoder_sha256"] is None  # random weights, pixel method
    cls = rows["class-0001"]
    assert cls["d_prob"] == records["class-0001"]["prob"] and cls["d_rank"] == records["class-0001"]["rank"]
    assert len(cls["exemplars"]) == 2 and all(
        p.startswith("exemplars/dataset-") and (run_copy / p).is_file() for p in cls["exemplars"]
    )
    assert len(rows["pair-0001+0003"]["exemplars"]) == 2
    # A filter: no probability or rank, but a robustness of its activation, and exemplars.
    filt = rows["filter-act-0000"]
    assert filt["d_prob"] is None and filt["d_rank"] is None and filt["judge_prob"] is None
    assert len(filt["exemplars"]) == 2 and filt["judge_top5"] is not None
    assert filt["exemplar_scores"] == sorted(filt["exemplar_scores"], reverse=True)
    # The provenance, complete, in the schema metadata.
    prov = read_provenance(run_copy / "index.parquet")
    assert (
        prov["format"] == INDEX_FORMAT and prov["config"] == CONFIG and prov["config_sha256"] == config_sha256(CONFIG)
    )
    assert prov["judge"]["name"] == "tiny" and [t["name"] for t in prov["robustness"]][-2:] == ["scale(0.9)", "flip"]
    assert prov["exemplars"]["top_k"] == 2 and set(prov["chunks"]) == set(CHUNKS)
    assert PROVENANCE_KEY in table.schema.metadata
    assert not list(run_copy.glob(".index.parquet*")), "temporary file left behind"


def test_a_targets_seeds_are_rows_of_their_own_that_share_its_id_and_exemplars(tmp_path: Path) -> None:
    run = tmp_path / "run"
    chunk = make_chunk(run / "generate/pixel/class/chunk-0000", ["class:1,2"], seeds=2)
    collect([chunk / "records.parquet"], run, run / "records.parquet")
    score_into(chunk, run / "scores" / "pixel" / "class" / "chunk-0000.parquet")
    rng = np.random.default_rng(0)
    data = write_dataset(run / "dataset", rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))
    exemplars(tiny_classifier(), data, parse_specs(["class:1,2"]), 2, run / "exemplars")
    table = build_index(
        run,
        run / "records.parquet",
        [run / "scores/pixel/class/chunk-0000.parquet"],
        run / "exemplars/exemplars.parquet",
    ).to_pylist()
    got = [(r["target_id"], r["base_id"], r["seed_index"]) for r in table]
    assert got == [
        ("class-0001", "class-0001", 0),
        ("class-0001-seed1", "class-0001", 1),
        ("class-0002", "class-0002", 0),
        ("class-0002-seed1", "class-0002", 1),
    ]
    assert table[0]["exemplars"] == table[1]["exemplars"] and table[0]["exemplars"]
    assert table[0]["diversity"] == table[1]["diversity"] and table[0]["diversity"] is not None


def test_without_exemplars_the_lists_are_empty(tiny_run: Path) -> None:
    table = build_index(tiny_run, tiny_run / "records.parquet", scores_of(tiny_run))
    assert all(row["exemplars"] == [] for row in table.to_pylist())
    assert table.column("config_sha256").to_pylist() == [None] * 4


def _damage(run: Path, damage: str) -> dict[str, Any]:
    """Break the run one way; return index_args keywords."""
    scores = scores_of(run)
    if damage == "missing_scores":
        return {"scores": scores[:2]}
    if damage == "twice":
        return {"scores": [*scores, scores[0]]}
    if damage == "stale":
        # The class chunk was regenerated with other targets after it was scored.
        make_chunk(run / "generate/pixel/class/chunk-0000", ["class:1,4"])
        collect([run / f / "records.parquet" for f in CHUNKS], run, run / "records.parquet")
        return {}
    if damage == "judge":
        score_into(run / "generate/pixel/pair/chunk-0000", scores[2], judge_seed=2)
        meta = pq.read_table(scores[2])
        info = json.loads(meta.schema.metadata[b"atlas.scores"])
        info["judge"]["name"] = "another"
        pq.write_table(meta.replace_schema_metadata({b"atlas.scores": json.dumps(info).encode()}), scores[2])
        return {}
    if damage == "exemplars":
        exemplars(tiny_classifier(), run / "dataset", parse_specs(["class:1,2"]), 2, run / "exemplars")
        return {}
    if damage == "records":
        (run / "records.parquet").unlink()
        return {}
    assert damage == "run_json"
    (run / "generate/pixel/filter/chunk-0000/run.json").unlink()
    return {}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            "missing_scores",
            "no scores for target pair-0001+0003 of method pixel (chunk generate/pixel/pair/chunk-0000)",
        ),
        ("twice", "target class-0001 of method pixel is scored twice"),
        ("stale", "no scores for target class-0004 of method pixel"),
        ("judge", "was scored under another judge or robustness set"),
        ("exemplars", "target filter-act-0000 has no exemplars"),
        ("records", "records"),
        ("run_json", "run.json"),
    ],
)
def test_mismatched_parts_are_refused_on_one_line(
    run_copy: Path, damage: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    kwargs = _damage(run_copy, damage)
    assert main(index_args(run_copy, **kwargs)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("atlas index: error:") and message in err, err
    assert not (run_copy / "index.parquet").exists()


def test_scores_that_match_no_record_are_refused(run_copy: Path) -> None:
    # The pair chunk's records lost a target after it was scored.
    records = pq.read_table(run_copy / "records.parquet")
    pq.write_table(records.slice(0, 3), run_copy / "records.parquet")
    with pytest.raises(AtlasError, match="scores for target pair-0001\\+0003 of method pixel match no record"):
        build_index(run_copy, run_copy / "records.parquet", scores_of(run_copy))


def test_the_design_document_documents_the_index_schema() -> None:
    design = (REPO / "docs" / "design.md").read_text()
    m = re.search(r"^\| column \| type \| group \| meaning \|\n(?:\|.*\n)+", design, re.M)
    assert m, "docs/design.md has no index table"
    assert m.group(0).strip() == markdown_table()
