"""The filter layers of the built-in classifiers, shipped as a table so that the workflow checks a
config's filters (layer names, channel ranges) when it plans, before any job, without torch.

`layers.json` holds, for each classifier in `TABLED`, its layers usable as filter targets (modules
whose output is a 4-D feature map), in forward order, with their channel counts: exactly what
`atlas.classifier.Classifier.layers` finds with a forward pass (a test compares the two). A
classifier not in the table (another `torchvision:<name>`, a `timm:` or `python:` model, whose
layers only a forward pass finds) is checked by `atlas generate` when it loads the model.
`python -m atlas.layer_table` rewrites the table from the models themselves.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources

from atlas.errors import AtlasError

TABLE = "layers.json"
# The classifiers whose layers are tabled: the two embedded ones and the paper's VGG-16.
TABLED = ("efficientnet-lite0", "efficientnet-lite2", "torchvision:vgg16")


@cache
def _table() -> dict[str, dict[str, int]]:
    return json.loads((resources.files("atlas") / TABLE).read_text(encoding="utf-8"))


def known_layers(classifier: str) -> Mapping[str, int] | None:
    """Layer name -> channel count of a tabled classifier; None for one the table lacks."""
    return _table().get(classifier)


def _choices(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (
        f", ... ({len(names)} in all; `atlas generate --help` names the classifiers)" if len(names) > limit else ""
    )


def check_filter(classifier: str, layer: str, channels: Iterable[int]) -> None:
    """A one-line AtlasError when `layer` is not a filter layer of a tabled `classifier`, or a
    channel is out of its range; nothing for a classifier the table lacks."""
    layers = known_layers(classifier)
    if layers is None:
        return
    if layer not in layers:
        near = [n for n in layers if n.startswith(layer.rsplit(".", 1)[0] + ".")] or list(layers)
        raise AtlasError(f"filters: {classifier} has no layer {layer!r}; valid layers: {_choices(near)}")
    for k in channels:
        if not 0 <= k < layers[layer]:
            raise AtlasError(
                f"filters: channel {k} of layer {layer} is out of range; {classifier}'s {layer} has channels 0..{layers[layer] - 1}"
            )


def probe() -> dict[str, dict[str, int]]:
    """The table, measured: each tabled classifier built (random weights) and probed."""
    from atlas.classifier import load_classifier

    return {name: dict(load_classifier(name, "random").layers) for name in TABLED}


def main() -> int:
    from pathlib import Path

    from atlas.io import write_text

    path = Path(__file__).with_name(TABLE)
    write_text(path, json.dumps(probe(), indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
