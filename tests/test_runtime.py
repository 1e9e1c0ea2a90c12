"""Runtime options (atlas.runtime): bf16 and channels-last give the fp32 images within stated
tolerances, resolve per device, and are recorded with the outputs. `--compile` is not tested
here: compiling even the tiny nets takes about a minute of CPU per run (docs/benchmarks.md, "Speed on the CPU").

Tolerances. bf16 runs D only (G stays fp32, see `atlas.parameterise`) and keeps 8 significant
bits, so a step's loss agrees with fp32's to about 1%; where the optimiser is linear in the
gradient (SGD), the saved images of the pretrained and pixel methods agree within 2 8-bit
levels (a tenth of a level on average) after 6 steps that moved them by over ten levels.
Sign-like optimisers (Adam, Adamax) turn rounding-level gradient entries into full steps, and the scratch method's G (BatchNorm over a
single image) amplifies any rounding, so for those only one forward pass is compared; their
trajectories part as those of a chunk and its singles do (docs/design.md, "A chunk as one optimisation").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atlas.cli import main
from atlas.errors import AtlasError
from atlas.generate import GenerateConfig, generate
from atlas.generator import Decoder
from atlas.methods import settings_for
from atlas.objectives import target_objective
from atlas.optimise import chunk_loss
from atlas.parameterise import Pixels, PretrainedG, ScratchG
from atlas.runtime import Runtime, resolve_runtime
from atlas.targets import Target, parse_specs
from tests.tiny import tiny_classifier

CPU = torch.device("cpu")
SPECS = ["class:1,4", "filter:conv:2"]
TARGETS = [Target("class", (1,)), Target("class", (4,)), Target("filter", layer="conv", channels=(2,))]
WIDTH = "0.0625"
# Saved images (uint8): bf16 / channels-last vs fp32, pretrained and pixel with SGD: at most this
# many 8-bit levels anywhere, and a tenth of a level on average.
LEVELS = 2
MEAN_LEVELS = 0.1
# A step's losses: bf16 vs fp32, relative to the largest loss of the chunk.
LOSS_RTOL = 2e-2


def _calibrated_decoder(seed: int = 0) -> Decoder:
    """A random decoder whose BatchNorm statistics come from a pass over random features, as a
    trained one's do: its eval-mode images have unit scale (an uncalibrated one draws grey)."""
    decoder = Decoder(width=float(WIDTH))
    gen = torch.Generator().manual_seed(seed)
    decoder.init_copy(0, gen)
    for m in decoder.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    decoder.train()
    with torch.no_grad():
        decoder(torch.rand(16, 3200, generator=gen) * 2)
    return decoder.eval()


def _pngs(tmp: Path, method: str, overrides: dict[str, str], **runtime: object) -> np.ndarray:
    clf = tiny_classifier()
    s = settings_for(method, overrides={"width": WIDTH, **overrides})
    decoder = None
    if method == "pretrained":
        decoder = str(tmp / "decoder.pt")
        if not Path(decoder).exists():
            from atlas.generator import save_decoder

            save_decoder(_calibrated_decoder(), decoder)
    cfg = GenerateConfig(settings=s, seed=3, batch_size=3, decoder=decoder, **runtime)  # type: ignore[arg-type]
    out = tmp / f"{method}-{'-'.join(f'{k}={v}' for k, v in runtime.items())}"
    records = generate(clf, parse_specs(SPECS), cfg, out, CPU)
    assert list(records["precision"]) == [cfg.precision if cfg.precision != "auto" else "fp32"] * 3
    return np.stack([np.asarray(Image.open(out / name)).astype(int) for name in records["image"]])


SGD = {"optimiser": "sgd", "momentum": "0.5", "lr": "0.05", "steps": "6"}
# Pixels move little under SGD at the G methods' rate: the pixel method needs a larger one.
SGD_LR = {"pretrained": "0.05", "pixel": "2"}
# The pretrained method as the first version's default preset ran it (alpha from ones, no
# LayerNorm on the code, no transformations, the other-class term and 0.1 ||alpha||), which keeps
# bf16 within LEVELS of fp32. The current default parts further, as the scratch method does: a
# code value near zero that rounding moves across the ReLU switches a decoder input on or off,
# and the transformations' resampling passes the difference on. Measured here after 6 steps: up
# to 86 levels with the default preset, 15 with only the code as the paper's, 3 with the
# transformations off as well; equally good images, different pixels.
FIRST_PRETRAINED = {
    "code_norm": "false",
    "transforms": "false",
    "penalty": "0.01",
    "reg": "l2_norm",
    "reg_weight": "0.1",
}
EXTRA = {"pretrained": FIRST_PRETRAINED, "pixel": {}}


@pytest.mark.parametrize("method", ["pretrained", "pixel"])
@pytest.mark.parametrize("option", [{"precision": "bf16"}, {"channels_last": "on"}])
def test_bf16_and_channels_last_keep_the_images_within_two_levels(tmp_path, method, option) -> None:
    sgd = {**SGD, "lr": SGD_LR[method], **EXTRA[method]}
    reference = _pngs(tmp_path, method, sgd, precision="fp32")
    other = _pngs(tmp_path, method, sgd, **option)
    assert int(np.abs(reference - other).max()) <= LEVELS
    assert float(np.abs(reference - other).mean()) <= MEAN_LEVELS
    # the images are not grey: a difference of a level is small against their spread
    assert reference.std() > 5 * LEVELS
    # and the run moved them: equality is not just the shared initial images
    start = _pngs(tmp_path, method, {**sgd, "steps": "1", "lr": "1e-9"}, precision="fp32")
    moved = np.abs(reference - start)
    assert int(moved.max()) > 5 * LEVELS and float(moved.mean()) > 10 * MEAN_LEVELS


