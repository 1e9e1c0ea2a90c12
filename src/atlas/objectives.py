"""Objectives: what the optimisation asks of D.

Sign convention: an Objective's value is a **loss, to be minimised**, one value per image of the
batch (shape (B,)). The primitives measure an activation (bigger = more of it), so a loss that
maximises one negates it, as the paper's Eq. 2 does:

    loss = -a(c_i) + lambda * sum_{j != i} a(c_j)        a(c) = relu(logit_c), lambda = 0.01

(the regulariser R of Eq. 2 belongs to what is optimised, see `atlas.parameterise`).
Objectives combine with `+`, `-`, unary `-` and scaling by a number; the combining is written once,
in `_Combined`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from atlas.classifier import Activations

PENALTY = 0.01  # lambda of Eq. 2; the authors' y_true of -10/1000 for the other classes


class Objective:
    """Base class: `__call__(acts) -> Tensor (B,)`, a loss per image."""

    name: str = "objective"
    layers: tuple[str, ...] = ()
    needs_logits: bool = False

    def __call__(self, acts: Activations) -> torch.Tensor:
        raise NotImplementedError

    def __add__(self, other: Objective | float) -> Objective:
        return _Combined(operator.add, "+", self, other)

    def __radd__(self, other: float) -> Objective:
        return _Combined(operator.add, "+", other, self)

    def __sub__(self, other: Objective | float) -> Objective:
        return _Combined(operator.sub, "-", self, other)

    def __rsub__(self, other: float) -> Objective:
        return _Combined(operator.sub, "-", other, self)

    def __mul__(self, other: float) -> Objective:
        return _Combined(operator.mul, "*", self, other)

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return _Combined(operator.mul, "*", -1.0, self)

    def __repr__(self) -> str:
        return self.name


def _name(x: Objective | float) -> str:
    return x.name if isinstance(x, Objective) else f"{x:g}"


def _eval(x: Objective | float, acts: Activations) -> torch.Tensor | float:
    return x(acts) if isinstance(x, Objective) else x


class _Combined(Objective):
    def __init__(
        self,
        op: Callable[[object, object], object],
        symbol: str,
        a: Objective | float,
        b: Objective | float,
    ) -> None:
        self.op, self.a, self.b = op, a, b
        self.name = f"({_name(a)} {symbol} {_name(b)})"
        parts = [x for x in (a, b) if isinstance(x, Objective)]
        self.layers = tuple(dict.fromkeys(layer for p in parts for layer in p.layers))
        self.needs_logits = any(p.needs_logits for p in parts)

    def __call__(self, acts: Activations) -> torch.Tensor:
        return self.op(_eval(self.a, acts), _eval(self.b, acts))  # type: ignore[return-value]


def _logits(acts: Activations) -> torch.Tensor:
    if acts.logits is None:
        raise RuntimeError("this objective needs D's logits, but the forward pass stopped early")
    return acts.logits


@dataclass(eq=False)
class ClassActivation(Objective):
    """Sum over `classes` of a(c) = relu(logit_c); with `relu=False` the raw logit (which still
    passes a gradient when the logit is negative, where the ReLU passes none)."""

    classes: tuple[int, ...]
    relu: bool = True

    def __post_init__(self) -> None:
        fn = "a" if self.relu else "logit"
        self.name = "+".join(f"{fn}({c})" for c in self.classes)
        self.needs_logits = True
        self.layers = ()

    def __call__(self, acts: Activations) -> torch.Tensor:
        z = _logits(acts)[:, list(self.classes)]
        return (torch.relu(z) if self.relu else z).sum(dim=1)


@dataclass(eq=False)
class OtherClasses(Objective):
    """Sum of a(c_j) = relu(logit_j) over every class not in `exclude`."""

    exclude: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.name = f"others({','.join(map(str, self.exclude))})"
        self.needs_logits = True
        self.layers = ()

    def __call__(self, acts: Activations) -> torch.Tensor:
        a = torch.relu(_logits(acts))
        total = a.sum(dim=1)
        if self.exclude:
            total = total - a[:, list(self.exclude)].sum(dim=1)
        return total


@dataclass(eq=False)
class FilterActivation(Objective):
    """Sum over `channels` of the spatial mean of that channel of layer `layer`'s output."""

    layer: str
    channels: tuple[int, ...]

    def __post_init__(self) -> None:
        self.name = "+".join(f"{self.layer}[{k}]" for k in self.channels)
        self.layers = (self.layer,)
        self.needs_logits = False

    def __call__(self, acts: Activations) -> torch.Tensor:
        fmap = acts.features[self.layer]
        return fmap[:, list(self.channels)].mean(dim=(2, 3)).sum(dim=1)


def class_loss(classes: Sequence[int], penalty: float = PENALTY, target_relu: bool = True) -> Objective:
    """Eq. 2 for one class, or a compound of classes (their activations summed, the penalty over
    all the others)."""
    classes = tuple(int(c) for c in classes)
    loss: Objective = -ClassActivation(classes, relu=target_relu)
    if penalty:
        loss = loss + penalty * OtherClasses(classes)
    return loss


def filter_loss(layer: str, channels: Sequence[int], penalty: float = 0.0) -> Objective:
    """Maximise a filter (or a compound of filters); no other-class term unless `penalty` > 0."""
    loss: Objective = -FilterActivation(layer, tuple(int(k) for k in channels))
    if penalty:
        loss = loss + penalty * OtherClasses(())
    return loss
