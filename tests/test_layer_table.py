"""The shipped tables are the models' own: the layer table (the workflow's planning uses it) and the
ImageNet class names."""

from __future__ import annotations

import pytest

from atlas.classifier import load_classifier
from atlas.errors import AtlasError
from atlas.layer_table import TABLED, check_filter, known_layers


@pytest.mark.parametrize("name", TABLED)
def test_the_table_is_what_a_forward_pass_finds(name: str) -> None:
    table = known_layers(name)
    assert table is not None
    # Same names, same order, same channel counts (`python -m atlas.layer_table` rewrites it).
    assert list(table.items()) == list(load_classifier(name, "random").layers.items())


def test_unknown_layer_and_channel_are_one_line_errors_naming_the_choices() -> None:
    with pytest.raises(AtlasError, match=r"efficientnet-lite0 has no layer '_blocks.99'; valid layers: _blocks\.0"):
        check_filter("efficientnet-lite0", "_blocks.99", [0])
    with pytest.raises(AtlasError, match=r"channel 64 of layer features.0 is out of range; .* channels 0..63"):
        check_filter("torchvision:vgg16", "features.0", [3, 64])
    check_filter("torchvision:vgg16", "features.26", [0, 511])  # valid: no error
    check_filter("torchvision:resnet18", "layer9", [0])  # not tabled: left to `atlas generate`
    assert known_layers("torchvision:resnet18") is None


def test_the_table_needs_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, atlas.layer_table as t; t.check_filter('efficientnet-lite0', '_conv_stem', [0]); print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_the_class_names_are_torchvisions_and_need_no_torchvision() -> None:
    import subprocess
    import sys

    from torchvision.models._meta import _IMAGENET_CATEGORIES

    from atlas.classifier import imagenet_class_names

    assert imagenet_class_names() == list(_IMAGENET_CATEGORIES)
    # Loading an embedded classifier (each generation and score job does) imports no torchvision.
    code = (
        "import sys; from atlas.classifier import load_classifier; c = load_classifier('efficientnet-lite0', 'random'); "
        "print(c.class_names[593], 'torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "harmonica False"
