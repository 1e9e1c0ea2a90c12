"""`atlas exemplars`: the dataset images D scores highest per target, on a hand-made dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from atlas.cli import main
from atlas.errors import AtlasError
from atlas.exemplars import EXEMPLARS, exemplars
from atlas.naturalness import of_uint8
from atlas.schema import EXEMPLARS_KEY
from atlas.targets import parse_specs
from tests.tiny import linear_classifier, write_dataset

# Constant 8 x 8 images; the linear classifier's logit c is channel c's mean (RGB in [0, 1]).
COLOURS = [
    (200, 10, 10),
    (100, 250, 0),
    (250, 0, 0),  # an augmented crop of row 0: never an exemplar, though the reddest
    (150, 150, 150),
    (150, 0, 240),  # ties with row 3 for red: the dataset's order decides
    (0, 0, 0),
]
PARENTS = [None, None, 0, None, None, None]


def identity_d():  # noqa: ANN201 - a Classifier
    return linear_classifier([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [0.0, 0.0, 0.0])


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    images = np.stack([np.full((8, 8, 3), c, dtype=np.uint8) for c in COLOURS])
    return write_dataset(tmp_path / "dataset", images, PARENTS)


def test_the_top_k_are_the_dataset_images_d_scores_highest(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run" / "exemplars"
    table = exemplars(identity_d(), dataset, parse_specs(["class:0,2", "pair:0+1"]), 3, out, batch_size=2).to_pylist()
    by_id = {row["target_id"]: row for row in table}
    assert by_id["class-0000"]["exemplar_rows"] == [0, 3, 4]
    assert by_id["class-0000"]["exemplar_scores"] == pytest.approx([200 / 255, 150 / 255, 150 / 255], abs=1e-6)
    assert by_id["class-0002"]["exemplar_rows"] == [4, 3, 0]
    # A pair's exemplars: the sum of its classes' relu(logit), as its d_activation.
    assert by_id["pair-0000+0001"]["exemplar_rows"] == [1, 3, 0]
    assert by_id["pair-0000+0001"]["exemplar_scores"] == pytest.approx([350 / 255, 300 / 255, 210 / 255], abs=1e-6)
    assert by_id["pair-0000+0001"]["exemplar_labels"] == ["label1", "label3", "label0"]
    # Each exemplar once, as a PNG of the dataset's own pixels, and nothing else.
    used = {r for row in table for r in row["exemplar_rows"]}
    assert sorted(p.name for p in out.iterdir()) == sorted([EXEMPLARS, *(f"dataset-{r:06d}.png" for r in used)])
    for row in table:
        for name, r in zip(row["exemplars"], row["exemplar_rows"], strict=True):
            assert np.array_equal(np.asarray(Image.open(out / name)), np.full((8, 8, 3), COLOURS[r], dtype=np.uint8))
    assert pq.read_table(out / EXEMPLARS).num_rows == 3


def test_exemplars_say_which_photos_are_of_the_class_and_record_the_photos_naturalness(tmp_path: Path) -> None:
    images = np.stack([np.full((8, 8, 3), c, dtype=np.uint8) for c in COLOURS])
    data = write_dataset(tmp_path / "dataset", images, PARENTS, class_indices=[1, 1, 1, 0, None, None])
    table = exemplars(identity_d(), data, parse_specs(["class:0,2", "pair:0+1", "filter:pool:0"]), 2, tmp_path / "ex")
    by_id = {row["target_id"]: row for row in table.to_pylist()}
    # Photos (not crops) labelled 0: row 3; labelled 1: rows 0 and 1; none labelled 2.
    assert by_id["class-0000"]["class_photos"] == 1
    assert by_id["class-0002"]["class_photos"] == 0
    assert by_id["pair-0000+0001"]["class_photos"] == 3
    assert by_id["filter-pool-0000"]["class_photos"] is None
    assert by_id["class-0000"]["exemplar_rows"] == [0, 3]
    assert by_id["class-0000"]["exemplar_classes"] == [1, 0]
    assert by_id["class-0002"]["exemplar_classes"] == [None, 0]  # rows 4 and 3
    info = json.loads(table.schema.metadata[EXEMPLARS_KEY])
    assert info["candidates"] == 5 and info["labelled"] == 3 and info["sources"] == ["folder"]
    want = of_uint8(images[[0, 1, 3, 4, 5]]).mean()
    assert info["naturalness"] == pytest.approx({"photos": 5, **want})


def test_a_d_with_its_own_classes_does_not_count_the_datasets_imagenet_labels_as_its_classes(tmp_path: Path) -> None:
    images = np.stack([np.full((8, 8, 3), c, dtype=np.uint8) for c in COLOURS])
    data = write_dataset(tmp_path / "dataset", images, PARENTS, class_indices=[1, 1, 1, 0, None, None])
    d = identity_d()
    d.classes_file = "birds.txt"  # D's label set is a classes file's, not ImageNet-1k's
    table = exemplars(d, data, parse_specs(["class:0", "pair:0+1"]), 2, tmp_path / "ex")
    by_id = {row["target_id"]: row for row in table.to_pylist()}
    # The same photos, ranked by D alone; none of them counted as a photo of D's class.
    assert by_id["class-0000"]["exemplar_rows"] == [0, 3]
    assert by_id["class-0000"]["class_photos"] is None and by_id["pair-0000+0001"]["class_photos"] is None
    assert json.loads(table.schema.metadata[EXEMPLARS_KEY])["labels_are_d_classes"] is False


def test_a_filters_exemplars_are_the_images_that_drive_its_channels_hardest(dataset: Path, tmp_path: Path) -> None:
    # The linear D's layer "pool" holds each channel's mean (no ReLU): green for channel 1; a
    # compound of channels 0 and 2 sums red and blue. Classes in the same run share D's pass.
    specs = ["filter:pool:1", "filter:pool:0+2", "class:0"]
    table = exemplars(identity_d(), dataset, parse_specs(specs), 3, tmp_path / "ex", batch_size=4).to_pylist()
    by_id = {row["target_id"]: row for row in table}
    assert by_id["filter-pool-0001"]["exemplar_rows"] == [1, 3, 0]
    assert by_id["filter-pool-0001"]["exemplar_scores"] == pytest.approx([250 / 255, 150 / 255, 10 / 255], abs=1e-6)
    assert by_id["filter-pool-0000+0002"]["exemplar_rows"] == [4, 3, 0]
    assert by_id["filter-pool-0000+0002"]["exemplar_scores"] == pytest.approx(
        [390 / 255, 300 / 255, 210 / 255], abs=1e-6
    )
    assert by_id["filter-pool-0001"]["kind"] == "filter" and by_id["filter-pool-0001"]["classes"] == []
    assert by_id["class-0000"]["exemplar_rows"] == [0, 3, 4]


def test_an_exact_dataset_image_is_its_own_first_exemplar(dataset: Path, tmp_path: Path) -> None:
    # A larger k than there are candidates: every original image, best first, the crop left out.
    table = exemplars(identity_d(), dataset, parse_specs(["class:1"]), 10, tmp_path / "ex").to_pylist()
    assert table[0]["exemplar_rows"] == [1, 3, 0, 4, 5]


@pytest.mark.parametrize(
    ("specs", "top_k", "message"),
    [
        (["filter:fc:0"], 2, "unknown layer 'fc'"),
        (["filter:pool:3"], 2, "out of range"),
        (["class:0"], 0, "--top-k must be at least 1"),
        (["class:7"], 2, "out of range"),
    ],
)
def test_bad_targets_are_refused(dataset: Path, tmp_path: Path, specs: list[str], top_k: int, message: str) -> None:
    with pytest.raises(AtlasError, match=message):
        exemplars(identity_d(), dataset, parse_specs(specs), top_k, tmp_path / "ex")
    assert not (tmp_path / "ex").exists()


def test_the_cli_needs_an_extracted_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "exemplars",
        "--data",
        str(tmp_path / "none"),
        "--targets",
        "class:1",
        "--classifier",
        "torchvision:resnet18",
        "--weights",
        "random",
        "--image-size",
        "32",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "ex"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("atlas exemplars: error: dataset folder") and "\n" not in err
    assert not (tmp_path / "ex").exists()


def test_the_cli_writes_exemplars_for_a_real_classifier(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = write_dataset(tmp_path / "dataset", rng.integers(0, 256, (5, 40, 40, 3), dtype=np.uint8))
    args = [
        "exemplars",
        "--data",
        str(data),
        "--targets",
        "class:1",
        "--targets",
        "pair:2+3",
        "--top-k",
        "2",
        "--classifier",
        "torchvision:resnet18",
        "--weights",
        "random",
        "--image-size",
        "32",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "ex"),
    ]
    assert main(args) == 0
    table = pq.read_table(tmp_path / "ex" / EXEMPLARS).to_pylist()
    assert [row["target_id"] for row in table] == ["class-0001", "pair-0002+0003"]
    for row in table:
        assert len(row["exemplars"]) == 2 and row["exemplar_scores"] == sorted(row["exemplar_scores"], reverse=True)
