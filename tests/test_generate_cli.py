"""`atlas generate` from the command line: outputs, records, and every bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from atlas.cli import main


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(["generate", *args])
    return code, capsys.readouterr().err


def test_outputs_and_records(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, _ = run(
        capsys,
        "--classifier",
        "torchvision:resnet18",
        "--weights",
        "random",
        "--method",
        "pixel",
        "--targets",
        "class:1,2",
        "--targets",
        "pair:1+3;filter:layer1:0",
        "--out",
        str(out),
        "--steps",
        "2",
        "--batch-size",
        "3",
        "--image-size",
        "64",
    )
    assert code == 0
    records = pd.read_parquet(out / "records.parquet")
    assert list(records["target_id"]) == ["class-0001", "class-0002", "pair-0001+0003", "filter-layer1-0000"]
    required = {
        "target_id",
        "kind",
        "method",
        "class_index",
        "label",
        "layer",
        "channel",
        "activation",
        "prob",
        "rank",
        "steps",
        "seed",
        "seconds",
        "failed",
        "loss_curve",
        "top5",
    }
    assert required <= set(records.columns)
    first = records.iloc[0]
    assert first["label"] == "goldfish" and first["class_index"] == 1 and first["kind"] == "class"
    assert 0 <= first["prob"] <= 1 and first["rank"] >= 1 and len(first["loss_curve"]) == 2
    filt = records.iloc[3]
    assert filt["layer"] == "layer1" and filt["channel"] == 0 and filt["rank"] == -1
    for image in records["image"]:
        with Image.open(out / image) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["settings"]["steps"] == 2 and run_json["classifier"]["name"] == "torchvision:resnet18"
    assert "torch" in run_json["versions"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classifier", "nonesuch", "--targets", "class:1"], "unknown classifier 'nonesuch'"),
        (["--classifier", "torchvision:nonesuch", "--targets", "class:1"], "unknown torchvision classifier"),
        (["--targets", "class:1000"], "class index 1000 in class-1000 is out of range"),
        (["--targets", "filter:nope:0"], "unknown layer 'nope' for efficientnet-lite0; valid layers: _conv_stem"),
        (["--targets", "filter:_conv_stem:32"], "channel 32 of layer _conv_stem is out of range"),
        (["--targets", "class:5-"], "malformed class list"),
        (["--targets", "klass:5"], "malformed target spec"),
        (["--targets", "class:1", "--set", "lr"], "malformed --set"),
        (["--targets", "class:1", "--set", "nope=1"], "unknown setting 'nope'"),
        (["--targets", "class:1", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["--targets", "class:1", "--decoder", "x.pt"], "--decoder is for the pretrained method"),
        (["--targets", "class:1", "--weights", "/nonexistent.pth"], "does not exist"),
        (["--targets", "class:1", "--image-size", "8"], "--image-size 8 is out of range"),
        (["--targets", "class:1", "--set", "reg=l1_gamma"], "the pixel method cannot regularise with l1_gamma"),
        (["--targets", "class:1", "--spectrum-from", "ds"], "--spectrum-from is for the maco method"),
        (["--targets", "class:1", "--set", "rotate=90"], "rotate is the largest rotation in degrees, 0..45"),
        (["--targets", "class:1", "--set", "transforms=maybe"], "setting transforms takes true or false"),
    ],
)
def test_bad_input_is_a_one_line_error_exit_2_and_no_output(tmp_path, capsys, args, message) -> None:
    out = tmp_path / "out"
    code, err = run(capsys, "--method", "pixel", "--steps", "1", "--out", str(out), *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_the_renamed_chunk_size_option_names_batch_size(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--method", "pixel", "--targets", "class:1", "--chunk-size", "4", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("--chunk-size was renamed --batch-size (targets optimised at once); write --batch-size N")
    assert not out.exists()


def test_maco_refuses_a_folder_that_is_not_a_dataset(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, err = run(
        capsys,
        "--method",
        "maco",
        "--targets",
        "class:1",
        "--steps",
        "1",
        "--out",
        str(out),
        "--spectrum-from",
        str(tmp_path / "nodata"),
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "nodata" in lines[0], err
    assert not out.exists()


def test_pretrained_needs_a_decoder(tmp_path, capsys) -> None:
    code, err = run(capsys, "--method", "pretrained", "--targets", "class:1", "--out", str(tmp_path / "o"))
    assert code == 2 and "needs --decoder PATH" in err


def test_nan_fails_the_run_with_nothing_written_unless_recorded(tmp_path, capsys) -> None:
    args = [
        "--classifier",
        "torchvision:resnet18",
        "--weights",
        "random",
        "--method",
        "scratch",
        "--width",
        "0.0625",
        "--targets",
        "class:1",
        "--steps",
        "6",
        "--set",
        "lr=1e20",
        "--image-size",
        "32",
    ]
    out = tmp_path / "out"
    code, err = run(capsys, *args, "--out", str(out))
    assert code == 2 and "failed, first class-0001: loss became nan" in err.lower()
    errors = [line for line in err.splitlines() if line.startswith("atlas generate: error:")]
    assert len(errors) == 1 and not out.exists()
    code, _ = run(capsys, *args, "--out", str(out), "--on-nan", "record")
    assert code == 0
    records = pd.read_parquet(out / "records.parquet")
    assert records["failed"].all() and records["image"].isna().all()
    assert not list(out.glob("*.png"))


def test_refuses_to_replace_a_folder_that_is_not_an_atlas_output(tmp_path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, err = run(capsys, "--method", "pixel", "--targets", "class:1", "--steps", "1", "--out", str(out))
    assert code == 2 and "not an Atlas output" in err
    assert (out / "precious.txt").read_text() == "keep me"


def test_replaces_what_an_unfinished_run_of_the_chunk_left(tmp_path, capsys) -> None:
    """A chunk's images without its records (published by a job already declared failed, whose
    records and run.json the workflow then deleted), and the temporary folder of a run killed by
    SIGKILL: the next run replaces the one and removes the other."""
    out = tmp_path / "chunk-0000"
    out.mkdir()
    (out / "class-0001.png").write_bytes(b"not the image")
    (out / "run.json").write_text("{}")
    killed = tmp_path / ".chunk-0000.k1ll3d_x.tmp"
    killed.mkdir(mode=0o700)
    (killed / "class-0001.png").write_bytes(b"half")
    (tmp_path / ".chunk-0000.old").mkdir()
    other = tmp_path / ".chunk-0001.k1ll3d_x.tmp"  # another chunk's: not this run's business
    other.mkdir()
    code, err = run(
        capsys, "--method", "pixel", "--targets", "class:1", "--steps", "1", "--image-size", "32", "--out", str(out)
    )
    assert code == 0, err
    assert "without its records" in err
    assert (out / "records.parquet").is_file()
    Image.open(out / "class-0001.png").verify()
    assert not killed.exists() and not (tmp_path / ".chunk-0000.old").exists() and other.is_dir()


def test_refuses_a_folder_with_images_and_other_files(tmp_path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "class-0001.png").write_bytes(b"png")
    (out / "notes.txt").write_text("keep me")
    code, err = run(capsys, "--method", "pixel", "--targets", "class:1", "--steps", "1", "--out", str(out))
    assert code == 2 and "not an Atlas output" in err
    assert (out / "notes.txt").read_text() == "keep me" and (out / "class-0001.png").read_bytes() == b"png"


def test_sigterm_removes_the_partial_output(tmp_path) -> None:
    """A cancelled job (scancel, kill, snakemake stopping) exits 143 and leaves no temporary folder."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "atlas.cli",
            "generate",
            "--classifier",
            "torchvision:resnet18",
            "--weights",
            "random",
            "--method",
            "pixel",
            "--targets",
            "class:1",
            "--steps",
            "100000",
            "--image-size",
            "32",
            "--out",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".out.*.tmp")):
            assert proc.poll() is None and time.monotonic() < deadline, "the run never started"
            time.sleep(0.2)
        time.sleep(1.0)  # inside the optimisation loop
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


