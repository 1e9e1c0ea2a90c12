"""`atlas collect`: chunk records from real `atlas generate` runs merged into one run table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from atlas.cli import main
from atlas.collect import collect
from atlas.errors import AtlasError

# Three chunks of a run folder, as the workflow lays them out: (folder, targets).
CHUNKS = {
    "generate/pixel/class/chunk-0000": ["class:1,2"],
    "generate/pixel/filter/chunk-0000": ["filter:layer1:0"],
    "generate/pixel/pair/chunk-0000": ["pair:1+3"],
}
CHUNKS_FIRST = next(iter(CHUNKS))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with three real chunks (random ResNet-18 at 64 px, 2 steps: seconds)."""
    run = tmp_path_factory.mktemp("generated") / "run"
    for folder, specs in CHUNKS.items():
        targets = [a for spec in specs for a in ("--targets", spec)]
        code = main(
            [
                "generate",
                "--classifier",
                "torchvision:resnet18",
                "--weights",
                "random",
                "--method",
                "pixel",
                *targets,
                "--out",
                str(run / folder),
                "--steps",
                "2",
                "--image-size",
                "64",
            ]
        )
        assert code == 0
    return run


@pytest.fixture()
def run_dir(generated: Path, tmp_path: Path) -> Path:
    """A private copy of the generated run folder, free to damage."""
    return Path(shutil.copytree(generated, tmp_path / "run"))


def records_of(run: Path) -> list[Path]:
    return [run / folder / "records.parquet" for folder in CHUNKS]


def test_merges_chunks_with_paths_relative_to_the_run(run_dir: Path, tmp_path: Path) -> None:
    out = run_dir / "records.parquet"
    collect(records_of(run_dir), run_dir, out)
    merged = pd.read_parquet(out)
    assert list(merged["target_id"]) == ["class-0001", "class-0002", "filter-layer1-0000", "pair-0001+0003"]
    assert list(merged["chunk"]) == [
        *["generate/pixel/class/chunk-0000"] * 2,
        "generate/pixel/filter/chunk-0000",
        "generate/pixel/pair/chunk-0000",
    ]
    for image in merged["image"]:
        assert not Path(image).is_absolute() and (run_dir / image).is_file()
    assert merged.loc[0, "image"] == "generate/pixel/class/chunk-0000/class-0001.png"
    # Columns that are null in some chunks keep their type: a class index stays an integer.
    table = pq.read_table(out)
    assert str(table.schema.field("class_index").type) == "int64"
    assert str(table.schema.field("layer").type) in ("string", "large_string")
    assert merged.loc[0, "class_index"] == 1 and pd.isna(merged.loc[2, "class_index"])
    assert merged.loc[2, "layer"] == "layer1"
    # Everything else is the chunks' own records, unchanged.
    chunk = pd.read_parquet(records_of(run_dir)[0])
    pd.testing.assert_series_equal(merged.loc[:1, "prob"], chunk["prob"], check_names=False)
    assert not list(run_dir.glob(".records.parquet*")), "temporary file left behind"


def test_failed_targets_are_kept_without_an_image(run_dir: Path) -> None:
    path = records_of(run_dir)[0]
    table = pd.read_parquet(path)
    (run_dir / CHUNKS_FIRST / table.loc[1, "image"]).unlink()
    table.loc[1, ["image", "failed", "reason"]] = [None, True, "loss is NaN at step 2"]
    table.to_parquet(path, index=False)
    merged = collect(records_of(run_dir), run_dir, run_dir / "records.parquet").to_pandas()
    assert merged.loc[1, "failed"] and pd.isna(merged.loc[1, "image"]) and merged.loc[1, "reason"].startswith("loss")


def test_the_cli_writes_the_table_and_overwrites_it(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_dir / "records.parquet"
    out.write_text("stale")
    args = ["collect", "--run-dir", str(run_dir), "--out", str(out), *map(str, records_of(run_dir))]
    assert main(args) == 0
    assert len(pd.read_parquet(out)) == 4


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("duplicate", "target class-0001 of method pixel is twice in the records"),
        ("missing_image", "class-0002.png is listed in"),
        ("classifier", "the chunks come from 2 classifiers"),
        ("outside", "is not inside the run folder"),
        ("no_records", "does not exist"),
        ("not_records", "lacks column(s)"),
    ],
)
def test_refuses_records_that_cannot_be_one_run(
    run_dir: Path, damage: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    records = records_of(run_dir)
    if damage == "duplicate":
        copy = run_dir / "generate/pixel/class/chunk-0001"
        shutil.copytree(records[0].parent, copy)
        records.append(copy / "records.parquet")
    elif damage == "missing_image":
        (records[0].parent / "class-0002.png").unlink()
    elif damage == "classifier":
        table = pd.read_parquet(records[1])
        table["classifier"] = "torchvision:vgg16"
        table.to_parquet(records[1], index=False)
    elif damage == "outside":
        records = [Path(shutil.copytree(records[0].parent, run_dir.parent / "elsewhere")) / "records.parquet"]
    elif damage == "no_records":
        records[2].unlink()
    else:
        pd.DataFrame({"x": [1]}).to_parquet(records[2], index=False)
    out = run_dir / "records.parquet"
    with pytest.raises(AtlasError) as info:
        collect(records, run_dir, out)
    assert message in str(info.value)
    assert not out.exists()
    # The CLI says the same on one line, with exit code 2.
    args = ["collect", "--run-dir", str(run_dir), "--out", str(out), *map(str, records)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("atlas collect: error:") and message in err and "\n" not in err


def test_no_records_at_all_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AtlasError, match="no chunk records given"):
        collect([], tmp_path, tmp_path / "records.parquet")
