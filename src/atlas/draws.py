"""Per-target random draws: every target draws from its own CPU generator, seeded by the target
alone, so its image does not depend on which chunk it ran in, nor on the device."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def cpu_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per target, seeded by the target alone (the draws are then the same
    whichever device the target runs on)."""
    gens = []
    for s in seeds:
        g = torch.Generator()
        g.manual_seed(int(s))
        gens.append(g)
    return gens


class Draws:
    """Each step's random draws of a chunk, row b from target b's own CPU generator.

    They are drawn BLOCK steps at a time and go to the device as one (B, BLOCK, ...) tensor: a
    step then costs one indexing instead of B draws (B kernel launches a step on a GPU), and the
    draws are the same on every device. BLOCK draws at once give the same numbers as BLOCK single
    draws (tested), so the images do not depend on BLOCK.
    """

    BLOCK = 16

    def __init__(
        self, seeds: Sequence[int], draw: Callable[[int, torch.Generator], torch.Tensor], device: torch.device
    ) -> None:
        self.gens = cpu_generators(seeds)
        self._draw = draw  # (n, generator) -> n steps' draws of one target
        self.device = device
        self._block: torch.Tensor | None = None
        self._next = 0

    def next(self) -> torch.Tensor:
        if self._block is None or self._next == self._block.shape[1]:
            block = torch.stack([self._draw(self.BLOCK, g) for g in self.gens])
            self._block = block.to(self.device, non_blocking=True)
            self._next = 0
        self._next += 1
        return self._block[:, self._next - 1]