def _param(method: str, seeds: list[int], clf):
    s = settings_for(method, overrides={"width": WIDTH, "noise_std": "0", "jitter": "0"})
    if method == "scratch":
        return s, ScratchG(s, seeds, CPU)
    if method == "pretrained":
        return s, PretrainedG(s, seeds, _calibrated_decoder(), CPU)
    return s, Pixels(s, seeds, clf.input_size, clf.normalise, CPU)


@pytest.mark.parametrize("method", ["scratch", "pretrained", "pixel"])
def test_a_bf16_step_computes_the_fp32_losses_and_really_runs_in_bf16(method: str) -> None:
    clf = tiny_classifier()
    seeds = [t.seed(0) for t in TARGETS]
    s, param = _param(method, seeds, clf)
    objs = [target_objective(t, s.penalty, s.target_relu) for t in TARGETS]
    assert clf.layers  # the layer probe's own forward pass, before the hook
    seen: list[torch.dtype] = []
    hook = clf.model.conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    try:
        losses = {}
        for precision in ("fp32", "bf16"):
            with Runtime(precision=precision).autocast(CPU):
                loss = chunk_loss(clf, objs, param.images(noise=True)) + param.regulariser().float()
            losses[precision] = loss.detach()
    finally:
        hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
    assert losses["bf16"].dtype == torch.float32
    scale = float(losses["fp32"].abs().max())
    assert float((losses["bf16"] - losses["fp32"]).abs().max()) <= LOSS_RTOL * scale
    # bf16 did round: the losses are not bitwise fp32's
    assert not torch.equal(losses["bf16"], losses["fp32"])


def test_g_stays_fp32_under_bf16_and_channels_last_renders_the_scratch_g_the_same() -> None:
    seeds = [t.seed(0) for t in TARGETS]
    s = settings_for("scratch", overrides={"width": WIDTH})
    param = ScratchG(s, seeds, CPU)
    reference = param.render()
    with Runtime(precision="bf16").autocast(CPU):
        images = param.images(noise=False)
    assert images.dtype == torch.float32
    torch.testing.assert_close(images, reference, atol=0, rtol=0)
    param.prepare(Runtime(channels_last=True))
    assert param.decoder.layers[1].conv.weight.is_contiguous(memory_format=torch.channels_last)
    # one forward pass: channels-last's kernels round differently, within a tenth of an 8-bit
    # level (tiny_classifier's input space: std 0.25, so a level is 1 / 255 / 0.25)
    torch.testing.assert_close(param.render(), reference, atol=0.1 / 255 / 0.25, rtol=0)


def test_auto_resolves_per_device(monkeypatch) -> None:
    assert resolve_runtime("auto", "auto", False, CPU) == Runtime("fp32", True, False)
    assert resolve_runtime("auto", "off", False, CPU) == Runtime("fp32", False, False)
    assert resolve_runtime("bf16", "on", True, CPU) == Runtime("bf16", True, True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_runtime("auto", "auto", False, torch.device("cuda")) == Runtime("bf16", True, False)
    assert resolve_runtime("fp32", "off", False, torch.device("cuda")) == Runtime("fp32", False, False)
    with pytest.raises(AtlasError, match="unknown precision 'fp16'"):
        resolve_runtime("fp16", "auto", False, CPU)
    with pytest.raises(AtlasError, match="channels-last takes"):
        resolve_runtime("auto", "yes", False, CPU)


def test_the_flags_reach_run_json_and_the_records(tmp_path, capsys) -> None:
    common = [
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
        "1",
        "--image-size",
        "32",
    ]
    assert main([*common, "--out", str(tmp_path / "auto")]) == 0
    set_flags = ["--precision", "bf16", "--channels-last", "on", "--fold-bn", "off"]
    assert main([*common, *set_flags, "--out", str(tmp_path / "set")]) == 0
    capsys.readouterr()
    auto = json.loads((tmp_path / "auto" / "run.json").read_text())
    assert auto["runtime"] == {"precision": "fp32", "channels_last": True, "compile": False, "fold_bn": True}
    assert auto["runtime_requested"] == {
        "precision": "auto",
        "channels_last": "auto",
        "compile": False,
        "fold_bn": "auto",
    }
    chosen = json.loads((tmp_path / "set" / "run.json").read_text())
    assert chosen["runtime"] == {"precision": "bf16", "channels_last": True, "compile": False, "fold_bn": False}
    import pandas as pd

    row = pd.read_parquet(tmp_path / "set" / "records.parquet").iloc[0]
    assert row["precision"] == "bf16" and bool(row["channels_last"]) and not bool(row["compiled"])


def test_the_allocator_settings_change_where_memory_comes_from_not_the_images(tmp_path, monkeypatch) -> None:
    import subprocess
    import sys

    from atlas import allocator

    assert allocator.tune()  # glibc, as on every machine this runs on
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not allocator.tune()  # the user's own allocator settings stand
    monkeypatch.delenv("MALLOC_ARENA_MAX")

    def run(out: Path, **env: str) -> bytes:
        cmd = [sys.executable, "-m", "atlas.cli", "generate", "--method", "scratch", "--width", "0.0625"]
        cmd += ["--weights", "random", "--targets", "class:1,2", "--steps", "3", "--out", str(out)]
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, **env})
        return b"".join((out / f"class-000{k}.png").read_bytes() for k in (1, 2))

    assert run(tmp_path / "tuned") == run(tmp_path / "default", MALLOC_ARENA_MAX="4")
