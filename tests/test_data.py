"""`atlas extract` (`atlas.extract`) and `load_dataset`: small generated trees, the bundled photos, bad inputs."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from atlas.cli import main
from atlas.dataset import load_dataset
from atlas.errors import AtlasError
from atlas.extract import ExtractConfig, extract, imagenet_wnids, parse_classes


def _img(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0, **save: object) -> Path:
    """Write a random image of `size` (width, height) in `mode`, format from the suffix."""
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    else:
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        arr = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        im = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode=mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **save)
    return path


@pytest.fixture()
def mixed_tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    _img(root / "cats" / "a.jpg", (40, 30), "RGB", seed=1)
    _img(root / "cats" / "b.png", (20, 50), "L", seed=2)
    rgba = np.zeros((33, 33, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, 16:, 3] = 255  # left half fully transparent, right half opaque red
    (root / "dogs").mkdir(parents=True)
    Image.fromarray(rgba, mode="RGBA").save(root / "dogs" / "c.png")
    _img(root / "dogs" / "d16.png", (24, 24), "I;16", seed=3)
    good = _img(root / "dogs" / "e.jpg", (64, 64), "RGB", seed=4, quality=95)
    data = good.read_bytes()
    (root / "dogs" / "broken.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    (root / "notes.txt").write_text("not an image\n")
    _img(root / "top.png", (30, 10), "RGB", seed=5)
    (root / ".DS_Store").write_bytes(b"\0\1hidden")  # hidden: ignored, not even listed
    return root


def test_folder_extraction_keeps_good_and_lists_bad(mixed_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    rc = main(
        [
            "extract",
            "--source",
            "folder",
            "--root",
            str(mixed_tree),
            "--out",
            str(out),
            "--size",
            "16",
            "--labels-from-folders",
            "--val-fraction",
            "0.25",
        ]
    )
    assert rc == 0
    images, manifest = load_dataset(out)
    assert isinstance(images, np.memmap) and images.shape == (6, 16, 16, 3) and images.dtype == np.uint8
    assert list(manifest["path"]) == [
        "cats/a.jpg",
        "cats/b.png",
        "dogs/c.png",
        "dogs/d16.png",
        "dogs/e.jpg",
        "top.png",
    ]
    assert list(manifest["index"]) == list(range(6))
    assert list(manifest["label"].astype(object).where(manifest["label"].notna(), None)) == [
        "cats",
        "cats",
        "dogs",
        "dogs",
        "dogs",
        None,
    ]
    assert (manifest["source"] == "folder").all()
    assert manifest["parent"].isna().all()
    row = manifest.set_index("path").loc["cats/a.jpg"]
    assert (row["width"], row["height"]) == (40, 30)
    assert (row["box_left"], row["box_top"], row["box_right"], row["box_bottom"]) == (5, 0, 35, 30)
    assert row["sha256"] == hashlib.sha256((mixed_tree / "cats" / "a.jpg").read_bytes()).hexdigest()
    # Grey stays grey, transparency becomes white.
    grey = images[1].astype(int)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    rgba = images[2]
    assert (rgba[:, :4] == 255).all()  # left (transparent) edge: white
    assert (rgba[:, -4:] == [255, 0, 0]).all()  # right (opaque red) edge
    assert images[3].max() > 128  # 16-bit grey scaled to 8 bits, not clipped to white or black
    assert images[3].min() < 128
    assert sorted(manifest["split"]) == ["train"] * 4 + ["val"] * 2  # round(0.25 * 6) = 2

    skipped = pd.read_parquet(out / "skipped.parquet").set_index("path")["reason"].to_dict()
    assert set(skipped) == {"dogs/broken.jpg", "notes.txt"}
    assert "truncated" in skipped["dogs/broken.jpg"]
    assert "not an image" in skipped["notes.txt"]
    info = json.loads((out / "extract.json").read_text())
    assert info["counts"]["kept"] == 6 and info["counts"]["skipped"] == 2 and info["counts"]["inputs"] == 8
    assert info["counts"]["train_rows"] + info["counts"]["val_rows"] == 6
    assert info["atlas_version"] and info["arguments"]["size"] == 16
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_rerun_is_byte_identical_and_crops_follow_parents(mixed_tree: Path, tmp_path: Path) -> None:
    argv = [
        "extract",
        "--source",
        "folder",
        "--root",
        str(mixed_tree),
        "--size",
        "12",
        "--augment-crops",
        "3",
        "--seed",
        "7",
    ]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    assert main([*argv, "--out", str(tmp_path / "two")]) == 0
    assert (tmp_path / "one" / "images.npy").read_bytes() == (tmp_path / "two" / "images.npy").read_bytes()
    one, two = (load_dataset(tmp_path / n)[1] for n in ("one", "two"))
    pd.testing.assert_frame_equal(one, two)

    assert len(one) == 6 * 4
    crops = one[one["parent"].notna()]
    assert len(crops) == 18
    parents = one.set_index("index").loc[crops["parent"].astype(int)]
    assert (parents["path"].to_numpy() == crops["path"].to_numpy()).all()
    assert (parents["split"].to_numpy() == crops["split"].to_numpy()).all()
    assert ((crops["box_right"] - crops["box_left"]) == (crops["box_bottom"] - crops["box_top"])).all()
    assert (crops["box_right"] <= crops["width"]).all() and (crops["box_bottom"] <= crops["height"]).all()

    # Another seed gives other crops (the centre views stay the same).
    assert main([*argv[:-1], "8", "--out", str(tmp_path / "three")]) == 0
    three = load_dataset(tmp_path / "three")[1]
    assert (
        not crops[["box_left", "box_top"]]
        .reset_index(drop=True)
        .equals(three[three["parent"].notna()][["box_left", "box_top"]].reset_index(drop=True))
    )


@pytest.fixture()
def imagenet_tree(tmp_path: Path) -> Path:
    root = tmp_path / "train"
    wnids = imagenet_wnids()
    for k, cls in enumerate((0, 151, 152, 268)):
        for j in range(3 if cls != 152 else 2):
            _img(
                root / wnids[cls] / f"{wnids[cls]}_{j}.JPEG",
                (20 + j, 18),
                "RGB",
                seed=10 * k + j,
                format="JPEG",
            )
    (root / "README").write_text("stray file at the top: not a class folder\n")
    return root


def _paths(manifest: pd.DataFrame) -> list[str]:
    return list(manifest["path"])


def test_imagenet_selection_by_wnid_and_by_classes(imagenet_tree: Path, tmp_path: Path) -> None:
    base = ["extract", "--source", "imagenet", "--root", str(imagenet_tree), "--size", "8"]
    out = tmp_path / "by_wnid"
    assert main([*base, "--wnids", "n02113978,n01440764", "--out", str(out)]) == 0
    m = load_dataset(out)[1]
    assert list(m["wnid"]) == ["n01440764"] * 3 + ["n02113978"] * 3
    assert list(m["class_index"]) == [0] * 3 + [268] * 3
    assert _paths(m)[0] == "n01440764/n01440764_0.JPEG"

    out = tmp_path / "by_range"
    assert main([*base, "--classes", "151-152", "--out", str(out)]) == 0
    m = load_dataset(out)[1]
    assert list(m["class_index"]) == [151] * 3 + [152] * 2
    assert m["wnid"].iloc[0] == "n02085620"

    out = tmp_path / "mixed"
    assert main([*base, "--classes", "0,268,150-151", "--per-class", "2", "--out", str(out)]) == 0
    m = load_dataset(out)[1]
    assert list(m["class_index"]) == [0, 0, 151, 151, 268, 268]
    assert _paths(m)[:2] == ["n01440764/n01440764_0.JPEG", "n01440764/n01440764_1.JPEG"]
    skipped = pd.read_parquet(out / "skipped.parquet")
    assert list(skipped["path"]) == [imagenet_wnids()[150] + "/"]  # no folder in this partial tree
    assert "missing" in skipped["reason"].iloc[0]

    # Default: the dog subtree (151..268); the 115 dog classes absent here are listed as skipped.
    out = tmp_path / "dogs"
    assert main([*base, "--out", str(out)]) == 0
    m = load_dataset(out)[1]
    assert sorted(set(m["class_index"])) == [151, 152, 268]
    assert len(pd.read_parquet(out / "skipped.parquet")) == 118 - 3
    # The dog synset is shorthand for the same 118 classes.
    out = tmp_path / "dog_synset"
    assert main([*base, "--wnids", "n02084071", "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(load_dataset(out)[1], m)


def test_bundled_photos_have_provenance(tmp_path: Path) -> None:
    out = tmp_path / "bundled"
    assert main(["extract", "--out", str(out), "--size", "16", "--augment-crops", "2"]) == 0
    images, m = load_dataset(out)
    photos = m[m["parent"].isna()]
    assert len(photos) >= 10
    assert len(m) == 3 * len(photos)
    assert (photos["source"] == "bundled").all()
    assert photos["package"].notna().all() and photos["name"].notna().all()
    assert {"scikit-image", "scikit-learn", "matplotlib"} <= set(photos["package"])
    assert "astronaut" in set(photos["name"]) and "grace_hopper" in set(photos["name"])
    assert photos["sha256"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert images.std() > 20  # real pictures, not blank
    # foolbox's ImageNet photos carry their class index from the file name.
    fb = photos[photos["package"] == "foolbox"]
    for name, cls, wnid in zip(fb["name"], fb["class_index"], fb["wnid"], strict=True):
        assert int(name.rsplit("_", 1)[1]) == cls and imagenet_wnids()[cls] == wnid
    skipped = pd.read_parquet(out / "skipped.parquet")
    assert skipped["reason"].str.len().gt(0).all()
    info = json.loads((out / "extract.json").read_text())
    assert info["counts"]["kept"] == len(photos) and info["packages"]["scikit-image"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--source", "folder", "--root", "{tmp}/nowhere"], "does not exist"),
        (["--source", "folder", "--root", "{tmp}/empty"], "no readable images found"),
        (["--source", "folder", "--root", "{tmp}/junk"], "no readable images found"),
        (["--source", "folder"], "needs --root"),
        (["--source", "imagenet", "--root", "{imagenet}", "--classes", "5-"], "malformed --classes"),
        (["--source", "imagenet", "--root", "{imagenet}", "--classes", "1000"], "out of range"),
        (["--source", "imagenet", "--root", "{imagenet}", "--classes", "9-3"], "backwards"),
        (["--source", "imagenet", "--root", "{imagenet}", "--wnids", "dog"], "malformed --wnids"),
        (
            ["--source", "imagenet", "--root", "{imagenet}", "--wnids", "n00000001"],
            "not an ImageNet-1k class",
        ),
        (["--source", "imagenet", "--root", "{imagenet}", "--classes", "1-3"], "none of the 3 selected"),
        (["--source", "imagenet", "--root", "{tmp}/junk"], "no ImageNet class folders"),
        (["--val-fraction", "1.5"], "--val-fraction"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(
    extra: list[str], message: str, tmp_path: Path, imagenet_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out" / "ds"
    argv = [a.format(tmp=tmp_path, imagenet=imagenet_tree) for a in extra]
    assert main(["extract", *argv, "--out", str(out), "--size", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("atlas extract: error:") and message in err
    assert not out.exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))  # no temporary folder left


def test_failed_rerun_keeps_previous_output(mixed_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert main(["extract", "--source", "folder", "--root", str(mixed_tree), "--out", str(out), "--size", "8"]) == 0
    before = (out / "images.npy").read_bytes()
    (tmp_path / "empty").mkdir()
    assert main(["extract", "--source", "folder", "--root", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert (out / "images.npy").read_bytes() == before


def test_load_dataset_rejects_mismatched_files(mixed_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(AtlasError, match="does not exist"):
        load_dataset(tmp_path / "nothing")
    out = tmp_path / "ds"
    assert main(["extract", "--source", "folder", "--root", str(mixed_tree), "--out", str(out), "--size", "8"]) == 0
    load_dataset(out, verify=True)
    manifest = pd.read_parquet(out / "manifest.parquet")
    manifest.iloc[:-1].to_parquet(out / "manifest.parquet", index=False)
    with pytest.raises(AtlasError, match="do not belong together"):
        load_dataset(out)
    (out / "images.npy").unlink()
    with pytest.raises(AtlasError, match="images.npy is missing"):
        load_dataset(out)


def test_class_parsing_and_wnid_list() -> None:
    assert parse_classes("151-153") == [151, 152, 153]
    assert parse_classes("1,5,9") == [1, 5, 9]
    assert parse_classes(" 9, 1-2 ,2") == [1, 2, 9]
    for bad in ("5-", "-5", "", "a", "1000", "3-1000", "1;2"):
        with pytest.raises(AtlasError):
            parse_classes(bad)
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids)) and wnids == sorted(wnids)
    assert (wnids[0], wnids[151], wnids[268], wnids[999]) == (
        "n01440764",
        "n02085620",
        "n02113978",
        "n15075141",
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(size=0), "--size 0 must be at least 1 pixel"),
        (dict(augment_crops=-1), "--augment-crops -1 is negative"),
        (dict(per_class=0), "--per-class 0 must be at least 1"),
        (dict(val_fraction=1.0), "--val-fraction 1.0 is outside [0, 1)"),
        (dict(source="folder", classes="1"), "use them with --source imagenet"),
        (dict(source="web"), "'web' is not a source"),
    ],
)
def test_config_checks_its_values_for_python_callers(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(AtlasError, match=re.escape(message)):
        ExtractConfig(**kwargs)  # type: ignore[arg-type]


def test_library_call_matches_the_command_line(mixed_tree: Path, tmp_path: Path) -> None:
    argv = ["extract", "--source", "folder", "--root", str(mixed_tree), "--size", "12", "--augment-crops", "2"]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 0
    result = extract(ExtractConfig(source="folder", root=mixed_tree, size=12, augment_crops=2), tmp_path / "lib")
    assert (result.kept, result.rows, result.skipped) == (6, 18, 2)
    for name in ("images.npy", "manifest.parquet", "skipped.parquet"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "lib" / name).read_bytes()
    (tmp_path / "file").write_text("x")
    with pytest.raises(AtlasError, match="exists and is not a folder"):
        extract(ExtractConfig(source="folder", root=mixed_tree), tmp_path / "file")
    with pytest.raises(AtlasError, match="--source folder needs --root DIR"):
        extract(ExtractConfig(source="folder"), tmp_path / "out")


def test_command_line_module_loads_no_heavy_package() -> None:
    code = "import sys, atlas.cli.extract; print(sorted({'numpy', 'pandas', 'PIL', 'torch'} & set(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