def _out_of_memory_above(monkeypatch, limit: int) -> list[int]:
    """Make every optimisation of more than `limit` targets run out of memory, as a GPU does."""
    import torch

    import atlas.generate

    real = atlas.generate.optimise
    tried: list[int] = []

    def optimise(classifier, objectives, *args, **kwargs):
        tried.append(len(objectives))
        if len(objectives) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(classifier, objectives, *args, **kwargs)

    monkeypatch.setattr(atlas.generate, "optimise", optimise)
    return tried


def test_a_chunk_that_runs_out_of_memory_runs_again_as_halves(tmp_path, capsys, monkeypatch) -> None:
    args = [
        "--classifier",
        "torchvision:resnet18",
        "--weights",
        "random",
        "--method",
        "pixel",
        "--targets",
        "class:0-4",
        "--steps",
        "3",
        "--image-size",
        "32",
    ]
    assert run(capsys, *args, "--batch-size", "2", "--out", str(tmp_path / "twos"))[0] == 0
    tried = _out_of_memory_above(monkeypatch, 2)
    code, err = run(capsys, *args, "--batch-size", "5", "--out", str(tmp_path / "halved"))
    assert code == 0, err
    assert tried == [5, 3, 2, 1, 2]  # 5 -> 3 + 2, 3 -> 2 + 1
    assert err.count("ran out of cpu memory") == 2
    records = pd.read_parquet(tmp_path / "halved" / "records.parquet")
    assert list(records["target_id"]) == [f"class-000{c}" for c in range(5)]
    assert list(records["chunk_size"]) == [2, 2, 1, 2, 2]
    # chunks [0, 1] and [3, 4] ran as a chunk size of 2 runs them: the same bytes
    for c in (0, 1, 3, 4):
        name = f"class-000{c}.png"
        assert (tmp_path / "halved" / name).read_bytes() == (tmp_path / "twos" / name).read_bytes()


