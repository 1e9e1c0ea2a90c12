"""`atlas train-dae`: shapes, outputs, resume after SIGKILL, and the decoder's use in G."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from atlas.classifier import normalisation
from atlas.cli import main
from atlas.errors import AtlasError
from atlas.generator import DECODER_FORMAT, Decoder, load_decoder, save_decoder
from atlas.train_dae import LOSS_COLUMNS, OUTPUTS, TrainConfig
from atlas.train_dae.networks import Autoencoder, Encoder, ThumbnailEncoder, decoder_cell_centres, encoder_channels

WIDTH = "0.0625"  # the smallest sensible width: the decoder still outputs 224 x 224


def _photo(path: Path, seed: int, size: int = 48) -> None:
    """A smooth random picture (gradient + a disc), so that reconstruction is learnable at all."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3))
    for c in range(3):
        a, b, d = rng.uniform(-1, 1, 3)
        img[..., c] = 0.5 + 0.3 * (a * xx + b * yy) + 0.1 * d
    cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.25)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(0, 1, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 images at 32 px (not 224, so the resize to the decoder's size is exercised): 6 train, 2 val."""
    root = tmp_path_factory.mktemp("photos")
    for i in range(8):
        _photo(root / f"p{i}.png", seed=i)
    out = root.parent / "ds"
    rc = main(
        [
            "extract",
            "--source",
            "folder",
            "--root",
            str(root),
            "--out",
            str(out),
            "--size",
            "32",
            "--val-fraction",
            "0.25",
        ]
    )
    assert rc == 0
    split = pd.read_parquet(out / "manifest.parquet")["split"].astype(str)
    assert (split == "train").sum() == 6 and (split == "val").sum() == 2
    return out


def _args(data: Path, out: Path, epochs: int) -> list[str]:
    # One thread: on a 2-core machine that other jobs keep busy, two torch threads were measured
    # several times slower than one.
    return [
        "train-dae",
        "--data",
        str(data),
        "--out",
        str(out),
        "--width",
        WIDTH,
        "--epochs",
        str(epochs),
        "--batch-size",
        "3",
        "--threads",
        "1",
    ]


@pytest.fixture(autouse=True, scope="module")
def _restore_threads() -> Iterator[None]:
    """`--threads` sets torch's process-wide thread count: give other test modules theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dae") / "run"
    assert main(_args(dataset, out, 2)) == 0
    return out


def test_shapes() -> None:
    assert encoder_channels(1.0) == [32, 64, 128, 256, 512]
    assert encoder_channels(0.125) == [4, 8, 16, 32, 64]
    enc = Encoder(0.0625, hidden=32)
    code = enc(torch.rand(2, 3, 224, 224))
    assert code.shape == (2, 3200) and bool((code >= 0).all())  # non-negative, like relu(alpha * eps)
    model = Autoencoder(0.0625).eval()
    assert type(model.decoder) is Decoder and model.decoder.width == 0.0625
    with torch.no_grad():
        assert model(torch.rand(2, 3, 224, 224)).shape == (2, 3, 224, 224)
    with pytest.raises(AtlasError, match="out of range"):
        encoder_channels(0.0)


def test_thumbnail_encoder_is_the_default_and_matches_the_decoder_geometry() -> None:
    """The default E hands the decoder each image region in the seed cell that the decoder paints
    onto that region (measured: misaligned by a third of a cell, the bundled validation ratio was
    0.68 instead of 0.60 after 3 epochs), and an image's code does not depend on its batch."""
    assert {f.name: f.default for f in dataclasses.fields(TrainConfig)}["encoder"] == "thumbnail"
    assert type(Autoencoder(0.0625).encoder) is ThumbnailEncoder
    painted = decoder_cell_centres(Decoder(0.0625))
    assert painted[2] == pytest.approx(94.5)  # not the image centre 112: the decoder is not symmetric
    assert ThumbnailEncoder.cell_centres() == pytest.approx(painted, abs=1.0)
    enc = ThumbnailEncoder().train()
    x = torch.rand(4, 3, 224, 224)
    code = enc(x)
    assert code.shape == (4, 3200) and bool((code >= 0).all())
    torch.testing.assert_close(enc(x[:1]), code[:1])  # per image, not per batch
    # The thumbnail sees the region of its cell: a change in the image's top-left corner changes
    # cell (1, 1) (which paints pixels 0..62) and leaves cells in other rows and columns alone.
    y = x.clone()
    y[:, :, :40, :40] = 1.0 - y[:, :, :40, :40]
    before = enc.mix(
        torch.nn.functional.pixel_unshuffle(
            torch.nn.functional.adaptive_avg_pool2d(torch.nn.functional.pad(x, (66, 30, 66, 30), mode="replicate"), 20),
            4,
        )
    )
    after = enc.mix(
        torch.nn.functional.pixel_unshuffle(
            torch.nn.functional.adaptive_avg_pool2d(torch.nn.functional.pad(y, (66, 30, 66, 30), mode="replicate"), 20),
            4,
        )
    )
    changed = (before - after).abs().amax(dim=(0, 1)) > 1e-6
    assert changed[1, 1] and not changed[2:, :].any() and not changed[:, 2:].any()


def test_training_writes_every_output(trained: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in OUTPUTS:
        assert (trained / name).is_file(), name
    losses = pd.read_parquet(trained / "losses.parquet")
    assert tuple(losses.columns) == LOSS_COLUMNS
    assert list(losses["epoch"]) == [1, 2]
    assert np.isfinite(losses[["train_mse", "val_mse", "mean_image_val_mse", "seconds"]].to_numpy()).all()
    for png in ("losses.png", "reconstructions.png"):
        with Image.open(trained / png) as im:
            assert im.format == "PNG" and im.width > 100

    blob = torch.load(trained / "decoder.pt", map_location="cpu", weights_only=True)
    assert blob["format"] == DECODER_FORMAT and blob["width"] == float(WIDTH)
    mean, std = normalisation("efficientnet-lite0")
    assert blob["meta"]["classifier"] == "efficientnet-lite0"
    assert blob["meta"]["mean"] == list(mean) and blob["meta"]["std"] == list(std)
    decoder = load_decoder(str(trained / "decoder.pt"))
    assert decoder.width == float(WIDTH)
    with torch.no_grad():
        assert decoder.eval()(torch.ones(1, 3200)).shape == (1, 3, 224, 224)

    info = json.loads((trained / "train.json").read_text())
    assert info["finished"] is True and info["config"]["classifier"] == "efficientnet-lite0"
    fig = info["figures"]
    assert fig["epochs"] == 2 and fig["ratio"] == pytest.approx(fig["val_mse"] / fig["mean_image_val_mse"])
    assert fig["mean_image_val_mse"] == pytest.approx(losses["mean_image_val_mse"].iloc[-1])
    assert "torch" in info["versions"]

    # A finished run started again does nothing.
    stamp = (trained / "decoder.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(_args(dataset, trained, 2)) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert (trained / "decoder.pt").stat().st_mtime_ns == stamp


def test_other_arguments_are_refused(trained: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_args(dataset, trained, 3)) == 2
    err = capsys.readouterr().err
    assert "epochs 2 there, 3 now" in err and f"delete {trained}" in err and len(err.strip().splitlines()) == 1
    assert main([*_args(dataset, trained, 2), "--noise-std", "0.3"]) == 2
    assert "noise_std" in capsys.readouterr().err


def test_foreign_output_folder_and_bad_values_are_refused(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    assert main(_args(dataset, foreign, 1)) == 2
    assert "not from `atlas train-dae`" in capsys.readouterr().err
    assert main([*_args(dataset, tmp_path / "x", 1), "--lr", "0"]) == 2
    assert "--lr" in capsys.readouterr().err
    assert main([*_args(dataset, tmp_path / "x", 1), "--batch-size", "1"]) == 2
    assert "BatchNorm needs two images" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_trained_decoder_drives_generate(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen"
    rc = main(
        [
            "generate",
            "--method",
            "pretrained",
            "--decoder",
            str(trained / "decoder.pt"),
            "--targets",
            "class:285",
            "--steps",
            "2",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    records = pd.read_parquet(out / "records.parquet")
    assert len(records) == 1 and not records["failed"].any()
    with Image.open(out / records["image"].iloc[0]) as im:
        assert im.size == (224, 224)


def test_mismatched_decoders_are_refused(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blob = torch.load(trained / "decoder.pt", map_location="cpu", weights_only=True)
    wrong_width = tmp_path / "wrong_width.pt"
    torch.save({**blob, "width": 0.125}, wrong_width)  # weights of a 0.0625 decoder, labelled 0.125
    random_state = tmp_path / "random_state.pt"
    torch.save({k: torch.randn(3) for k in ("conv.weight", "conv.bias")}, random_state)
    for path, message in ((wrong_width, "does not fit the generator"), (random_state, "not an Atlas decoder file")):
        rc = main(
            [
                "generate",
                "--method",
                "pretrained",
                "--decoder",
                str(path),
                "--targets",
                "class:1",
                "--steps",
                "1",
                "--out",
                str(tmp_path / "gen"),
                "--device",
                "cpu",
            ]
        )
        assert rc == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "gen").exists()
    # A different width saved properly is a valid decoder of that width, not an error.
    save_decoder(Decoder(0.125), str(tmp_path / "w125.pt"))
    assert load_decoder(str(tmp_path / "w125.pt")).width == 0.125


def test_resume_after_sigkill(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    epochs = 3
    out = tmp_path / "killed"
    args = _args(dataset, out, epochs)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "first.log", "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "atlas.cli", *args], stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
        try:
            deadline = time.monotonic() + 120
            while not (out / "checkpoint.pt").exists():
                assert proc.poll() is None, (tmp_path / "first.log").read_text()
                assert time.monotonic() < deadline, "no checkpoint within 120 s"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    first_log = (tmp_path / "first.log").read_text()
    assert "training from epoch 0" in first_log
    assert not (out / "train.json").exists() and not (out / "decoder.pt").exists()
    done = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["epoch"]
    assert 1 <= done < epochs

    capsys.readouterr()
    assert main(args) == 0  # the same arguments
    log = capsys.readouterr().err
    assert f"resuming from epoch {done} of {epochs}" in log
    assert "training from epoch 0" not in log
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    resumed = pd.read_parquet(out / "losses.parquet")
    assert list(resumed["epoch"]) == list(range(1, epochs + 1))

    # The restored RNG and optimiser states make the resumed run the uninterrupted one.
    straight = tmp_path / "straight"
    assert main(_args(dataset, straight, epochs)) == 0
    expect = pd.read_parquet(straight / "losses.parquet")
    np.testing.assert_allclose(resumed["train_mse"], expect["train_mse"], rtol=1e-4)
    np.testing.assert_allclose(resumed["val_mse"], expect["val_mse"], rtol=1e-4)


def test_the_perceptual_term_compares_the_classifiers_features(tmp_path: Path) -> None:
    from atlas.train_dae.perceptual import Perceptual, perceptual_layers
    from tests.tiny import tiny_classifier

    clf = tiny_classifier()
    assert perceptual_layers(clf) == ("conv", "act", "pool")  # spread over its first layers
    term = Perceptual(clf, torch.device("cpu"))
    y = torch.randn(2, 3, 32, 32)
    assert term(y, y).item() == 0.0
    x = y + 0.5 * torch.randn_like(y)
    x.requires_grad_(True)
    loss = term(x, y)
    # each layer's squared error over the clean features' mean square: 3 layers, each O(1)
    assert 0.01 < loss.item() < 30
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.abs().sum() > 0
    # the embedded classifier's table names layers it has
    from atlas.classifier import load_classifier

    lite0 = load_classifier("efficientnet-lite0", "default")
    assert set(perceptual_layers(lite0)) <= set(lite0.layers)


def test_a_perceptual_run_trains_and_records_its_weight(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "perceptual"
    assert main([*_args(dataset, out, 1), "--classifier", "efficientnet-lite0", "--perceptual", "0.1"]) == 0
    info = json.loads((out / "train.json").read_text())
    assert info["config"]["perceptual"] == 0.1
    assert main([*_args(dataset, tmp_path / "bad", 1), "--perceptual", "-1"]) == 2
    assert "--perceptual must be a non-negative number" in capsys.readouterr().err
