"""The optimisation loop, separate from what it optimises.

`optimise(classifier, objectives, parameterisation, settings)` runs one batched optimisation of a
chunk of B targets (objective b is target b's loss, see `atlas.objectives`) and returns the final
images and the loss history. The chunk's loss is the sum of the targets' losses: their parameters
are disjoint and every optimiser here works elementwise, so each target follows exactly the path
it would follow alone.

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
from tqdm import tqdm

from atlas.classifier import Activations, Classifier
from atlas.methods import MethodSettings
from atlas.objectives import Objective
from atlas.parameterise import Parameterisation
from atlas.runtime import Runtime

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
    return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov)


def chunk_loss(
    classifier: Classifier, objectives: Sequence[Objective], images: torch.Tensor
) -> torch.Tensor:
    """Each target's loss on its own image: (B,)."""
    layers = tuple(dict.fromkeys(layer for o in objectives for layer in o.layers))
    need_logits = any(o.needs_logits for o in objectives)
    acts = classifier.forward(images, layers=layers, need_logits=need_logits)
    # Under bf16 autocast the activations are bf16; the objectives (sums over 1000 classes) run in fp32.
    acts = Activations(
        logits=None if acts.logits is None else acts.logits.float(),
        features={k: v.float() for k, v in acts.features.items()},
    )
    return torch.cat([obj(acts.row(b)) for b, obj in enumerate(objectives)])


def optimise(
    classifier: Classifier,
    objectives: Sequence[Objective],
    param: Parameterisation,
    settings: MethodSettings,
    progress: tqdm | None = None,
    runtime: Runtime | None = None,
) -> Result:
    if len(objectives) != param.batch:
        raise ValueError(f"{len(objectives)} objectives for a chunk of {param.batch}")
    opt = make_optimiser(settings, param.parameters())
    runtime = runtime or Runtime()
    device = param.parameters()[0].device
    batch = param.batch
    alive = torch.ones(batch, dtype=torch.bool)
    failed: list[str | None] = [None] * batch
    history = torch.full((settings.steps, batch), float("nan"))
    snap_steps = set(settings.snapshot_steps())
    snapshots: list[torch.Tensor] = []
    for step in range(1, settings.steps + 1):
        with runtime.autocast(device):
            images = param.images(noise=True)
            loss = chunk_loss(classifier, objectives, images) + param.regulariser().float()
        values = loss.detach().cpu()
        history[step - 1] = values
        bad = ~torch.isfinite(values) & alive
        for b in torch.nonzero(bad).flatten().tolist():
            failed[b] = f"loss became {values[b].item()} at step {step}"
            log.warning("target %d of the chunk failed: %s", b, failed[b])
        alive &= ~bad
        if not alive.any():
            break
        opt.zero_grad(set_to_none=True)
        loss[alive.to(loss.device)].sum().backward()
        opt.step()
        param.after_step()
        if step in snap_steps:
            snapshots.append(param.render().detach())
        if progress is not None:
            progress.update(int(alive.sum()))
            progress.set_postfix(loss=f"{values[alive].mean().item():.3g}")
    if len(snapshots) > 1:
        # Per-pixel median of the snapshots (the authors' pretrained method).
        final = torch.stack(snapshots).median(dim=0).values
    elif snapshots:
        final = snapshots[0]
    else:
        final = param.render().detach()
    bad_final = ~torch.isfinite(final.flatten(1)).all(dim=1).cpu()
    for b in torch.nonzero(bad_final & alive).flatten().tolist():
        failed[b] = "the final image holds NaN or inf values"
    return Result(images=final, loss=history, failed=failed)
