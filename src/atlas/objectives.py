"""Objectives: what the optimisation asks of D.

Sign convention: an Objective's value is a **loss, to be minimised**, one value per image of the
batch (shape (B,)). The primitives measure an activation (bigger = more of it), so a loss that
maximises one negates it, as the paper's Eq. 2 does:

    loss = -a(c_i) + lambda * sum_{j != i} a(c_j)        a(c) = relu(logit_c), lambda = 0.01

(the regulariser R of Eq. 2 belongs to what is optimised, see `atlas.parameterise`).
Objectives combine with `+`, `-`, unary `-` and scaling by a number; the combining is written once,
in `_Combined`.

Every objective built here is linear in three per-image features: relu(logits), the raw logits and
the spatial means of a layer's channels. `Objective.linear()` gives that form, and `ChunkLoss`
evaluates a chunk of B objectives with it as a few whole-chunk tensor operations (coefficient
matrices built once), so the work of a step does not grow with the number of targets in kernel
launches (on a GPU each is a launch; at chunk 64 the per-target loop was most of a step's
launches). The coefficients are those the per-target computation applies, so the gradients are
the same bits; only the loss values' rounding differs. An objective without a linear form (a
custom one) is evaluated per image, as before.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from atlas.classifier import Activations
from atlas.targets import Target

PENALTY = 0.01  # lambda of Eq. 2; the authors' y_true of -10/1000 for the other classes


# The features a linear objective weighs: ("relu_logit", "") relu(logits), ("logit", "") the raw
# logits, ("channel_mean", layer) the spatial mean of each channel of `layer`'s output.
Feature = tuple[str, str]
RELU_LOGIT: Feature = ("relu_logit", "")
LOGIT: Feature = ("logit", "")


def channel_mean(layer: str) -> Feature:
    return ("channel_mean", layer)


@dataclass(frozen=True)
class Linear:
    """loss = constant + sum over features f of sum_i w_f(i) * f[i], where w_f(i) = fill_f +
    sparse_f.get(i, 0): `fill` weighs every entry of the feature (the other classes' penalty),
    `sparse` the named ones."""

    terms: Mapping[Feature, tuple[float, Mapping[int, float]]] = field(default_factory=dict)
    constant: float = 0.0

    def scaled(self, k: float) -> Linear:
        return Linear(
            {f: (fill * k, {i: w * k for i, w in sparse.items()}) for f, (fill, sparse) in self.terms.items()},
            self.constant * k,
        )

    def plus(self, other: Linear) -> Linear:
        terms = dict(self.terms)
        for f, (fill, sparse) in other.terms.items():
            old_fill, old_sparse = terms.get(f, (0.0, {}))
            merged = dict(old_sparse)
            for i, w in sparse.items():
                merged[i] = merged.get(i, 0.0) + w
            terms[f] = (old_fill + fill, merged)
        return Linear(terms, self.constant + other.constant)

    def weights(self, feature: Feature, size: int) -> torch.Tensor:
        """The weight of each of the feature's `size` entries, float64 (0 where it is unused)."""
        fill, sparse = self.terms.get(feature, (0.0, {}))
        w = torch.full((size,), fill, dtype=torch.float64)
        for i, v in sparse.items():
            w[i] += v
        return w


class Objective:
    """Base class: `__call__(acts) -> Tensor (B,)`, a loss per image."""

    name: str = "objective"
    layers: tuple[str, ...] = ()
    needs_logits: bool = False

    def __call__(self, acts: Activations) -> torch.Tensor:
        raise NotImplementedError

    def linear(self) -> Linear | None:
        """This loss as a linear form in D's features, or None where it is not one."""
        return None

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


def _linear(x: Objective | float) -> Linear | None:
    return x.linear() if isinstance(x, Objective) else Linear(constant=float(x))


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

    def linear(self) -> Linear | None:
        a, b = _linear(self.a), _linear(self.b)
        if a is None or b is None:
            return None
        if self.op is operator.add:
            return a.plus(b)
        if self.op is operator.sub:
            return a.plus(b.scaled(-1.0))
        # operator.mul: a number times an objective (the algebra allows no product of two)
        number, form = (self.a, b) if not isinstance(self.a, Objective) else (self.b, a)
        if isinstance(number, Objective):
            return None
        return form.scaled(float(number))


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

    def linear(self) -> Linear:
        sparse: dict[int, float] = {}
        for c in self.classes:
            sparse[c] = sparse.get(c, 0.0) + 1.0
        return Linear({RELU_LOGIT if self.relu else LOGIT: (0.0, sparse)})


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

    def linear(self) -> Linear:
        sparse: dict[int, float] = {}
        for c in self.exclude:
            sparse[c] = sparse.get(c, 0.0) - 1.0
        return Linear({RELU_LOGIT: (1.0, sparse)})


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

    def linear(self) -> Linear:
        sparse: dict[int, float] = {}
        for k in self.channels:
            sparse[k] = sparse.get(k, 0.0) + 1.0
        return Linear({channel_mean(self.layer): (0.0, sparse)})


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


def target_objective(target: Target, penalty: float, target_relu: bool, filter_penalty: float = 0.0) -> Objective:
    """The loss of one target: `filter_loss` for a filter target, `class_loss` for the others."""
    if target.kind == "filter":
        assert target.layer is not None
        return filter_loss(target.layer, target.channels, filter_penalty)
    return class_loss(target.classes, penalty, target_relu)


class ChunkLoss:
    """The losses of a chunk of B objectives on D's activations of their B images: (B,), row b
    the loss of objective b on image b alone.

    With every objective linear, it is a handful of whole-chunk operations per feature:
    `where(w != 0, feature * w, 0).sum(1)` with w the (B, size) weights (built once per device).
    Entries a target does not weigh are left out (not multiplied by 0), as its own computation
    never reads them: an inf there cannot make its loss NaN. Rows never mix, so a NaN in one
    target's image reaches no other target's loss or gradient. Otherwise each objective runs on
    its own row (`Activations.row`).
    """

    def __init__(self, objectives: Sequence[Objective]) -> None:
        self.objectives = list(objectives)
        self.layers = tuple(dict.fromkeys(layer for o in self.objectives for layer in o.layers))
        self.needs_logits = any(o.needs_logits for o in self.objectives)
        forms = [o.linear() for o in self.objectives]
        self.forms: list[Linear] | None = None if any(f is None for f in forms) else forms  # type: ignore[assignment]
        self._weights: dict[tuple[Feature, int, torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.objectives)

    def _feature(self, feature: Feature, acts: Activations) -> torch.Tensor:
        kind, layer = feature
        if kind == "channel_mean":
            return acts.features[layer].mean(dim=(2, 3))
        logits = _logits(acts)
        return torch.relu(logits) if kind == "relu_logit" else logits

    def _weights_for(self, feature: Feature, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (feature, like.shape[1], like.device, like.dtype)
        if key not in self._weights:
            assert self.forms is not None
            w = torch.stack([f.weights(feature, like.shape[1]) for f in self.forms])
            w = w.to(device=like.device, dtype=like.dtype)
            self._weights[key] = (w, w != 0)
        return self._weights[key]

    def __call__(self, acts: Activations) -> torch.Tensor:
        if self.forms is None:
            return torch.cat([obj(acts.row(b)) for b, obj in enumerate(self.objectives)])
        features = dict.fromkeys(f for form in self.forms for f in form.terms)
        loss: torch.Tensor | None = None
        for feature in features:
            value = self._feature(feature, acts)
            w, used = self._weights_for(feature, value)
            term = torch.where(used, value * w, 0.0).sum(dim=1)
            loss = term if loss is None else loss + term
        constants = [form.constant for form in self.forms]
        if loss is None:  # only constants: no feature of D is weighed
            anything = acts.logits if acts.logits is not None else next(iter(acts.features.values()))
            loss = anything.new_zeros(len(self.forms))
        if any(constants):
            loss = loss + torch.tensor(constants, dtype=loss.dtype, device=loss.device)
        return loss
