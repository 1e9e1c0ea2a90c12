"""The optimisation loop, separate from what it optimises.

`optimise(classifier, objectives, parameterisation, settings)` runs one batched optimisation of a
chunk of B targets (objective b is target b's loss, see `atlas.objectives`) and returns the final
images and the loss history. The chunk's loss is the sum of the targets' losses: their parameters
are disjoint and every optimiser here works elementwise, so each target follows exactly the path
it would follow alone.

With `transforms` (`atlas.transforms`), D sees each step's images under a fresh random
geometric transformation; the snapshots and the final images are untransformed.

Coarse to fine (`coarse_size`, `coarse_fraction`): for the first steps D sees the images resampled
to `coarse_size` px and runs at that size (a convolutional network with a global pool takes any
size), about half the time of a step at 224 px for 160; the last steps, and every score, are at
D's own size.

With `lr_end` below 1, the learning rate follows a cosine from `lr` at the first step to
`lr * lr_end` at the last (`MethodSettings.lr_at`): large steps while the picture forms, small
ones to settle its details.

A target whose loss becomes NaN or infinite is frozen out of the sum from that step on and
reported as failed; the others carry on.

`runtime` (`atlas.runtime`) sets the precision of the steps' forward passes (bf16 autocast or
fp32); the objectives, the losses, the optimiser and the final renders are always fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from tqdm import tqdm

from atlas.classifier import Activations, Classifier
from atlas.methods import MethodSettings
from atlas.objectives import ChunkLoss, Objective
from atlas.parameterise import Parameterisation
from atlas.runtime import Runtime
from atlas.transforms import RandomTransforms

log = logging.getLogger(__name__)


@dataclass
class Result:
    """Final images (B, 3, H, W) in D's input space; per-step loss and target-activation history
    (steps, B); `failed[b]` holds the reason target b failed, or None."""

    images: torch.Tensor
    loss: torch.Tensor
    failed: list[str | None]


def make_optimiser(settings: MethodSettings, params: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
    s = settings
    if s.optimiser == "adamax":
        return torch.optim.Adamax(params, lr=s.lr, betas=(s.beta1, s.beta2), eps=s.eps)
    if s.optimiser == "adam":
        return torch.optim.Adam(params, lr=s.lr, betas=(s.beta1, s.beta2), eps=s.eps)
    if s.optimiser == "nadam":
        return torch.optim.NAdam(params, lr=s.lr, betas=(s.beta1, s.beta2), eps=s.eps)
    return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov)


def chunk_loss(
    classifier: Classifier, objectives: Sequence[Objective] | ChunkLoss, images: torch.Tensor, native: bool = False
) -> torch.Tensor:
    """Each target's loss on its own image: (B,); with `native`, D runs at the images' own size."""
    loss_fn = objectives if isinstance(objectives, ChunkLoss) else ChunkLoss(objectives)
    acts = classifier.forward(images, layers=loss_fn.layers, need_logits=loss_fn.needs_logits, native=native)
    # Under bf16 autocast the activations are bf16; the objectives (sums over 1000 classes) run in fp32.
    acts = Activations(
        logits=None if acts.logits is None else acts.logits.float(),
        features={k: v.float() for k, v in acts.features.items()},
    )
    return loss_fn(acts)


# Steps between two reads of the losses on the host, on a GPU. Reading them waits for the device
# to finish the step (a synchronisation that leaves the GPU idle while Python queues the next
# step), so the loop keeps the losses and the live mask on the device and reads them only every
# READ_EVERY steps (and at the end) to log failures, update the progress bar and stop early when
# every target has failed. On a CPU a read costs nothing and happens every step.
READ_EVERY = 25


def optimise(
    classifier: Classifier,
    objectives: Sequence[Objective],
    param: Parameterisation,
    settings: MethodSettings,
    progress: tqdm | None = None,
    runtime: Runtime | None = None,
    read_every: int | None = None,
    transforms: RandomTransforms | None = None,
) -> Result:
    if len(objectives) != param.batch:
        raise ValueError(f"{len(objectives)} objectives for a chunk of {param.batch}")
    opt = make_optimiser(settings, param.parameters())
    runtime = runtime or Runtime()
    loss_fn = ChunkLoss(objectives)
    device = param.parameters()[0].device
    batch = param.batch
    alive = torch.ones(batch, dtype=torch.bool, device=device)
    history = torch.full((settings.steps, batch), float("nan"), device=device)
    reader = _Reader(batch, progress)
    if read_every is None:
        read_every = 1 if device.type == "cpu" else READ_EVERY
    snap_steps = set(settings.snapshot_steps())
    snapshots: list[torch.Tensor] = []
    coarse_until = settings.coarse_steps(classifier.input_size)
    for step in range(1, settings.steps + 1):
        if settings.lr_end != 1:
            for group in opt.param_groups:
                group["lr"] = settings.lr_at(step)
        size = settings.coarse_size if step <= coarse_until else None
        with runtime.autocast(device):
            images = param.images(noise=True)
            if transforms is not None:
                images = transforms(images, size)
            elif size is not None:
                images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            loss = chunk_loss(classifier, loss_fn, images, native=size is not None) + param.regulariser().float()
        history[step - 1] = loss.detach()
        # A target whose loss is not finite is frozen out of the sum from this step on.
        alive &= torch.isfinite(loss.detach())
        opt.zero_grad(set_to_none=True)
        torch.where(alive, loss, 0.0).sum().backward()
        opt.step()
        param.after_step()
        if step in snap_steps:
            snapshots.append(param.render().detach())
        if (step % read_every == 0 or step == settings.steps) and not reader.read(history, step):
            break
    if len(snapshots) > 1:
        # Per-pixel median of the snapshots (the authors' pretrained method).
        final = torch.stack(snapshots).median(dim=0).values
    elif snapshots:
        final = snapshots[0]
    else:
        final = param.render().detach()
    failed = reader.failed
    bad_final = ~torch.isfinite(final.flatten(1)).all(dim=1).cpu()
    for b in torch.nonzero(bad_final).flatten().tolist():
        if failed[b] is None:
            failed[b] = "the final image holds NaN or inf values"
    return Result(images=final, loss=history.cpu(), failed=failed)


class _Reader:
    """Reads the loss history on the host every so often: records each target's first non-finite
    loss as its failure, advances the progress bar by the live targets' steps since the last read,
    and says whether any target is still live."""

    def __init__(self, batch: int, progress: tqdm | None) -> None:
        self.failed: list[str | None] = [None] * batch
        self.progress = progress
        self.done = 0  # steps read so far

    def read(self, history: torch.Tensor, step: int) -> bool:
        block = history[self.done : step].cpu()
        finite = torch.isfinite(block)
        was_live = torch.tensor([f is None for f in self.failed])
        for b in torch.nonzero(was_live & ~finite.all(dim=0)).flatten().tolist():
            first = int(torch.nonzero(~finite[:, b])[0])
            self.failed[b] = f"loss became {block[first, b].item()} at step {self.done + first + 1}"
            log.warning("target %d of the chunk failed: %s", b, self.failed[b])
        live = torch.tensor([f is None for f in self.failed])
        if self.progress is not None:
            # The target-steps of the targets live at the last read, up to each one's failure.
            self.progress.update(int(torch.cummin(finite.int(), dim=0).values[:, was_live].sum()))
            if live.any():
                self.progress.set_postfix(loss=f"{block[-1][live].mean().item():.3g}")
        self.done = step
        return bool(live.any())