def test_one_target_that_does_not_fit_is_a_one_line_error(tmp_path, capsys, monkeypatch) -> None:
    _out_of_memory_above(monkeypatch, 0)
    code, err = run(
        capsys,
        "--classifier",
        "torchvision:resnet18",
        "--weights",
        "random",
        "--method",
        "pixel",
        "--targets",
        "class:0-1",
        "--steps",
        "2",
        "--image-size",
        "32",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2
    assert "does not fit in cpu's memory; lower --width or --image-size" in err.strip().splitlines()[-1]
    assert not (tmp_path / "o").exists() and not list(tmp_path.iterdir())


def test_an_attempt_changes_that_targets_seed_alone_and_keeps_the_earlier_reasons(tmp_path, capsys) -> None:
    args = ["--classifier", "torchvision:resnet18", "--weights", "random", "--method", "pixel"]
    args += ["--targets", "class:1,2", "--steps", "2", "--image-size", "32"]
    first, again = tmp_path / "first", tmp_path / "again"
    assert run(capsys, *args, "--out", str(first))[0] == 0
    assert run(capsys, *args, "--attempt", "class-0002=1", "--out", str(again))[0] == 0
    a, b = pd.read_parquet(first / "records.parquet"), pd.read_parquet(again / "records.parquet")
    assert list(a["attempt"]) == [0, 0] and list(b["attempt"]) == [0, 1]
    assert a["seed"][0] == b["seed"][0] and a["seed"][1] != b["seed"][1]
    assert (first / "class-0001.png").read_bytes() == (again / "class-0001.png").read_bytes()
    assert (first / "class-0002.png").read_bytes() != (again / "class-0002.png").read_bytes()
    assert json.loads((again / "run.json").read_text())["attempts"] == {"class-0002": 1}
    # A retry over an earlier failure carries its reason into earlier_attempts.
    failed = a.copy()
    failed.loc[1, ["failed", "reason", "image"]] = [True, "loss became nan at step 1", None]
    failed.to_parquet(again / "records.parquet", index=False)
    assert run(capsys, *args, "--attempt", "class-0002=1", "--out", str(again))[0] == 0
    history = json.loads(pd.read_parquet(again / "records.parquet")["earlier_attempts"][1])
    assert history == [{"attempt": 0, "seed": int(a["seed"][1]), "reason": "loss became nan at step 1"}]


def test_seeds_draw_each_target_several_times_and_seed_0_is_the_one_seed_image(tmp_path, capsys) -> None:
    args = ["--classifier", "torchvision:resnet18", "--weights", "random", "--method", "pixel"]
    args += ["--targets", "class:1,2", "--steps", "2", "--image-size", "32"]
    one, three = tmp_path / "one", tmp_path / "three"
    assert run(capsys, *args, "--out", str(one))[0] == 0
    assert run(capsys, *args, "--seeds", "3", "--batch-size", "4", "--out", str(three))[0] == 0
    rec = pd.read_parquet(three / "records.parquet")
    assert list(rec["target_id"]) == [
        "class-0001",
        "class-0001-seed1",
        "class-0001-seed2",
        "class-0002",
        "class-0002-seed1",
        "class-0002-seed2",
    ]
    assert list(rec["seed_index"]) == [0, 1, 2, 0, 1, 2] and rec["seed"].nunique() == 6
    assert list(rec["class_index"]) == [1, 1, 1, 2, 2, 2]
    for tid in ("class-0001", "class-0002"):  # the same picture as a one-seed run's
        assert (one / f"{tid}.png").read_bytes() == (three / f"{tid}.png").read_bytes()
    assert (three / "class-0001.png").read_bytes() != (three / "class-0001-seed1.png").read_bytes()
    code, err = run(capsys, *args, "--seeds", "0", "--out", str(tmp_path / "bad"))
    assert code == 2 and "--seeds must be at least 1" in err and not (tmp_path / "bad").exists()


def test_a_malformed_attempt_is_a_one_line_error(tmp_path, capsys) -> None:
    code, err = run(
        capsys, "--method", "pixel", "--targets", "class:1", "--attempt", "class-0001", "--out", str(tmp_path / "o")
    )
    assert code == 2 and "malformed --attempt 'class-0001'" in err and err.count("\n") == 1
