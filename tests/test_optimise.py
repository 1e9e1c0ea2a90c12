"""The loop: chunks equal singles, determinism, NaN handling, real improvement."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from atlas.draws import Draws
from atlas.generate import GenerateConfig, generate, random_transforms
from atlas.generator import Decoder
from atlas.methods import Build, get, names, settings_for, takes
from atlas.objectives import ChunkLoss, Objective, target_objective
from atlas.optimise import Result, chunk_loss, optimise
from atlas.parameterise import FourierImage, Pixels, PretrainedG, roll_rows
from atlas.targets import Target, parse_specs
from tests.tiny import tiny_classifier

CPU = torch.device("cpu")
TARGETS = [Target("class", (1,)), Target("class", (4,)), Target("filter", layer="conv", channels=(2,))]
# Float tolerance for chunk vs singles: batched and single kernels round differently (neither
# D's batched convolutions nor G's grouped ones are bitwise batch-invariant on CPU), and the
# optimiser carries those ~1e-6 differences forward.
ATOL = 2e-3
# Steps over which chunk == singles is checked. The scratch G normalises every channel with the
# statistics of a single image; in a nearly constant channel that division amplifies rounding,
# and Adamax's first step is sign-like (lr * g / |g|), so gradient entries at rounding level flip
# sign: scratch trajectories agree to ATOL after one step, then become equally good but different
# pixels (docs/design.md, "A chunk as one optimisation"). The pretrained code is standardised (LayerNorm over its 3200 values)
# and Adam's first steps are sign-like too: its trajectories part by ~1e-3 a step (9e-4 after one
# step, 1.3e-2 after eight, measured), so it is checked after one. Pixel, fourier and maco stay
# within ATOL over 8 steps, as must any other method.
STEPS = {"scratch": 1, "pretrained": 1}
ALL = list(names())  # every registered method


def _param(method: str, seeds: list[int], clf):
    steps = str(STEPS.get(method, 8))
    s = settings_for(method, overrides={"steps": steps, "width": "0.0625", "snapshots": "3", "snapshot_every": "2"})
    dec = Decoder(width=0.0625)
    dec.init_copy(0, torch.Generator().manual_seed(0))
    inputs = {"decoder": dec, "spectrum": None}  # maco's magnitude: the 1/f law
    b = Build(s, seeds, clf.input_size, clf.normalise, CPU, {k: inputs[k] for k in get(method).inputs})
    return s, get(method).build(b)


def _run(method: str, targets: list[Target], clf) -> Result:
    seeds = [t.seed(7) for t in targets]
    s, param = _param(method, seeds, clf)
    objs = [target_objective(t, s.penalty, s.target_relu) for t in targets]
    # the default presets apply the random transformations: each target draws its own
    assert s.transforms
    return optimise(clf, objs, param, s, transforms=random_transforms(s, clf, seeds, CPU))


@pytest.mark.parametrize("method", ALL)
def test_a_chunk_of_three_gives_the_images_of_three_runs_of_one(method: str) -> None:
    clf = tiny_classifier()
    chunk = _run(method, TARGETS, clf)
    together = chunk.images
    # One sign-like Adamax step can flip a scratch weight whose gradient is at rounding level, and
    # BatchNorm over one image carries the flip into a whole channel (measured on a CPU whose
    # kernels round differently: 44 % of one target's pixels off by up to 0.43, the other two
    # within 6e-4), so the scratch images are compared on their mean, the others pixel by pixel.
    size = torch.mean if method == "scratch" else torch.amax
    worst = 0.0
    for b, t in enumerate(TARGETS):
        single = _run(method, [t], clf)
        alone = single.images
        # The first step's loss is the forward pass before any update: the same to rounding.
        torch.testing.assert_close(chunk.loss[0, b : b + 1], single.loss[0], atol=1e-5, rtol=1e-5)
        if method != "scratch":
            torch.testing.assert_close(together[b : b + 1], alone, atol=ATOL, rtol=0)
        worst = max(worst, float(size((together[b : b + 1] - alone).abs())))
    # the targets' images differ from each other far more than chunk and singles do
    assert float(size((together[0] - together[1]).abs())) > 10 * worst


@pytest.mark.parametrize("method", ALL)
def test_same_seed_same_bytes(method: str, tmp_path) -> None:
    clf = tiny_classifier()
    targets = parse_specs(["class:1,4", "filter:conv:2"])
    s = settings_for(method, overrides={"steps": "4", "width": "0.0625"})
    cfg = GenerateConfig(settings=s, seed=3, batch_size=2, decoder="random" if takes(method, "decoder") else None)
    generate(clf, targets, cfg, tmp_path / "a", CPU)
    generate(clf, targets, cfg, tmp_path / "b", CPU)
    for t in targets:
        assert (tmp_path / "a" / f"{t.id}.png").read_bytes() == (tmp_path / "b" / f"{t.id}.png").read_bytes()
    other = GenerateConfig(settings=s, seed=4, batch_size=2, decoder=cfg.decoder)
    generate(clf, targets, other, tmp_path / "c", CPU)
    assert (tmp_path / "a" / "class-0001.png").read_bytes() != (tmp_path / "c" / "class-0001.png").read_bytes()


def test_optimisation_improves_the_objective_by_a_margin() -> None:
    clf = tiny_classifier()
    targets = [Target("class", (1,)), Target("filter", layer="conv", channels=(2,))]
    s = settings_for("pixel", overrides={"steps": "30", "jitter": "0"})
    param = Pixels(s, [t.seed(0) for t in targets], clf.input_size, clf.normalise, CPU)
    objs = [target_objective(t, s.penalty, s.target_relu) for t in targets]
    with torch.no_grad():
        before = chunk_loss(clf, objs, param.render())
    result = optimise(clf, objs, param, s)
    with torch.no_grad():
        after = chunk_loss(clf, objs, result.images)
    # each loss falls by at least 0.25 in 30 steps (this net's activations are O(1))
    assert bool((before - after > 0.25).all()), (before, after)


def test_a_nan_target_fails_alone_and_is_never_saved(tmp_path) -> None:
    clf = tiny_classifier()
    # An absurd learning rate overflows the scratch G of every target: all fail, nothing saved.
    s = settings_for("scratch", overrides={"steps": "6", "width": "0.0625", "lr": "1e20"})
    targets = parse_specs(["class:1,2"])
    records = generate(clf, targets, GenerateConfig(settings=s, on_nan="record"), tmp_path / "rec", CPU)
    assert records["failed"].all()
    assert records["reason"].str.contains("loss became").all()
    assert not list((tmp_path / "rec").glob("*.png"))
    assert pd.read_parquet(tmp_path / "rec" / "records.parquet")["failed"].all()


class _NaNFromStep(Objective):
    """Wraps an objective: its loss is NaN from call `start` on. It has no linear form, so the
    chunk's losses are computed per image (`ChunkLoss`'s fallback)."""

    def __init__(self, inner: Objective, start: int) -> None:
        self.inner, self.start, self.calls = inner, start, 0
        self.layers, self.needs_logits = inner.layers, inner.needs_logits

    def __call__(self, acts):
        self.calls += 1
        value = self.inner(acts)
        return value * float("nan") if self.calls >= self.start else value


class _NaNImageFromStep(Pixels):
    """Pixels whose image `row` is NaN from call `start` of images(noise=True) on: D's logits of
    that row are NaN, and the chunk's losses are computed by the linear forms, batched."""

    def __init__(self, *args, row: int, start: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.row, self.start, self.calls = row, start, 0

    def images(self, noise: bool = True):
        x = super().images(noise)
        if noise:
            self.calls += 1
            if self.calls >= self.start:
                x = x.clone()
                x[self.row] = float("nan")
        return x


class _Progress:
    """Records what the loop tells a tqdm bar."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix(self, **_: object) -> None:
        pass


@pytest.mark.parametrize("read_every", [1, 4])  # 4: the failure is found at a later read, as on a GPU
@pytest.mark.parametrize("where", ["objective", "image"])
def test_a_nan_in_one_row_leaves_the_others_untouched(where: str, read_every: int) -> None:
    clf = tiny_classifier()
    s = settings_for("pixel", overrides={"steps": "5", "jitter": "0"})
    targets = [Target("class", (1,)), Target("class", (2,))]
    objs = [target_objective(t, s.penalty, s.target_relu) for t in targets]
    seeds = [t.seed(0) for t in targets]
    if where == "objective":
        objs[1] = _NaNFromStep(objs[1], 3)
        param = Pixels(s, seeds, clf.input_size, clf.normalise, CPU)
    else:
        param = _NaNImageFromStep(s, seeds, clf.input_size, clf.normalise, CPU, row=1, start=3)
    assert (ChunkLoss(objs).forms is None) == (where == "objective")
    progress = _Progress()
    result = optimise(clf, objs, param, s, progress=progress, read_every=read_every)
    assert result.failed[0] is None
    assert result.failed[1] is not None and "at step 3" in result.failed[1]
    assert progress.n == 5 + 2  # target-steps before each target's failure
    assert torch.isfinite(result.loss[:, 0]).all() and torch.isfinite(result.loss[:2, 1]).all()
    clean = Pixels(s, seeds[:1], clf.input_size, clf.normalise, CPU)
    alone = optimise(clf, objs[:1], clean, s)
    torch.testing.assert_close(result.images[:1], alone.images, atol=1e-5, rtol=0)


def test_roll_rows_is_torch_roll_per_image_forward_and_backward() -> None:
    x = torch.randn(3, 2, 5, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    shifts = torch.tensor([[1, -3], [0, 0], [-2, 6]])
    out = roll_rows(x, shifts)
    ref = torch.stack([torch.roll(x[b], shifts=tuple(shifts[b].tolist()), dims=(1, 2)) for b in range(3)])
    assert torch.equal(out, ref)
    weight = torch.randn_like(out)
    (gx,) = torch.autograd.grad((out * weight).sum(), x)
    (gref,) = torch.autograd.grad((ref * weight).sum(), x)
    assert torch.equal(gx, gref)


@pytest.mark.parametrize("method", ["scratch", "pretrained", "pixel"])
def test_drawing_a_block_of_steps_at_once_draws_the_same_numbers(method: str, monkeypatch) -> None:
    clf = tiny_classifier()
    seeds = [11, 12]

    def sequence(block: int) -> list[torch.Tensor]:
        monkeypatch.setattr(Draws, "BLOCK", block)
        s, param = _param(method, seeds, clf)
        if method == "pixel":  # the paper preset's rolls (the default one jitters by its transformations)
            param = Pixels(replace(s, jitter=8), seeds, clf.input_size, clf.normalise, CPU)
        draws = param.shifts if method == "pixel" else param.noise.draws
        return [draws.next() for _ in range(7)]

    one, many = sequence(1), sequence(4)
    assert all(torch.equal(a, b) for a, b in zip(one, many, strict=True))
    assert not torch.equal(one[0][0], one[0][1])  # each target draws from its own generator


class _CountOps(TorchDispatchMode):
    """Counts the tensor operations dispatched (on a GPU, each one on the device is a launch)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method", ALL)
def test_a_steps_operations_do_not_grow_with_the_chunk(method: str) -> None:
    # Ops of a 3-step run minus those of a 1-step run: two steps, without the once-per-run set-up
    # (the optimiser, the chunk loss's weights, the first block of draws, the final read).
    clf = tiny_classifier()
    assert "conv" in clf.layers  # probes D's layers (a forward pass) before counting
    kinds = [Target("class", (1,)), Target("pair", (2, 3)), Target("filter", layer="conv", channels=(2,))]
    targets = kinds + [Target("class", (c,)) for c in range(6)] + [Target("filter", layer="conv", channels=(0,))]

    def ops(chunk: list[Target], steps: int) -> int:
        s, param = _param(method, [t.seed(7) for t in chunk], clf)
        s = replace(s, steps=steps, snapshots=1)
        objs = [target_objective(t, s.penalty, s.target_relu) for t in chunk]
        transforms = random_transforms(s, clf, [t.seed(7) for t in chunk], CPU)
        with _CountOps() as counter:
            optimise(clf, objs, param, s, transforms=transforms)
        return counter.count

    per_step = {n: ops(targets[:n], 3) - ops(targets[:n], 1) for n in (3, 10)}
    assert per_step[3] == per_step[10], per_step


def test_the_normalised_code_has_the_encoders_statistics_whatever_alpha() -> None:
    dec = Decoder(width=0.0625)
    dec.init_copy(0, torch.Generator().manual_seed(0))
    s = settings_for("pretrained", overrides={"code_norm": "true", "noise_std": "0"})
    param = PretrainedG(s, [1, 2], dec, CPU)
    # each target starts from its own N(0, 1) draw, not from the paper's constant ones
    assert not torch.equal(param.alpha[0], param.alpha[1])
    assert abs(float(param.alpha.detach().std()) - 1.0) < 0.05
    for scale in (1.0, 100.0):
        with torch.no_grad():
            param.alpha.mul_(scale)
            code = param.code(noise=False)
        # relu of a standardised vector: about half zeros, the rest of a unit normal's positive half
        assert 0.4 < float((code == 0).float().mean()) < 0.6
        assert abs(float(code.pow(2).mean()) - 0.5) < 0.05  # E[relu(z)^2] = 1/2
    paper = PretrainedG(settings_for("pretrained", "paper"), [1, 2], dec, CPU)
    assert torch.equal(paper.alpha.detach(), torch.ones(2, 3200))
    assert torch.equal(paper.code(noise=False).detach(), paper.alpha.detach())


@pytest.mark.parametrize("transforms", [True, False])
def test_coarse_steps_run_d_at_the_coarse_size_then_at_its_own(transforms: bool) -> None:
    """coarse_size 16 for half of 4 steps: D's passes see 16 px twice, then its own 32 px; the
    image stays 32 px, and the coarse steps' gradients reach it."""
    clf = tiny_classifier(size=32)
    seen: list[tuple[int, bool]] = []
    forward = clf.forward

    def record(x: torch.Tensor, layers=(), need_logits: bool = True, native: bool = False):  # noqa: ANN001, ANN202
        seen.append((x.shape[-1], native))
        return forward(x, layers=layers, need_logits=need_logits, native=native)

    clf.forward = record  # type: ignore[method-assign]
    s = settings_for(
        "fourier",
        overrides={"steps": "4", "coarse_size": "16", "coarse_fraction": "0.5", "transforms": str(transforms)},
    )
    param = FourierImage(s, [1, 2], clf.input_size, clf.normalise, CPU)
    objs = [target_objective(t, s.penalty, s.target_relu) for t in TARGETS[:2]]
    tf = random_transforms(s, clf, [1, 2], CPU)
    start = param.render().clone()
    two = replace(s, steps=2)  # the coarse steps alone
    optimise(clf, objs, param, two, transforms=tf)
    assert (param.render() - start).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    seen.clear()
    result = optimise(clf, objs, param, s, transforms=tf)
    assert seen == [(16, True), (16, True), (32, False), (32, False)]
    assert result.images.shape == (2, 3, 32, 32) and torch.isfinite(result.loss).all()


def test_coarse_settings_are_checked() -> None:
    assert settings_for("fourier", overrides={"coarse_size": "160", "coarse_fraction": "0.75"}).coarse_steps(224) == 75
    assert settings_for("fourier", overrides={"coarse_size": "224", "coarse_fraction": "0.75"}).coarse_steps(224) == 0
    from atlas.errors import AtlasError

    with pytest.raises(AtlasError, match="coarse_size"):
        settings_for("fourier", overrides={"coarse_size": "4"})
    with pytest.raises(AtlasError, match="coarse_fraction"):
        settings_for("fourier", overrides={"coarse_fraction": "1.5"})


def test_lr_end_decays_the_learning_rate_by_a_cosine_to_its_share_of_lr() -> None:
    s = settings_for("fourier", overrides={"steps": "5", "lr": "0.1", "lr_end": "0.2"})
    rates = [s.lr_at(t) for t in range(1, 6)]
    assert rates[0] == pytest.approx(0.1) and rates[-1] == pytest.approx(0.02)
    assert rates[2] == pytest.approx(0.06)  # halfway: the mean of the two ends
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert [settings_for("fourier", overrides={"steps": "5"}).lr_at(t) for t in (1, 5)] == [0.1, 0.1]
    from atlas.errors import AtlasError

    with pytest.raises(AtlasError, match="lr_end"):
        settings_for("fourier", overrides={"lr_end": "1.5"})


def test_the_optimiser_steps_at_the_scheduled_learning_rate(monkeypatch) -> None:
    """Each step's update is taken at `lr_at(step)`: the rates the optimiser holds at its steps."""
    clf = tiny_classifier(size=32)
    s = settings_for("fourier", overrides={"steps": "4", "lr_end": "0.25"})
    param = FourierImage(s, [1], clf.input_size, clf.normalise, CPU)
    objs = [target_objective(t, s.penalty, s.target_relu) for t in TARGETS[:1]]
    seen: list[float] = []
    step = torch.optim.Adam.step

    def record(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", record)
    optimise(clf, objs, param, s)
    assert seen == pytest.approx([s.lr_at(t) for t in range(1, 5)])
    assert seen[0] == pytest.approx(s.lr) and seen[-1] == pytest.approx(0.25 * s.lr)
